"""ProxyConnection, part: the shared state, output and endings.

Every part of a connection (conn_*.py) is a mixin over ConnectionBase; see
connection.py for the theory of operation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import count
from typing import Any

from ..flow import Flow, Request
from ..vocab import HookName, PauseReason, UpstreamPause
from . import commands as cmd
from .config import ProxyConfig
from .exchange import Exchange, FAILED, SentPart, unbind
from .h1layers import H1ClientLayer
from .h2sides import H2Client
from .http1 import INFO_PAGE, info_page_fields, plain_answer
from .layers import LayerEvent, ResponseHead, StreamReset
from .client_hello import ClientHello
from .socks5 import Reply, Socks5Handshake
from .state import PHASE_TRANSITIONS, Phase, Upstream, UpstreamKey
from .tls import TLSEndpoint
from .tunnel import Tunnel
from .websocket import WebSocketMessage


class ConnectionBase:
    """State and output shared by the parts of a ProxyConnection.

    The annotations below name what each part offers the others, so that
    every part type-checks on its own and the seams between them are written
    down in one place.
    """

    # State one part owns (creates and writes) and the others only read.
    _client: H1ClientLayer | H2Client  # conn_requests.py
    _client_address: tuple[str, int] | None  # conn_requests.py
    _client_activity: float  # conn_requests.py
    _client_blocked: bool  # conn_requests.py
    _proxy_user: str | None  # conn_requests.py
    _tunnel: Tunnel  # conn_tunnels.py: the tunnel's state and the client's TLS endpoint
    _upstreams: dict[int, Upstream]  # conn_upstreams.py
    _h2_upstreams: bool  # conn_upstreams.py: one of them spoke HTTP/2 (_flush takes its bytes)
    _socks: Socks5Handshake | None  # conn_socks5.py
    _calls: dict[int, Exchange]  # conn_lifecycle.py: the exchange each hook call that is out belongs to

    # Methods one part offers the others.
    _route_client_bytes: Callable[[bytes], None]  # connection.py
    _feed_client: Callable[[bytes], None]  # conn_requests.py
    _pump_client: Callable[[], None]  # conn_requests.py
    _pump_upstream: Callable[[Upstream], None]  # conn_responses.py
    _send_mock: Callable[[Exchange], None]  # conn_responses.py
    _kill: Callable[[Exchange], None]  # conn_responses.py
    _on_shape_timer: Callable[[int], None]  # conn_responses.py
    _client_plaintext: Callable[[bytes], tuple[bytes, bool] | None]  # conn_tunnels.py
    _enter_tunnel: Callable[[], None]  # conn_tunnels.py
    _fail_tunnel: Callable[[str, int], None]  # conn_tunnels.py
    _connect_failed: Callable[[Upstream, str, int, Any], None]  # conn_tunnels.py (Any: a vocab.ConnectCause)
    _finish_tunnel: Callable[[str | None], None]  # conn_tunnels.py
    _on_connect: Callable[[int, bytes, bytes, list[tuple[bytes, bytes]]], None]  # conn_tunnels.py
    _relay_to_client: Callable[[bytes], None]  # conn_tunnels.py
    _relay_to_upstream: Callable[[bytes], None]  # conn_tunnels.py
    _sniff: Callable[[bytes], None]  # conn_tunnels.py
    _start_tunnel: Callable[[Upstream], None]  # conn_tunnels.py
    _switch_protocols: Callable[[Upstream, Exchange, ResponseHead], None]  # conn_tunnels.py
    _tunnel_raw: Callable[[], None]  # conn_tunnels.py
    _bind_upstream: Callable[[str, str, int], Upstream]  # conn_upstreams.py
    _for_parent: Callable[[Upstream, Request, list[tuple[bytes, bytes]]], tuple[bytes, list[tuple[bytes, bytes]]]]  # conn_upstreams.py
    _current_upstream: Callable[[int], Upstream | None]  # conn_upstreams.py
    _parent_refused: Callable[[Upstream, ResponseHead], bool]  # conn_upstreams.py
    _drop_upstream: Callable[[Upstream], None]  # conn_upstreams.py
    _drop_upstream_if_busy: Callable[[Upstream | None], None]  # conn_upstreams.py
    _primary: Callable[[], Upstream | None]  # conn_upstreams.py
    _release_upstream: Callable[[], None]  # conn_upstreams.py
    def _resume_upstreams(self, reason: UpstreamPause = "hook") -> None:
        raise NotImplementedError  # conn_upstreams.py

    def _pause_upstream(self, up: Upstream, reason: UpstreamPause = "hook") -> None:
        raise NotImplementedError  # conn_upstreams.py

    def _resume_upstream(self, up: Upstream, reason: UpstreamPause) -> None:
        raise NotImplementedError  # conn_upstreams.py
    _arm_read_timer: Callable[[float], None]  # conn_lifecycle.py
    _arm_idle_timer: Callable[[float], None]  # conn_lifecycle.py
    _restart_client_parser: Callable[[], None]  # conn_requests.py
    _touch_client: Callable[[], None]  # conn_requests.py
    _relay_upgrade: Callable[[Flow, bytes], None]  # conn_tunnels.py
    _init_client_side: Callable[[tuple[str, int] | None], None]  # conn_requests.py
    _init_tunnels: Callable[[], None]  # conn_tunnels.py
    _init_upstreams: Callable[[], None]  # conn_upstreams.py
    _init_lifecycle: Callable[[], None]  # conn_lifecycle.py
    _init_websockets: Callable[[], None]  # conn_websockets.py
    _init_socks5: Callable[[], None]  # conn_socks5.py
    _set_proxy_user: Callable[[str], None]  # conn_requests.py
    _begin_tunnel: Callable[[Exchange], None]  # conn_tunnels.py
    _speak_h2: Callable[[], None]  # conn_requests.py
    _frame: Callable[[Exchange, Upstream, SentPart], None]  # conn_upstreams.py
    _exchange_error: Callable[[Exchange, int, str], None]  # conn_requests.py
    _awaiting_alpn: Callable[[], bool]  # conn_alpn.py
    _alpn_chosen: Callable[[Upstream], None]  # conn_alpn.py
    _alpn_failed: Callable[[Upstream, str, int], None]  # conn_alpn.py
    _take_alpn_failure: Callable[[], tuple[str, int] | None]  # conn_alpn.py
    _alpn_failure: tuple[str, int] | None  # conn_alpn.py
    _set_inner_origin: Callable[[str, str, int, str], None]  # conn_tunnels.py
    _init_alpn: Callable[[], None]  # conn_alpn.py
    _start_client_tls: Callable[[str | None, tuple[str, ...] | None], None]  # conn_tunnels.py
    _upstream_first: Callable[[ClientHello], bool]  # conn_alpn.py
    _abandon_upstream: Callable[[Exchange, Upstream], None]  # conn_upstreams.py
    _upstream_stream_failed: Callable[[Exchange, Upstream, StreamReset], None]  # conn_upstreams.py
    _upstream_data_sent_on: Callable[[Exchange, Upstream, int], None]  # conn_responses.py
    _client_took: Callable[[Exchange], None]  # conn_responses.py
    _socks_reply: Callable[[Reply], bytes]  # conn_socks5.py
    _pump_ws: Callable[[], None]  # conn_websockets.py
    _start_websocket: Callable[[Exchange, bytes], None]  # conn_websockets.py
    _ws_client_bytes: Callable[[bytes], None]  # conn_websockets.py
    _ws_idle_close: Callable[[], None]  # conn_websockets.py
    _ws_receive: Callable[[str, bytes | None], None]  # conn_websockets.py
    _start_hold: Callable[[Exchange, Any, Any], bool]  # conn_holds.py (a PendingHook, the hook's result)
    _on_exchange_timer: Callable[[Any], None]  # conn_holds.py (a TimerFired keyed by xid)
    _on_client_eof_held: Callable[[], bool]  # conn_holds.py
    _pace_upload: Callable[[Exchange, bytes], bool]  # conn_holds.py
    _upload_end_waits: Callable[[Exchange], bool]  # conn_holds.py
    _stream_body: Callable[[Exchange, object], None]  # conn_streams.py

    # Seams with keyword or default arguments, which Callable cannot
    # express; conn_upstreams.py defines them.
    def _open_upstream(self, key: UpstreamKey, *, reuse: bool, for_exchange: Exchange | None = None) -> Upstream:
        raise NotImplementedError

    def _hook(self, name: HookName, ex: Exchange, payload: bytes | WebSocketMessage | None = None) -> None:
        raise NotImplementedError  # conn_lifecycle.py

    def _client_events(self, events: list[LayerEvent], *, any_phase: bool = False) -> None:
        raise NotImplementedError  # connection.py

    def _upstream_events(self, up: Upstream, events: list[LayerEvent]) -> None:
        raise NotImplementedError  # connection.py: a batch of ``up``'s layer events to their handlers

    def _deliver(self, source: Upstream | None, event: LayerEvent) -> None:
        raise NotImplementedError  # connection.py: one layer event to its handler (source None: the client)

    #: What follows each hook, by name: ``(self, ex, result, payload)`` (connection.py's table).
    _after_hooks: Mapping[HookName, Callable[[Any, Exchange, Any, Any], None]]

    def _upstream_failed(self, up: Upstream, reason: str, status: int = 502, *, timeout: bool = False) -> None:
        raise NotImplementedError

    # Reads of the tunnel's state that the request path makes per request.
    @property
    def _client_tls(self) -> TLSEndpoint | None:
        """The client's TLS endpoint (an intercepted tunnel's, or reverse mode's), if it is decrypted."""
        return self._tunnel.tls

    @property
    def _origin(self) -> tuple[str, str, int] | None:
        """Inside an intercepted tunnel: the ``(scheme, host, port)`` every request goes to."""
        return self._tunnel.origin

    def __init__(self, config: ProxyConfig, client_address: tuple[str, int] | None = None) -> None:
        self._config = config
        self._phase = Phase.HTTP
        #: The exchanges in flight, by their id on the client's layer.
        self._exchanges: dict[int, Exchange] = {}
        self._out: list[cmd.Command] = []
        self._client_buf: list[bytes] = []
        #: Upstreams with bytes in ``Upstream.out`` for this ``handle`` call.
        self._dirty: list[Upstream] = []
        self._next_flow_id = config.next_flow_id or count(1).__next__
        self._now = 0.0
        self._pause_reasons: set[PauseReason] = set()
        # Each part creates (and alone writes) its own state.
        self._init_client_side(client_address)
        self._init_tunnels()
        self._init_upstreams()
        self._init_lifecycle()
        self._init_websockets()
        self._init_socks5()
        self._init_alpn()

    def _begin(self, now: float) -> None:
        """An event arrived at ``now`` (the core has no clock of its own)."""
        self._now = now

    def _take_commands(self) -> list[cmd.Command]:
        """The commands of this ``handle`` call, sends joined per peer."""
        self._flush()
        out, self._out = self._out, []
        return out

    def _enter(self, phase: Phase) -> None:
        """Move the connection to ``phase``; the one place that checks the table."""
        if phase not in PHASE_TRANSITIONS[self._phase]:
            raise RuntimeError(f"connection phase {self._phase.name} cannot become {phase.name}")
        self._phase = phase

    def _hook_blocks_client(self) -> bool:
        """A hook holds the client's bytes: HTTP/1 (one exchange at a time); an HTTP/2 stream waits alone."""
        return bool(self._calls) and not self._client.multiplexed

    def _add_exchange(self, ex: Exchange) -> None:
        self._exchanges[ex.xid] = ex

    def _remove_exchange(self, ex: Exchange) -> None:
        """``ex`` is over (done, failed, or handed to a tunnel or a WebSocket)."""
        if self._exchanges.get(ex.xid) is ex:
            del self._exchanges[ex.xid]
            self._client.forget(ex.xid)
        unbind(ex)

    def _current(self) -> Exchange | None:
        """The exchange in flight, for what HTTP/1 has one of (timeouts, a client's error)."""
        exchanges = self._exchanges
        return next(iter(exchanges.values())) if exchanges else None

    def phase(self) -> Phase:
        return self._phase

    def _emit(self, command: cmd.Command) -> None:
        self._flush()
        self._out.append(command)

    def _flush(self) -> None:
        # The client layer's bytes: HTTP/1 writes them into _client_buf (its sink) as
        # it frames; HTTP/2's are taken here, with what h2 wrote on its own (SETTINGS,
        # PING, WINDOW_UPDATE). An upstream's HTTP/1 bytes are taken after each part
        # of a request (_frame); its HTTP/2 ones here too.
        if self._client.multiplexed:
            framed = self._client.bytes_to_send()
            if framed:
                self._client_buf.append(framed)
        if self._h2_upstreams:
            for up in self._upstreams.values():
                if up.layer.multiplexed:
                    framed = up.layer.bytes_to_send()
                    if framed:
                        self._to_upstream(up, framed)
        buf = self._client_buf  # cleared, never replaced: the HTTP/1 client layer writes into it
        if buf:
            data = b"".join(buf) if len(buf) > 1 else buf[0]
            buf.clear()
            tls = self._tunnel.tls
            if tls is not None:
                data = tls.send(data)
            self._out.append(cmd.SendToClient(data=data))
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            for up in dirty:
                data = b"".join(up.out) if len(up.out) > 1 else up.out[0]
                up.out.clear()
                if up.id not in self._upstreams:
                    continue  # dropped meanwhile: nothing goes to a closed connection
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
            if not up.out:
                self._dirty.append(up)
            up.out.append(data)
            return
        up.pending.append(data)
        up.pending_size += len(data)
        if up.pending_size > self._config.pending_limit:
            self._pause_client("pending")

    def _pause_client(self, reason: PauseReason) -> None:
        """Stop reading the client for ``reason`` (pipeline, pending, hook)."""
        if not self._pause_reasons:
            self._emit(cmd.PauseClient())
        self._pause_reasons.add(reason)

    def _resume_client(self, reason: PauseReason) -> None:
        """Read again once no reason to pause is left."""
        if reason in self._pause_reasons:
            self._pause_reasons.discard(reason)
            if not self._pause_reasons:
                self._emit(cmd.ResumeClient())

    def _log(self, level: str, message: str) -> None:
        self._emit(cmd.Log(level=level, message=message))

    def _new_flow(self, request: Request) -> Flow:
        flow = Flow(id=self._next_flow_id(), request=request, client_address=self._client_address)
        flow.timings.start = self._now
        flow.client_tls = self._tunnel.tls_info
        flow.proxy_user = self._proxy_user
        return flow

    def _end_flow(self, flow: Flow, error: str | None) -> None:
        if flow.state == "new":  # an intercepted CONNECT that never became visible
            self._emit(cmd.FlowStarted(flow=flow))
        flow.timings.end = self._now
        flow.error = error
        flow.state = "error" if error else "done"
        self._emit(cmd.FlowFinished(flow=flow))

    def _fail_exchange(self, ex: Exchange, reason: str) -> None:
        if ex.live:
            ex.enter(FAILED)
        self._remove_exchange(ex)
        self._end_flow(ex.flow, reason)

    def _fail_all(self, reason: str) -> None:
        for ex in list(self._exchanges.values()):
            self._fail_exchange(ex, reason)

    def _close_client(self, reset: bool = False) -> None:
        if self._phase is Phase.CLOSED:
            return
        self._fail_all("connection closed before the exchange completed")
        self._release_upstream()
        if self._client.multiplexed:
            self._client.shutdown()  # GOAWAY: the client knows no stream of it goes on
        if self._tunnel.tls is not None:
            self._flush()
            if not reset:  # a reset is abortive: no close_notify, as from a peer that crashed
                self._send_client_raw(self._tunnel.close_client_tls())
        self._enter(Phase.CLOSED)
        self._emit(cmd.CloseClient(reset=reset))

    def _abort(self, reason: str) -> None:
        self._fail_all(reason)
        if self._tunnel.flow is not None:
            self._finish_tunnel(None if self._phase is Phase.TUNNEL else reason)
        self._close_client()

    def _internal_error(self, exc: Exception) -> None:
        import traceback

        self._client_buf.clear()
        for up in self._dirty:
            up.out = []
        self._dirty = []
        self._out.append(cmd.Log(level="error", message="internal error: " + "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))))
        for ex in list(self._exchanges.values()):
            self._remove_exchange(ex)
            self._end_flow(ex.flow, f"internal error: {exc!r}")
        if self._phase is not Phase.CLOSED:
            self._release_upstream()
            self._enter(Phase.CLOSED)
            self._out.append(cmd.CloseClient())

    def _serve_info(self, path: str, xid: int | None = None) -> None:
        config = self._config
        if path == "/cert/pem" and config.ca_cert_pem:
            body, ctype = config.ca_cert_pem, b"application/x-pem-file"
        elif path == "/cert/cer" and config.ca_cert_der:
            body, ctype = config.ca_cert_der, b"application/pkix-cert"
        else:
            body, ctype = INFO_PAGE.encode(), b"text/html; charset=utf-8"
        fields = info_page_fields(body, ctype) + [(b"Connection", b"close")]
        self._send_whole_answer(ResponseHead(status=200, reason=b"OK", headers=fields), body, xid)

    def _refuse(self, status: int, reason: str, what: str, xid: int | None = None) -> None:
        """Answer a request that never became a flow, and say so in the log."""
        client = f"{self._client_address[0]}:{self._client_address[1]}" if self._client_address else "client"
        self._log("info", f"refused {what} from {client}: {status} {reason}")
        self._answer(status, reason, xid)

    def _answer(self, status: int, message: str, xid: int | None = None) -> None:
        """Answer a request ourselves: HTTP/1 then closes the connection, HTTP/2 ends the stream ``xid``."""
        response, body = plain_answer(status, message, close=not self._client.multiplexed)
        head = ResponseHead(status=status, reason=response.reason, headers=response.headers.raw_items())
        self._send_whole_answer(head, body, xid)

    def _send_whole_answer(self, head: ResponseHead, body: bytes, xid: int | None = None) -> None:
        self._client.send_whole_answer(head, body, xid)
        if not self._client.multiplexed:
            self._close_client()

    def _end_stream_badly(self, ex: Exchange) -> None:
        """A response cut short: never let it look complete (HTTP/1 closes; HTTP/2 resets the stream)."""
        if self._client.multiplexed:
            self._client.reset(ex.xid, "the answer was cut short")
        else:
            self._close_client()
