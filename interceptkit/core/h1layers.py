"""HTTP/1 protocol layers over h11: one facing the client, one per upstream connection.

They implement the seam of ``core/layers.py`` (``ClientLayer``,
``UpstreamLayer``) so the exchange logic drives HTTP/1 and HTTP/2 alike.
HTTP/1 carries one exchange at a time: ``xid`` is the sequence number of the
request on the connection (1, 2, ... in pipeline order), and a pipelined
request is only read once the answer before it is complete (h11 holds its
bytes meanwhile: ``PAUSED``).

What only HTTP/1 has (a CONNECT or Upgrade handing the rest of the bytes to
something else, ``Expect: 100-continue``, keep-alive cycles, an answer written
raw when h11 is past a clean one) is a handful of extra methods, named so.

h11's exceptions never leave this module: a peer's garbage is a
``LayerFailed`` event, and a message we were asked to send that h11 refuses
(only a hook's change can make one) raises ``ProxyError`` with status 502.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11

from .errors import RemoteProtocolError, map_exceptions
from .http1 import (
    SUPPORTED_VERSIONS,
    ChunkSizeGuard,
    first_line_unversioned,
    h11_checked_fields,
    h11_request,
    h11_response,
    raw_response,
)
from .layers import (
    ClientLayer,
    DataReceived,
    Fields,
    HeadReceived,
    InformationalReceived,
    LayerEvent,
    LayerFailed,
    MessageEnded,
    PeerClosed,
    RequestHead,
    ResponseHead,
    TrailersReceived,
    UpstreamLayer,
)

__all__ = ["H1ClientLayer", "H1UpstreamLayer"]


# h11's names, bound once: the read loop below runs for every body piece.
_DATA, _END, _CLOSED, _PAUSED = h11.Data, h11.EndOfMessage, h11.ConnectionClosed, h11.PAUSED
#: Layer events are named tuples; made with their fields in order this way, no
#: Python code runs (the generated ``__new__`` would): see layers.py.
_new = tuple.__new__


def _request_framing(fields: Fields) -> bytes | None:
    """``b"chunked"``, ``b"sized"`` or None (no body: no framing, or ``Content-Length: 0``), in one pass."""
    framing = None
    for name, value in fields:
        lower = name.lower()
        if lower == b"transfer-encoding":
            return b"chunked"  # h11 takes no other coding; CL beside it is refused later (smuggling)
        if lower == b"content-length" and value.strip() != b"0":
            framing = b"sized"
    return framing


def check_request_head(head: RequestHead) -> None:
    """Check a head h11 did not parse (a hook's, an HTTP/2 client's) as h11 would, and put its fields in
    h11's normal form.

    Raises ``ProxyError`` (502) for fields h11 refuses. After this the head
    can go out through ``http1.h11_request``, which checks nothing itself.
    """
    with map_exceptions(ours="a hook made an invalid request"):
        head.headers = h11_checked_fields(head.method, head.target, head.headers)


class _H1Layer:
    """What both HTTP/1 sides share: the h11 connection, the bytes it framed, the pause."""

    _conn: h11.Connection
    #: One exchange at a time on the connection (HTTP/2 layers say True).
    multiplexed: bool

    def __init__(self) -> None:
        # Constants, yet set on the instance: read several times per request, and
        # CPython 3.11 looks a class attribute up in full on each read through an instance.
        self.multiplexed = False
        self._xid = 0
        self._out: list[bytes] = []
        self._paused = False
        self._failed = False
        self._events: list[LayerEvent] = []

    # -- output ----------------------------------------------------------------------------

    def _write(self, data: bytes | None) -> None:
        if data:
            self._out.append(data)

    def bytes_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def send_data(self, xid: int, data: bytes) -> int:
        """Frame body bytes (all of them: HTTP/1 has no window)."""
        framed = self._conn.send(h11.Data(data=data))
        if framed:
            self._out.append(framed)
        return len(data)

    def writable(self, xid: int) -> bool:
        return True

    def pending(self, xid: int) -> int:
        return 0

    def can_send_trailers(self, xid: int) -> bool:
        """Trailers need a chunked body (RFC 9112 7.1.2); otherwise they are dropped."""
        return False

    def send_trailers(self, xid: int, headers: Fields) -> None:
        self._write(self._conn.send(h11.EndOfMessage(headers=headers)))

    def end(self, xid: int) -> None:
        data = self._conn.send(h11.EndOfMessage())
        if data:
            self._out.append(data)

    def reset(self, xid: int, reason: str) -> None:
        """HTTP/1 cannot abandon one message: the connection is done."""
        self._failed = True

    def shutdown(self) -> None:
        """HTTP/1 has no goodbye of its own: closing the connection says it."""

    def forget(self, xid: int) -> None:
        """Nothing is kept per exchange here (one at a time)."""

    def consumed(self, xid: int, n: int) -> None:
        """Nothing to acknowledge: reading resumes with ``resume``."""

    def pause(self, xid: int) -> None:
        self._paused = True

    def resume(self, xid: int) -> None:
        self._paused = False

    @property
    def finished(self) -> bool:
        return self._failed or self._conn.our_state in (h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[LayerEvent]:
        """Bytes from the peer (``b""``: its EOF); the events they complete."""
        self._conn.receive_data(data)
        return self.pop_events()

    def pop_events(self) -> list[LayerEvent]:
        """The events h11 can give now, up to a pause, a message end or missing bytes."""
        events = self._events  # what calls left (a refused chunk size), else a fresh list
        if events:
            self._events = []
        else:
            events = []
        next_event = self._conn.next_event
        while not (self._paused or self._failed):
            try:
                event = next_event()
            except h11.RemoteProtocolError as exc:  # the one boundary of this hot loop: mapped here
                self._failed = True
                events.append(self._parse_error(RemoteProtocolError(str(exc), exc.error_status_hint)))
                break
            # The seam's events for one h11 event (inline: this loop runs for every body piece).
            kind = type(event)
            if kind is _DATA:
                events.append(_new(DataReceived, (self._xid, event.data)))  # type: ignore[union-attr]
            elif kind is _END:
                trailers = event.headers  # type: ignore[union-attr]
                if trailers:
                    events.append(TrailersReceived(xid=self._xid, headers=trailers.raw_items()))
                elif events and isinstance(last := events[-1], HeadReceived) and not last.end_stream:
                    # h11 ended the message right after its head (HEAD, 204, 304,
                    # Content-Length: 0, an empty chunked body): no body follows.
                    # h11 applied the framing rules; this reads its verdict.
                    events[-1] = HeadReceived(xid=self._xid, head=last.head, end_stream=True)
                events.append(_new(MessageEnded, (self._xid,)))
                break  # the other side answers first (HTTP/1: one exchange at a time)
            elif kind is _CLOSED:
                events.append(PeerClosed())
                break
            elif not self._translate_head(event, events):
                break  # NEED_DATA or PAUSED: nothing more comes now
        return events

    def _translate_head(self, event: object, events: list[LayerEvent]) -> bool:
        raise NotImplementedError

    def _parse_error(self, exc: RemoteProtocolError) -> LayerEvent:
        raise NotImplementedError


class H1ClientLayer(_H1Layer):
    """HTTP/1 towards the client (h11 in the SERVER role).

    Owns the h11 connection, the chunk-size guard of a chunked request body
    (h11 takes any size), how many bytes the current head arrived in (for the
    header-size check), and whether the request in flight is a HEAD.
    """

    def __init__(self, max_header_size: int, sink: list[bytes] | None = None) -> None:
        super().__init__()
        self.versions = SUPPORTED_VERSIONS  # (on the instance: see _H1Layer.__init__)
        if sink is not None:
            # The connection's own buffer of bytes for the client: what this
            # layer frames lands there at once, in order with the bytes the
            # connection writes itself (a tunnel's, a WebSocket's), and there
            # is nothing to take afterwards (a call less per send; HTTP/1
            # sends three times per answer).
            self._out = sink
        self._sinks = sink is not None
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_size)
        self._guard: ChunkSizeGuard | None = None
        #: Bytes fed since the connection (or its last cycle) began: a head
        #: over the limit needs more bytes than the limit in all.
        self.head_bytes = 0
        self.head_request = False
        self._head: ResponseHead | None = None  # the response head in flight (is it chunked? trailers ask)
        #: The last read stopped at bytes of a next message (pipelining, or after CONNECT/Upgrade).
        self.held_back = False
        #: After ``next_cycle``: a pipelined request or the client's EOF waits to be read.
        self.input_waiting = False

    def bytes_to_send(self) -> bytes:
        """What was framed since the last call; always ``b""`` with a sink (the bytes are there already)."""
        return b"" if self._sinks else super().bytes_to_send()

    def receive_data(self, data: bytes) -> list[LayerEvent]:
        if data:
            if self._guard is not None and not self._guard_chunks(data):
                return self.pop_events()
            self.head_bytes += len(data)
        self._conn.receive_data(data)
        events = self.pop_events()
        if (not events and b"\n" in data and self._conn.their_state is h11.IDLE
                and first_line_unversioned(self._conn.trailing_data[0])):
            # h11 would wait for headers that an HTTP/0.9 client never sends.
            self._failed = True
            events.append(LayerFailed(reason="HTTP/0.9 requests (a request line without a version) are not "
                                             "supported", status_hint=400))
        return events

    def _guard_chunks(self, data: bytes) -> bool:
        guard = self._guard
        assert guard is not None
        try:
            guard.feed(data)
        except RemoteProtocolError as exc:
            self._guard, self._failed = None, True
            self._events.append(LayerFailed(reason=str(exc), status_hint=exc.status, xids=(self._xid,)))
            return False
        if guard.done:
            self._guard = None
        return True

    def _start_guard(self, events: list[LayerEvent]) -> bool:
        """A chunked request: follow its chunk sizes from the body bytes that came with its head.

        Runs as h11 hands over the head, before it parses any chunk: a size
        beyond 2^63-1 in the same read is refused here (``LayerFailed``, 400).
        """
        guard = ChunkSizeGuard()
        try:
            guard.feed(self._conn.trailing_data[0])
        except RemoteProtocolError as exc:
            self._failed = True
            events.append(LayerFailed(reason=str(exc), status_hint=exc.status))
            return False
        self._guard = None if guard.done else guard
        return True

    def _translate_head(self, event: object, events: list[LayerEvent]) -> bool:
        if type(event) is h11.Request:
            self._xid += 1
            method = event.method
            self.head_request = method == b"HEAD"
            fields = event.headers.raw_items()
            framing = _request_framing(fields)
            if framing == b"chunked" and not self._start_guard(events):
                return False  # refused before h11 read a chunk of it: no exchange starts
            head = RequestHead(method=method, target=event.target, headers=fields, http_version=event.http_version)
            events.append(_new(HeadReceived, (self._xid, head, framing is None)))
            return True
        # NEED_DATA, or PAUSED: the client sent more while we still answer (h11 holds it).
        self.held_back = event is _PAUSED
        return False

    def _parse_error(self, exc: RemoteProtocolError) -> LayerEvent:
        in_flight = (self._xid,) if self._conn.their_state is not h11.IDLE or self._xid else ()
        return LayerFailed(reason=str(exc), status_hint=exc.status, xids=in_flight)

    # -- answers ---------------------------------------------------------------------------

    def send_head(self, xid: int, head: ResponseHead, *, end_stream: bool = False, validate: bool = True) -> None:
        """The final response head; ``validate``: h11 checks fields a hook may have set."""
        if validate:
            with map_exceptions(ours="a hook made an invalid response"):
                data = self._conn.send(h11.Response(status_code=head.status, reason=head.reason,
                                                    headers=head.headers))
        else:  # fields h11 parsed a moment ago: the hot path (see http1.h11_response)
            data = self._conn.send(h11_response(head.status, head.reason, head.headers))
        if data:
            self._out.append(data)
        self._head = head  # its framing is read only if trailers come (can_send_trailers)
        if end_stream and self._conn.our_state is h11.SEND_BODY:
            self.end(xid)

    def send_informational(self, xid: int, head: ResponseHead) -> None:
        """A 1xx; none reaches an HTTP/1.0 client (RFC 9110 15.2), except the 101 it asked for."""
        if head.status != 101 and self._conn.their_http_version != b"1.1":
            return
        self._write(self._conn.send(h11.InformationalResponse(status_code=head.status, headers=head.headers,
                                                              reason=head.reason)))

    def can_send_trailers(self, xid: int) -> bool:
        return self._head is not None and self._frames_chunked(self._head)

    def _frames_chunked(self, head: ResponseHead) -> bool:
        """Whether h11 frames this response's body chunked: h11's own rule (RFC 9112 6.3), without its privates."""
        if self.head_request or head.status in (204, 304) or self._conn.their_http_version != b"1.1":
            return False
        names = {n.lower() for n, _ in head.headers}
        return b"transfer-encoding" in names or b"content-length" not in names

    def send_whole_answer(self, head: ResponseHead, body: bytes, xid: int | None = None) -> None:
        """An answer of our own, whole (then the connection closes); raw when h11 is past a clean one."""
        if self.head_request:
            body = b""  # RFC 9110 9.3.2: the same head as GET, never a body
        with map_exceptions(ours="a hook made an invalid response"):
            response = h11.Response(status_code=head.status, reason=head.reason, headers=head.headers)
        try:
            parts = [self._conn.send(response)]
            if self._conn.our_state is h11.SEND_BODY:
                if body:
                    parts.append(self._conn.send(h11.Data(data=body)))
                parts.append(self._conn.send(h11.EndOfMessage()))
            data = b"".join(p for p in parts if p)
        except h11.LocalProtocolError:
            data = raw_response(response, body)
        self._write(data)

    # -- what only HTTP/1 has ----------------------------------------------------------------

    @property
    def expects_continue(self) -> bool:
        """The client waits for ``100 Continue`` before its body."""
        return self._conn.they_are_waiting_for_100_continue

    @property
    def http_version(self) -> bytes:
        return self._conn.their_http_version or b"1.1"

    @property
    def receiving_body(self) -> bool:
        return self._conn.their_state is h11.SEND_BODY

    @property
    def pipelined(self) -> bool:
        """Bytes of a next message wait in h11 (pipelining, or bytes after CONNECT/Upgrade)."""
        return bool(self._conn.trailing_data[0])

    def take_trailing(self) -> bytes:
        """The bytes after a CONNECT or an Upgrade: no longer HTTP/1, they go to the tunnel."""
        return self._conn.trailing_data[0]

    def next_cycle(self) -> bool:
        """The answer is complete: get ready for the next request; False if the connection must close."""
        conn = self._conn
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return False  # Connection: close, HTTP/1.0, or an unread request body
        conn.start_next_cycle()
        pending, closed = conn.trailing_data
        self.head_bytes = len(pending)
        self.input_waiting = bool(pending) or closed
        return True


class H1UpstreamLayer(_H1Layer):
    """HTTP/1 towards one upstream connection (h11 in the CLIENT role).

    Owns the h11 connection; ``xid`` is the number ``start_exchange`` gave
    the request being answered.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conn = h11.Connection(h11.CLIENT)

    def start_exchange(self) -> int:
        self._xid += 1
        return self._xid

    def can_start_exchange(self) -> bool:
        return self._conn.our_state is h11.IDLE and self._conn.their_state is h11.IDLE  # idle, without its call

    @property
    def idle(self) -> bool:
        """Between messages on both sides: a request may go out now (or it may be pooled)."""
        return self._conn.our_state is h11.IDLE and self._conn.their_state is h11.IDLE

    @property
    def sending(self) -> bool:
        """A request is (partly) out: it cannot be taken back."""
        return self._conn.our_state is not h11.IDLE

    def send_head(self, xid: int, head: RequestHead, *, end_stream: bool = False, validate: bool = True) -> None:
        if validate:
            check_request_head(head)
        headers = [(n, v) for n, v in head.headers if n != b"te"] if (b"te", b"trailers") in head.headers \
            else head.headers  # added for HTTP/2 origins: hop-by-hop here
        data = self._conn.send(h11_request(head.method, head.target, headers))
        if data:
            self._out.append(data)
        if end_stream:
            self.end(xid)

    def can_send_trailers(self, xid: int) -> bool:
        return True  # the request kept its chunked framing whenever it had trailers

    def _translate_head(self, event: object, events: list[LayerEvent]) -> bool:
        kind = type(event)
        if kind is h11.Response or kind is h11.InformationalResponse:
            head = ResponseHead(status=event.status_code, reason=event.reason,  # type: ignore[attr-defined]
                                headers=event.headers.raw_items(),  # type: ignore[attr-defined]
                                http_version=event.http_version)  # type: ignore[attr-defined]
            if kind is h11.Response:
                events.append(_new(HeadReceived, (self._xid, head, False)))  # pop_events marks one without a body
                return True
            events.append(InformationalReceived(xid=self._xid, head=head))
            return head.status != 101  # after a 101 the bytes are another protocol's
        return False

    def _parse_error(self, exc: RemoteProtocolError) -> LayerEvent:
        detail = str(exc)
        if self._conn.their_state is h11.SEND_RESPONSE or "ConnectionClosed" in detail:
            reason = "upstream closed the connection before answering"
        elif "incomplete" in detail or "peer closed" in detail:
            reason = "upstream closed the connection before the response was complete"
        else:
            reason = f"invalid response from upstream: {detail}"
        return LayerFailed(reason=reason, status_hint=502, xids=(self._xid,))

    def take_trailing(self) -> bytes:
        """The bytes after a 101: the upgraded protocol's first ones."""
        return self._conn.trailing_data[0]

    def next_cycle(self) -> bool:
        """The response is complete: ready for the next request; False if the connection cannot be reused.

        Bytes after a complete response answer nothing we asked: a connection
        that sends them cannot be trusted with the next request.
        """
        conn = self._conn
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE or conn.trailing_data[0]:
            return False
        conn.start_next_cycle()
        return True


if TYPE_CHECKING:  # mypy --strict proves the layers satisfy the seam's Protocols
    _client: type[ClientLayer] = H1ClientLayer
    _upstream: type[UpstreamLayer] = H1UpstreamLayer
