"""ProxyConnection, part: CONNECT: relaying, or intercepting TLS and what runs inside.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from typing import Any

from ..flow import Flow, Request, Response
from ..headers import wire_headers
from ..vocab import ConnectCause
from . import commands as cmd
from .base import ConnectionBase
from .errors import ProxyError, RemoteProtocolError
from .exchange import Exchange, UPGRADED
from .http1 import end_to_end_fields, parse_authority, sized
from .alpn import H2, fallback_protocols, h2_enabled
from .layers import ResponseHead
from .socks5 import Reply, connect_failure_reply
from .state import Phase, Upstream
from .tls import TLSEndpoint, TLSError
from .tunnel import Sniffed, Tunnel

#: Alerts a client sends when it does not trust the certificate we showed it.
UNTRUSTED_ALERTS = frozenset({"unknown ca", "bad certificate", "certificate unknown",
                              "unsupported certificate"})


class Tunnels(ConnectionBase):
    """CONNECT: the decisions of a tunnel (answer, intercept, sniff, relay, decrypt) and the commands they emit.

    Owns one attribute, ``_tunnel``: the connection's :class:`~.tunnel.Tunnel`
    (its flow, early bytes, answered flag, origin and server name, the
    ClientHello's ALPN offer, the client's TLS endpoint), read and written
    only through that object's methods.
    """

    def _init_tunnels(self) -> None:
        # TLS from the first byte in reverse mode: the tunnel object holds the client's endpoint.
        self._tunnel = Tunnel(self._config.listen_context)

    def _relay_upgrade(self, flow: Flow, upstream_rest: bytes) -> None:
        """After a 101 we do not parse: relay the bytes both ways, unchanged."""
        flow.kind = "upgrade"
        self._tunnel.open(flow)
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
            headers=wire_headers(fields), authority=target.decode("ascii"),
        )
        self._begin_tunnel(Exchange(xid, self._new_flow(request), absolute_form=False))

    def _begin_tunnel(self, ex: Exchange) -> None:
        """A CONNECT (HTTP or SOCKS5) asked for a tunnel: the ``tunnel`` hook decides what it becomes."""
        ex.flow.kind = "tunnel"
        ex.flow.state = "new"
        self._tunnel.open(ex.flow)
        self._hook("tunnel", ex)

    def _after_tunnel_hook(self, ex: Exchange, _: Any, payload: Any = None) -> None:
        flow = ex.flow
        request = flow.request
        if flow.killed or (flow.response is not None and self._socks is not None):
            # SOCKS5 has no way to carry a hook's HTTP answer: it is refused (RFC 1928 6).
            self._tunnel.take_flow()
            self._end_flow(flow, "killed by a hook" if flow.killed else "refused by a hook")
            if self._socks is not None:
                self._socks_reply(Reply.NOT_ALLOWED)
            self._close_client(reset=flow.kill_reset)
            return
        if flow.response is not None:  # a hook answered the CONNECT itself (e.g. block)
            self._tunnel.take_flow()
            ex.upstream_response = None
            self._send_mock_answer(flow)
            return
        intercept = self._should_intercept(request.host, request.port)
        if flow.intercept is not None:
            intercept = flow.intercept and self._config.server_context is not None
        if intercept:
            self._answer_connect()
            self._enter(Phase.SNIFF)
            self._tunnel.name_server(request.host)
            self._emit(cmd.StartTimer(name="sniff", delay=self._config.sniff_timeout))
            if self._tunnel.has_early:
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
        self._close_client()

    def _should_intercept(self, host: str, port: int) -> bool:
        config = self._config
        if not config.intercept or config.server_context is None:
            return False
        return config.ignore_host is None or not config.ignore_host(host, port)

    def _answer_connect(self) -> None:
        """``200 Connection established``; what the client sent after it is kept."""
        tunnel = self._tunnel
        if self._socks is not None:
            tunnel.keep_early(self._socks_reply(Reply.SUCCEEDED))
        else:
            self._client.send_head(0, ResponseHead(status=200, reason=b"Connection established"), validate=False)
            tunnel.keep_early(self._client.take_trailing())
        tunnel.mark_answered()
        flow = tunnel.flow
        if flow is not None:
            reason = "SOCKS5 request granted" if self._socks is not None else "Connection established"
            flow.response = Response(status=200, reason=reason)
            flow.timings.response_start = self._now

    def _start_tunnel(self, up: Upstream) -> None:
        up.ready = True
        if not self._tunnel.answered:
            self._answer_connect()
        self._enter_tunnel()

    def _enter_tunnel(self) -> None:
        self._enter(Phase.TUNNEL)
        early = self._tunnel.take_early()
        self._resume_client("pipeline")
        self._relay_to_upstream(early)

    def _relay_to_upstream(self, data: bytes) -> None:
        up, flow = self._primary(), self._tunnel.flow
        if up is not None and flow is not None and data:
            flow.request.body_size += len(data)
            self._to_upstream(up, data)

    def _relay_to_client(self, data: bytes) -> None:
        flow = self._tunnel.flow
        if flow is not None and flow.response is not None and data:
            flow.response.body_size += len(data)
            self._to_client(data)

    def _finish_tunnel(self, error: str | None) -> None:
        flow = self._tunnel.take_flow()
        if flow is not None:
            self._end_flow(flow, error)
        self._close_client()

    def _connect_failed(self, up: Upstream, reason: str, status: int, cause: ConnectCause) -> None:
        """An upstream could not be opened: fail it as any other, ``cause`` kept for a SOCKS5 reply."""
        self._tunnel.note_cause(cause)
        try:
            self._upstream_failed(up, reason, status)
        finally:
            self._tunnel.note_cause("other")  # any later failure has a cause of its own

    def _fail_tunnel(self, reason: str, status: int) -> None:
        tunnel = self._tunnel
        flow = tunnel.take_flow()
        if flow is not None:
            self._end_flow(flow, reason)
        self._enter(Phase.HTTP)  # so the answer goes out through h11
        if self._socks is not None and not tunnel.answered:
            # A 504 is a timeout whoever saw it (the transport, or the core's TLS handshake timer).
            self._socks_reply(connect_failure_reply("timeout" if status == 504 else tunnel.cause))
            self._close_client()
        elif tunnel.answered:
            self._close_client()  # the 200 is out: closing is all that is left
        else:
            self._answer(status, reason)

    def _tunnel_raw(self) -> None:
        """Not TLS, not HTTP: relay the tunnel unchanged after all."""
        tunnel = self._tunnel.flow
        assert tunnel is not None
        self._enter(Phase.CONNECTING)
        tunnel.state = "open"
        self._emit(cmd.FlowStarted(flow=tunnel))
        self._open_upstream((tunnel.request.host, tunnel.request.port, False), reuse=False)
        tunnel.timings.connect_start = self._now

    def _report_tunnel_error(self, reason: str) -> None:
        flow = self._tunnel.take_flow()
        if flow is not None:
            flow.client_tls = self._tunnel.tls_info
            self._end_flow(flow, reason)

    def _sniff(self, data: bytes) -> None:
        """Decide from a tunnel's first bytes: TLS to intercept, HTTP, or a raw relay."""
        self._tunnel.add_early(data)
        if self._awaiting_alpn():
            return  # the hello is read: it waits for the upstream's choice (conn_alpn.py)
        verdict = self._tunnel.sniff()
        if verdict.kind is Sniffed.HTTP:
            self._start_inner_http()
        elif verdict.kind is Sniffed.RAW:
            self._tunnel_raw()
        elif verdict.hello is not None and not self._upstream_first(verdict.hello):
            self._start_client_tls(verdict.hello.sni, None)

    def _start_client_tls(self, sni: str | None, alpn: tuple[str, ...] | None = None) -> None:
        """Answer the client's hello; ``alpn`` is what to offer it (None: what it offered that we speak)."""
        tunnel = self._tunnel.flow
        assert tunnel is not None and self._config.server_context is not None
        host, port = tunnel.request.host, tunnel.request.port
        if alpn is None:  # no upstream choice to follow: each side speaks what it chose, translated
            alpn = fallback_protocols(self._tunnel.client_offer, http2=h2_enabled(self._config.http2))
        try:
            context = self._config.server_context(sni or host, alpn)
        except ValueError:  # a name no certificate can carry: use the CONNECT host
            context = self._config.server_context(host, alpn)
        self._tunnel.start_client_tls(context, sni, host)
        self._enter_inner("https", host, port)

    def _start_inner_http(self) -> None:
        tunnel = self._tunnel.flow
        assert tunnel is not None
        self._enter_inner("http", tunnel.request.host, tunnel.request.port)

    def _set_inner_origin(self, scheme: str, host: str, port: int, server_name: str) -> None:
        """Requests inside this tunnel go to ``host:port``, whose TLS name is ``server_name``."""
        self._tunnel.intercept(scheme, host, port, server_name)

    def _enter_inner(self, scheme: str, host: str, port: int) -> None:
        """Parse the tunnel's content as HTTP requests that all go to ``host:port``."""
        self._tunnel.intercept(scheme, host, port)
        self._restart_client_parser()
        self._enter(Phase.HTTP)
        self._feed_client(self._tunnel.take_early())

    def _client_tls_done(self, tls: TLSEndpoint) -> None:
        self._tunnel.client_tls_done(tls)
        if tls.alpn == H2:
            self._speak_h2()
        self._tunnel.take_flow()  # the CONNECT is not an exchange of its own once decrypted

    def _client_tls_failed(self, exc: TLSError) -> None:
        self._tunnel.drop_client_tls()
        self._send_client_raw(exc.to_send)
        name = self._tunnel.server_name or "?"
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
        return (data, False) if self._tunnel.tls is None else self._decrypt_client(data)

    def _decrypt_client(self, data: bytes) -> tuple[bytes, bool] | None:
        tls = self._tunnel.tls
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
        ex.flow.response = Response(
            status=101, reason=head.reason.decode("latin-1"), headers=wire_headers(head.headers)
        )
        ex.flow.timings.response_start = self._now
        ex.enter(UPGRADED)
        self._remove_exchange(ex)
        self._tunnel.keep_early(self._client.take_trailing())
        upstream_rest = up.layer.take_trailing()
        if ex.websocket:
            self._start_websocket(ex, upstream_rest)
            return
        self._relay_upgrade(ex.flow, upstream_rest)
