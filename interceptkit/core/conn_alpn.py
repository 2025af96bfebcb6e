"""ProxyConnection, part: ALPN upstream first, so each side of an intercepted tunnel speaks what it chose.

See connection.py for the theory of operation. When the client's
ClientHello offers h2, the upstream is connected first and offered what the
client offered (of h2 and http/1.1); the client is then offered exactly what
the upstream selected, so an h2 origin is spoken to in h2 by an h2 client
(gRPC needs no translation) and an HTTP/1.1-only origin gets an HTTP/1.1
client. When the upstream cannot be reached (or TLS with it fails), the
client is offered both and the exchange logic translates; the failure
itself reaches the client with its first request, as without this step.
"""

from __future__ import annotations

from .alpn import H2, client_protocols, h2_enabled
from .base import ConnectionBase
from .client_hello import ClientHello
from .state import Upstream


class AlpnFirst(ConnectionBase):
    """Owns the ClientHello that waits while the upstream chooses its protocol."""

    def _init_alpn(self) -> None:
        #: The client's hello waits here while the upstream connects (None: nothing waits).
        self._hello: ClientHello | None = None
        #: Why that upstream failed, kept as the answer of the tunnel's first
        #: request (so the failure is not met twice): (reason, status).
        self._alpn_failure: tuple[str, int] | None = None

    def _upstream_first(self, hello: ClientHello) -> bool:
        """Connect the upstream before answering ``hello``; False: answer it now."""
        config = self._config
        if H2 not in hello.alpn or not h2_enabled(config.http2) or not config.alpn_upstream_first:
            return False
        if config.answers_locally is not None and config.answers_locally():
            return False  # a mock may answer: reach no upstream before a request asks
        tunnel = self._tunnel.flow
        assert tunnel is not None
        host, port = tunnel.request.host, tunnel.request.port
        self._hello = hello
        self._set_inner_origin("https", host, port, hello.sni or host)
        self._open_upstream((host, port, True), reuse=False)
        return True

    def _awaiting_alpn(self) -> bool:
        return self._hello is not None

    def _alpn_chosen(self, up: Upstream) -> None:
        """The upstream's TLS is up: offer the client what it selected."""
        hello, self._hello = self._hello, None
        if hello is None:
            return
        selected = up.tls.alpn if up.tls is not None else None
        self._start_client_tls(hello.sni, client_protocols(hello.alpn, selected,
                                                          http2=h2_enabled(self._config.http2)))

    def _alpn_failed(self, up: Upstream, reason: str, status: int) -> None:
        """No upstream answer to follow: offer the client both protocols (its first request meets the failure)."""
        hello, self._hello = self._hello, None
        self._alpn_failure = (reason, status)
        self._drop_upstream(up)
        self._log("debug", f"upstream first for ALPN failed ({reason}); offering the client both protocols")
        if hello is not None:
            self._start_client_tls(hello.sni, None)

    def _take_alpn_failure(self) -> tuple[str, int] | None:
        """The failure the upstream-first step met, once: the first request is answered with it."""
        failure, self._alpn_failure = self._alpn_failure, None
        return failure
