"""ProxyConnection: the proxy logic of one client connection, with no I/O.

Theory of operation
-------------------
The transport feeds events (bytes arrived, upstream connected, timer due)
into :meth:`ProxyConnection.handle` and executes the commands it returns
(send bytes, open an upstream, close). Everything a proxy decides is here.

A connection is in one :class:`Phase`. In ``HTTP`` an h11 SERVER connection
parses the client's requests; each request becomes an :class:`Exchange` with
a :class:`~interceptkit.flow.Flow`, and is re-sent on an h11 CLIENT connection
to the upstream (one upstream is bound to the client connection while the
client keeps asking the same host, so keep-alive holds end to end). The
response travels back the same way. h11 frames both hops; this module
removes what belongs to one hop only and adds ``Via``.

``CONNECT`` opens an upstream and, once it is connected, switches to
``TUNNEL``: bytes pass unchanged both ways. A ``101 Switching Protocols``
answer does the same after the upgrade handshake.

Bytes meant for one peer in one ``handle`` call are joined into a single
send command, so a small response costs one write.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum, auto
from itertools import count
from typing import Any

import h11

from ..flow import Flow, Headers, Request, Response
from . import commands as cmd
from . import events as ev
from .config import ProxyConfig
from .errors import RemoteProtocolError
from .http1 import (
    DEFAULT_PORTS,
    IDEMPOTENT_METHODS,
    INFO_PAGE,
    append_forwarded_for,
    check_request_framing,
    connection_tokens,
    end_to_end_fields,
    format_authority,
    h11_request,
    h11_response,
    info_page_fields,
    parse_absolute_url,
    parse_authority,
    plain_answer,
    reframe,
    replace_field,
)


class Phase(Enum):
    HTTP = auto()  # the client's bytes are HTTP/1.x requests, parsed by h11
    CONNECTING = auto()  # a CONNECT waits for its upstream connection
    TUNNEL = auto()  # bytes are relayed both ways unchanged
    CLOSED = auto()  # the client connection is closed or closing


class Upstream:
    """One connection towards a server, as this client connection uses it."""

    __slots__ = ("id", "key", "conn", "connected", "reused", "pending", "pending_size",
                 "last_activity")

    def __init__(self, upstream_id: int, key: tuple[str, int, bool], now: float) -> None:
        self.id = upstream_id
        self.key = key
        self.conn = h11.Connection(h11.CLIENT)
        self.connected = False
        #: True once the connection served an earlier exchange (or came from
        #: the pool): the server may have closed it while it sat idle.
        self.reused = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.last_activity = now


class Exchange:
    """One request/response pair in flight."""

    __slots__ = ("flow", "upstream", "request_complete", "response_started", "response_chunked",
                 "upstream_bytes", "replay", "replay_size", "retried", "upgrade")

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.upstream: Upstream | None = None
        self.request_complete = False
        self.response_started = False
        self.response_chunked = False
        self.upstream_bytes = 0
        #: The h11 events sent so far, kept while small enough to resend.
        self.replay: list[h11.Request | h11.Data | h11.EndOfMessage] | None = None
        self.replay_size = 0
        self.retried = False
        self.upgrade = False


Handler = Callable[["ProxyConnection", Any], None]


class ProxyConnection:
    """The proxy state machine for one client connection.

    ``handle(event)`` returns the commands to execute, in order. It never
    raises on any bytes from a peer: bad input becomes an HTTP answer.
    """

    def __init__(self, config: ProxyConfig, client_address: tuple[str, int] | None = None) -> None:
        self._config = config
        self._client_address = client_address
        self._client = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_size)
        self._phase = Phase.HTTP
        self._upstream: Upstream | None = None
        self._exchange: Exchange | None = None
        self._tunnel: Flow | None = None
        self._out: list[cmd.Command] = []
        self._client_buf: list[bytes] = []
        self._upstream_buf: list[bytes] = []
        self._upstream_ids = count(1)
        self._next_flow_id = config.next_flow_id or count(1).__next__
        self._now = 0.0
        self._client_paused = False
        self._read_timer = False
        self._idle_timer = False
        self._client_activity = 0.0

    @property
    def phase(self) -> Phase:
        return self._phase

    # -- the one entry point -------------------------------------------------

    def handle(self, event: ev.Event) -> list[cmd.Command]:
        """Process one event; return the commands it calls for."""
        self._now = event.time
        try:
            _HANDLERS[type(event)](self, event)
        except Exception as exc:  # a bug here must cost one connection, not the proxy
            self._internal_error(exc)
        self._flush()
        out, self._out = self._out, []
        return out

    # -- output helpers ------------------------------------------------------

    def _emit(self, command: cmd.Command) -> None:
        self._flush()
        self._out.append(command)

    def _flush(self) -> None:
        if self._client_buf:
            data = b"".join(self._client_buf) if len(self._client_buf) > 1 else self._client_buf[0]
            self._client_buf = []
            self._out.append(cmd.SendToClient(data=data))
        if self._upstream_buf:
            up = self._upstream
            data = b"".join(self._upstream_buf)
            self._upstream_buf = []
            if up is not None:
                self._out.append(cmd.SendToUpstream(upstream=up.id, data=data))

    def _to_client(self, data: bytes) -> None:
        if data:
            self._client_buf.append(data)

    def _to_upstream(self, up: Upstream, data: bytes) -> None:
        if not data:
            return
        up.last_activity = self._now
        if up.connected:
            self._upstream_buf.append(data)
            return
        up.pending.append(data)
        up.pending_size += len(data)
        if up.pending_size > self._config.pending_limit:
            self._pause_client()

    def _pause_client(self) -> None:
        if not self._client_paused:
            self._client_paused = True
            self._emit(cmd.PauseClient())

    def _resume_client(self) -> None:
        if self._client_paused:
            self._client_paused = False
            self._emit(cmd.ResumeClient())

    def _log(self, level: str, message: str) -> None:
        self._emit(cmd.Log(level=level, message=message))

    # -- client side -----------------------------------------------------------

    def _on_client_connected(self, event: ev.ClientConnected) -> None:
        if event.address is not None:
            self._client_address = event.address
        self._client_activity = event.time
        self._arm_idle_timer(self._config.idle_timeout)

    def _on_client_data(self, event: ev.ClientDataReceived) -> None:
        self._client_activity = event.time
        if self._phase is Phase.TUNNEL:
            self._relay_to_upstream(event.data)
        elif self._phase is not Phase.CLOSED:
            self._client.receive_data(event.data)
            if self._phase is Phase.HTTP:
                self._pump_client()

    def _pump_client(self) -> None:
        while self._phase is Phase.HTTP:
            try:
                event = self._client.next_event()
            except h11.RemoteProtocolError as exc:
                self._client_error(exc.error_status_hint, str(exc))
                return
            kind = type(event)
            if kind is h11.Data:
                self._on_request_data(event.data)  # type: ignore[union-attr]
            elif kind is h11.Request:
                self._on_request(event)  # type: ignore[arg-type]
            elif kind is h11.EndOfMessage:
                self._on_request_end(event)  # type: ignore[arg-type]
            elif event is h11.PAUSED:
                # The client sent more while we still answer: pipelining or
                # bytes after CONNECT/Upgrade. h11 holds them; stop reading.
                self._pause_client()
                return
            elif kind is h11.ConnectionClosed:
                self._on_client_eof()
                return
            else:  # NEED_DATA
                return

    def _on_client_closed(self, event: ev.ConnectionClosed) -> None:
        if self._phase is Phase.CLOSED:
            return
        if event.aborted or self._phase is not Phase.HTTP:
            self._abort("client disconnected")
            return
        self._client.receive_data(b"")
        self._pump_client()

    def _on_client_eof(self) -> None:
        """An orderly EOF between messages: finish the answer in flight, then close."""
        if self._exchange is None:
            self._close_client()

    def _client_error(self, status: int, message: str) -> None:
        ex = self._exchange
        if ex is not None:
            self._fail_exchange(ex, f"bad request from client: {message}")
            if ex.response_started:
                self._close_client()
                return
        self._answer(status, message)

    # -- requests ------------------------------------------------------------

    def _on_request(self, event: h11.Request) -> None:
        fields = event.headers.raw_items()
        method = event.method.decode("ascii")
        if method == "CONNECT":
            self._on_connect(event, fields)
            return
        try:
            check_request_framing(fields, event.http_version)
            scheme, host, port, path = self._resolve_target(event.target, fields)
        except RemoteProtocolError as exc:
            self._answer(exc.status, str(exc))
            return
        if scheme == "":
            self._serve_info(path)
            return
        request = Request(
            method=method, scheme=scheme, host=host, port=port, path=path,
            http_version="HTTP/" + event.http_version.decode("ascii"),
            headers=Headers.from_wire(fields),
        )
        ex = Exchange(self._new_flow(request))
        ex.upgrade = b"upgrade" in connection_tokens(fields) and any(
            n.lower() == b"upgrade" for n, _ in fields
        )
        self._exchange = ex
        self._emit(cmd.FlowStarted(flow=ex.flow))
        self._send_request_head(ex)

    def _resolve_target(self, target: bytes, fields: list[tuple[bytes, bytes]]) -> tuple[str, str, int, str]:
        """Where a request goes; scheme "" means it is addressed to the proxy itself."""
        if target.startswith(b"/") or target == b"*":
            # Origin-form sent to a forward proxy: someone browsed to it.
            return "", "", 0, target.decode("latin-1")
        scheme, host, port, path = parse_absolute_url(target)
        if host == "interceptkit" or (host, port) in self._config.listen_addresses:
            return "", "", 0, path
        token = f"({self._config.via_token})".encode("ascii")
        if any(n.lower() == b"via" and token in v for n, v in fields):
            raise RemoteProtocolError("request loop: it came through this proxy already", 508)
        return scheme, host, port, path

    def _new_flow(self, request: Request) -> Flow:
        flow = Flow(id=self._next_flow_id(), request=request, client_address=self._client_address)
        flow.timings.start = self._now
        return flow

    def _send_request_head(self, ex: Exchange) -> None:
        request = ex.flow.request
        fields, chunked = end_to_end_fields(request.headers.fields, keep_upgrade=ex.upgrade)
        fields = replace_field(fields, b"Host", format_authority(request.host, request.port, request.scheme))
        fields.append((b"Via", self._config.via))
        if self._config.forwarded_for and self._client_address is not None:
            append_forwarded_for(fields, self._client_address[0])
        fields = reframe(fields, chunked)
        up = self._bind_upstream(request.scheme, request.host, request.port)
        ex.upstream = up
        if up.reused and self._config.retry_idempotent and request.method in IDEMPOTENT_METHODS:
            ex.replay = []
        head = h11_request(request.method.encode("ascii"), request.path.encode("latin-1"), fields)
        self._remember(ex, head, 0)
        self._to_upstream(up, up.conn.send(head))

    def _on_request_data(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or ex.upstream is None:
            return
        _capture(ex.flow.request, data, self._config.body_capture_limit)
        up = ex.upstream
        event = h11.Data(data=data)
        self._remember(ex, event, len(data))
        self._to_upstream(up, up.conn.send(event))

    def _on_request_end(self, event: h11.EndOfMessage) -> None:
        ex = self._exchange
        if ex is None or ex.upstream is None:
            return
        up = ex.upstream
        end = h11.EndOfMessage(headers=event.headers.raw_items())
        self._remember(ex, end, 0)
        self._to_upstream(up, up.conn.send(end))
        ex.request_complete = True
        ex.flow.timings.request_sent = self._now
        self._arm_read_timer(self._config.read_timeout)

    # -- upstream connections ----------------------------------------------------

    def _bind_upstream(self, scheme: str, host: str, port: int) -> Upstream:
        key = (host, port, scheme in ("https", "wss"))
        up = self._upstream
        if up is not None:
            if up.key == key and up.conn.our_state is h11.IDLE:
                return up
            self._release_upstream()
        return self._open_upstream(key, reuse=True)

    def _open_upstream(self, key: tuple[str, int, bool], *, reuse: bool) -> Upstream:
        up = Upstream(next(self._upstream_ids), key, self._now)
        self._upstream = up
        if self._exchange is not None:
            self._exchange.flow.timings.connect_start = self._now
        self._emit(cmd.OpenUpstream(upstream=up.id, host=key[0], port=key[1], tls=key[2], reuse=reuse))
        return up

    def _release_upstream(self) -> None:
        """Give the bound upstream back: to the pool if it sits between messages."""
        up = self._upstream
        if up is None:
            return
        self._flush()
        idle = up.connected and up.conn.our_state is h11.IDLE and up.conn.their_state is h11.IDLE
        self._upstream = None
        self._out.append(cmd.CloseUpstream(upstream=up.id, reusable=idle))

    def _current_upstream(self, upstream_id: int) -> Upstream | None:
        up = self._upstream
        return up if up is not None and up.id == upstream_id else None

    def _on_upstream_connected(self, event: ev.UpstreamConnected) -> None:
        up = self._current_upstream(event.upstream)
        if up is None:  # we gave up on it meanwhile
            self._emit(cmd.CloseUpstream(upstream=event.upstream))
            return
        up.connected = True
        up.reused = event.reused
        up.last_activity = self._now
        self._record_connect(event)
        if self._phase is Phase.CONNECTING:
            self._start_tunnel(up)
            return
        if up.pending:
            self._upstream_buf.extend(up.pending)
            up.pending, up.pending_size = [], 0
        self._resume_client()

    def _record_connect(self, event: ev.UpstreamConnected) -> None:
        flow = self._exchange.flow if self._exchange is not None else self._tunnel
        if flow is not None:
            flow.timings.connect_end = self._now
            flow.server_address = event.address

    def _on_upstream_connect_failed(self, event: ev.UpstreamConnectFailed) -> None:
        up = self._current_upstream(event.upstream)
        if up is None:
            return
        status = 504 if event.timeout else 502
        self._upstream_failed(up, f"cannot connect to {up.key[0]}:{up.key[1]}: {event.reason}", status)

    def _on_upstream_data(self, event: ev.UpstreamDataReceived) -> None:
        up = self._current_upstream(event.upstream)
        if up is None:
            return
        up.last_activity = self._now
        if self._phase is Phase.TUNNEL:
            self._relay_to_client(event.data)
            return
        if self._exchange is not None:
            self._exchange.upstream_bytes += len(event.data)
        up.conn.receive_data(event.data)
        self._pump_upstream(up)

    def _on_upstream_closed(self, event: ev.ConnectionClosed) -> None:
        up = self._current_upstream(event.upstream or 0)
        if up is None:
            return
        if self._phase is Phase.TUNNEL:
            self._finish_tunnel(None)
            return
        up.conn.receive_data(b"")
        self._pump_upstream(up)

    def _pump_upstream(self, up: Upstream) -> None:
        while self._upstream is up:
            try:
                event = up.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._upstream_failed(up, _describe_upstream_error(up, str(exc)))
                return
            kind = type(event)
            if kind is h11.Data:
                self._on_response_data(event.data)  # type: ignore[union-attr]
            elif kind is h11.Response:
                self._on_response(event)  # type: ignore[arg-type]
            elif kind is h11.EndOfMessage:
                self._on_response_end(up, event)  # type: ignore[arg-type]
                return
            elif kind is h11.InformationalResponse:
                self._on_informational(up, event)  # type: ignore[arg-type]
            elif kind is h11.ConnectionClosed:
                self._drop_upstream(up)
                return
            else:  # NEED_DATA or PAUSED
                return

    def _drop_upstream(self, up: Upstream) -> None:
        if self._upstream is up:
            self._flush()
            self._upstream = None
            self._out.append(cmd.CloseUpstream(upstream=up.id))

    def _upstream_failed(self, up: Upstream, reason: str, status: int = 502) -> None:
        self._drop_upstream(up)
        if self._phase is Phase.CONNECTING:
            self._fail_tunnel(reason, status)
            return
        ex = self._exchange
        if ex is None or ex.upstream is not up:
            return  # an idle connection went away: nothing was lost
        if ex.replay is not None and up.reused and ex.upstream_bytes == 0 and not ex.retried:
            self._retry(ex)
            return
        self._fail_exchange(ex, reason)
        if ex.response_started:
            # Never let a truncated answer look complete: close instead.
            self._close_client()
        else:
            self._answer(status, reason)

    def _retry(self, ex: Exchange) -> None:
        """Resend an idempotent request on a fresh connection (RFC 9110 9.2.2).

        The h11 events are replayed, not the bytes, so the new connection's
        h11 state sees the same request the old one did.
        """
        replay = ex.replay or []
        ex.retried, ex.replay = True, None
        request = ex.flow.request
        self._log("debug", f"reused upstream connection was closed; retrying {request.url}")
        key = (request.host, request.port, request.scheme in ("https", "wss"))
        up = ex.upstream = self._open_upstream(key, reuse=False)
        for event in replay:
            self._to_upstream(up, up.conn.send(event))

    def _remember(self, ex: Exchange, event: h11.Request | h11.Data | h11.EndOfMessage, size: int) -> None:
        """Keep what was sent while it is small enough to resend."""
        if ex.replay is None:
            return
        ex.replay_size += size
        if ex.replay_size > self._config.retry_buffer_limit:
            ex.replay = None
        else:
            ex.replay.append(event)

    # -- responses ---------------------------------------------------------------

    def _on_informational(self, up: Upstream, event: h11.InformationalResponse) -> None:
        if event.status_code == 101:
            self._switch_protocols(up, event)
            return
        if self._client.their_http_version != b"1.1":
            return  # RFC 9110 15.2: no 1xx to an HTTP/1.0 client
        fields, _ = end_to_end_fields(event.headers.raw_items())
        self._to_client(self._client.send(
            h11.InformationalResponse(status_code=event.status_code, headers=fields, reason=event.reason)
        ))

    def _on_response(self, event: h11.Response) -> None:
        ex = self._exchange
        if ex is None:
            return
        raw = event.headers.raw_items()
        response = Response(
            status=event.status_code, reason=event.reason.decode("latin-1"),
            http_version="HTTP/" + event.http_version.decode("ascii"), headers=Headers.from_wire(raw),
        )
        ex.flow.response = response
        ex.flow.timings.response_start = self._now
        self._disarm_read_timer()
        fields, chunked = end_to_end_fields(raw)
        ex.response_chunked = chunked
        fields = reframe(fields, chunked)
        fields.append((b"Via", self._config.via))
        ex.response_started = True
        self._to_client(self._client.send(h11_response(event.status_code, event.reason, fields)))

    def _on_response_data(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or ex.flow.response is None:
            return
        _capture(ex.flow.response, data, self._config.body_capture_limit)
        self._to_client(self._client.send(h11.Data(data=data)))

    def _on_response_end(self, up: Upstream, event: h11.EndOfMessage) -> None:
        ex = self._exchange
        if ex is None:
            return
        trailers = event.headers.raw_items()
        if not (trailers and ex.response_chunked and self._client.their_http_version == b"1.1"):
            trailers = []
        self._to_client(self._client.send(h11.EndOfMessage(headers=trailers)))
        flow = ex.flow
        flow.timings.end = self._now
        flow.state = "done"
        self._exchange = None
        self._emit(cmd.FlowFinished(flow=flow))
        self._after_exchange(up)

    def _after_exchange(self, up: Upstream) -> None:
        if up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE:
            up.conn.start_next_cycle()
            up.reused = True
        else:
            self._drop_upstream(up)
        client = self._client
        if client.our_state is not h11.DONE or client.their_state is not h11.DONE:
            self._close_client()  # Connection: close, HTTP/1.0, or an unread request body
            return
        client.start_next_cycle()
        self._resume_client()
        self._pump_client()

    # -- CONNECT and protocol switches ---------------------------------------

    def _on_connect(self, event: h11.Request, fields: list[tuple[bytes, bytes]]) -> None:
        try:
            host, port = parse_authority(event.target, None)
        except RemoteProtocolError as exc:
            self._answer(400, f"bad CONNECT target: {exc}")
            return
        request = Request(
            method="CONNECT", scheme="https" if port == 443 else "tcp", host=host, port=port, path="",
            http_version="HTTP/" + event.http_version.decode("ascii"),
            headers=Headers.from_wire(fields), authority=event.target.decode("ascii"),
        )
        flow = self._new_flow(request)
        flow.kind = "tunnel"
        self._tunnel = flow
        self._phase = Phase.CONNECTING
        self._emit(cmd.FlowStarted(flow=flow))
        self._open_upstream((host, port, False), reuse=False)
        flow.timings.connect_start = self._now

    def _start_tunnel(self, up: Upstream) -> None:
        flow = self._tunnel
        assert flow is not None
        self._to_client(self._client.send(h11.Response(status_code=200, headers=[], reason=b"Connection established")))
        flow.response = Response(status=200, reason="Connection established")
        flow.timings.response_start = self._now
        self._enter_tunnel()

    def _switch_protocols(self, up: Upstream, event: h11.InformationalResponse) -> None:
        ex = self._exchange
        assert ex is not None
        fields, _ = end_to_end_fields(event.headers.raw_items(), keep_upgrade=True)
        self._to_client(self._client.send(
            h11.InformationalResponse(status_code=101, headers=fields, reason=event.reason)
        ))
        ex.flow.response = Response(
            status=101, reason=event.reason.decode("latin-1"), headers=Headers.from_wire(event.headers.raw_items())
        )
        ex.flow.timings.response_start = self._now
        ex.flow.kind = "upgrade"
        self._disarm_read_timer()
        self._tunnel = ex.flow
        self._exchange = None
        upstream_rest = up.conn.trailing_data[0]
        self._enter_tunnel()
        self._relay_to_client(upstream_rest)

    def _enter_tunnel(self) -> None:
        self._phase = Phase.TUNNEL
        early = self._client.trailing_data[0]
        self._resume_client()
        self._relay_to_upstream(early)

    def _relay_to_upstream(self, data: bytes) -> None:
        up, flow = self._upstream, self._tunnel
        if up is not None and flow is not None and data:
            flow.request.body_size += len(data)
            self._to_upstream(up, data)

    def _relay_to_client(self, data: bytes) -> None:
        flow = self._tunnel
        if flow is not None and flow.response is not None and data:
            flow.response.body_size += len(data)
            self._to_client(data)

    def _finish_tunnel(self, error: str | None) -> None:
        flow = self._tunnel
        self._tunnel = None
        if flow is not None:
            flow.timings.end = self._now
            flow.error = error
            flow.state = "error" if error else "done"
            self._emit(cmd.FlowFinished(flow=flow))
        self._close_client()

    def _fail_tunnel(self, reason: str, status: int) -> None:
        flow = self._tunnel
        self._tunnel = None
        if flow is not None:
            flow.error = reason
            flow.state = "error"
            flow.timings.end = self._now
            self._emit(cmd.FlowFinished(flow=flow))
        self._phase = Phase.HTTP  # so the answer goes out through h11
        self._answer(status, reason)

    # -- answers from the proxy itself ---------------------------------------

    def _serve_info(self, path: str) -> None:
        config = self._config
        if path == "/cert/pem" and config.ca_cert_pem:
            body, ctype = config.ca_cert_pem, b"application/x-pem-file"
        elif path == "/cert/cer" and config.ca_cert_der:
            body, ctype = config.ca_cert_der, b"application/pkix-cert"
        else:
            body, ctype = INFO_PAGE.encode(), b"text/html; charset=utf-8"
        fields = info_page_fields(body, ctype) + [(b"Connection", b"close")]
        self._send_whole_answer(h11.Response(status_code=200, headers=fields), body)

    def _answer(self, status: int, message: str) -> None:
        """Answer the current request ourselves, then close the connection."""
        response, body = plain_answer(status, message)
        self._send_whole_answer(response, body)

    def _send_whole_answer(self, response: h11.Response, body: bytes) -> None:
        client = self._client
        try:
            parts = [client.send(response)]
            if client.our_state is h11.SEND_BODY:
                parts.append(client.send(h11.Data(data=body)))
                parts.append(client.send(h11.EndOfMessage()))
            data = b"".join(p for p in parts if p)
        except h11.LocalProtocolError:
            data = _raw_response(response, body)  # h11 is past the point of a clean answer
        self._to_client(data)
        self._close_client()

    # -- endings -----------------------------------------------------------------

    def _fail_exchange(self, ex: Exchange, reason: str) -> None:
        flow = ex.flow
        flow.error = reason
        flow.state = "error"
        flow.timings.end = self._now
        if self._exchange is ex:
            self._exchange = None
        self._emit(cmd.FlowFinished(flow=flow))

    def _abort(self, reason: str) -> None:
        if self._exchange is not None:
            self._fail_exchange(self._exchange, reason)
        if self._tunnel is not None:
            self._finish_tunnel(None if self._phase is Phase.TUNNEL else reason)
        self._close_client()

    def _close_client(self) -> None:
        if self._phase is Phase.CLOSED:
            return
        if self._exchange is not None:
            self._fail_exchange(self._exchange, "connection closed before the exchange completed")
        self._release_upstream()
        self._phase = Phase.CLOSED
        self._emit(cmd.CloseClient())

    def _internal_error(self, exc: Exception) -> None:
        import traceback

        self._client_buf = []
        self._upstream_buf = []
        self._out.append(cmd.Log(level="error", message="internal error: " + "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))))
        if self._exchange is not None:
            self._fail_exchange(self._exchange, f"internal error: {exc!r}")
        if self._phase is not Phase.CLOSED:
            self._release_upstream()
            self._phase = Phase.CLOSED
            self._out.append(cmd.CloseClient())

    # -- timers -------------------------------------------------------------------

    def _arm_read_timer(self, delay: float) -> None:
        if not self._read_timer:
            self._read_timer = True
            self._emit(cmd.StartTimer(name="read", delay=delay))

    def _disarm_read_timer(self) -> None:
        # The transport's timer stays scheduled; when it fires we see there is
        # nothing to wait for. Cheaper than a cancel per request.
        pass

    def _arm_idle_timer(self, delay: float) -> None:
        if not self._idle_timer:
            self._idle_timer = True
            self._emit(cmd.StartTimer(name="idle", delay=delay))

    def _on_timer(self, event: ev.TimerFired) -> None:
        if event.timer == "read":
            self._read_timer = False
            self._check_read_timeout()
        elif event.timer == "idle":
            self._idle_timer = False
            self._check_idle_timeout()

    def _check_read_timeout(self) -> None:
        ex, timeout = self._exchange, self._config.read_timeout
        up = ex.upstream if ex is not None else None
        if ex is None or up is None or ex.response_started or not up.connected:
            return
        waited = self._now - up.last_activity
        if waited >= timeout:
            self._upstream_failed(up, f"upstream did not answer within {timeout:g} s", 504)
        else:
            self._arm_read_timer(timeout - waited)

    def _check_idle_timeout(self) -> None:
        if self._phase is Phase.CLOSED:
            return
        timeout = self._config.idle_timeout
        idle = self._now - self._client_activity
        busy = self._exchange is not None or self._phase is Phase.CONNECTING
        if self._phase is Phase.TUNNEL and self._upstream is not None:
            idle = min(idle, self._now - self._upstream.last_activity)
        if busy or idle < timeout:
            self._arm_idle_timer(timeout - idle if not busy else timeout)
        elif self._phase is Phase.HTTP and self._client.their_state is h11.SEND_BODY:
            self._answer(408, "the request did not arrive in time")
        else:
            self._abort("idle timeout") if self._phase is Phase.TUNNEL else self._close_client()

    def _on_hook_returned(self, event: ev.HookReturned) -> None:
        pass


def _capture(message: Request | Response, data: bytes, limit: int) -> None:
    """Count body bytes and keep a prefix of at most ``limit`` of them."""
    kept = len(message.content)
    message.body_size += len(data)
    if kept < limit:
        message.content = message.content + data[: limit - kept] if kept else data[:limit]
    if message.body_size > limit:
        message.truncated = True


def _describe_upstream_error(up: Upstream, detail: str) -> str:
    if up.conn.their_state is h11.SEND_RESPONSE or "ConnectionClosed" in detail:
        return "upstream closed the connection before answering"
    if "incomplete" in detail or "peer closed" in detail:
        return "upstream closed the connection before the response was complete"
    return f"invalid response from upstream: {detail}"


def _raw_response(response: h11.Response, body: bytes) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (response.status_code, response.reason)]
    lines += [name + b": " + value for name, value in response.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_HANDLERS: dict[type[ev.Event], Handler] = {
    ev.ClientConnected: ProxyConnection._on_client_connected,
    ev.ClientDataReceived: ProxyConnection._on_client_data,
    ev.UpstreamDataReceived: ProxyConnection._on_upstream_data,
    ev.UpstreamConnected: ProxyConnection._on_upstream_connected,
    ev.UpstreamConnectFailed: ProxyConnection._on_upstream_connect_failed,
    ev.TimerFired: ProxyConnection._on_timer,
    ev.HookReturned: ProxyConnection._on_hook_returned,
}


def _on_closed(self: ProxyConnection, event: ev.ConnectionClosed) -> None:
    if event.upstream is None:
        self._on_client_closed(event)
    else:
        self._on_upstream_closed(event)


_HANDLERS[ev.ConnectionClosed] = _on_closed
