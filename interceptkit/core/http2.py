"""HTTP/2 protocol layers: one facing the client, one facing an origin.

``H2ClientLayer``: the client speaks h2 to us (h2 in the server role);
``xid`` is the client's stream id. ``H2UpstreamLayer``: we speak h2 to an
origin (h2 in the client role); ``xid`` comes from ``start_exchange()`` and
the layer maps it to a stream id once the peer's MAX_CONCURRENT_STREAMS
leaves a slot (requests beyond it wait in a FIFO queue). They implement the
seam of ``core/layers.py`` (``ClientLayer``, ``UpstreamLayer``). Flow
control, error handling and pruning are common to both: see ``core/h2base.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import h2.events
import h2.exceptions

from .h2base import H2Layer, header_list, LayerStream, split_pseudo
from .h2settings import MAX_FRAME_SIZE, ErrorCodes
from .layers import (
    ClientLayer,
    DataReceived,
    Fields,
    HeadReceived,
    InformationalReceived,
    LayerEvent,
    RequestHead,
    ResponseHead,
    StreamReset,
    UpstreamLayer,
)


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # RFC 9113 3.4


def starts_with_h2_preface(data: bytes) -> bool | None:
    """Prior-knowledge h2c on a plain listener (RFC 9113 3.3): True when
    ``data`` starts with the client preface, False when it cannot, None when
    more bytes are needed to tell. Feed all of ``data`` to ``H2ClientLayer``."""
    if data.startswith(PREFACE):
        return True
    return None if PREFACE.startswith(data) else False


class FrameBounds:
    """Where the peer's frames begin and end in the bytes it sends (a 9-byte header, then its length).

    Two things h2 does not do, done here: it checks a frame's length against
    our MAX_FRAME_SIZE only once the whole announced body has arrived, so a
    header announcing 16 MiB made it buffer up to 16 MiB of garbage before
    the FRAME_SIZE_ERROR (RFC 9113 4.2); and when a frame is a connection
    error it raises without the events of the frames before it in the same
    read, so a request read with a bad frame behind it never became a flow.
    Cutting the bytes at frame ends and feeding h2 one frame at a time keeps
    those events; an overlong header is refused as soon as it is read.
    """

    def __init__(self, skip: int, limit: int) -> None:
        self._skip = skip  # bytes before the next frame header: the preface, then each body
        self._header = bytearray()
        self._limit = limit

    def cut(self, data: bytes) -> tuple[list[bytes], int | None]:
        """``data`` cut after each frame that ends in it, and the first overlong length announced (or None)."""
        pieces: list[bytes] = []
        start = at = 0
        while at < len(data):
            if self._skip:
                step = min(self._skip, len(data) - at)
                self._skip -= step
                at += step
                if not self._skip and not self._header:
                    pieces.append(data[start:at])
                    start = at
                continue
            piece = data[at:at + 9 - len(self._header)]
            self._header += piece
            at += len(piece)
            if len(self._header) == 9:
                self._skip = int.from_bytes(self._header[:3], "big")
                self._header.clear()
                if self._skip > self._limit:
                    return [*pieces, data[start:at]], self._skip
                if not self._skip:
                    pieces.append(data[start:at])
                    start = at
        return ([*pieces, data[start:]] if start < len(data) else pieces), None


class _FramedLayer(H2Layer):
    """An h2 layer fed one frame at a time (see :class:`FrameBounds`)."""

    preface_length = 0

    def __init__(self, *, validate_inbound: bool = True) -> None:
        super().__init__(validate_inbound=validate_inbound)
        self._bounds = FrameBounds(self.preface_length, MAX_FRAME_SIZE)

    def receive_data(self, data: bytes) -> list[LayerEvent]:
        if not data or self.failed:
            return super().receive_data(data)
        pieces, overlong = self._bounds.cut(data)
        events: list[LayerEvent] = []
        for piece in pieces:
            events += super().receive_data(piece)
        if overlong is not None and not self.failed:
            self._fail(f"HTTP/2 protocol error: a frame of {overlong} bytes announced, over the maximum "
                       f"{MAX_FRAME_SIZE}", ErrorCodes.FRAME_SIZE_ERROR)
            events += self.pop_events()
        return coalesced(events) if len(events) > 1 else events


def coalesced(events: list[LayerEvent]) -> list[LayerEvent]:
    """``events`` with each run of adjacent ``DataReceived`` of one stream made one (their bytes joined once).

    A read carries many DATA frames of a stream (16 KiB each from most
    servers); one event per read instead of one per frame saves the exchange
    logic, the other layer's framing and the acknowledgement a call each per
    frame. Order is kept: only neighbours merge. The bytes are the same, so
    flow control counts the same (``consumed`` takes any split).
    """
    out: list[LayerEvent] = []
    run_xid = -1  # while >= 0, out[-1] is a DataReceived of this stream that may grow
    run: list[bytes] = []
    for event in events:
        if isinstance(event, DataReceived) and event.xid == run_xid:
            run.append(event.data)
            continue
        if len(run) > 1:
            out[-1] = DataReceived(xid=run_xid, data=b"".join(run))
        run_xid, run = (event.xid, [event.data]) if isinstance(event, DataReceived) else (-1, [])
        out.append(event)
    if len(run) > 1:
        out[-1] = DataReceived(xid=run_xid, data=b"".join(run))
    return out


class H2ClientLayer(_FramedLayer):
    """The client speaks h2 to us (h2 in the server role); ``xid`` is the stream id.

    Reports ``HeadReceived`` with a ``RequestHead``; answers with
    ``send_head(xid, ResponseHead, end_stream=...)``.
    """

    client_side = False
    status_hint = 400
    preface_length = len(PREFACE)  # h2 checks the preface itself

    def _side_handlers(self) -> dict[type[h2.events.Event], Callable[..., None]]:
        return {h2.events.RequestReceived: self._on_request}

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        if self._refused_after_goaway(event.stream_id):
            return
        pseudo, headers = split_pseudo(header_list(event.headers))
        method = pseudo.get(b":method", b"")
        if b":protocol" in pseudo or (method != b"CONNECT" and (b":path" not in pseudo or b":scheme" not in pseudo)):
            self._guard(lambda: self._conn.reset_stream(event.stream_id, ErrorCodes.PROTOCOL_ERROR))
            self._events.append(StreamReset(xid=event.stream_id, reason="malformed request head",
                                            code=ErrorCodes.PROTOCOL_ERROR))
            return
        authority = pseudo.get(b":authority")
        target = (authority or b"") if method == b"CONNECT" else pseudo.get(b":path", b"")
        head = RequestHead(method=method, target=target, scheme=pseudo.get(b":scheme"), authority=authority,
                           headers=headers, http_version=b"2")
        self._add(LayerStream(xid=event.stream_id, sid=event.stream_id))
        self._events.append(HeadReceived(xid=event.stream_id, head=head, end_stream=event.stream_ended is not None))

    def send_head(self, xid: int, head: ResponseHead, *, end_stream: bool = False) -> None:
        """Send the response head (``end_stream``: END_STREAM on HEADERS, no body)."""
        stream = self._streams.get(xid)
        if stream is None or self.failed:
            return
        fields = [(b":status", str(head.status).encode()), *head.headers]
        self._guard(lambda: self._conn.send_headers(xid, fields, end_stream=end_stream))
        if end_stream:
            self._ended_locally(stream)

    def send_informational(self, xid: int, head: ResponseHead) -> None:
        """Send a 1xx head (h2 passes 1xx through to h2 clients)."""
        if xid in self._streams and not self.failed and 100 <= head.status < 200:
            fields = [(b":status", str(head.status).encode()), *head.headers]
            self._guard(lambda: self._conn.send_headers(xid, fields))


PROVISIONAL_MAX_STREAMS = 100  # until the origin's first SETTINGS says otherwise


class H2UpstreamLayer(_FramedLayer):
    """We speak h2 to an origin (h2 in the client role).

    ``send_head(xid, RequestHead, end_stream=...)`` starts an exchange under
    the caller's ``xid``; events report the same ``xid``. While the origin's
    MAX_CONCURRENT_STREAMS is reached, new exchanges wait in a FIFO queue
    (their DATA and end are held with them).
    """

    client_side = True
    status_hint = 502

    def __init__(self, *, validate_inbound: bool = True) -> None:
        super().__init__(validate_inbound=validate_inbound)
        self._queue: deque[tuple[int, Fields, bool]] = deque()
        self._settings_seen = False
        self._highest_xid = 0  # start_exchange gives out numbers above every xid seen

    def _side_handlers(self) -> dict[type[h2.events.Event], Callable[..., None]]:
        return {h2.events.ResponseReceived: self._on_response,
                h2.events.InformationalResponseReceived: self._on_informational,
                h2.events.RemoteSettingsChanged: self._on_settings}

    @property
    def accepts_new(self) -> bool:
        """False after GOAWAY or a failure: open another connection for new requests."""
        return not (self.going_away or self.failed)

    def start_exchange(self) -> int:
        """A fresh ``xid`` (not a stream id: the stream is picked when a slot is free)."""
        self._highest_xid += 1
        return self._highest_xid

    def can_start_exchange(self) -> bool:
        """True when a request sent now gets a stream at once (not going
        away, under the origin's MAX_CONCURRENT_STREAMS); when False but
        ``accepts_new``, it would wait in the queue."""
        return self.accepts_new and not self._queue and self._slots() > 0

    @property
    def queued(self) -> int:
        """Exchanges waiting for a stream slot."""
        return len(self._queue)

    def send_head(self, xid: int, head: RequestHead, *, end_stream: bool = False) -> None:
        """Start exchange ``xid`` (END_STREAM on HEADERS when ``end_stream``).

        ``xid`` comes from ``start_exchange()``; a caller may also name an
        unused one of its own (a relay reusing the client's stream id). A head
        HTTP/2 cannot carry (no ``scheme``, a target not in origin form) ends
        the exchange with ``StreamReset``; ``h1_request_to_h2`` makes one it can.
        """
        if xid in self._streams:
            return
        self._highest_xid = max(self._highest_xid, xid)
        fields = request_fields(head)
        if not self.accepts_new or isinstance(fields, str):
            reason = fields if isinstance(fields, str) else "connection is going away"
            self._events.append(StreamReset(xid=xid, reason=reason, retryable=not isinstance(fields, str)))
            return
        self._add(LayerStream(xid=xid, sid=None))
        self._queue.append((xid, fields, end_stream))
        self._drain_queue()

    def _slots(self) -> int:
        limit = self._conn.remote_settings.max_concurrent_streams
        if not self._settings_seen:
            limit = min(limit, PROVISIONAL_MAX_STREAMS)
        return limit - self._conn.open_outbound_streams

    def _drain_queue(self) -> None:
        while self._queue and not self.failed and self._slots() > 0:
            xid, fields, end_stream = self._queue.popleft()
            stream = self._streams.get(xid)
            if stream is not None:
                self._open(stream, fields, end_stream)

    def _open(self, stream: LayerStream, fields: Fields, end_stream: bool) -> None:
        sid = self._conn.get_next_available_stream_id()
        try:
            self._conn.send_headers(sid, fields, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            self._fail(f"HTTP/2 state error: {exc}", ErrorCodes.INTERNAL_ERROR)
            return
        self._bind(stream, sid)
        if end_stream:
            self._ended_locally(stream)
        self._flush(stream)  # DATA and the end given while it was queued

    def _stream_slot_freed(self) -> None:
        self._drain_queue()

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        self._settings_seen = True
        self._on_window(event)
        self._drain_queue()

    def _after_goaway(self, last_stream_id: int, reason: str) -> None:
        """Streams above ``last_stream_id`` and queued ones were not processed: fail them (retryable)."""
        for stream in list(self._streams.values()):
            if stream.sid is None or stream.sid > last_stream_id:
                self._events.append(StreamReset(xid=stream.xid, reason=f"not processed: {reason}",
                                                code=ErrorCodes.REFUSED_STREAM, retryable=True))
                self._drop(stream)
        self._queue.clear()

    def _on_response(self, event: h2.events.ResponseReceived) -> None:
        stream = self._by_sid.get(event.stream_id)
        if stream is not None:
            head = _response_head(header_list(event.headers))
            self._events.append(HeadReceived(xid=stream.xid, head=head, end_stream=event.stream_ended is not None))

    def _on_informational(self, event: h2.events.InformationalResponseReceived) -> None:
        stream = self._by_sid.get(event.stream_id)
        if stream is not None:
            self._events.append(InformationalReceived(xid=stream.xid,
                                                      head=_response_head(header_list(event.headers))))


def request_fields(head: RequestHead) -> Fields | str:
    """The HEADERS fields of ``head`` (pseudo-headers first), or why HTTP/2 cannot send it.

    CONNECT: ``:method`` and ``:authority`` (the authority-form target) only
    (RFC 9113 8.5); otherwise ``:scheme`` is required and ``:path`` is the
    origin-form target or ``*`` (8.3.1).
    """
    if head.method == b"CONNECT":
        authority = head.authority or head.target
        return [(b":method", head.method), (b":authority", authority), *head.headers]
    if not head.scheme:
        return "request head without a scheme (HTTP/2 needs :scheme)"
    if not (head.target.startswith(b"/") or head.target == b"*"):
        return "request target not in origin form (HTTP/2 needs a :path)"
    fields = [(b":method", head.method), (b":scheme", head.scheme), (b":path", head.target)]
    if head.authority:
        fields.append((b":authority", head.authority))
    return fields + head.headers


def _response_head(fields: Fields) -> ResponseHead:
    # h2 validated :status as present and three digits (RFC 9113 8.3.2).
    pseudo, headers = split_pseudo(fields)
    return ResponseHead(status=int(pseudo.get(b":status", b"0")), headers=headers, http_version=b"2")


if TYPE_CHECKING:  # mypy --strict proves the two layers satisfy the seam's Protocols
    _client: type[ClientLayer] = H2ClientLayer
    _upstream: type[UpstreamLayer] = H2UpstreamLayer
