"""WebSockets after a ``101 Switching Protocols``: messages, what a flow records, extensions.

The two wsproto connections of one proxied WebSocket are a
``wssession.WebSocketSession``'s; this module holds what the flow model and
hooks see (:class:`WebSocketMessage`, :class:`WebSocketData`) and the pure
helpers around wsproto's events. No I/O happens here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)

#: The only extension we can parse frames of (RFC 7692).
DEFLATE = "permessage-deflate"

#: Sides of a WebSocket, named by who sent a message.
CLIENT, SERVER = "client", "server"
Content = str | bytes


@dataclass(slots=True)
class WebSocketMessage:
    """One message (or control frame) seen on a WebSocket.

    In a ``websocket_message`` hook, set ``content`` to change it, call
    :meth:`drop` to stop it, and use ``flow.websocket.inject(...)`` to send
    new messages.
    """

    direction: str  # "client" (client to server) or "server"
    type: str  # "text", "binary", "ping", "pong" or "close"
    content: Content
    time: float
    size: int = 0
    dropped: bool = False
    injected: bool = False

    def drop(self) -> None:
        self.dropped = True

    @property
    def from_client(self) -> bool:
        return self.direction == CLIENT


@dataclass(slots=True)
class WebSocketData:
    """What a flow records of its WebSocket: messages (bounded) and the close."""

    max_messages: int = 1000
    max_content: int = 4096
    messages: deque[WebSocketMessage] = field(default_factory=deque)
    message_count: int = 0
    dropped_records: int = 0
    close_code: int | None = None
    close_reason: str = ""
    closed_by: str | None = None
    #: Messages hooks asked to send: (to side, content), drained by the core.
    outbox: list[tuple[str, Content]] = field(default_factory=list)

    def inject(self, content: Content, *, to: str = SERVER) -> None:
        """Send a new message to ``to`` ("server" or "client") after the current hook."""
        if to not in (CLIENT, SERVER):
            raise ValueError("to must be 'client' or 'server'")
        self.outbox.append((to, content))

    def record(self, message: WebSocketMessage) -> None:
        """Keep the message with a bounded content prefix; drop the oldest past the limit."""
        self.message_count += 1
        kept = WebSocketMessage(message.direction, message.type, message.content[: self.max_content],
                                message.time, message.size, message.dropped, message.injected)
        self.messages.append(kept)
        if len(self.messages) > self.max_messages:
            self.messages.popleft()
            self.dropped_records += 1


def only_deflate_offers(value: bytes) -> bytes:
    """Keep the permessage-deflate offers of a Sec-WebSocket-Extensions value.

    Frames of any other extension could not be parsed here, so the server is
    never offered one.
    """
    offers = [offer.strip() for offer in value.split(b",")]
    return b", ".join(o for o in offers if o.split(b";")[0].strip().lower() == DEFLATE.encode())


def agreed_extensions(values: list[bytes]) -> tuple[str | None, bool]:
    """The server's answer: (a permessage-deflate agreement or None, whether it is usable)."""
    names = [v.strip() for value in values for v in value.decode("latin-1").split(",") if v.strip()]
    if not names:
        return None, True
    if len(names) == 1 and names[0].split(";")[0].strip().lower() == DEFLATE:
        return names[0], True
    return None, False


def _other(side: str) -> str:
    return SERVER if side == CLIENT else CLIENT


def message_of(side: str, event: Event, time: float) -> WebSocketMessage | None:
    """The record of a control frame (ping/pong/close); None for data frames."""
    if isinstance(event, Ping):
        return WebSocketMessage(side, "ping", bytes(event.payload), time, len(event.payload))
    if isinstance(event, Pong):
        return WebSocketMessage(side, "pong", bytes(event.payload), time, len(event.payload))
    if isinstance(event, CloseConnection):
        return WebSocketMessage(side, "close", event.reason or "", time, 0)
    return None


def data_message(side: str, parts: list[Content], time: float) -> WebSocketMessage:
    """A whole data message from its fragments."""
    if parts and isinstance(parts[0], str):
        text = "".join(p for p in parts if isinstance(p, str))
        return WebSocketMessage(side, "text", text, time, len(text.encode("utf-8")))
    binary = b"".join(p for p in parts if isinstance(p, (bytes, bytearray)))
    return WebSocketMessage(side, "binary", binary, time, len(binary))


def outgoing(content: Content, finished: bool = True) -> TextMessage | BytesMessage:
    if isinstance(content, str):
        return TextMessage(data=content, message_finished=finished)
    return BytesMessage(data=bytes(content), message_finished=finished)


__all__ = [
    "CLIENT", "SERVER", "BytesMessage", "CloseConnection", "Message", "Ping", "Pong", "TextMessage",
    "WebSocketData", "WebSocketMessage", "data_message", "message_of", "outgoing",
]
