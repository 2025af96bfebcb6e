"""Neutral message events and heads reported by the HTTP/2 layers.

These follow the exchange <-> layer seam agreed for the reshaped core
(``core/layers.py`` on the core branch): a layer turns bytes into these
events, keyed by an exchange id ``xid``, and turns calls such as
``send_head``/``send_data`` into bytes. When the core's own event classes
land, these can be replaced by imports of them: names and fields match the
agreed sketch, plus ``DataSent`` and ``ConnectionGoingAway`` which an h2
layer needs to report flow-control releases and GOAWAY.

Events are past-tense nouns, frozen dataclasses with keyword fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHead:
    """A request head without pseudo-headers in ``headers``.

    ``authority`` is ``:authority`` for h2 (``Host`` for h1); ``path`` is
    ``:path`` (the request target); CONNECT has ``scheme == path == b""``.
    """

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: Headers = field(default_factory=list)
    http_version: str = "HTTP/2"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseHead:
    """A response (or 1xx) head; ``reason`` is empty for h2, which has none."""

    status: int
    headers: Headers = field(default_factory=list)
    http_version: str = "HTTP/2"
    reason: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerEvent:
    """Base of everything a layer reports."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadReceived(LayerEvent):
    """A request head (client-facing layer) or response head (upstream layer).

    ``end_stream`` is END_STREAM on HEADERS: no body follows, and a
    ``MessageEnded`` for the same ``xid`` comes right after.
    """

    xid: int
    head: RequestHead | ResponseHead
    end_stream: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class InformationalReceived(LayerEvent):
    """A 1xx response head from the upstream."""

    xid: int
    head: ResponseHead


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived(LayerEvent):
    """Body bytes; they stay unacknowledged until ``consumed(xid, n)``."""

    xid: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class TrailersReceived(LayerEvent):
    """Trailer fields; a ``MessageEnded`` follows."""

    xid: int
    headers: Headers


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEnded(LayerEvent):
    """The peer ended its message on ``xid`` (END_STREAM)."""

    xid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset(LayerEvent):
    """The exchange ``xid`` ended abnormally: peer RST_STREAM, a stream-level
    protocol error, a stream refused by GOAWAY, or the connection lost.

    ``code`` is the HTTP/2 error code (``h2.errors.ErrorCodes``) when there is
    one. ``retryable`` is true when the peer certainly did not process the
    request (REFUSED_STREAM, above GOAWAY's last stream id, never sent).
    """

    xid: int
    reason: str
    code: int | None = None
    retryable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerFailed(LayerEvent):
    """A protocol error on the whole connection: GOAWAY was sent, every
    exchange in ``xids`` is over, and the socket should be closed once
    ``bytes_to_send()`` has been written."""

    reason: str
    status_hint: int
    xids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSent(LayerEvent):
    """``n`` bytes of ``xid`` that the peer's window held back were framed
    into ``bytes_to_send()`` (after a WINDOW_UPDATE or SETTINGS)."""

    xid: int
    n: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionGoingAway(LayerEvent):
    """The peer sent GOAWAY: no new exchanges on this layer; the ones it
    will still process go on and end normally."""

    code: int
    reason: str
