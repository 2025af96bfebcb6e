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
from itertools import count
from typing import Any

import h11

from ..flow import Flow, Headers, Request, Response, TLSInfo
from . import commands as cmd
from . import events as ev
from .config import ProxyConfig
from .errors import RemoteProtocolError
from .http1 import (
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
    looks_like_http,
    parse_absolute_url,
    parse_authority,
    plain_answer,
    reframe,
    replace_field,
    sized,
)
from .state import Exchange, Phase, SentEvent, Upstream, UpstreamKey
from .tls import TLSEndpoint, TLSError, TLSParseError, looks_like_tls, parse_client_hello
from .websocket import (
    CLIENT,
    SERVER,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
    WebSocketData,
    WebSocketMessage,
    WebSocketRelay,
    _other,
    data_message,
    message_of,
    outgoing,
)

#: Alerts a client sends when it does not trust the certificate we showed it.
UNTRUSTED_ALERTS = frozenset({"unknown ca", "bad certificate", "certificate unknown",
                              "unsupported certificate"})
#: Bytes of a tunnel's first message we wait for before giving up on TLS.
SNIFF_LIMIT = 64 * 1024

Handler = Callable[["ProxyConnection", Any], None]


class ProxyConnection:
    """The proxy state machine for one client connection.

    ``handle(event)`` returns the commands to execute, in order. It never
    raises on any bytes from a peer: bad input becomes an HTTP answer.
    """

    def __init__(self, config: ProxyConfig, client_address: tuple[str, int] | None = None) -> None:
        self._config = config
        self._client_address = client_address
        self._client = self._new_client_parser()
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
        self._pause_reasons: set[str] = set()
        self._head_request = False
        self._last_read = 0
        self._read_timer = False
        self._idle_timer = False
        self._client_activity = 0.0
        #: Inside an intercepted CONNECT: where every request goes.
        self._origin: tuple[str, str, int] | None = None
        self._server_name: str | None = None
        self._client_tls: TLSEndpoint | None = None
        self._client_tls_info: TLSInfo | None = None
        #: Bytes of a tunnel not yet consumed: early data, or the sniffed start.
        self._early = b""
        self._tunnel_answered = False
        #: The hook call the connection waits for: (call id, exchange, continuation).
        self._waiting: tuple[int, Exchange, Callable[[Exchange, Any], None]] | None = None
        self._hook_calls = count(1)
        self._upstream_paused = False
        self._client_blocked = False
        self._ws: WebSocketRelay | None = None
        self._ws_exchange: Exchange | None = None
        #: Bytes of a message already streamed past the hooks, per side.
        self._ws_streamed: dict[str, int] = {}
        if config.listen_context is not None:  # TLS from the first byte (reverse mode)
            self._client_tls = TLSEndpoint(config.listen_context, server_side=True)
            self._client_tls.start()
            self._client_tls_info = TLSInfo()

    def _new_client_parser(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self._config.max_header_size)

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
            if self._client_tls is not None:
                data = self._client_tls.send(data)
            self._out.append(cmd.SendToClient(data=data))
        if self._upstream_buf:
            up = self._upstream
            data = b"".join(self._upstream_buf)
            self._upstream_buf = []
            if up is not None:
                if up.tls is not None:
                    data = up.tls.send(data)
                self._out.append(cmd.SendToUpstream(upstream=up.id, data=data))

    def _send_client_raw(self, data: bytes) -> None:
        """Bytes that bypass the client TLS session (handshake, alerts)."""
        if data:
            self._emit(cmd.SendToClient(data=data))

    def _send_upstream_raw(self, up: Upstream, data: bytes) -> None:
        if data:
            self._emit(cmd.SendToUpstream(upstream=up.id, data=data))

    def _to_client(self, data: bytes) -> None:
        if data:
            self._client_buf.append(data)

    def _to_upstream(self, up: Upstream, data: bytes) -> None:
        if not data:
            return
        up.last_activity = self._now
        if up.ready:
            self._upstream_buf.append(data)
            return
        up.pending.append(data)
        up.pending_size += len(data)
        if up.pending_size > self._config.pending_limit:
            self._pause_client("pending")

    def _pause_client(self, reason: str) -> None:
        """Stop reading the client for ``reason`` (pipeline, pending, hook)."""
        if not self._pause_reasons:
            self._emit(cmd.PauseClient())
        self._pause_reasons.add(reason)

    def _resume_client(self, reason: str) -> None:
        """Read again once no reason to pause is left."""
        if reason in self._pause_reasons:
            self._pause_reasons.discard(reason)
            if not self._pause_reasons:
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
        phase = self._phase
        if phase is Phase.TUNNEL:
            self._relay_to_upstream(event.data)
        elif phase is Phase.SNIFF:
            self._sniff(event.data)
        elif phase is Phase.WEBSOCKET:
            self._ws_client_bytes(event.data)
        elif phase is not Phase.CLOSED:
            self._feed_client(event.data)

    def _feed_client(self, data: bytes) -> None:
        """Client bytes into h11 (decrypted first inside an intercepted tunnel)."""
        closed = False
        if self._client_tls is not None:
            decrypted = self._decrypt_client(data)
            if decrypted is None:
                return
            data, closed = decrypted
        if data:
            self._client.receive_data(data)
            # Only a read larger than the limit can hold a whole head over it.
            self._last_read = len(data)
        if closed:
            self._client.receive_data(b"")
        if self._waiting is not None:
            self._pause_client("hook")  # h11 holds it until the hook returns
        elif self._phase is Phase.HTTP:
            self._pump_client()

    def _decrypt_client(self, data: bytes) -> tuple[bytes, bool] | None:
        tls = self._client_tls
        assert tls is not None
        try:
            result = tls.receive(data)
        except TLSError as exc:
            self._client_tls_failed(exc)
            return None
        self._send_client_raw(result.to_send)
        if result.handshake_done:
            self._client_tls_done(tls)
        return result.plaintext, result.closed

    def _sniff(self, data: bytes) -> None:
        """Decide from a tunnel's first bytes: TLS to intercept, HTTP, or a raw relay."""
        buf = self._early = self._early + data
        verdict = looks_like_tls(buf)
        if verdict is None:
            return
        if not verdict:
            self._start_inner_http() if looks_like_http(buf) else self._tunnel_raw()
            return
        try:
            hello = parse_client_hello(buf)
        except TLSParseError:
            self._tunnel_raw()
            return
        if hello is not None:
            self._start_client_tls(hello.sni)
        elif len(buf) > SNIFF_LIMIT:
            self._tunnel_raw()

    def _start_client_tls(self, sni: str | None) -> None:
        tunnel = self._tunnel
        assert tunnel is not None and self._config.server_context is not None
        host, port = tunnel.request.host, tunnel.request.port
        try:
            context = self._config.server_context(sni or host)
        except ValueError:  # a name no certificate can carry: use the CONNECT host
            context = self._config.server_context(host)
        self._client_tls = TLSEndpoint(context, server_side=True)
        self._client_tls.start()
        self._client_tls_info = TLSInfo(sni=sni)
        self._server_name = sni or host
        self._enter_inner("https", host, port)

    def _start_inner_http(self) -> None:
        tunnel = self._tunnel
        assert tunnel is not None
        self._enter_inner("http", tunnel.request.host, tunnel.request.port)

    def _enter_inner(self, scheme: str, host: str, port: int) -> None:
        """Parse the tunnel's content as HTTP requests that all go to ``host:port``."""
        self._origin = (scheme, host, port)
        self._client = self._new_client_parser()
        self._phase = Phase.HTTP
        early, self._early = self._early, b""
        self._feed_client(early)

    def _client_tls_done(self, tls: TLSEndpoint) -> None:
        info = self._client_tls_info or TLSInfo()
        info.version, info.cipher, info.alpn = tls.version, tls.cipher, tls.alpn
        self._client_tls_info = info
        self._tunnel = None  # the CONNECT is not an exchange of its own once decrypted

    def _client_tls_failed(self, exc: TLSError) -> None:
        self._client_tls = None
        self._send_client_raw(exc.to_send)
        name = self._server_name or "?"
        if exc.alert in UNTRUSTED_ALERTS or "closed the connection during the TLS handshake" in exc.reason:
            reason = f"client does not trust the interceptkit CA for {name} ({exc.alert or exc.reason})"
            if name not in self._config.tls_warned:
                self._config.tls_warned.add(name)
                self._log("warning", reason + ". Install the CA in the client: `interceptkit ca` shows how.")
        else:
            reason = f"TLS handshake with the client failed: {exc.reason}"
        self._report_tunnel_error(reason)
        self._close_client()

    def _report_tunnel_error(self, reason: str) -> None:
        flow, self._tunnel = self._tunnel, None
        if flow is not None:
            flow.client_tls = self._client_tls_info
            self._end_flow(flow, reason)

    def _tunnel_raw(self) -> None:
        """Not TLS, not HTTP: relay the tunnel unchanged after all."""
        tunnel = self._tunnel
        assert tunnel is not None
        self._phase = Phase.CONNECTING
        tunnel.state = "open"
        self._emit(cmd.FlowStarted(flow=tunnel))
        self._open_upstream((tunnel.request.host, tunnel.request.port, False), reuse=False)
        tunnel.timings.connect_start = self._now

    # -- interception: what runs inside a CONNECT -------------------------------

    def _pump_client(self) -> None:
        while self._phase is Phase.HTTP and self._waiting is None:
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
                if self._exchange is not None:
                    # The answer is pending: h11 would only say PAUSED or
                    # NEED_DATA now. Asking its buffer directly is cheaper.
                    if self._client.trailing_data[0]:
                        self._pause_client("pipeline")
                    return
            elif event is h11.PAUSED:
                # The client sent more while we still answer: pipelining or
                # bytes after CONNECT/Upgrade. h11 holds them; stop reading.
                self._pause_client("pipeline")
                return
            elif kind is h11.ConnectionClosed:
                self._on_client_eof()
                return
            else:  # NEED_DATA
                return

    def _on_client_closed(self, event: ev.ConnectionClosed) -> None:
        if self._phase is Phase.CLOSED:
            return
        if self._phase is Phase.WEBSOCKET:
            self._ws_receive(CLIENT, None)
            return
        if event.aborted or self._phase is not Phase.HTTP:
            self._abort("client disconnected")
        elif self._client_tls is not None:
            self._feed_client(b"")  # EOF through TLS: a handshake cut short says so
        else:
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
            return
        self._refuse(status, message, "unparsable request")

    # -- requests ------------------------------------------------------------

    def _on_request(self, event: h11.Request) -> None:
        fields = event.headers.raw_items()
        method = event.method.decode("ascii")
        self._head_request = method == "HEAD"
        if self._last_read > self._config.max_header_size and (
                _head_size(event.target, fields) > self._config.max_header_size):
            # h11 bounds only a head that arrives in pieces; one that came
            # whole in a single read is measured here.
            self._answer(431, "request header block too large")
            return
        if method == "CONNECT" and self._origin is None and self._config.mode != "reverse":
            self._on_connect(event, fields)
            return
        try:
            check_request_framing(fields, event.http_version)
            scheme, host, port, path = self._resolve_target(event.target, fields)
        except RemoteProtocolError as exc:
            self._refuse(exc.status, str(exc), f"{method} {event.target[:200]!r}")
            return
        if scheme == "":
            self._serve_info(path)
            return
        request = Request(
            method=method, scheme=scheme, host=host, port=port, path=path,
            http_version="HTTP/" + event.http_version.decode("ascii"),
            headers=Headers.from_wire(fields),
        )
        reverse = self._config.mode == "reverse"
        ex = Exchange(self._new_flow(request),
                      absolute_form=(self._origin is None and not reverse) or (reverse and not self._config.keep_host))
        upgrade = next((v for n, v in fields if n.lower() == b"upgrade"), None)
        ex.upgrade = upgrade is not None and b"upgrade" in connection_tokens(fields)
        ex.websocket = ex.upgrade and upgrade is not None and b"websocket" in upgrade.lower()
        self._exchange = ex
        self._emit(cmd.FlowStarted(flow=ex.flow))
        self._hook("request_headers", ex, self._after_request_headers)

    def _hook(self, name: str, ex: Exchange, then: Callable[[Exchange, Any], None],
              payload: bytes | None = None) -> None:
        """Run the hooks called ``name`` on the flow, then ``then(ex, result)``.

        With nothing attached to ``name`` this costs one set lookup.
        """
        if name not in self._config.hooks:
            then(ex, None)
            return
        ex.hooked = True
        call = next(self._hook_calls)
        self._waiting = (call, ex, then)
        self._emit(cmd.RunHook(name=name, flow=ex.flow, call=call, payload=payload))

    # -- hooks ------------------------------------------------------------------

    def _resolve_target(self, target: bytes, fields: list[tuple[bytes, bytes]]) -> tuple[str, str, int, str]:
        """Where a request goes; scheme "" means it is addressed to the proxy itself."""
        origin_form = target.startswith(b"/") or target == b"*"
        if self._origin is not None:
            # Inside an intercepted tunnel everything goes where the CONNECT said.
            scheme, host, port = self._origin
            path = target.decode("latin-1") if origin_form else parse_absolute_url(target)[3]
            return scheme, host, port, path
        if self._config.mode == "reverse":
            return self._route(target.decode("latin-1") if origin_form else parse_absolute_url(target)[3])
        if origin_form:
            # Origin-form sent to a forward proxy: someone browsed to it.
            return "", "", 0, target.decode("latin-1")
        scheme, host, port, path = parse_absolute_url(target)
        if host == "interceptkit" or (host, port) in self._config.listen_addresses:
            return "", "", 0, path
        token = f"({self._config.via_token})".encode("ascii")
        if any(n.lower() == b"via" and token in v for n, v in fields):
            raise RemoteProtocolError("request loop: it came through this proxy already", 508)
        return scheme, host, port, path

    def _route(self, path: str) -> tuple[str, str, int, str]:
        """Reverse mode: the longest matching route prefix decides (routes come sorted)."""
        if _has_dot_segments(path):
            # "/api/../admin" would match /api here and reach /admin upstream.
            raise RemoteProtocolError("dot segments in the path are not allowed", 400)
        for route in self._config.routes:
            if route.matches(path):
                scheme = {"ws": "http", "wss": "https"}.get(route.scheme, route.scheme)
                return scheme, route.host, route.port, route.target(path)
        raise RemoteProtocolError(f"no route for {path.partition('?')[0]}", 404)

    def _new_flow(self, request: Request) -> Flow:
        flow = Flow(id=self._next_flow_id(), request=request, client_address=self._client_address)
        flow.timings.start = self._now
        flow.client_tls = self._client_tls_info
        return flow

    def _send_request_head(self, ex: Exchange, body_length: int | None = None) -> None:
        request = ex.flow.request
        fields, chunked = end_to_end_fields(request.headers.fields, keep_upgrade=ex.upgrade)
        if ex.websocket:
            # We parse frames on both sides; compressed frames would need the
            # negotiated parameters, so compression is not offered upstream.
            fields = [(n, v) for n, v in fields if n.lower() != b"sec-websocket-extensions"]
        if self._config.mode == "reverse":
            fields = self._forwarded_fields(fields)
        moved = self._origin is not None and (request.scheme, request.host, request.port) != self._origin
        if ex.absolute_form or moved or not any(n.lower() == b"host" for n, _ in fields):
            # RFC 9112 3.2.2: the target's authority wins; an HTTP/1.0 request
            # without Host gets one, since we speak HTTP/1.1 upstream.
            fields = replace_field(fields, b"Host", format_authority(request.host, request.port, request.scheme))
        fields.append((b"Via", self._config.via))
        if self._config.forwarded_for and self._client_address is not None and self._config.mode != "reverse":
            append_forwarded_for(fields, self._client_address[0])
        fields = reframe(fields, chunked) if body_length is None else sized(fields, body_length)
        up = self._bind_upstream(request.scheme, request.host, request.port)
        ex.upstream = up
        if up.tls is not None and up.ready:
            ex.flow.server_tls = _tls_info(up)
        # A connection may turn out to be a pooled one only once it is handed
        # over, so keep the request whenever that can still happen.
        may_be_reused = up.reused or not up.connected
        if may_be_reused and self._config.retry_idempotent and request.method in IDEMPOTENT_METHODS:
            ex.replay = []
        method, target = request.method.encode("ascii"), request.path.encode("latin-1")
        try:
            head = (h11.Request(method=method, target=target, headers=fields) if ex.hooked
                    else h11_request(method, target, fields))
            data = up.conn.send(head)
        except h11.LocalProtocolError as exc:  # only a hook's change can get here
            self._fail_exchange(ex, f"a hook made an invalid request: {exc}")
            self._answer(502, f"a hook made an invalid request: {exc}")
            return
        self._remember(ex, head, 0)
        self._to_upstream(up, data)

    def _forwarded_fields(self, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """X-Forwarded-For/-Proto/-Host, appended to what earlier proxies said."""
        host = next((v for n, v in fields if n.lower() == b"host"), b"")
        proto = b"https" if self._client_tls is not None else b"http"
        client = (self._client_address[0] if self._client_address else "unknown").encode("ascii")
        for name, value in ((b"X-Forwarded-For", client), (b"X-Forwarded-Proto", proto),
                            (b"X-Forwarded-Host", host)):
            if value:
                fields = _append_field(fields, name, value)
        return fields

    # -- responses through hooks ---------------------------------------------

    def _on_request_data(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None:
            return
        _capture(ex.flow.request, data, self._config.body_capture_limit)
        if ex.mocked:
            return
        if ex.request_parts is not None:
            ex.request_parts.append(data)
            ex.parts_size += len(data)
            if ex.parts_size > self._config.hook_body_limit:
                self._stream_request(ex)
            return
        up = ex.upstream
        if up is None:
            return
        event = h11.Data(data=data)
        self._remember(ex, event, len(data))
        self._to_upstream(up, up.conn.send(event))

    def _stream_request(self, ex: Exchange) -> None:
        """The body outgrew the hook limit: send what we hold and stream the rest."""
        parts, ex.request_parts = ex.request_parts or [], None
        self._send_request_head(ex)
        for part in parts:
            self._on_request_data_upstream(ex, part)

    def _on_request_data_upstream(self, ex: Exchange, data: bytes) -> None:
        up = ex.upstream
        if up is not None:
            event = h11.Data(data=data)
            self._remember(ex, event, len(data))
            self._to_upstream(up, up.conn.send(event))

    def _on_request_end(self, event: h11.EndOfMessage) -> None:
        ex = self._exchange
        if ex is None:
            return
        ex.request_complete = True
        if ex.mocked:
            self._send_mock(ex)
            return
        if ex.request_parts is not None:
            request = ex.flow.request
            request.content = b"".join(ex.request_parts)
            request.body_size, request.truncated = len(request.content), False
            ex.request_parts = None
            self._hook("request", ex, self._after_request_hook)
            return
        self._end_request_upstream(ex, event.headers.raw_items())

    def _after_request_hook(self, ex: Exchange, _: Any) -> None:
        if self._intervened(ex):
            return
        body = ex.flow.request.content
        self._send_request_head(ex, body_length=len(body))
        if self._exchange is not ex:
            return  # the head was refused
        if body:
            self._on_request_data_upstream(ex, body)
        self._end_request_upstream(ex, [])

    def _end_request_upstream(self, ex: Exchange, trailers: list[tuple[bytes, bytes]]) -> None:
        up = ex.upstream
        if up is None:
            return
        end = h11.EndOfMessage(headers=trailers)
        self._remember(ex, end, 0)
        self._to_upstream(up, up.conn.send(end))
        if up.ready:  # otherwise it leaves once connected: _upstream_ready stamps it
            ex.flow.timings.request_sent = self._now
        self._arm_read_timer(self._config.read_timeout)

    # -- upstream connections ----------------------------------------------------

    def _bind_upstream(self, scheme: str, host: str, port: int) -> Upstream:
        key = (host, port, scheme in ("https", "wss"))
        up = self._upstream
        if up is not None:
            if up.key == key and up.conn.our_state is h11.IDLE and up.conn.their_state is h11.IDLE:
                return up
            self._release_upstream()
        return self._open_upstream(key, reuse=True)

    def _open_upstream(self, key: UpstreamKey, *, reuse: bool) -> Upstream:
        in_tunnel = self._origin is not None and key[0] == self._origin[1]
        server_name = self._server_name if in_tunnel and self._server_name else key[0]
        # TLS sessions live in the core, so TLS connections are never pooled.
        up = Upstream(next(self._upstream_ids), key, self._now, server_name)
        self._upstream = up
        if self._exchange is not None:
            self._exchange.flow.timings.connect_start = self._now
        self._emit(cmd.OpenUpstream(upstream=up.id, host=key[0], port=key[1], tls=key[2],
                                    reuse=reuse and not key[2]))
        return up

    def _release_upstream(self) -> None:
        """Give the bound upstream back: to the pool if it sits between messages."""
        up = self._upstream
        if up is None:
            return
        self._flush()
        # A relayed tunnel's connection carries bytes h11 never saw: never pool it.
        relayed = self._phase in (Phase.TUNNEL, Phase.CONNECTING, Phase.SNIFF, Phase.WEBSOCKET)
        idle = (up.ready and up.tls is None and not relayed and up.conn.our_state is h11.IDLE
                and up.conn.their_state is h11.IDLE)
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
        elif up.key[2]:
            self._start_upstream_tls(up)
        else:
            self._upstream_ready(up)

    def _start_upstream_tls(self, up: Upstream) -> None:
        context = self._config.upstream_context
        if context is None:
            self._upstream_failed(up, "no TLS context for HTTPS upstreams was configured")
            return
        up.tls = TLSEndpoint(context, server_side=False, server_hostname=up.server_name)
        self._send_upstream_raw(up, up.tls.start())

    def _upstream_ready(self, up: Upstream) -> None:
        up.ready = True
        ex = self._exchange
        if ex is not None and ex.request_complete and ex.flow.timings.request_sent is None:
            ex.flow.timings.request_sent = self._now
        if up.pending:
            self._upstream_buf.extend(up.pending)
            up.pending, up.pending_size = [], 0
        self._resume_client("pending")

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
        data, closed = event.data, False
        if up.tls is not None:
            decrypted = self._decrypt_upstream(up, data)
            if decrypted is None:
                return
            data, closed = decrypted
        if self._phase is Phase.TUNNEL:
            self._relay_to_client(data)
            return
        if self._phase is Phase.WEBSOCKET:
            self._ws_receive(SERVER, data if data or not closed else None)
            if closed and data:
                self._ws_receive(SERVER, None)
            return
        ex = self._exchange
        if ex is None or ex.upstream is not up:
            # Nobody asked this connection anything (a server's "408" before
            # it closes an idle connection, say): it cannot be trusted again.
            self._drop_upstream(up)
            return
        ex.upstream_bytes += len(data)
        if data:
            up.conn.receive_data(data)
        if closed:
            up.conn.receive_data(b"")
        self._pump_upstream(up)

    def _decrypt_upstream(self, up: Upstream, data: bytes) -> tuple[bytes, bool] | None:
        tls = up.tls
        assert tls is not None
        try:
            result = tls.receive(data)
        except TLSError as exc:
            what = "TLS with the upstream failed" if up.ready else "TLS handshake with the upstream failed"
            self._upstream_failed(up, f"{what}: {exc.reason}")
            return None
        self._send_upstream_raw(up, result.to_send)
        if result.handshake_done:
            flow = self._exchange.flow if self._exchange is not None else None
            if flow is not None:
                flow.timings.tls_end = self._now
                flow.server_tls = _tls_info(up)
            self._upstream_ready(up)
        return result.plaintext, result.closed

    def _on_upstream_closed(self, event: ev.ConnectionClosed) -> None:
        up = self._current_upstream(event.upstream or 0)
        if up is None:
            return
        if self._phase is Phase.TUNNEL:
            self._finish_tunnel(None)
            return
        if self._phase is Phase.WEBSOCKET:
            self._ws_receive(SERVER, None)
            return
        up.conn.receive_data(b"")
        self._pump_upstream(up)

    def _pump_upstream(self, up: Upstream) -> None:
        while self._upstream is up and self._waiting is None:
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
        if self._waiting is not None and self._upstream is up and not self._upstream_paused:
            self._upstream_paused = True  # bound what piles up while a hook runs
            self._emit(cmd.PauseUpstream(upstream=up.id))

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
        ex.flow.response = ex.upstream_response = response
        ex.flow.timings.response_start = self._now
        ex.response_started = True
        self._hook("response_headers", ex, self._after_response_headers)

    def _after_response_headers(self, ex: Exchange, _: Any) -> None:
        flow = ex.flow
        if flow.killed or (flow.response is not ex.upstream_response):
            ex.discard_response = True  # the upstream's body goes nowhere now
            if flow.killed:
                self._kill_response(ex)
            return
        response = flow.response
        if "response" in self._config.hooks and response is not None and not response.stream:
            ex.response_parts = []
        else:
            self._send_response_head(ex, None)

    def _send_response_head(self, ex: Exchange, body_length: int | None) -> None:
        response = ex.flow.response
        assert response is not None
        fields, chunked = end_to_end_fields(response.headers.fields)
        ex.response_chunked = chunked and body_length is None
        fields = reframe(fields, chunked) if body_length is None else sized(fields, body_length)
        if body_length is None and "response_chunk" in self._config.hooks:
            # Chunk hooks may change sizes: let h11 frame the body (chunked,
            # or close-delimited for HTTP/1.0) instead of a stale length.
            fields = [(n, v) for n, v in fields if n.lower() != b"content-length"]
        fields.append((b"Via", self._config.via))
        reason = response.reason.encode("latin-1", "replace")
        try:
            head = (h11.Response(status_code=response.status, reason=reason, headers=fields) if ex.hooked
                    else h11_response(response.status, reason, fields))
            self._to_client(self._client.send(head))
        except (h11.LocalProtocolError, ValueError) as exc:  # only a hook's change can get here
            reason_text = f"a hook made an invalid response: {exc}"
            self._fail_exchange(ex, reason_text)
            self._drop_upstream_if_busy()
            self._answer(502, reason_text)

    def _on_response_data(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or ex.flow.response is None or ex.discard_response:
            return
        _capture(ex.flow.response, data, self._config.body_capture_limit)
        if ex.response_parts is not None:
            ex.response_parts.append(data)
            ex.parts_size += len(data)
            if ex.parts_size > self._config.hook_body_limit:
                parts, ex.response_parts = ex.response_parts, None
                self._send_response_head(ex, None)
                for part in parts:
                    self._to_client(self._client.send(h11.Data(data=part)))
        elif "response_chunk" in self._config.hooks:
            self._hook("response_chunk", ex, lambda ex_, result: self._send_chunk(ex_, data, result),
                       payload=data)
        else:
            self._to_client(self._client.send(h11.Data(data=data)))

    def _send_chunk(self, ex: Exchange, original: bytes, result: Any) -> None:
        """Send a chunk as the hooks left it: replaced (bytes), unchanged (None), or dropped (b"")."""
        if ex.flow.killed:
            self._kill_response(ex)
            return
        chunk = original if result is None else result
        if isinstance(chunk, (bytes, bytearray)) and chunk and self._exchange is ex:
            self._to_client(self._client.send(h11.Data(data=bytes(chunk))))

    def _on_response_end(self, up: Upstream, event: h11.EndOfMessage) -> None:
        ex = self._exchange
        if ex is None:
            return
        trailers = event.headers.raw_items()
        if ex.discard_response:
            self._finish_mocked_after_upstream(ex, up)
            return
        if ex.response_parts is not None:
            response = ex.flow.response
            assert response is not None
            response.content = b"".join(ex.response_parts)
            response.body_size, response.truncated = len(response.content), False
            ex.response_parts = None
            self._hook("response", ex, lambda ex_, _: self._after_response_hook(ex_, up))
            return
        if not (trailers and ex.response_chunked and self._client.their_http_version == b"1.1"):
            trailers = []
        self._to_client(self._client.send(h11.EndOfMessage(headers=trailers)))
        self._complete_exchange(ex, up)

    def _after_response_hook(self, ex: Exchange, up: Upstream) -> None:
        flow = ex.flow
        if flow.killed:
            self._kill_response(ex)
            return
        response = flow.response
        assert response is not None
        no_body = ex.flow.request.method == "HEAD" or response.status in (204, 304)
        self._send_response_head(ex, None if no_body else len(response.content))
        if self._exchange is not ex:
            return  # the head was refused
        if response.content and not no_body:
            self._to_client(self._client.send(h11.Data(data=response.content)))
        self._to_client(self._client.send(h11.EndOfMessage()))
        self._complete_exchange(ex, up)

    def _complete_exchange(self, ex: Exchange, up: Upstream | None) -> None:
        flow = ex.flow
        flow.timings.end = self._now
        flow.state = "done"
        self._exchange = None
        self._client_activity = self._now  # idle time counts from the end of the answer
        self._emit(cmd.FlowFinished(flow=flow))
        self._after_exchange(up)

    def _send_mock(self, ex: Exchange) -> None:
        """Answer with the response a hook made; the upstream is not asked."""
        response = ex.flow.response
        assert response is not None
        ex.flow.timings.response_start = self._now
        no_body = ex.flow.request.method == "HEAD" or response.status in (204, 304)
        self._send_response_head(ex, None if no_body else len(response.content))
        if self._exchange is not ex:
            return
        if response.content and not no_body:
            self._to_client(self._client.send(h11.Data(data=response.content)))
        self._to_client(self._client.send(h11.EndOfMessage()))
        up = ex.upstream
        if up is not None and up.conn.our_state is not h11.IDLE:
            self._drop_upstream(up)  # a half-sent request cannot be taken back
            up = None
        self._complete_exchange(ex, up)

    def _finish_mocked_after_upstream(self, ex: Exchange, up: Upstream) -> None:
        """A response hook replaced the upstream's answer: send the replacement."""
        ex.discard_response = False
        ex.upstream = None
        if up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE:
            up.conn.start_next_cycle()
            up.reused = True
        else:
            self._drop_upstream(up)
        self._send_mock(ex)

    def _kill_response(self, ex: Exchange) -> None:
        self._fail_exchange(ex, "killed by a hook")
        self._drop_upstream_if_busy()
        self._close_client()

    def _drop_upstream_if_busy(self) -> None:
        up = self._upstream
        if up is not None and up.conn.our_state is not h11.IDLE:
            self._drop_upstream(up)

    def _after_exchange(self, up: Upstream | None) -> None:
        if up is not None and self._upstream is up:
            reusable = up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE
            # Bytes after a complete response answer nothing we asked: a
            # connection that sends them cannot be trusted with the next request.
            if reusable and not up.conn.trailing_data[0]:
                up.conn.start_next_cycle()
                up.reused = True
            else:
                self._drop_upstream(up)
        client = self._client
        if client.our_state is not h11.DONE or client.their_state is not h11.DONE:
            self._close_client()  # Connection: close, HTTP/1.0, or an unread request body
            return
        client.start_next_cycle()
        self._resume_client("pipeline")
        pipelined, closed = client.trailing_data
        if pipelined or closed:
            self._pump_client()

    def _on_client_backpressure(self, event: ev.ClientBackpressure) -> None:
        self._client_blocked = event.blocked
        up = self._upstream
        if not event.blocked and up is not None:
            up.last_activity = self._now  # a slow reader is not a stalled upstream

    # -- CONNECT and protocol switches ---------------------------------------

    def _on_connect(self, event: h11.Request, fields: list[tuple[bytes, bytes]]) -> None:
        try:
            host, port = parse_authority(event.target, None)
        except RemoteProtocolError as exc:
            self._refuse(400, f"bad CONNECT target: {exc}", f"CONNECT {event.target[:200]!r}")
            return
        request = Request(
            method="CONNECT", scheme="https" if port == 443 else "tcp", host=host, port=port, path="",
            http_version="HTTP/" + event.http_version.decode("ascii"),
            headers=Headers.from_wire(fields), authority=event.target.decode("ascii"),
        )
        flow = self._new_flow(request)
        flow.kind = "tunnel"
        flow.state = "new"
        self._tunnel = flow
        self._hook("tunnel", Exchange(flow, absolute_form=False), self._after_tunnel_hook)

    def _after_tunnel_hook(self, ex: Exchange, _: Any) -> None:
        flow = ex.flow
        request = flow.request
        if flow.killed:
            self._tunnel = None
            self._end_flow(flow, "killed by a hook")
            self._close_client()
            return
        if flow.response is not None:  # a hook answered the CONNECT itself (e.g. block)
            self._tunnel = None
            ex.upstream_response = None
            self._send_mock_answer(flow)
            return
        intercept = self._should_intercept(request.host, request.port)
        if flow.intercept is not None:
            intercept = flow.intercept and self._config.server_context is not None
        if intercept:
            self._answer_connect()
            self._phase = Phase.SNIFF
            self._server_name = request.host
            self._emit(cmd.StartTimer(name="sniff", delay=self._config.sniff_timeout))
            if self._early:
                self._sniff(b"")
            return
        flow.state = "open"
        self._phase = Phase.CONNECTING
        self._emit(cmd.FlowStarted(flow=flow))
        self._open_upstream((request.host, request.port, False), reuse=False)
        flow.timings.connect_start = self._now

    def _send_mock_answer(self, flow: Flow) -> None:
        """Answer a CONNECT with a hook's response, then close."""
        response = flow.response
        assert response is not None
        fields = sized(response.headers.fields, len(response.content)) + [(b"Connection", b"close")]
        try:
            head = h11.Response(status_code=response.status, headers=fields,
                                reason=response.reason.encode("latin-1", "replace"))
        except h11.LocalProtocolError as exc:
            self._end_flow(flow, f"a hook made an invalid response: {exc}")
            self._close_client()
            return
        flow.state = "open"
        self._emit(cmd.FlowStarted(flow=flow))
        self._end_flow(flow, None)
        self._send_whole_answer(head, response.content)

    def _should_intercept(self, host: str, port: int) -> bool:
        config = self._config
        if not config.intercept or config.server_context is None:
            return False
        return config.ignore_host is None or not config.ignore_host(host, port)

    def _answer_connect(self) -> None:
        """``200 Connection established``; what the client sent after it is kept."""
        ok = h11.Response(status_code=200, headers=[], reason=b"Connection established")
        self._to_client(self._client.send(ok))
        self._tunnel_answered = True
        self._early = self._client.trailing_data[0]
        if self._tunnel is not None:
            self._tunnel.response = Response(status=200, reason="Connection established")
            self._tunnel.timings.response_start = self._now

    def _start_tunnel(self, up: Upstream) -> None:
        up.ready = True
        if not self._tunnel_answered:
            self._answer_connect()
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
        self._exchange = None
        self._early = self._client.trailing_data[0]
        upstream_rest = up.conn.trailing_data[0]
        if ex.websocket:
            self._start_websocket(ex, upstream_rest)
            return
        ex.flow.kind = "upgrade"
        self._tunnel = ex.flow
        self._enter_tunnel()
        self._relay_to_client(upstream_rest)

    def _start_websocket(self, ex: Exchange, upstream_rest: bytes) -> None:
        ex.flow.kind = "websocket"
        ex.flow.websocket = WebSocketData()
        self._ws = WebSocketRelay()
        self._ws_exchange = ex
        self._phase = Phase.WEBSOCKET
        self._resume_client("pipeline")
        early, self._early = self._early, b""
        if early:
            self._ws.receive(CLIENT, early)
        if upstream_rest:
            self._ws.receive(SERVER, upstream_rest)
        self._pump_ws()

    def _ws_receive(self, side: str, data: bytes | None) -> None:
        if self._ws is None:
            return
        self._ws.receive(side, data)
        if self._waiting is None:
            self._pump_ws()
            return
        # A hook is deciding on an earlier message: hold both sides meanwhile.
        self._pause_client("hook")
        up = self._upstream
        if up is not None and not self._upstream_paused:
            self._upstream_paused = True
            self._emit(cmd.PauseUpstream(upstream=up.id))

    def _ws_client_bytes(self, data: bytes) -> None:
        if self._client_tls is not None:
            decrypted = self._decrypt_client(data)
            if decrypted is None:
                return
            data, closed = decrypted
            if data:
                self._ws_receive(CLIENT, data)
            if closed:
                self._ws_receive(CLIENT, None)
            return
        self._ws_receive(CLIENT, data)

    def _pump_ws(self) -> None:
        ws = self._ws
        while ws is not None and ws.pending and self._waiting is None and self._ws is ws:
            side, event = ws.pending.popleft()
            self._ws_event(side, event)
        if self._ws is not None and self._ws.finished():
            self._end_websocket(None)

    def _ws_event(self, side: str, event: Any) -> None:
        ws, ex = self._ws, self._ws_exchange
        assert ws is not None and ex is not None
        if isinstance(event, (TextMessage, BytesMessage)):
            self._ws_data(side, event)
        elif isinstance(event, (Ping, Pong)):
            self._ws_record(message_of(side, event, self._now))
            self._ws_send(_other(side), type(event)(payload=bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            self._ws_close(side, event)

    def _ws_data(self, side: str, event: TextMessage | BytesMessage) -> None:
        ws = self._ws
        assert ws is not None
        parts = ws.fragments[side]
        parts.append(event.data if isinstance(event.data, str) else bytes(event.data))
        hooked = "websocket_message" in self._config.hooks
        size = sum(len(p) for p in parts)
        if not event.message_finished:
            if not hooked or size > self._config.hook_body_limit:
                # Stream what we have: the message is too large to hold (or nobody asked).
                for part in parts:
                    self._ws_send(_other(side), outgoing(part, finished=False))
                ws.fragments[side] = []
                self._ws_streamed[side] = self._ws_streamed.get(side, 0) + size
            return
        streamed = self._ws_streamed.pop(side, 0)
        message = data_message(side, parts, self._now)
        ws.fragments[side] = []
        if streamed:
            self._ws_send(_other(side), outgoing(message.content, finished=True))
            message.size += streamed
            self._ws_record(message)
        elif hooked:
            ex = self._ws_exchange
            assert ex is not None
            self._hook("websocket_message", ex, lambda ex_, result: self._ws_after_hook(message, result),
                       payload=message)  # type: ignore[arg-type]
        else:
            self._ws_forward(message)

    def _ws_after_hook(self, message: WebSocketMessage, result: Any) -> None:
        if isinstance(result, (str, bytes)):
            message.content = result
        self._ws_forward(message)
        flow = self._ws_exchange.flow if self._ws_exchange is not None else None
        data = flow.websocket if flow is not None else None
        if isinstance(data, WebSocketData):
            outbox, data.outbox = data.outbox, []
            for to, content in outbox:
                injected = WebSocketMessage(_other(to), "text" if isinstance(content, str) else "binary",
                                            content, self._now, len(content), injected=True)
                self._ws_forward(injected)

    def _ws_forward(self, message: WebSocketMessage) -> None:
        self._ws_record(message)
        if not message.dropped:
            self._ws_send(_other(message.direction), outgoing(message.content))

    def _ws_record(self, message: WebSocketMessage | None) -> None:
        ex = self._ws_exchange
        if message is not None and ex is not None and isinstance(ex.flow.websocket, WebSocketData):
            ex.flow.websocket.record(message)

    def _ws_send(self, to: str, event: Any) -> None:
        ws = self._ws
        if ws is None:
            return
        data = ws.send(to, event)
        self._ws_write(to, data)

    def _ws_write(self, to: str, data: bytes) -> None:
        if not data:
            return
        if to == CLIENT:
            self._to_client(data)
        elif self._upstream is not None:
            self._to_upstream(self._upstream, data)

    def _ws_close(self, side: str, event: CloseConnection) -> None:
        ws, ex = self._ws, self._ws_exchange
        assert ws is not None and ex is not None
        data = ex.flow.websocket
        assert isinstance(data, WebSocketData)
        if event.code == 1006 or ws.is_protocol_error(side, event):
            lost = event.code == 1006
            reason = (f"the {side} closed the connection without a close frame" if lost
                      else f"the {side} broke the WebSocket protocol: {event.reason}")
            if not lost:
                # wsproto names the fault: 1007 bad UTF-8, 1009 too big, else 1002.
                code = event.code if event.code in (1002, 1007, 1009) else 1002
                self._ws_write(side, ws.close_frame(side, code, "protocol error"))
            self._ws_write(_other(side), ws.close_frame(_other(side), 1001 if lost else 1002,
                                                        "the other side went away" if lost else "protocol error"))
            if data.closed_by is None:  # a close frame seen before the TCP close says more
                data.close_code, data.closed_by = event.code, side
            self._end_websocket(None if lost else reason)
            return
        if data.closed_by is None:
            data.close_code, data.close_reason, data.closed_by = event.code, event.reason or "", side
        self._ws_record(message_of(side, event, self._now))
        self._ws_write(_other(side), ws.close_frame(_other(side), event.code, event.reason or ""))

    def _ws_idle_close(self) -> None:
        """Both peers fell silent: say goodbye properly (1001) on both sides."""
        ws, ex = self._ws, self._ws_exchange
        if ws is not None:
            for side in (CLIENT, SERVER):
                self._ws_write(side, ws.close_frame(side, 1001, "idle timeout"))
        if ex is not None and isinstance(ex.flow.websocket, WebSocketData):
            ex.flow.websocket.close_code = ex.flow.websocket.close_code or 1001
            ex.flow.websocket.close_reason = ex.flow.websocket.close_reason or "idle timeout"
        self._end_websocket(None)

    def _end_websocket(self, error: str | None) -> None:
        ex = self._ws_exchange
        self._ws, self._ws_exchange = None, None
        if ex is not None:
            self._end_flow(ex.flow, error)
        self._close_client()

    # -- WebSocket -----------------------------------------------------------------

    def _enter_tunnel(self) -> None:
        self._phase = Phase.TUNNEL
        early, self._early = self._early, b""
        self._resume_client("pipeline")
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
        flow, self._tunnel = self._tunnel, None
        if flow is not None:
            self._end_flow(flow, error)
        self._close_client()

    def _fail_tunnel(self, reason: str, status: int) -> None:
        flow, self._tunnel = self._tunnel, None
        if flow is not None:
            self._end_flow(flow, reason)
        self._phase = Phase.HTTP  # so the answer goes out through h11
        if self._tunnel_answered:
            self._close_client()  # the 200 is out: closing is all that is left
        else:
            self._answer(status, reason)

    def _end_flow(self, flow: Flow, error: str | None) -> None:
        if flow.state == "new":  # an intercepted CONNECT that never became visible
            self._emit(cmd.FlowStarted(flow=flow))
        flow.timings.end = self._now
        flow.error = error
        flow.state = "error" if error else "done"
        self._emit(cmd.FlowFinished(flow=flow))

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

    def _refuse(self, status: int, reason: str, what: str) -> None:
        """Answer a request that never became a flow, and say so in the log."""
        client = f"{self._client_address[0]}:{self._client_address[1]}" if self._client_address else "client"
        self._log("info", f"refused {what} from {client}: {status} {reason}")
        self._answer(status, reason)

    def _answer(self, status: int, message: str) -> None:
        """Answer the current request ourselves, then close the connection."""
        response, body = plain_answer(status, message)
        self._send_whole_answer(response, body)

    def _send_whole_answer(self, response: h11.Response, body: bytes) -> None:
        client = self._client
        if self._head_request:
            body = b""  # RFC 9110 9.3.2: the same head as GET, never a body
        try:
            parts = [client.send(response)]
            if client.our_state is h11.SEND_BODY:
                if body:
                    parts.append(client.send(h11.Data(data=body)))
                parts.append(client.send(h11.EndOfMessage()))
            data = b"".join(p for p in parts if p)
        except h11.LocalProtocolError:
            data = _raw_response(response, body)  # h11 is past the point of a clean answer
        self._to_client(data)
        self._close_client()

    # -- endings -----------------------------------------------------------------

    def _fail_exchange(self, ex: Exchange, reason: str) -> None:
        if self._exchange is ex:
            self._exchange = None
        self._end_flow(ex.flow, reason)

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
        if self._client_tls is not None:
            self._flush()
            self._send_client_raw(self._client_tls.close())
            self._client_tls = None
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
        elif event.timer == "sniff" and self._phase is Phase.SNIFF and not self._early:
            self._tunnel_raw()  # the client waits for the server to speak first

    def _check_read_timeout(self) -> None:
        ex, timeout = self._exchange, self._config.read_timeout
        up = ex.upstream if ex is not None else None
        if ex is None or up is None:
            return
        waited = self._now - up.last_activity
        if up.connected and not up.ready and waited >= timeout:
            self._upstream_failed(up, f"TLS handshake with the upstream took over {timeout:g} s", 504)
            return
        if not up.ready or self._client_blocked or self._waiting is not None:
            # Connecting (the transport times that), the client is not
            # reading, or a hook runs: none of that is the upstream's delay.
            self._arm_read_timer(timeout)
            return
        if waited < timeout:
            self._arm_read_timer(timeout - waited)
        elif ex.response_started:
            self._upstream_failed(up, f"upstream stalled: no data for {timeout:g} s")
        else:
            self._upstream_failed(up, f"upstream did not answer within {timeout:g} s", 504)

    def _check_idle_timeout(self) -> None:
        if self._phase is Phase.CLOSED:
            return
        timeout = self._config.idle_timeout
        idle = self._now - self._client_activity
        if self._phase in (Phase.TUNNEL, Phase.WEBSOCKET) and self._upstream is not None:
            idle = min(idle, self._now - self._upstream.last_activity)
        ex = self._exchange
        # While the upstream owes the answer, the read timer watches instead.
        awaiting_upstream = (ex is not None and ex.request_complete) or self._phase is Phase.CONNECTING
        if awaiting_upstream or idle < timeout:
            self._arm_idle_timer(timeout if awaiting_upstream else timeout - idle)
        elif ex is not None and not ex.response_started:
            self._fail_exchange(ex, "the client stopped sending its request")
            self._answer(408, "the request did not arrive in time")
        elif self._phase is Phase.HTTP and self._client.their_state is h11.SEND_BODY:
            self._answer(408, "the request did not arrive in time")
        elif self._phase is Phase.TUNNEL:
            self._abort("idle timeout")
        elif self._phase is Phase.WEBSOCKET:
            self._ws_idle_close()
        else:
            self._close_client()

    def _on_hook_returned(self, event: ev.HookReturned) -> None:
        waiting = self._waiting
        if waiting is None or waiting[0] != event.call:
            return
        self._waiting = None
        _, ex, then = waiting
        if ex.flow.state in ("open", "new"):  # not ended while the hook ran
            then(ex, event.result)
        self._continue()

    def _continue(self) -> None:
        """After a hook: take up what arrived meanwhile, on both sides."""
        if self._waiting is not None:
            return
        up = self._upstream
        if up is not None and self._upstream_paused:
            self._upstream_paused = False
            self._emit(cmd.ResumeUpstream(upstream=up.id))
        if self._phase is Phase.WEBSOCKET:
            self._resume_client("hook")
            self._pump_ws()
            return
        if self._phase is Phase.HTTP:
            self._resume_client("hook")
            if up is not None:
                self._pump_upstream(up)
            if self._waiting is None and self._phase is Phase.HTTP:
                self._pump_client()

    def _intervened(self, ex: Exchange) -> bool:
        """Act on kill() or respond() from a hook; True if the exchange is taken care of."""
        flow = ex.flow
        if flow.killed:
            self._fail_exchange(ex, "killed by a hook")
            self._drop_upstream_if_busy()
            self._close_client()
            return True
        if flow.response is not None and flow.response is not ex.upstream_response:
            ex.mocked = True
            if ex.request_complete:
                self._send_mock(ex)
            return True
        return False

    def _after_request_headers(self, ex: Exchange, _: Any) -> None:
        if self._intervened(ex):
            return
        if "request" in self._config.hooks:
            ex.request_parts = []  # hold the body: the hook wants all of it
            if self._client.they_are_waiting_for_100_continue:
                # Nobody upstream will say "100" before it sees the head: we do.
                self._to_client(self._client.send(h11.InformationalResponse(status_code=100, headers=[])))
        else:
            self._send_request_head(ex)

    # -- requests through hooks -------------------------------------------------

def _capture(message: Request | Response, data: bytes, limit: int) -> None:
    """Count body bytes and keep a prefix of at most ``limit`` of them."""
    kept = len(message.content)
    message.body_size += len(data)
    if kept < limit:
        message.content = message.content + data[: limit - kept] if kept else data[:limit]
    if message.body_size > limit:
        message.truncated = True


def _append_field(fields: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    """Append to a comma-list field, or add it."""
    lower = name.lower()
    # The last line of a repeated field is the end of the list: append there,
    # or a client could put its own address last (RFC 9110 5.3).
    for index in range(len(fields) - 1, -1, -1):
        existing, old = fields[index]
        if existing.lower() == lower:
            fields[index] = (existing, old + b", " + value)
            return fields
    fields.append((name, value))
    return fields


def _has_dot_segments(path: str) -> bool:
    """Whether the path has "." or ".." segments, percent-encoded or not (RFC 3986 5.2.4)."""
    segments = path.partition("?")[0].replace("%2e", ".").replace("%2E", ".").split("/")
    return any(segment in (".", "..") for segment in segments)


def _head_size(target: bytes, fields: list[tuple[bytes, bytes]]) -> int:
    return len(target) + sum(len(n) + len(v) + 4 for n, v in fields)


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
    ev.ClientBackpressure: ProxyConnection._on_client_backpressure,
}


def _on_closed(self: ProxyConnection, event: ev.ConnectionClosed) -> None:
    if event.upstream is None:
        self._on_client_closed(event)
    else:
        self._on_upstream_closed(event)


_HANDLERS[ev.ConnectionClosed] = _on_closed


def _tls_info(up: Upstream) -> TLSInfo:
    tls = up.tls
    assert tls is not None
    return TLSInfo(sni=up.server_name, version=tls.version, cipher=tls.cipher, alpn=tls.alpn)
