"""ProxyConnection, part: the client side: parsing requests and sending them on.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from typing import Any

from ..flow import Request
from ..headers import wire_headers
from . import commands as cmd, events as ev
from .base import ConnectionBase
from .errors import ProxyError, RemoteProtocolError
from .exchange import Exchange, FORWARDING, MOCKED, SentEnd, bind, set_held_body
from .h1layers import H1ClientLayer, check_request_head
from .alpn import h2_enabled
from .h2sides import H2Client
from .h2translate import strip_h2c_upgrade
from .http2 import starts_with_h2_preface
from .layers import DataReceived, HeadReceived, LayerEvent, MessageEnded, RequestHead, ResponseHead
from .proxyauth import challenge_answer
from .http1 import (
    IDEMPOTENT_METHODS,
    append_to_field,
    asks_for_trailers,
    check_request_framing,
    connection_tokens,
    end_to_end_fields,
    first_value,
    forwarded_fields,
    format_authority,
    has_dot_segments,
    head_size,
    parse_absolute_url,
    reframe,
    replace_field,
    sized,
)
from .state import Phase, tls_info
from .websocket import CLIENT, only_deflate_offers


class Requests(ConnectionBase):
    """The client side: owns the client's protocol layer and what is known of the client.

    The layer (HTTP/1: ``H1ClientLayer`` over h11) frames; this part keeps
    the client's address, when it was last heard from, whether it stopped
    reading (back-pressure) or sent EOF, and who it authenticated as. The
    request direction of the exchange logic lives here.
    """

    def _init_client_side(self, client_address: tuple[str, int] | None) -> None:
        self._client_address = client_address
        self._client = H1ClientLayer(self._config.max_header_size, sink=self._client_buf)
        self._client_eof = False
        self._client_activity = 0.0
        self._client_blocked = False
        #: True while client events are being handled: a nested ask to read
        #: on is noted (``_pump_again``) and done by the running loop.
        self._pumping = False
        self._pump_again = False
        self._queued: list[LayerEvent] = []
        #: A plain reverse listener: the first bytes so far, until they tell whether
        #: the client speaks h2 with prior knowledge (RFC 9113 3.3); None once known.
        self._preface: bytes | None = (
            b"" if self._config.mode == "reverse" and self._config.listen_context is None
            and h2_enabled(self._config.http2) else None)
        #: Who the client authenticated as; with credentials configured, None
        #: means its next request (or SOCKS5 handshake) must authenticate.
        self._proxy_user: str | None = None

    def _restart_client_parser(self) -> None:
        """A fresh client layer: the decrypted content of a tunnel starts its own HTTP."""
        self._client = H1ClientLayer(self._config.max_header_size, sink=self._client_buf)

    def _speak_h2(self) -> None:
        """The client chose h2 (ALPN, or the prior-knowledge preface): streams from here on."""
        self._client = H2Client()

    def _touch_client(self) -> None:
        """Idle time counts from now (the end of an answer)."""
        self._client_activity = self._now

    def _on_client_connected(self, event: ev.ClientConnected) -> None:
        if event.address is not None:
            self._client_address = event.address
        self._client_activity = event.time
        self._arm_idle_timer(self._config.idle_timeout)

    def _on_client_data(self, event: ev.ClientDataReceived) -> None:
        if self._client_eof:
            return  # nothing can follow an EOF; a transport that says so is wrong
        self._client_activity = event.time
        self._route_client_bytes(event.data)

    def _feed_client(self, data: bytes) -> None:
        """Client bytes into its layer (decrypted first inside an intercepted tunnel)."""
        closed = False
        if self._tunnel.tls is not None:  # intercepted: decrypt first (conn_tunnels.py)
            plain = self._client_plaintext(data)
            if plain is None:
                return
            data, closed = plain
        if self._preface is not None:
            data = self._sniff_preface(data, closed)
        events = self._client.receive_data(data) if data else []
        if closed:
            events += self._client.receive_data(b"")
        if self._hook_blocks_client():
            self._pause_client("hook")  # the layer holds the rest until the hook returns
        elif self._client.held_back and self._phase is Phase.HTTP:
            # The client sent more while we still answer: pipelining or bytes
            # after CONNECT/Upgrade. h11 holds them; stop reading.
            self._pause_client("pipeline")
        if events:
            self._run_client_events(events)

    def _sniff_preface(self, data: bytes, closed: bool) -> bytes:
        """Hold the first bytes until they show the h2 preface or cannot; then the layer that speaks them gets them."""
        seen = (self._preface or b"") + data
        verdict = starts_with_h2_preface(seen)
        if verdict is None and not closed:
            self._preface = seen
            return b""
        self._preface = None
        if verdict:
            self._speak_h2()
        return seen

    def _pump_client(self) -> None:
        """Take up what the client layer holds (a pipelined request, the rest after a hook)."""
        if self._phase is not Phase.HTTP or self._hook_blocks_client():
            return
        if self._pumping:
            self._pump_again = True  # the running loop reads on once its events are handled
            return
        self._run_client_events(self._client.pop_events())

    def _run_client_events(self, events: list[LayerEvent]) -> None:
        """Handle client events in order; events and asks to read on that come meanwhile join the loop."""
        if self._pumping:
            self._queued.extend(events)
            return
        self._pumping = True
        try:
            batch: list[LayerEvent] | None = events
            while batch:
                self._client_events(batch)
                batch = None
                if self._queued:  # came while these were handled (rare): a fresh list only then
                    batch, self._queued = self._queued, []
                if self._pump_again and self._phase is Phase.HTTP and not self._hook_blocks_client():
                    self._pump_again = False
                    more = self._client.pop_events()
                    batch = batch + more if batch else more
        finally:
            self._pumping = False

    def _on_client_closed(self, event: ev.ConnectionClosed) -> None:
        # A second orderly EOF says nothing new; a reset after a half-close does.
        if self._phase is Phase.CLOSED or (self._client_eof and not event.aborted):
            return
        self._client_eof = True
        if self._phase is Phase.WEBSOCKET:
            self._ws_receive(CLIENT, None)
            return
        if event.aborted or self._phase is not Phase.HTTP:
            self._abort("client disconnected")
        elif self._client_tls is not None:
            self._feed_client(b"")  # EOF through TLS: a handshake cut short says so
        else:
            self._run_client_events(self._client.receive_data(b""))

    def _on_client_eof(self) -> None:
        """An orderly EOF between messages: finish the answer in flight, then close."""
        if not self._exchanges:
            self._close_client()
        else:
            self._on_client_eof_held()  # a hang ends when its client leaves (conn_holds)

    def _on_client_failed(self, status: int, message: str) -> None:
        """The client's layer refused its bytes (h11's verdict, a chunk size, an HTTP/0.9 line)."""
        if message.startswith("HTTP/0.9") and not self._exchanges:
            self._refuse(status, message, "request line without a version")
            return
        self._client_error(status, message)

    def _exchange_error(self, ex: Exchange, status: int, message: str) -> None:
        """``ex``'s request is refused midway: HTTP/2 answers that stream alone; HTTP/1 answers and closes."""
        if not self._client.multiplexed:
            self._client_error(status, message)
            return
        started, up = ex.response_started, ex.upstream
        self._fail_exchange(ex, f"bad request from client: {message}")
        if up is not None:
            self._abandon_upstream(ex, up)
        if started:
            self._end_stream_badly(ex)
        else:
            self._answer(status, message, ex.xid)

    def _client_error(self, status: int, message: str) -> None:
        ex = self._current()
        if ex is not None:
            started = ex.response_started
            self._fail_exchange(ex, f"bad request from client: {message}")
            if started:
                self._close_client()
                return
            self._answer(status, message)
            return
        self._refuse(status, message, "unparsable request")

    def _on_request(self, ex: Exchange | None, event: HeadReceived) -> None:
        """A request head from the client's layer (``ex`` is None: a new exchange starts here)."""
        xid, head, bodyless = event.xid, event.head, event.end_stream
        assert isinstance(head, RequestHead)
        fields = head.headers
        upgrade = first_value(fields, b"upgrade")
        if upgrade is not None and any(n.lower() == b"upgrade" and b"h2c" in v.lower() for n, v in fields):
            fields = strip_h2c_upgrade(fields)  # never half-honoured: the request goes on as HTTP/1.1
            upgrade = first_value(fields, b"upgrade")
        method = head.method.decode("ascii")
        if head.http_version not in self._client.versions:
            self._refuse(505, f"HTTP/{head.http_version.decode('ascii')} is not supported", head.describe(), xid)
            return
        max_head = self._config.max_header_size
        if self._client.head_bytes > max_head and head_size(head.target, fields) > max_head:
            # h11 bounds only a head that arrives in pieces; one that came
            # whole in a single read is measured here.
            self._answer(431, "request header block too large", xid)
            return
        if self._config.credentials is not None:
            allowed = self._authenticate(fields, head.describe())
            if allowed is None:
                return
            fields = allowed
        origin = self._tunnel.origin
        if method == "CONNECT" and origin is None and self._config.mode != "reverse":
            self._on_connect(xid, head.target, head.http_version, fields)
            return
        try:
            length, _ = check_request_framing(fields, head.http_version)  # refuses smuggling shapes
            limit = self._config.max_request_body
            if limit is not None and length is not None and length > limit:
                raise RemoteProtocolError(f"request body over the limit of {limit} bytes", 413)
            scheme, host, port, path = self._resolve_target(head.target, fields)
        except RemoteProtocolError as exc:
            self._refuse(exc.status, str(exc), head.describe(), xid)
            return
        if scheme == "":
            self._serve_info(path, xid)
            return
        request = Request(
            method=method, scheme=scheme, host=host, port=port, path=path,
            http_version="HTTP/" + head.http_version.decode("ascii"),
            headers=wire_headers(fields),
        )
        reverse = self._config.mode == "reverse"
        ex = Exchange(xid, self._new_flow(request),
                      absolute_form=(origin is None and not reverse) or (reverse and not self._config.keep_host))
        ex.upgrade = upgrade is not None and b"upgrade" in connection_tokens(fields)
        ex.websocket = ex.upgrade and upgrade is not None and b"websocket" in upgrade.lower()
        ex.request_bodyless = bodyless
        self._add_exchange(ex)
        self._emit(cmd.FlowStarted(flow=ex.flow))
        self._hook("request_headers", ex)

    def _authenticate(self, fields: list[tuple[bytes, bytes]], what: str) -> list[tuple[bytes, bytes]] | None:
        """Check ``Proxy-Authorization`` once per connection; the fields without it, or None after a 407.

        The header is addressed to this proxy (RFC 9110 11.7.2): it is removed
        here, so neither the flow (and what is saved of it) nor an upstream
        ever sees the password.
        """
        credentials = self._config.credentials
        value = first_value(fields, b"proxy-authorization")
        rest = fields if value is None else [(n, v) for n, v in fields if n.lower() != b"proxy-authorization"]
        if self._proxy_user is not None or credentials is None or self._config.mode == "reverse":
            return rest
        try:
            user = credentials.authenticate(value)
        except Exception as exc:  # the user's checker: its failure refuses, never crashes
            self._log("error", f"the proxy_auth checker raised {exc!r}; refusing the client")
            user = None
        if user is None:
            self._challenge(what, "wrong user name or password" if value is not None else "no credentials")
            return None
        self._set_proxy_user(user)
        return rest

    def _set_proxy_user(self, user: str) -> None:
        """The client authenticated as ``user`` (an HTTP request's header, or the SOCKS5 handshake)."""
        self._proxy_user = user

    def _challenge(self, what: str, why: str) -> None:
        """``407`` with ``Proxy-Authenticate: Basic``, then close (a client retries on a new connection)."""
        client = f"{self._client_address[0]}:{self._client_address[1]}" if self._client_address else "client"
        self._log("info", f"refused {what} from {client}: 407 proxy authentication required ({why})")
        status, fields, body = challenge_answer()
        self._send_whole_answer(ResponseHead(status=status, headers=fields + [(b"Connection", b"close")],
                                             reason=b"Proxy Authentication Required"), body)

    def _resolve_target(self, target: bytes, fields: list[tuple[bytes, bytes]]) -> tuple[str, str, int, str]:
        """Where a request goes; scheme "" means it is addressed to the proxy itself."""
        origin_form = target.startswith(b"/") or target == b"*"
        origin = self._tunnel.origin
        if origin is not None:
            # Inside an intercepted tunnel everything goes where the CONNECT said.
            scheme, host, port = origin
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
        token = self._config.loop_token
        for name, value in fields:
            if token in value and name.lower() == b"via":  # the cheap test first
                raise RemoteProtocolError("request loop: it came through this proxy already", 508)
        return scheme, host, port, path

    def _route(self, path: str) -> tuple[str, str, int, str]:
        """Reverse mode: the longest matching route prefix decides (routes come sorted)."""
        if has_dot_segments(path):
            # "/api/../admin" would match /api here and reach /admin upstream.
            raise RemoteProtocolError("dot segments in the path are not allowed", 400)
        for route in self._config.routes:
            if route.matches(path):
                scheme = {"ws": "http", "wss": "https"}.get(route.scheme, route.scheme)
                return scheme, route.host, route.port, route.target(path)
        raise RemoteProtocolError(f"no route for {path.partition('?')[0]}", 404)

    def _send_request_head(self, ex: Exchange, body_length: int | None = None) -> None:
        failure = self._take_alpn_failure() if self._alpn_failure is not None else None
        if failure is not None:  # the upstream failed as the tunnel opened: that is this request's answer
            self._fail_exchange(ex, failure[0])
            self._answer(failure[1], failure[0], ex.xid)
            return
        request = ex.flow.request
        fields, chunked = end_to_end_fields(request.headers.fields, keep_upgrade=ex.upgrade)
        if ex.websocket:
            # We parse frames on both sides: only extensions we can parse
            # (permessage-deflate) may be negotiated.
            fields = [(n, only_deflate_offers(v) if n.lower() == b"sec-websocket-extensions" else v)
                      for n, v in fields]
            fields = [(n, v) for n, v in fields if v or n.lower() != b"sec-websocket-extensions"]
        if self._config.mode == "reverse":
            client = self._client_address[0] if self._client_address else "unknown"
            fields = forwarded_fields(fields, client, https=self._client_tls is not None)
        origin = self._tunnel.origin
        moved = origin is not None and (request.scheme, request.host, request.port) != origin
        if ex.absolute_form or moved or not any(n.lower() == b"host" for n, _ in fields):
            # RFC 9112 3.2.2: the target's authority wins; an HTTP/1.0 request
            # without Host gets one, since we speak HTTP/1.1 upstream.
            fields = replace_field(fields, b"Host", format_authority(request.host, request.port, request.scheme))
        fields.append((b"Via", self._config.via_for(request.http_version)))
        if self._config.forwarded_for and self._client_address is not None and self._config.mode != "reverse":
            fields = append_to_field(fields, b"X-Forwarded-For", self._client_address[0].encode("ascii"))
        if body_length is None and not chunked and not ex.request_bodyless and not any(
                n.lower() == b"content-length" for n, _ in fields):
            chunked = True  # an h2 body without a length: HTTP/1 needs framing (h2 origins drop it)
        fields = reframe(fields, chunked) if body_length is None else sized(fields, body_length)
        up = self._bind_upstream(request.scheme, request.host, request.port)
        if not up.connected:
            ex.flow.timings.connect_start = self._now
        if up.tls is not None and up.ready:
            ex.flow.server_tls = tls_info(up)
        # A connection may turn out to be a pooled one only once it is handed
        # over, so keep the request whenever that can still happen.
        may_be_reused = up.reused or not up.connected
        if may_be_reused and self._config.retry_idempotent and request.method in IDEMPOTENT_METHODS:
            ex.replay = []
        target, fields = self._for_parent(up, request, fields)  # absolute-form to a parent proxy
        head = RequestHead(method=request.method.encode("ascii"), target=target, headers=fields)
        if ex.hooked or self._client.multiplexed:  # fields h11 did not parse: it checks them now
            try:
                check_request_head(head)
            except ProxyError as exc:  # a hook's change, or an h2 client's field h11 refuses
                self._fail_exchange(ex, exc.reason)
                self._answer(exc.status, exc.reason, ex.xid)
                return
        if (up.deferred is not None or up.layer.multiplexed) and asks_for_trailers(request.headers.fields):
            head.headers.append((b"te", b"trailers"))  # gRPC needs it towards h2; an HTTP/1 layer drops it
        bind(ex, up, up.layer.start_exchange())
        ex.enter(FORWARDING)
        ex.remember(head, 0, self._config.retry_buffer_limit)
        self._frame(ex, up, head)

    def _after_request_headers(self, ex: Exchange, _: Any, payload: Any = None) -> None:
        if self._intervened(ex):
            return
        if "request" in self._config.hooks:
            ex.request_parts = []  # hold the body: the hook wants all of it
            if self._client.expects_continue:
                # Nobody upstream will say "100" before it sees the head: we do.
                self._client.send_informational(ex.xid, ResponseHead(status=100, reason=b"Continue"))
        else:
            self._send_request_head(ex)

    def _intervened(self, ex: Exchange) -> bool:
        """Act on kill() or respond() from a hook; True if the exchange is taken care of."""
        flow = ex.flow
        if flow.killed:
            self._kill(ex)
            return True
        if flow.response is not None and flow.response is not ex.upstream_response:
            ex.enter(MOCKED)
            if ex.request_complete:
                self._send_mock(ex)
            return True
        return False

    def _on_request_data(self, ex: Exchange | None, event: DataReceived) -> None:
        if ex is not None:
            self._request_piece(ex, event.data)
        # Sent on (or held within the hook limit, or dropped for a mock): the
        # client may send more (HTTP/2: WINDOW_UPDATE; HTTP/1: nothing to say).
        self._client.consumed(event.xid, len(event.data))

    def _request_piece(self, ex: Exchange, data: bytes) -> None:
        ex.flow.request.capture_piece(data, self._config.body_capture_limit)
        limit = self._config.max_request_body
        if limit is not None and ex.flow.request.body_size > limit:
            self._exchange_error(ex, 413, f"request body over the limit of {limit} bytes")
            return
        if ex.state is MOCKED:
            return
        if ex.request_parts is not None:
            if ex.hold(ex.request_parts, data, self._config.hook_body_limit):
                self._stream_request(ex)
            return
        self._send_request_data(ex, data)

    def _stream_request(self, ex: Exchange) -> None:
        """The body outgrew the hook limit: send what we hold and stream the rest."""
        parts, ex.request_parts = ex.request_parts or [], None
        self._send_request_head(ex)
        for part in parts:
            self._send_request_data(ex, part)

    def _send_request_data(self, ex: Exchange, data: bytes) -> None:
        up = ex.upstream
        if up is not None and ex.live and not self._pace_upload(ex, data):  # flow.pace_upload (conn_holds)
            ex.remember(data, len(data), self._config.retry_buffer_limit)
            self._frame(ex, up, data)

    def _on_request_end(self, ex: Exchange | None, event: MessageEnded) -> None:
        if ex is None:
            return
        ex.request_complete = True
        if ex.state is MOCKED:
            self._send_mock(ex)
        elif ex.request_parts is not None:
            set_held_body(ex.flow.request, ex.request_parts)
            ex.request_parts = None
            self._hook("request", ex)
        else:
            self._end_request_upstream(ex)
        if self._exchanges and self._client.pipelined:
            self._pause_client("pipeline")  # the answer is pending: read no more meanwhile

    def _after_request_hook(self, ex: Exchange, _: Any, payload: Any = None) -> None:
        if self._intervened(ex):
            return
        body = ex.flow.request.content
        ex.request_trailers = ()  # the body is whole now, framed by its length
        ex.request_bodyless = ex.request_bodyless and not body  # a hook may have given it one
        self._send_request_head(ex, body_length=len(body))
        if not ex.live:
            return  # the head was refused
        if body:
            self._send_request_data(ex, body)
        self._end_request_upstream(ex)

    def _end_request_upstream(self, ex: Exchange) -> None:
        up = ex.upstream
        if up is None or not ex.live or self._upload_end_waits(ex):  # after the last paced piece
            return
        if not ex.request_bodyless:  # a body-less request ended with its head (_send_part): nothing to frame
            end = SentEnd(ex.request_trailers)
            ex.remember(end, 0, self._config.retry_buffer_limit)
            self._frame(ex, up, end)
        if up.ready:  # otherwise it leaves once connected: _upstream_ready stamps it
            ex.flow.timings.request_sent = self._now
        self._arm_read_timer(self._config.read_timeout)

    def _on_client_backpressure(self, event: ev.ClientBackpressure) -> None:
        self._client_blocked = event.blocked
        up = self._primary()
        if not event.blocked and up is not None:
            up.last_activity = self._now  # a slow reader is not a stalled upstream


