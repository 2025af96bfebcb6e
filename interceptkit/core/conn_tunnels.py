"""ProxyConnection, part: CONNECT: relaying, or intercepting TLS and what runs inside.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from typing import Any

from ..flow import Flow, Headers, Request, Response, TLSInfo
from ..vocab import ConnectCause
from . import commands as cmd
from .base import ConnectionBase
from .errors import ProxyError, RemoteProtocolError
from .exchange import Exchange, ExchangeState
from .http1 import (
    end_to_end_fields,
    looks_like_http,
    parse_authority,
    sized,
)
from .alpn import H2, fallback_protocols, h2_enabled
from .layers import ResponseHead
from .socks5 import Reply, connect_failure_reply
from .state import Phase, Upstream
from .tls import (
    TLSEndpoint,
    TLSError,
    TLSParseError,
    looks_like_tls,
    parse_client_hello,
)

#: Alerts a client sends when it does not trust the certificate we showed it.
UNTRUSTED_ALERTS = frozenset({"unknown ca", "bad certificate", "certificate unknown",
                              "unsupported certificate"})
#: Bytes of a tunnel's first message we wait for before giving up on TLS.
SNIFF_LIMIT = 64 * 1024


class Tunnels(ConnectionBase):
    """CONNECT: owns the tunnel's flow, its early bytes, the sniffing verdict, and the client's TLS endpoint.

    Also the origin every request inside an intercepted tunnel goes to and
    the server name (SNI) to use towards it. The client TLS endpoint also
    serves reverse mode's TLS from the first byte.
    """

    def _init_tunnels(self) -> None:
        self._tunnel: Flow | None = None
        #: Inside an intercepted CONNECT: where every request goes.
        self._origin: tuple[str, str, int] | None = None
        self._server_name: str | None = None
        self._client_tls: TLSEndpoint | None = None
        self._client_tls_info: TLSInfo | None = None
        #: Bytes of a tunnel not yet consumed: early data, or the sniffed start.
        self._early = b""
        #: The protocols the client's ClientHello offered (ALPN), in its order.
        self._client_offer: tuple[str, ...] = ()
        self._tunnel_answered = False
        #: Why the upstream being opened could not be reached (only while that failure is handled).
        self._connect_cause: ConnectCause = "other"
        if self._config.listen_context is not None:  # TLS from the first byte (reverse mode)
            self._client_tls = TLSEndpoint(self._config.listen_context, server_side=True)
            self._client_tls.start()
            self._client_tls_info = TLSInfo()

    def _close_client_tls(self) -> bytes:
        """End the client's TLS session; the close_notify to send."""
        tls, self._client_tls = self._client_tls, None
        return tls.close() if tls is not None else b""

    def _take_early(self) -> bytes:
        """The tunnel bytes not consumed yet, handed to whoever parses them next."""
        early, self._early = self._early, b""
        return early

    def _relay_upgrade(self, flow: Flow, upstream_rest: bytes) -> None:
        """After a 101 we do not parse: relay the bytes both ways, unchanged."""
        flow.kind = "upgrade"
        self._tunnel = flow
        self._enter_tunnel()
        self._relay_to_client(upstream_rest)

    def _on_connect(self, xid: int, target: bytes, http_version: bytes, fields: list[tuple[bytes, bytes]]) -> None:
        try:
            host, port = parse_authority(target, None)
        except RemoteProtocolError as exc:
            self._refuse(400, f"bad CONNECT target: {exc}", f"CONNECT {target[:200]!r}")
            return
        request = Request(
            method="CONNECT", scheme="https" if port == 443 else "tcp", host=host, port=port, path="",
            http_version="HTTP/" + http_version.decode("ascii"),
            headers=Headers.from_wire(fields), authority=target.decode("ascii"),
        )
        self._begin_tunnel(Exchange(xid, self._new_flow(request), absolute_form=False))

    def _begin_tunnel(self, ex: Exchange) -> None:
        """A CONNECT (HTTP or SOCKS5) asked for a tunnel: the ``tunnel`` hook decides what it becomes."""
        ex.flow.kind = "tunnel"
        ex.flow.state = "new"
        self._tunnel = ex.flow
        self._hook("tunnel", ex)

    def _after_tunnel_hook(self, ex: Exchange, _: Any) -> None:
        flow = ex.flow
        request = flow.request
        if flow.killed or (flow.response is not None and self._socks is not None):
            # SOCKS5 has no way to carry a hook's HTTP answer: it is refused (RFC 1928 6).
            self._tunnel = None
            self._end_flow(flow, "killed by a hook" if flow.killed else "refused by a hook")
            if self._socks is not None:
                self._socks_reply(Reply.NOT_ALLOWED)
            self._close_client(reset=flow.kill_reset)
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
            self._enter(Phase.SNIFF)
            self._server_name = request.host
            self._emit(cmd.StartTimer(name="sniff", delay=self._config.sniff_timeout))
            if self._early:
                self._sniff(b"")
            return
        flow.state = "open"
        self._enter(Phase.CONNECTING)
        self._emit(cmd.FlowStarted(flow=flow))
        self._open_upstream((request.host, request.port, False), reuse=False)
        flow.timings.connect_start = self._now

    def _send_mock_answer(self, flow: Flow) -> None:
        """Answer a CONNECT with a hook's response, then close."""
        response = flow.response
        assert response is not None
        fields = sized(response.headers.fields, len(response.content)) + [(b"Connection", b"close")]
        head = ResponseHead(status=response.status, headers=fields,
                            reason=response.reason.encode("latin-1", "replace"))
        try:
            self._client.send_whole_answer(head, response.content)
        except ProxyError as exc:
            self._end_flow(flow, exc.reason)
            self._close_client()
            return
        flow.state = "open"
        self._emit(cmd.FlowStarted(flow=flow))
        self._end_flow(flow, None)
        self._to_client(self._client.bytes_to_send())
        self._close_client()

    def _should_intercept(self, host: str, port: int) -> bool:
        config = self._config
        if not config.intercept or config.server_context is None:
            return False
        return config.ignore_host is None or not config.ignore_host(host, port)

    def _answer_connect(self) -> None:
        """``200 Connection established``; what the client sent after it is kept."""
        if self._socks is not None:
            self._early = self._socks_reply(Reply.SUCCEEDED)
        else:
            self._client.send_head(0, ResponseHead(status=200, reason=b"Connection established"), validate=False)
            self._to_client(self._client.bytes_to_send())
            self._early = self._client.take_trailing()
        self._tunnel_answered = True
        if self._tunnel is not None:
            reason = "SOCKS5 request granted" if self._socks is not None else "Connection established"
            self._tunnel.response = Response(status=200, reason=reason)
            self._tunnel.timings.response_start = self._now

    def _start_tunnel(self, up: Upstream) -> None:
        up.ready = True
        if not self._tunnel_answered:
            self._answer_connect()
        self._enter_tunnel()

    def _enter_tunnel(self) -> None:
        self._enter(Phase.TUNNEL)
        early = self._take_early()
        self._resume_client("pipeline")
        self._relay_to_upstream(early)

    def _relay_to_upstream(self, data: bytes) -> None:
        up, flow = self._primary(), self._tunnel
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

    def _connect_failed(self, up: Upstream, reason: str, status: int, cause: ConnectCause) -> None:
        """An upstream could not be opened: fail it as any other, ``cause`` kept for a SOCKS5 reply."""
        self._connect_cause = cause
        try:
            self._upstream_failed(up, reason, status)
        finally:
            self._connect_cause = "other"  # any later failure has a cause of its own

    def _fail_tunnel(self, reason: str, status: int) -> None:
        flow, self._tunnel = self._tunnel, None
        if flow is not None:
            self._end_flow(flow, reason)
        self._enter(Phase.HTTP)  # so the answer goes out through h11
        if self._socks is not None and not self._tunnel_answered:
            # A 504 is a timeout whoever saw it (the transport, or the core's TLS handshake timer).
            self._socks_reply(connect_failure_reply("timeout" if status == 504 else self._connect_cause))
            self._close_client()
        elif self._tunnel_answered:
            self._close_client()  # the 200 is out: closing is all that is left
        else:
            self._answer(status, reason)

    def _tunnel_raw(self) -> None:
        """Not TLS, not HTTP: relay the tunnel unchanged after all."""
        tunnel = self._tunnel
        assert tunnel is not None
        self._enter(Phase.CONNECTING)
        tunnel.state = "open"
        self._emit(cmd.FlowStarted(flow=tunnel))
        self._open_upstream((tunnel.request.host, tunnel.request.port, False), reuse=False)
        tunnel.timings.connect_start = self._now

    def _report_tunnel_error(self, reason: str) -> None:
        flow, self._tunnel = self._tunnel, None
        if flow is not None:
            flow.client_tls = self._client_tls_info
            self._end_flow(flow, reason)

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
            self._client_offer = hello.alpn
            self._start_client_tls(hello.sni)
        elif len(buf) > SNIFF_LIMIT:
            self._tunnel_raw()

    def _start_client_tls(self, sni: str | None) -> None:
        tunnel = self._tunnel
        assert tunnel is not None and self._config.server_context is not None
        host, port = tunnel.request.host, tunnel.request.port
        # Offer what the client offered of h2 and http/1.1, in its order: each
        # side speaks what it chose, and the exchange logic translates.
        alpn = fallback_protocols(self._client_offer, http2=h2_enabled(self._config.http2))
        try:
            context = self._config.server_context(sni or host, alpn)
        except ValueError:  # a name no certificate can carry: use the CONNECT host
            context = self._config.server_context(host, alpn)
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
        self._restart_client_parser()
        self._enter(Phase.HTTP)
        self._feed_client(self._take_early())

    def _client_tls_done(self, tls: TLSEndpoint) -> None:
        info = self._client_tls_info or TLSInfo()
        info.version, info.cipher, info.alpn = tls.version, tls.cipher, tls.alpn
        self._client_tls_info = info
        if tls.alpn == H2:
            self._speak_h2()
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

    def _client_plaintext(self, data: bytes) -> tuple[bytes, bool] | None:
        """The client's bytes as plaintext and whether its TLS closed; None if TLS failed."""
        return (data, False) if self._client_tls is None else self._decrypt_client(data)

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

    def _switch_protocols(self, up: Upstream, ex: Exchange, head: ResponseHead) -> None:
        fields, _ = end_to_end_fields(head.headers, keep_upgrade=True)
        self._client.send_informational(ex.xid, ResponseHead(status=101, headers=fields, reason=head.reason))
        self._to_client(self._client.bytes_to_send())
        ex.flow.response = Response(
            status=101, reason=head.reason.decode("latin-1"), headers=Headers.from_wire(head.headers)
        )
        ex.flow.timings.response_start = self._now
        ex.enter(ExchangeState.UPGRADED)
        self._remove_exchange(ex)
        self._early = self._client.take_trailing()
        upstream_rest = up.layer.take_trailing()
        if ex.websocket:
            self._start_websocket(ex, upstream_rest)
            return
        self._relay_upgrade(ex.flow, upstream_rest)
