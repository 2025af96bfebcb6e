"""One proxied WebSocket after its ``101 Switching Protocols``: both wsproto sides and what lies between.

The client side is a wsproto SERVER connection and the upstream side a
CLIENT one, so every frame is parsed, messages are whole before a hook sees
them, and whatever the hooks decide is framed anew. ``conn_websockets.py``
decides what to do with each event and emits the bytes; the state it works
on is a :class:`WebSocketSession`'s. No I/O happens here.
"""

from __future__ import annotations

from collections import deque

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event
from wsproto.extensions import Extension, PerMessageDeflate

from ..flow import Flow
from .exchange import Exchange
from .websocket import CLIENT, SERVER, Content, WebSocketData, WebSocketMessage


def _extensions(agreed: str | None) -> list[Extension]:
    if not agreed:
        return []
    deflate = PerMessageDeflate()
    deflate.finalize(agreed)  # parses the parameters after the name
    return [deflate]


class WebSocketSession:
    """One proxied WebSocket, from its 101 to its close.

    Owns both wsproto connections (the client's side: we are its server; the
    upstream's: we are its client), the queue of events they produced that
    were not handled yet, the fragments of a message still arriving and the
    bytes of it already streamed past the hooks (per sending side), and the
    exchange it belongs to, whose flow records its messages and its close.
    Written only through its methods.
    """

    __slots__ = ("_exchange", "_conns", "_pending", "_fragments", "_streamed")

    def __init__(self, exchange: Exchange, agreed: str | None = None) -> None:
        """``agreed`` is the server's Sec-WebSocket-Extensions answer, if any.

        Both sides use what the server agreed to: the client saw that same
        answer, so its frames are compressed the way the server expects.
        """
        self._exchange = exchange
        self._conns = {
            CLIENT: Connection(ConnectionType.SERVER, _extensions(agreed)),  # we are the server to the client
            SERVER: Connection(ConnectionType.CLIENT, _extensions(agreed)),
        }
        self._pending: deque[tuple[str, Event]] = deque()
        #: Fragments of a message still arriving, per sending side.
        self._fragments: dict[str, list[Content]] = {CLIENT: [], SERVER: []}
        #: Bytes of a message already streamed past the hooks, per sending side.
        self._streamed: dict[str, int] = {}

    @property
    def exchange(self) -> Exchange:
        return self._exchange

    @property
    def flow(self) -> Flow:
        return self._exchange.flow

    @property
    def data(self) -> WebSocketData:
        """What the flow records of this WebSocket (set as it started)."""
        data = self._exchange.flow.websocket
        assert isinstance(data, WebSocketData)
        return data

    # -- frames in and out ------------------------------------------------
    def receive(self, side: str, data: bytes | None) -> None:
        """Bytes (None: the connection ended) from ``side``; its events queue for :meth:`next_event`."""
        conn = self._conns[side]
        if conn.state is ConnectionState.CLOSED:
            return
        conn.receive_data(data)
        self._pending.extend((side, event) for event in conn.events())

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def next_event(self) -> tuple[str, Event]:
        """The oldest event not handled yet, with the side that sent it (only when :attr:`has_pending`)."""
        return self._pending.popleft()

    def send(self, to: str, event: Event) -> bytes:
        """Frame ``event`` for side ``to``; b"" when that side can no longer take it."""
        conn = self._conns[to]
        if conn.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return b""
        if conn.state is ConnectionState.REMOTE_CLOSING and not isinstance(event, CloseConnection):
            return b""
        return conn.send(event)

    def close_frame(self, to: str, code: int, reason: str = "") -> bytes:
        # 1005 and 1006 only report what happened; they never go on the wire (RFC 6455 7.4.1).
        wire_code = 1000 if code in (1005, 1006) else code
        return self.send(to, CloseConnection(code=wire_code, reason=reason))

    def is_protocol_error(self, side: str, event: CloseConnection) -> bool:
        """wsproto reports a broken frame as a close while the connection is still open."""
        return self._conns[side].state is ConnectionState.OPEN and event.code not in (1006,)

    def finished(self) -> bool:
        return all(conn.state is ConnectionState.CLOSED for conn in self._conns.values())

    # -- messages arriving in fragments -----------------------------------
    def add_fragment(self, side: str, part: Content) -> int:
        """Keep a fragment ``side`` sent; the size of its message held so far."""
        parts = self._fragments[side]
        parts.append(part)
        return sum(len(p) for p in parts)

    def take_fragments(self, side: str) -> list[Content]:
        """The fragments held for ``side``, no longer held."""
        parts, self._fragments[side] = self._fragments[side], []
        return parts

    def add_streamed(self, side: str, size: int) -> None:
        """``size`` bytes of ``side``'s message went out before it ended."""
        self._streamed[side] = self._streamed.get(side, 0) + size

    def take_streamed(self, side: str) -> int:
        """How much of ``side``'s message was streamed (0: none); counted afresh for its next one."""
        return self._streamed.pop(side, 0)

    def record(self, message: WebSocketMessage | None) -> None:
        """Keep ``message`` on the flow (control frames without a record are None)."""
        data = self._exchange.flow.websocket
        if message is not None and isinstance(data, WebSocketData):
            data.record(message)
