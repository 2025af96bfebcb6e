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
per-connection sequence number (1, 2, ... in pipeline order); on a
client-facing HTTP/2 layer the client's stream id; on an upstream layer the
number ``start_exchange()`` gave out (HTTP/2 maps it to a stream id once a
stream slot is free, so it is not the stream id). Each upstream connection
has its own id space.

A layer does not normalise what it forwards: the exchange logic decides every
header edit; layers only frame. Header names are bytes as received (HTTP/2:
lower case, pseudo-headers already taken into the head's fields).

    bytes from the peer --receive_data--> [HeadReceived, DataReceived, ..., MessageEnded]
    exchange logic --send_head/send_data/end--> layer --bytes_to_send--> bytes to the peer

The one request head (``RequestHead``): ``target`` is always the
request-target in HTTP/1 form: origin-form ``/p?q``, absolute-form
``http://h/p`` (HTTP/1 only), authority-form ``h:443`` for CONNECT, or
``*``. ``scheme`` and ``authority`` are HTTP/2's ``:scheme`` and
``:authority``, ``None`` when the message did not carry them (HTTP/1). So an
HTTP/2 layer reports ``target = :path`` (CONNECT: ``:authority``) and sends
``:path = target``, and needs ``scheme`` and ``authority`` set to send one;
``core/h2translate.py`` turns an HTTP/1 head into such a head and back.
``http_version`` is ``b"1.1"``/``b"1.0"`` (as h11 writes it) or ``b"2"``.

Back-pressure: ``send_data`` returns how many bytes were framed now and may
hold the rest inside the layer while the peer's flow-control window is
closed (``pending(xid)`` counts them, ``writable(xid)`` says whether more
can go now, ``DataSent`` reports held bytes framed later). ``consumed(xid,
n)`` reports that ``n`` received body bytes have left towards the other side
(HTTP/2 acknowledges them with WINDOW_UPDATE; HTTP/1 resumes reading), so a
relay acknowledges a ``DataReceived`` by what the other layer framed and a
``DataSent`` of the other layer by its ``n``. ``pause``/``resume`` stop and
restart reading for one exchange (HTTP/1: the whole connection).

Errors: a protocol error on one exchange is ``StreamReset``; on the whole
connection it is ``LayerFailed`` with the status the client should get, the
one error model of ``errors_base.ProxyError`` (h11/h2 exceptions never cross
this seam). The peer's GOAWAY is ``ConnectionGoingAway``: no new exchanges,
the ones it covers go on.

Events are named tuples, one per past-tense fact: immutable, and made for
every body piece, so made cheaply (``tuple.__new__(DataReceived, (xid, data))``
on the hot path runs no Python code; a dataclass's ``__init__`` costs about
three times as much). Build them with keywords elsewhere; compare them by
type first (two kinds with equal fields are equal tuples). ``LayerEvent`` is their union, so a ``match`` over it can be checked for
exhaustiveness (``typing.assert_never``). Events a call produces (a request
refused after GOAWAY) wait in the layer until ``pop_events()`` or the next
``receive_data()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

Fields = list[tuple[bytes, bytes]]


# -- the heads -----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class RequestHead:
    """A request head as the layer read it, or as the exchange logic wants it sent.

    HTTP/1 fills ``target`` (the request-target as written) and leaves
    ``authority``/``scheme`` ``None``; HTTP/2 fills them from
    ``:authority``/``:scheme`` and sets ``target`` to ``:path`` (CONNECT:
    to ``:authority``, and ``scheme`` stays ``None``). ``headers`` never hold
    pseudo-headers. See the module docstring for the one representation.
    """

    method: bytes
    target: bytes
    headers: Fields = field(default_factory=list)
    http_version: bytes = b"1.1"
    authority: bytes | None = None
    scheme: bytes | None = None

    def describe(self) -> str:
        """The request as log lines name it (made only when one is written: a repr per request adds up)."""
        return f"{self.method.decode('ascii', 'replace')} {self.target[:200]!r}"


@dataclass(slots=True, kw_only=True)
class ResponseHead:
    """A response head (final or 1xx); ``reason`` is empty on HTTP/2, which has none."""

    status: int
    headers: Fields = field(default_factory=list)
    reason: bytes = b""
    http_version: bytes = b"1.1"


Head = RequestHead | ResponseHead


# -- what a layer reports (past tense, per exchange id) ----------------------------------


class HeadReceived(NamedTuple):
    """A request head (client side) or a final response head (upstream side).

    ``end_stream``: no body follows (HTTP/2 END_STREAM on HEADERS; HTTP/1 a
    message framed with no body). ``MessageEnded`` still follows.
    """

    xid: int
    head: Head
    end_stream: bool = False


class InformationalReceived(NamedTuple):
    """A 1xx response head (the upstream side only)."""

    xid: int
    head: ResponseHead


class DataReceived(NamedTuple):
    """Body bytes of the message of ``xid``; flow-controlled layers count them until ``consumed``."""

    xid: int
    data: bytes


class DataSent(NamedTuple):
    """``n`` body bytes of ``xid`` that the peer's window held back were framed
    into ``bytes_to_send()`` (HTTP/2, after a WINDOW_UPDATE or SETTINGS)."""

    xid: int
    n: int


class TrailersReceived(NamedTuple):
    """Trailer fields; ``MessageEnded`` follows."""

    xid: int
    headers: Fields


class MessageEnded(NamedTuple):
    """The message of ``xid`` in this direction is complete."""

    xid: int


class StreamReset(NamedTuple):
    """The exchange ``xid`` ended abnormally: the peer cut it (HTTP/2
    RST_STREAM; HTTP/1 a connection cut mid-message), a protocol error on
    that stream only, a stream GOAWAY did not cover, or the connection lost.

    ``code`` is the HTTP/2 error code when there is one. ``retryable``: the
    peer certainly did not process the request (REFUSED_STREAM, above
    GOAWAY's last stream id, or never sent), so it may be sent again.
    """

    xid: int
    reason: str
    code: int | None = None
    retryable: bool = False


class LayerFailed(NamedTuple):
    """A protocol error on the whole connection (HTTP/2 GOAWAY sent; HTTP/1 garbage).

    ``status_hint`` is the answer the client should get (400, 431, 502, ...).
    Every exchange in ``xids`` is over with it (no ``StreamReset`` of its
    own); close the socket once ``bytes_to_send()`` has been written.
    """

    reason: str
    status_hint: int = 400
    xids: tuple[int, ...] = ()


class ConnectionGoingAway(NamedTuple):
    """The peer announced it is closing (HTTP/2 GOAWAY): no new exchanges on
    this layer; the ones it will still process go on and end normally (those
    it will not are reported as retryable ``StreamReset``)."""

    code: int
    reason: str


class PeerClosed(NamedTuple):
    """The peer closed its side (EOF, ``receive_data(b"")``); exchanges it cut
    short were reported by ``StreamReset`` just before."""


LayerEvent = (HeadReceived | InformationalReceived | DataReceived | DataSent | TrailersReceived
              | MessageEnded | StreamReset | LayerFailed | ConnectionGoingAway | PeerClosed)


# -- what the exchange logic calls on a layer -------------------------------------------------


@runtime_checkable
class ProtocolLayer(Protocol):
    """One connection's framing, seen from the exchange logic: bytes in, events out; calls in, bytes out.

    What both sides share; ``ClientLayer`` and ``UpstreamLayer`` add the
    head each one sends.
    """

    def receive_data(self, data: bytes) -> list[LayerEvent]:
        """Bytes from the peer (``b""``: the peer's EOF); the events they complete, in order
        (after any left by earlier calls, see ``pop_events``)."""

    def pop_events(self) -> list[LayerEvent]:
        """Events produced since the last ``receive_data``/``pop_events`` by calls (e.g. a refused exchange)."""

    def send_data(self, xid: int, data: bytes) -> int:
        """Send body bytes; returns how many were framed now (HTTP/1: all). The
        rest waits for the peer's window and is reported by ``DataSent``."""

    def writable(self, xid: int) -> bool:
        """Whether ``xid`` can take more body bytes now: nothing of it is held back."""

    def pending(self, xid: int) -> int:
        """Body bytes of ``xid`` held in the layer by the peer's window (HTTP/1: 0)."""

    def send_trailers(self, xid: int, headers: Fields) -> None:
        """Send trailer fields (after any held body bytes); this ends the message."""

    def end(self, xid: int) -> None:
        """End ``xid``'s message (no trailers), after any held body bytes."""

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

    @property
    def finished(self) -> bool:
        """The connection has nothing left to do (closing or failed, no exchange left): close it after ``bytes_to_send()``."""


@runtime_checkable
class ClientLayer(ProtocolLayer, Protocol):
    """The layer towards the client: it reports requests and sends their responses."""

    def send_head(self, xid: int, head: ResponseHead, *, end_stream: bool = False) -> None:
        """Send the final response head of ``xid``; ``end_stream``: no body follows."""

    def send_informational(self, xid: int, head: ResponseHead) -> None:
        """Send a 1xx before the final response."""


@runtime_checkable
class UpstreamLayer(ProtocolLayer, Protocol):
    """The layer towards one upstream connection: it opens exchanges, the client side answers them."""

    def start_exchange(self) -> int:
        """A fresh ``xid`` for the next request (HTTP/1: the next sequence number; HTTP/2: an
        exchange number, mapped to a stream id when ``send_head`` gets a stream slot)."""

    def can_start_exchange(self) -> bool:
        """Whether a new request goes out now (HTTP/1: the connection is idle; HTTP/2: not
        going away and under the peer's stream limit; over it, requests wait in the layer)."""

    def send_head(self, xid: int, head: RequestHead, *, end_stream: bool = False) -> None:
        """Send the request head of ``xid``; ``end_stream``: no body follows."""
