"""The records a ProxyConnection keeps per upstream and per exchange."""

from __future__ import annotations

from enum import Enum, auto

import h11

from ..flow import Flow, Request, Response, TLSInfo
from .shaping import Shape
from .tls import TLSEndpoint
from .upstreamproxy import UpstreamProxy

UpstreamKey = tuple[str, int, bool]
SentEvent = h11.Request | h11.Data | h11.EndOfMessage


class Phase(Enum):
    """What the client's bytes are, for one connection; moves only along PHASE_TRANSITIONS."""

    HTTP = auto()  # the client's bytes are HTTP/1.x requests, parsed by h11
    SOCKS = auto()  # mode="socks5": the client's bytes are its SOCKS5 handshake
    CONNECTING = auto()  # a CONNECT waits for its upstream connection
    SNIFF = auto()  # an intercepted CONNECT was answered; its first bytes decide
    TUNNEL = auto()  # bytes are relayed both ways unchanged
    WEBSOCKET = auto()  # WebSocket frames parsed on both sides (after a 101)
    CLOSED = auto()  # the client connection is closed or closing


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

    Owns its h11 CLIENT connection, its TLS endpoint, the bytes waiting for
    it to connect, and whether it was reused (so a close may be retried).
    """

    __slots__ = ("id", "key", "conn", "connected", "ready", "reused", "pending", "pending_size",
                 "last_activity", "tls", "server_name", "eof", "parent", "parent_answer",
                 "tunnel_to")

    def __init__(self, upstream_id: int, key: UpstreamKey, now: float, server_name: str | None) -> None:
        self.id = upstream_id
        self.key = key
        self.conn = h11.Connection(h11.CLIENT)
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
        #: Reads the parent's answer to our CONNECT; None once it said 2xx
        #: (or when there is no CONNECT to the parent).
        self.parent_answer: h11.Connection | None = None
        #: ``(host, port)`` the parent is asked to CONNECT to, if any.
        self.tunnel_to: tuple[str, int] | None = None


class Exchange:
    """One request/response pair in flight.

    Owns its flow, its upstream binding, the body parts held for a hook, the
    replay buffer for a retry, and whether a hook answered (mocked) or
    replaced the upstream's answer (discard_response).
    """

    __slots__ = ("flow", "upstream", "request_complete", "response_started", "response_chunked",
                 "upstream_bytes", "replay", "replay_size", "retried", "upgrade", "absolute_form",
                 "request_parts", "response_parts", "parts_size", "mocked", "hooked",
                 "upstream_response", "discard_response", "websocket", "body_shape")

    def __init__(self, flow: Flow, *, absolute_form: bool) -> None:
        self.flow = flow
        self.upstream: Upstream | None = None
        self.request_complete = False
        self.response_started = False
        self.response_chunked = False
        self.upstream_bytes = 0
        #: The h11 events sent so far, kept while small enough to resend.
        self.replay: list[SentEvent] | None = None
        self.replay_size = 0
        self.retried = False
        self.upgrade = False
        #: Absolute-form requests get Host from the target (RFC 9112 3.2.2);
        #: origin-form ones (inside an intercepted tunnel) keep the client's.
        self.absolute_form = absolute_form
        #: Body pieces held back while a ``request``/``response`` hook needs
        #: the whole body; None while streaming.
        self.request_parts: list[bytes] | None = None
        self.response_parts: list[bytes] | None = None
        self.parts_size = 0
        #: A hook answered (flow.respond): the upstream is not asked, or its
        #: answer is dropped.
        self.mocked = False
        self.discard_response = False
        #: A hook may have changed the message: validate it before sending.
        self.hooked = False
        self.upstream_response: object = None
        #: How the response body is cut or paced (flow.truncate_after, flow.pace_body), set
        #: when its head goes out; None (the usual case): sent as it comes.
        self.body_shape: Shape | None = None
        #: The request asks to upgrade to WebSocket.
        self.websocket = False


    def hold(self, parts: list[bytes], data: bytes, limit: int) -> bool:
        """Hold a body piece for a hook; True once the held bytes exceed ``limit`` (then stream)."""
        parts.append(data)
        self.parts_size += len(data)
        return self.parts_size > limit


def set_held_body(message: Request | Response, parts: list[bytes]) -> None:
    """The whole body a hook sees: the held parts, joined and counted (nothing was cut)."""
    message.content = b"".join(parts)
    message.body_size, message.truncated = len(message.content), False


def capture_body(message: Request | Response, data: bytes, limit: int) -> None:
    """Count body bytes and keep a prefix of at most ``limit`` of them."""
    kept = len(message.content)
    message.body_size += len(data)
    if kept < limit:
        message.content = message.content + data[: limit - kept] if kept else data[:limit]
    if message.body_size > limit:
        message.truncated = True


def tls_info(up: Upstream) -> TLSInfo:
    tls = up.tls
    assert tls is not None
    return TLSInfo(sni=up.server_name, version=tls.version, cipher=tls.cipher, alpn=tls.alpn)
