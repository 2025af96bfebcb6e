"""The seam between the exchange logic and the protocol layers (HTTP/1 via h11, HTTP/2 via h2).

Theory of operation
-------------------
A *protocol layer* owns one connection's framing: it turns the bytes from
its peer into neutral message events and neutral calls into bytes for its
peer. It knows nothing of flows, hooks or proxy rules. The *exchange logic*
(hooks, Via, hop-by-hop removal, X-Forwarded-*, mocks, kill, body capture,
retry) is written once against this interface, so an HTTP/1 and an HTTP/2
layer plug into the same logic.

Every message belongs to an exchange id ``xid``: on an HTTP/1 layer a
per-connection sequence number (1, 2, ... in pipeline order), on an HTTP/2
layer the stream id. Each upstream connection has its own id space.

A layer does not normalise what it forwards: the exchange logic decides every
header edit; layers only frame. Header names are bytes as received (HTTP/2:
lower case, pseudo-headers already taken into the head's fields).

    bytes from the peer --receive_data--> [HeadReceived, DataReceived, ..., MessageEnded]
    exchange logic --send_head/send_data/end--> layer --bytes_to_send--> bytes to the peer

Back-pressure: ``send_data`` may hold bytes inside the layer while the
peer's flow-control window is closed; ``writable(xid)`` says whether more can
go now. ``consumed(xid, n)`` reports that ``n`` received body bytes have left
towards the other side (HTTP/2 acknowledges them with WINDOW_UPDATE; HTTP/1
resumes reading); ``pause``/``resume`` stop and restart reading for one
exchange (HTTP/1: the whole connection).

Errors: a protocol error on one exchange is ``StreamReset``; on the whole
connection it is ``LayerFailed`` with the status the client should get, the
one error model of ``errors_base.ProxyError`` (h11/h2 exceptions never cross
this seam).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Fields = list[tuple[bytes, bytes]]


# -- the heads -----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class RequestHead:
    """A request head as the layer read it, or as the exchange logic wants it sent.

    HTTP/1 fills ``target`` (the request-target as written) and leaves
    ``authority``/``scheme`` to the exchange logic; HTTP/2 fills them from
    ``:authority``/``:scheme``/``:path`` and sets ``target`` to the path.
    """

    method: bytes
    target: bytes
    headers: Fields = field(default_factory=list)
    http_version: bytes = b"1.1"
    authority: bytes | None = None
    scheme: bytes | None = None


@dataclass(slots=True, kw_only=True)
class ResponseHead:
    """A response head (final or 1xx)."""

    status: int
    headers: Fields = field(default_factory=list)
    reason: bytes = b""
    http_version: bytes = b"1.1"


Head = RequestHead | ResponseHead


# -- what a layer reports (past tense, per exchange id) ----------------------------------


@dataclass(frozen=True, slots=True)
class HeadReceived:
    """A request head (client side) or a final response head (upstream side).

    ``end_stream``: no body follows (HTTP/2 END_STREAM on HEADERS; HTTP/1 a
    message framed with no body). ``MessageEnded`` still follows.
    """

    xid: int
    head: Head
    end_stream: bool = False


@dataclass(frozen=True, slots=True)
class InformationalReceived:
    """A 1xx response head (the upstream side only)."""

    xid: int
    head: ResponseHead


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Body bytes of the message of ``xid``; flow-controlled layers count them until ``consumed``."""

    xid: int
    data: bytes


@dataclass(frozen=True, slots=True)
class TrailersReceived:
    """Trailer fields; the message ends right after."""

    xid: int
    headers: Fields


@dataclass(frozen=True, slots=True)
class MessageEnded:
    """The message of ``xid`` in this direction is complete."""

    xid: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer cut the message of ``xid`` short (HTTP/2 RST_STREAM; HTTP/1 a connection cut mid-message)."""

    xid: int
    reason: str
    code: int | None = None


@dataclass(frozen=True, slots=True)
class LayerFailed:
    """A protocol error on the whole connection (HTTP/2 GOAWAY sent; HTTP/1 garbage).

    ``status_hint`` is the answer the client should get (400, 431, 502, ...).
    """

    reason: str
    status_hint: int = 400


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer closed its side in an orderly way (EOF) between messages."""


LayerEvent = (HeadReceived | InformationalReceived | DataReceived | TrailersReceived | MessageEnded
              | StreamReset | LayerFailed | PeerClosed)


# -- what the exchange logic calls on a layer -------------------------------------------------


class ProtocolLayer(Protocol):
    """One connection's framing, seen from the exchange logic: bytes in, events out; calls in, bytes out."""

    def receive_data(self, data: bytes) -> list[LayerEvent]:
        """Bytes from the peer (``b""``: the peer's EOF); the events they complete, in order."""

    def send_head(self, xid: int, head: Head, *, end_stream: bool) -> None:
        """Send the head of ``xid``'s message; ``end_stream``: no body follows."""

    def send_informational(self, xid: int, head: ResponseHead) -> None:
        """Send a 1xx before the final response (client side only)."""

    def send_data(self, xid: int, data: bytes) -> None:
        """Send body bytes; the layer may hold them while the peer's window is closed."""

    def writable(self, xid: int) -> bool:
        """Whether ``xid`` can take more body bytes now (HTTP/1: always, until its message ends)."""

    def send_trailers(self, xid: int, headers: Fields) -> None:
        """Send trailer fields; this ends the message."""

    def end(self, xid: int) -> None:
        """End ``xid``'s message (no trailers)."""

    def reset(self, xid: int, reason: str) -> None:
        """Abandon ``xid`` (a kill, a failure): HTTP/2 RST_STREAM (CANCEL); HTTP/1 close the connection."""

    def consumed(self, xid: int, n: int) -> None:
        """``n`` body bytes received on ``xid`` have left towards the other side."""

    def pause(self, xid: int) -> None:
        """Stop reading for ``xid`` (a hook runs, the other side is slow); HTTP/1: the whole connection."""

    def resume(self, xid: int) -> None:
        """Read again for ``xid``."""

    def bytes_to_send(self) -> bytes:
        """What the layer wants written to its socket now (``b""``: nothing)."""


class UpstreamLayer(ProtocolLayer, Protocol):
    """The layer towards one upstream connection: it opens exchanges, the client side answers them."""

    def start_exchange(self) -> int:
        """A fresh ``xid`` for the next request (HTTP/1: the next sequence number; HTTP/2: a new stream)."""

    def can_start_exchange(self) -> bool:
        """Whether a new request may go out now (HTTP/1: the connection is idle; HTTP/2: under the stream limit)."""
