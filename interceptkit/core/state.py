"""The connection's phase table and the record it keeps per upstream connection."""

from __future__ import annotations

from enum import Enum, auto

from ..flow import TLSInfo
from ..vocab import UpstreamPause
from .h1layers import H1UpstreamLayer
from .h2sides import H2Upstream
from .exchange import Exchange, SentPart
from .tls import TLSEndpoint
from .upstreamproxy import ParentTunnel, UpstreamProxy

UpstreamKey = tuple[str, int, bool]


class Phase(Enum):
    """What the client's bytes are, for one connection; moves only along PHASE_TRANSITIONS."""

    # Members are singletons: identity hashing is exact, and C-level (Enum's own
    # __hash__ is a Python call, paid on every table lookup per request).
    __hash__ = object.__hash__

    HTTP = auto()  # the client's bytes are HTTP/1.x requests, parsed by h11
    SOCKS = auto()  # mode="socks5": the client's bytes are its SOCKS5 handshake
    CONNECTING = auto()  # a CONNECT waits for its upstream connection
    SNIFF = auto()  # an intercepted CONNECT was answered; its first bytes decide
    TUNNEL = auto()  # bytes are relayed both ways unchanged
    WEBSOCKET = auto()  # WebSocket frames parsed on both sides (after a 101)
    CLOSED = auto()  # the client connection is closed or closing


#: ``Phase.HTTP`` as a global, for the per-request path (see exchange.py's states).
IN_HTTP = Phase.HTTP

#: Which phase may follow which; ``ConnectionBase._enter`` checks it.
PHASE_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.HTTP: frozenset({Phase.SOCKS, Phase.CONNECTING, Phase.SNIFF, Phase.TUNNEL, Phase.WEBSOCKET,
                           Phase.CLOSED}),  # SOCKS: only as a SOCKS5 connection starts
    Phase.SOCKS: frozenset({Phase.CONNECTING, Phase.SNIFF, Phase.CLOSED}),
    Phase.CONNECTING: frozenset({Phase.TUNNEL, Phase.HTTP, Phase.CLOSED}),  # HTTP: to answer a failure
    Phase.SNIFF: frozenset({Phase.HTTP, Phase.CONNECTING, Phase.CLOSED}),
    Phase.TUNNEL: frozenset({Phase.CLOSED}),
    Phase.WEBSOCKET: frozenset({Phase.CLOSED}),
    Phase.CLOSED: frozenset(),
}


class Upstream:
    """One connection towards a server, as this client connection uses it.

    Owns its protocol layer (HTTP/1: h11 in the CLIENT role), its TLS
    endpoint, the bytes waiting for it to connect, and whether it was reused
    (so a close may be retried).
    """

    __slots__ = ("id", "key", "layer", "exchanges", "paused_for", "out", "deferred", "alpn_offer", "connected", "ready", "reused", "pending", "pending_size",
                 "last_activity", "tls", "server_name", "eof", "parent", "parent_answer",
                 "tunnel_to")

    def __init__(self, upstream_id: int, key: UpstreamKey, now: float, server_name: str | None) -> None:
        self.id = upstream_id
        self.key = key
        #: HTTP/1 until TLS selects h2 (``_upstream_ready`` then puts an ``H2Upstream`` here).
        self.layer: H1UpstreamLayer | H2Upstream = H1UpstreamLayer()
        #: The exchanges this connection carries, by their id on its layer (HTTP/1: one at a time).
        self.exchanges: dict[int, Exchange] = {}
        #: Why it is not being read: a hook runs, a paced body waits, the client's window is closed.
        self.paused_for: set[UpstreamPause] = set()
        #: Bytes for it in this ``handle`` call, joined into one send.
        self.out: list[bytes] = []
        #: What the ALPN offer of its TLS handshake is (h2 among it: the protocol is
        #: known only once TLS is done, so requests wait unframed in ``deferred``).
        self.alpn_offer: tuple[str, ...] = ()
        self.deferred: list[tuple[Exchange, SentPart]] | None = None
        self.connected = False
        #: Connected and, for TLS, handshake done: bytes may be sent.
        self.ready = False
        #: True once the connection served an earlier exchange (or came from
        #: the pool): the server may have closed it while it sat idle.
        self.reused = False
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.last_activity = now
        self.tls: TLSEndpoint | None = None
        #: The name sent as SNI and verified in the server's certificate.
        self.server_name = server_name
        #: The server stopped sending; nothing more can arrive.
        self.eof = False
        #: The upstream (parent) proxy this connection goes through, if any.
        self.parent: UpstreamProxy | None = None
        #: Our CONNECT to the parent and the reader of its answer; None once
        #: it said 2xx (or when there is no CONNECT to the parent).
        self.parent_answer: ParentTunnel | None = None
        #: ``(host, port)`` the parent is asked to CONNECT to, if any.
        self.tunnel_to: tuple[str, int] | None = None


def tls_info(up: Upstream) -> TLSInfo:
    tls = up.tls
    assert tls is not None
    return TLSInfo(sni=up.server_name, version=tls.version, cipher=tls.cipher, alpn=tls.alpn)
