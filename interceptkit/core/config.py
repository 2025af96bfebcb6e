"""What a :class:`ProxyConnection` is told by the layers above it."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from .proxyauth import Credentials
from .upstreamproxy import UpstreamProxy


@dataclass(frozen=True, slots=True)
class Route:
    """A reverse-proxy route: requests under ``prefix`` go to ``scheme://host:port`` + ``path``."""

    prefix: str
    scheme: str
    host: str
    port: int
    path: str = ""
    strip: bool = False

    def matches(self, path: str) -> bool:
        """Prefix match on a path-segment boundary: /api matches /api/x, not /apix."""
        if self.prefix in ("", "/"):
            return True
        if not path.startswith(self.prefix):
            return False
        rest = path[len(self.prefix):]
        return rest == "" or rest[0] in "/?" or self.prefix.endswith("/")

    def target(self, path: str) -> str:
        """The upstream path for a request path under this route."""
        rest = path[len(self.prefix.rstrip("/")):] if self.strip else path
        if not rest.startswith("/"):
            rest = "/" + rest
        return self.path.rstrip("/") + rest


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """Settings shared by every connection of one proxy; never mutated.

    ``hooks`` is a live view of the hook names that have callbacks attached:
    the core asks for a hook only when someone listens, so an unhooked proxy
    pays nothing for the feature.
    """

    #: "forward", "reverse" or "socks5" (the client side starts with a SOCKS5 handshake).
    mode: str = "forward"
    #: Who may use the proxy (forward and socks5 modes): None lets everyone in.
    credentials: Credentials | None = None
    max_header_size: int = 64 * 1024
    #: Seconds without a byte from the upstream while awaiting its answer: 504.
    read_timeout: float = 60.0
    #: Seconds a client connection may sit idle between requests.
    idle_timeout: float = 120.0
    #: Add X-Forwarded-For (off by default for a forward proxy).
    forwarded_for: bool = False
    #: A comment in our Via field that is unique per proxy, so a request that
    #: comes back to the same proxy is recognised as a loop (RFC 9110 7.6.3).
    via_token: str = "interceptkit"
    #: Made from ``via_token`` (``__post_init__``): the ``Via`` value for a
    #: message received over HTTP/1.x, for one over HTTP/2, and the comment
    #: that shows a request came through this proxy before.
    via: bytes = field(init=False, repr=False, compare=False)
    _via_h2: bytes = field(init=False, repr=False, compare=False)
    loop_token: bytes = field(init=False, repr=False, compare=False)
    #: Bytes of each body kept on the flow (the rest is counted, not kept).
    body_capture_limit: int = 64 * 1024
    #: Bodies up to this size are buffered whole when a ``request`` or
    #: ``response`` hook is attached; larger ones stream past the hooks.
    hook_body_limit: int = 4 * 1024 * 1024
    #: Request bytes kept to resend an idempotent request once when a reused
    #: upstream connection turns out to have been closed while idle.
    retry_buffer_limit: int = 64 * 1024
    retry_idempotent: bool = True
    #: Request bodies over this many bytes are refused with 413 (None: no limit).
    max_request_body: int | None = None
    #: Bytes buffered for an upstream that is still connecting before the
    #: client stops being read.
    pending_limit: int = 1024 * 1024
    listen_addresses: frozenset[tuple[str, int]] = frozenset()
    hooks: Container[str] = field(default_factory=frozenset)
    #: The CA certificate offered on the info page (PEM and DER), if any.
    ca_cert_pem: bytes | None = None
    ca_cert_der: bytes | None = None
    next_flow_id: Callable[[], int] | None = None
    #: Decrypt CONNECT tunnels (needs ``server_context``); hosts for which
    #: ``ignore_host(host, port)`` is true are relayed without decrypting.
    intercept: bool = False
    #: ``server_context(host, alpn)``: a leaf context for ``host`` offering the ALPN list ``alpn``.
    server_context: Callable[..., ssl.SSLContext] | None = None
    ignore_host: Callable[[str, int], bool] | None = None
    #: Client context towards upstreams: verification on unless the user opted out.
    #: It offers ``http/1.1`` alone in ALPN; ``upstream_context_h2`` is the
    #: same verification offering ``h2`` then ``http/1.1`` (an SSLContext has
    #: one ALPN list, so each offer needs its own): see upstream_context_for.
    upstream_context: ssl.SSLContext | None = None
    upstream_context_h2: ssl.SSLContext | None = None
    #: Speak HTTP/2 where the peers offer it (``Proxy(http2=False)``,
    #: ``--no-http2``: HTTP/1.1 on both sides). core.alpn decides per side.
    http2: bool = True
    #: When the client offers h2, connect the upstream first and offer the
    #: client what the upstream selected (core/conn_alpn.py); False: offer
    #: the client both at once and translate.
    alpn_upstream_first: bool = True
    #: The policy ring may answer requests itself (mocks, strict mode,
    #: cassettes): then the upstream-first step is skipped, so a mocked host is
    #: never contacted nor its name resolved. None: it never does.
    answers_locally: Callable[[], bool] | None = None
    #: Seconds to wait for a client's first bytes in a tunnel before treating
    #: it as a server-speaks-first protocol and relaying it unchanged.
    sniff_timeout: float = 2.0
    #: Hosts already warned about ("client does not trust the CA"), shared by
    #: all connections so the hint is logged once per host.
    tls_warned: set[str] = field(default_factory=set)
    #: Per WebSocket flow: how many messages are kept (the newest), and how
    #: many bytes of each. 1,000 x 4 KiB bounds a busy socket at a few MiB.
    websocket_max_messages: int = 1000
    websocket_max_content: int = 4096
    #: Reverse mode: routes, longest prefix first.
    routes: tuple[Route, ...] = ()
    #: Reverse mode: keep the client's Host instead of the upstream's.
    keep_host: bool = False
    #: TLS on the listening side (reverse mode in front of a service).
    listen_context: ssl.SSLContext | None = None
    #: Reach upstreams through this parent proxy (absolute-form for plain
    #: HTTP, CONNECT for TLS and relayed tunnels), except hosts for which
    #: ``upstream_proxy_bypass(host, port)`` is true.
    upstream_proxy: UpstreamProxy | None = None
    upstream_proxy_bypass: Callable[[str, int], bool] | None = None
    #: Consulted on every accepted connection with the client's address: True
    #: resets it at once (a TCP RST before any byte; the "reset at=connect" fault).
    reset_at_connect: Callable[[tuple[str, int] | None], bool] | None = None

    def upstream_context_for(self, alpn: Sequence[str]) -> ssl.SSLContext | None:
        """The upstream client context whose ALPN list is ``alpn`` (core.alpn.upstream_offer).

        An offer with ``h2`` gets the h2 variant (its list is ``h2``,
        ``http/1.1``: what :func:`~interceptkit.core.alpn.upstream_offer`
        gives for a client offering both); anything else, or no h2 variant
        (HTTP/2 off), the ``http/1.1`` one. Verification is the same in both.
        """
        if "h2" in alpn and self.http2 and self.upstream_context_h2 is not None:
            return self.upstream_context_h2
        return self.upstream_context

    def __post_init__(self) -> None:
        # Made once: every forwarded message carries one (frozen: set the way dataclasses do).
        object.__setattr__(self, "via", f"1.1 interceptkit ({self.via_token})".encode("ascii"))
        object.__setattr__(self, "_via_h2", f"2 interceptkit ({self.via_token})".encode("ascii"))
        object.__setattr__(self, "loop_token", f"({self.via_token})".encode("ascii"))

    def via_for(self, http_version: str) -> bytes:
        """``Via`` naming the protocol the message was received with (RFC 9110 7.6.3): "1.1" or "2"."""
        return self.via if http_version != "HTTP/2" else self._via_h2
