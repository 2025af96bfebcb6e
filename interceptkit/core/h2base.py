"""The common part of the HTTP/2 layers over ``h2.connection.H2Connection`` (sans-IO).

The public layers are in ``core/http2.py``; SETTINGS and configuration in
``core/h2settings.py``.

Theory of operation
-------------------
A layer owns one ``H2Connection`` and the per-stream state a proxy needs on
top of it (``LayerStream``). Bytes from the peer go in through
``receive_data()``, which returns the seam's events (``core/layers.py``);
the exchange logic calls ``send_head``/``send_data``/``send_trailers``/
``end``/``reset``/``consumed`` and collects ``bytes_to_send()``.

``H2ClientLayer`` faces the client (h2 in the server role, ``xid`` is the
client's stream id). ``H2UpstreamLayer`` faces an
origin (h2 in the client role): the caller picks ``xid``, the layer maps it
to a stream id when a stream slot is free.

Flow control, both directions:

- Received DATA is acknowledged (WINDOW_UPDATE) only through
  ``consumed(xid, n)``, i.e. when the bytes have left towards the other side.
  Windows are moderate (1 MiB per stream, 16 MiB per connection), so a slow
  reader stops its writer after at most a window's worth of bytes.
- DATA the peer's window holds back is kept in the stream's outbound buffer
  and released on WINDOW_UPDATE/SETTINGS (reported as ``DataSent``);
  ``pending(xid)`` says how much is held, so the caller stops acknowledging
  (and so stops reading) the other side.

Every ``h2`` error on input, including its ``ValueError``/``IndexError``/
``KeyError`` on garbage, becomes a GOAWAY with the error code and one
``LayerFailed``: nothing raises out of a layer for what a peer sent.
Closed streams are forgotten at once (ours and h2's own map).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.connection
import h2.events
import h2.exceptions

from .h2data import send_run, take
from .h2settings import (
    CONNECTION_WINDOW,
    GARBAGE_ERRORS,
    MAX_FRAME_SIZE,
    ErrorCodes,
    error_name,
    h2_config,
    local_settings,
    quiet_frame_repr,
)
from .layers import (
    ConnectionGoingAway,
    DataReceived,
    DataSent,
    Fields,
    LayerEvent,
    LayerFailed,
    MessageEnded,
    PeerClosed,
    StreamReset,
    TrailersReceived,
)


@dataclass(slots=True)
class LayerStream:
    """One exchange's stream; owned by its layer, written only there."""

    xid: int
    sid: int | None  # None while queued (upstream layer, no free stream slot)
    out: deque[memoryview] = field(default_factory=deque)
    out_len: int = 0
    end_pending: bool = False
    trailers: Fields | None = None
    local_ended: bool = False
    remote_ended: bool = False
    unacked: int = 0  # received, reported, not yet consumed()
    deferred_ack: int = 0  # consumed while paused
    paused: bool = False


class H2Layer:
    """Common to both sides: h2 events in, neutral events out, flow control."""

    client_side: bool = False
    status_hint: int = 400

    def __init__(self, *, validate_inbound: bool = True) -> None:
        quiet_frame_repr()  # h2 builds repr(frame) of every frame received
        self._conn = h2.connection.H2Connection(h2_config(client_side=self.client_side,
                                                          validate_inbound=validate_inbound))
        self._conn.local_settings = local_settings(client_side=self.client_side)
        # h2 copies this one from its default settings at construction time.
        self._conn.max_inbound_frame_size = MAX_FRAME_SIZE
        self._conn.initiate_connection()
        self._conn.increment_flow_control_window(CONNECTION_WINDOW - self._conn.inbound_flow_control_window)
        self._streams: dict[int, LayerStream] = {}  # by xid
        self._held: set[int] = set()  # xids with DATA held by a window
        self._by_sid: dict[int, LayerStream] = {}
        self._events: list[LayerEvent] = []
        self.failed = False
        self.going_away = False
        self._last_accepted: int | None = None  # after our GOAWAY: newer peer streams are refused
        self._handlers: dict[type[h2.events.Event], Callable[..., None]] = {
            h2.events.DataReceived: self._on_data, h2.events.TrailersReceived: self._on_trailers,
            h2.events.StreamEnded: self._on_ended, h2.events.StreamReset: self._on_reset,
            h2.events.WindowUpdated: self._on_window, h2.events.RemoteSettingsChanged: self._on_window,
            h2.events.ConnectionTerminated: self._on_goaway, **self._side_handlers(),
        }

    def _side_handlers(self) -> dict[type[h2.events.Event], Callable[..., None]]:
        """h2 events only one side handles (requests or responses)."""
        return {}

    # -- input ------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[LayerEvent]:
        """Feed bytes from the peer; returns every event since the last call.

        Never raises for what the peer sent: a protocol error becomes a GOAWAY
        (in ``bytes_to_send()``) and a ``LayerFailed`` event. ``b""`` is the
        peer's EOF (see ``connection_lost``).
        """
        if not data:
            return self.connection_lost()
        if not self.failed:
            try:
                for event in self._conn.receive_data(data):
                    self._handle(event)
            except h2.exceptions.ProtocolError as exc:
                self._fail(f"HTTP/2 protocol error: {exc}", exc.error_code)
            except GARBAGE_ERRORS as exc:
                self._fail(f"HTTP/2 protocol error: {exc!r}", ErrorCodes.PROTOCOL_ERROR)
        return self.pop_events()

    def pop_events(self) -> list[LayerEvent]:
        """Events produced since the last call (also by ``send_*`` calls,
        e.g. a queued request refused after GOAWAY)."""
        events, self._events = self._events, []
        return events

    def connection_lost(self) -> list[LayerEvent]:
        """The socket closed (EOF or an error): every open exchange ends with
        ``StreamReset`` (retryable when it was never sent), then ``PeerClosed``."""
        for stream in list(self._streams.values()):
            if not (stream.local_ended and stream.remote_ended):
                self._events.append(StreamReset(xid=stream.xid, reason="connection closed", retryable=stream.sid is None))
            self._forget(stream)
        self.failed = True
        self._events.append(PeerClosed())
        return self.pop_events()

    def _handle(self, event: h2.events.Event) -> None:
        # PING is answered by h2 itself; PRIORITY, ALTSVC, unknown frames,
        # SETTINGS acks are ignored (RFC 9113 4.1, 5.3.2). Push is disabled,
        # so h2 refuses PUSH_PROMISE as a protocol error.
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream = self._by_sid.get(event.stream_id)
        data = event.data or b""
        padding = (event.flow_controlled_length or 0) - len(data)
        if stream is None:  # a stream we already forgot: give the window back at once
            self._ack(event.flow_controlled_length or 0, event.stream_id)
            return
        if padding:
            self._ack(padding, event.stream_id)  # padding never leaves the proxy
        if data:
            stream.unacked += len(data)
            self._events.append(DataReceived(xid=stream.xid, data=data))

    def _on_trailers(self, event: h2.events.TrailersReceived) -> None:
        stream = self._by_sid.get(event.stream_id)
        if stream is not None:
            self._events.append(TrailersReceived(xid=stream.xid, headers=header_list(event.headers)))

    def _on_ended(self, event: h2.events.StreamEnded) -> None:
        stream = self._by_sid.get(event.stream_id)
        if stream is not None:
            stream.remote_ended = True
            self._events.append(MessageEnded(xid=stream.xid))
            self._maybe_forget(stream)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._by_sid.get(event.stream_id)
        if stream is None:
            return
        code = int(event.error_code)
        who = "peer reset the stream" if event.remote_reset else "stream error"
        self._events.append(StreamReset(xid=stream.xid, reason=f"{who} ({error_name(code)})", code=code,
                                        retryable=code == ErrorCodes.REFUSED_STREAM))
        self._forget(stream)

    def _on_window(self, event: h2.events.Event) -> None:
        for stream in list(self._streams.values()):
            if stream.out or stream.end_pending:
                sent = self._flush(stream)
                if sent:
                    self._events.append(DataSent(xid=stream.xid, n=sent))

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        code = int(event.error_code or 0)
        reason = f"peer sent GOAWAY ({error_name(code)})"
        if event.additional_data:
            reason += f": {event.additional_data.decode('utf-8', 'replace')[:200]}"
        self.going_away = True
        self._events.append(ConnectionGoingAway(code=code, reason=reason))
        self._after_goaway(event.last_stream_id or 0, reason)
        self._keep_open_for_streams()

    def _keep_open_for_streams(self) -> None:
        """After a GOAWAY (either way) h2 moves its connection to CLOSED and
        refuses every later frame, but RFC 9113 6.8 lets the streams it covers
        finish: while some are left, put h2's connection state back to open.
        New streams are refused by ``going_away``, not by h2."""
        if self._streams:
            self._conn.state_machine.state = (h2.connection.ConnectionState.CLIENT_OPEN if self.client_side
                                              else h2.connection.ConnectionState.SERVER_OPEN)

    def _after_goaway(self, last_stream_id: int, reason: str) -> None:
        """Fail what the GOAWAY did not cover (only the upstream layer has such streams)."""

    # -- output -----------------------------------------------------------

    def bytes_to_send(self) -> bytes:
        """Bytes to write to the peer (empty when nothing is waiting)."""
        return self._conn.data_to_send()

    def send_data(self, xid: int, data: bytes) -> int:
        """Send body bytes; returns how many were framed now. The rest waits
        for the peer's window and is reported by ``DataSent`` events."""
        stream = self._streams.get(xid)
        if stream is None or stream.local_ended or stream.end_pending or not data:
            return 0
        stream.out.append(memoryview(data))
        stream.out_len += len(data)
        sent = self._flush(stream) if stream.sid is not None else 0
        self._flush_starved(xid)
        return sent

    def send_trailers(self, xid: int, headers: Fields) -> None:
        """End the message with trailers (after any held DATA)."""
        self._finish(xid, list(headers))

    def end(self, xid: int) -> None:
        """End the message (END_STREAM on an empty DATA frame after held DATA)."""
        self._finish(xid, None)

    def reset(self, xid: int, reason: str = "", code: int = ErrorCodes.CANCEL) -> None:
        """RST_STREAM (CANCEL by default, e.g. for a killed flow) and forget the stream."""
        stream = self._streams.get(xid)
        if stream is None:
            return
        if stream.sid is not None and not self.failed:
            self._guard(lambda: self._conn.reset_stream(stream.sid or 0, code))
        self._forget(stream)

    def consumed(self, xid: int, n: int) -> None:
        """``n`` received body bytes of ``xid`` have left towards the other
        side: hand them back to the peer (WINDOW_UPDATE), unless paused."""
        stream = self._streams.get(xid)
        if stream is None or n <= 0:
            return
        n = min(n, stream.unacked)
        stream.unacked -= n
        if stream.paused:
            stream.deferred_ack += n
        else:
            self._ack(n, stream.sid or 0)
        self._maybe_forget(stream)

    def pause(self, xid: int) -> None:
        """Stop reading ``xid``: consumed bytes are not handed back until ``resume``."""
        stream = self._streams.get(xid)
        if stream is not None:
            stream.paused = True

    def resume(self, xid: int) -> None:
        """Read ``xid`` again: hand back what was consumed while paused."""
        stream = self._streams.get(xid)
        if stream is not None and stream.paused:
            stream.paused = False
            deferred, stream.deferred_ack = stream.deferred_ack, 0
            self._ack(deferred, stream.sid or 0)

    def pending(self, xid: int) -> int:
        """Body bytes of ``xid`` held in the layer by the peer's window."""
        stream = self._streams.get(xid)
        return stream.out_len if stream is not None else 0

    @property
    def finished(self) -> bool:
        """True once the connection has nothing left to do (GOAWAY either way
        or a failure, and no exchange left): close it after ``bytes_to_send()``."""
        return (self.going_away or self.failed) and not self._streams

    @property
    def pending_total(self) -> int:
        """Body bytes of all exchanges held by the peer's windows."""
        return sum(stream.out_len for stream in self._streams.values())

    def writable(self, xid: int) -> bool:
        """True when nothing of ``xid`` is held back (send more now)."""
        return self.pending(xid) == 0

    @property
    def active(self) -> int:
        """Exchanges the layer still tracks (open, queued, or with unconsumed bytes)."""
        return len(self._streams)

    def tracked(self) -> tuple[int, int]:
        """(our per-stream entries, h2's own stream map): both stay small, closed streams are dropped."""
        return len(self._streams), len(self._conn.streams)

    def unacknowledged(self, xid: int) -> int:
        """Received bytes of ``xid`` not yet ``consumed``."""
        stream = self._streams.get(xid)
        return stream.unacked if stream is not None else 0

    def shutdown(self, code: int = ErrorCodes.NO_ERROR) -> None:
        """Send GOAWAY; exchanges already started may finish."""
        if self.failed:
            return
        self.going_away = True
        self._last_accepted = self._conn.highest_inbound_stream_id
        self._guard(lambda: self._conn.close_connection(error_code=code))
        self._keep_open_for_streams()

    def _refused_after_goaway(self, stream_id: int) -> bool:
        """A stream the peer opened after our GOAWAY: RST_STREAM REFUSED_STREAM (safe to retry)."""
        if self._last_accepted is None or stream_id <= self._last_accepted:
            return False
        self._guard(lambda: self._conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM))
        return True

    # -- internals --------------------------------------------------------

    def _finish(self, xid: int, trailers: Fields | None) -> None:
        stream = self._streams.get(xid)
        if stream is None or stream.local_ended or stream.end_pending:
            return
        stream.end_pending, stream.trailers = True, trailers
        if stream.sid is not None:
            self._flush(stream)

    def _flush(self, stream: LayerStream) -> int:
        """Frame as much held DATA as the windows allow; then the end, if asked."""
        if stream.sid is None or self.failed:
            return 0
        try:
            return self._flush_stream(stream, stream.sid)
        except h2.exceptions.StreamClosedError:
            self._events.append(StreamReset(xid=stream.xid, reason="stream closed by the peer"))
            self._forget(stream)
        except h2.exceptions.ProtocolError as exc:
            self._fail(f"HTTP/2 state error: {exc}", ErrorCodes.INTERNAL_ERROR)
        return 0

    def _flush_stream(self, stream: LayerStream, sid: int) -> int:
        n = min(self._conn.local_flow_control_window(sid), stream.out_len)
        if n > 0:
            run = take(stream.out, n)
            stream.out_len -= n
            # END_STREAM rides on the last DATA frame when no trailers follow.
            last = stream.end_pending and stream.trailers is None and not stream.out
            send_run(self._conn, sid, run, last)
            if last:
                self._ended_after_data(stream)
        if not stream.out and stream.end_pending:
            self._send_end(stream, sid)
        if stream.out:
            self._held.add(stream.xid)
        else:
            self._held.discard(stream.xid)
        return max(n, 0)

    def _flush_starved(self, xid: int) -> None:
        """Other streams' held DATA, once the connection window has room again.

        Window events flush every stream, but a stream that sends as the window
        opens can take it all; the others would then wait for a WINDOW_UPDATE
        the peer has no reason to send (it still has room): flush them here.
        """
        if not self._held or self._conn.outbound_flow_control_window <= 0:
            return
        for other in list(self._held):
            stream = self._streams.get(other)
            if stream is None:
                self._held.discard(other)
                continue
            if other == xid:
                continue
            sent = self._flush(stream)
            if sent:
                self._events.append(DataSent(xid=other, n=sent))

    def _ended_after_data(self, stream: LayerStream) -> None:
        stream.end_pending, stream.local_ended = False, True
        self._maybe_forget(stream)

    def _send_end(self, stream: LayerStream, sid: int) -> None:
        if stream.trailers is not None:
            self._conn.send_headers(sid, stream.trailers, end_stream=True)
        else:
            self._conn.end_stream(sid)
        stream.end_pending, stream.local_ended, stream.trailers = False, True, None
        self._maybe_forget(stream)

    def _ack(self, n: int, sid: int) -> None:
        if n > 0 and sid > 0 and not self.failed:
            self._guard(lambda: self._conn.acknowledge_received_data(n, sid))

    def _guard(self, action: Callable[[], object]) -> None:
        """Run an h2 call whose failure means the connection is unusable."""
        try:
            action()
        except h2.exceptions.ProtocolError as exc:
            self._fail(f"HTTP/2 state error: {exc}", ErrorCodes.INTERNAL_ERROR)

    def _add(self, stream: LayerStream) -> None:
        self._streams[stream.xid] = stream
        if stream.sid is not None:
            self._by_sid[stream.sid] = stream

    def _bind(self, stream: LayerStream, sid: int) -> None:
        """A queued exchange got its stream id."""
        stream.sid = sid
        self._by_sid[sid] = stream

    def _drop(self, stream: LayerStream) -> None:
        """Forget a stream without handing its window back (the connection is going away)."""
        self._streams.pop(stream.xid, None)
        self._held.discard(stream.xid)
        if stream.sid is not None:
            self._by_sid.pop(stream.sid, None)

    def _ended_locally(self, stream: LayerStream) -> None:
        """END_STREAM went out on HEADERS."""
        stream.local_ended = True
        self._maybe_forget(stream)

    def _maybe_forget(self, stream: LayerStream) -> None:
        if stream.local_ended and stream.remote_ended and stream.unacked == 0 and not stream.deferred_ack:
            self._forget(stream)

    def _forget(self, stream: LayerStream) -> None:
        """Drop every trace of a stream; give back the connection window its unconsumed bytes held."""
        self._streams.pop(stream.xid, None)
        self._held.discard(stream.xid)
        if stream.sid is not None:
            self._by_sid.pop(stream.sid, None)
            self._ack(stream.unacked + stream.deferred_ack, stream.sid)
        stream.unacked = stream.deferred_ack = 0
        self._prune_h2()
        self._stream_slot_freed()

    def _prune_h2(self) -> None:
        # h2 deletes closed streams from its map when it counts open ones.
        _ = self._conn.open_inbound_streams + self._conn.open_outbound_streams

    def _stream_slot_freed(self) -> None:
        """Hook for the upstream layer's queue."""

    def _fail(self, reason: str, code: int) -> None:
        """Connection error: GOAWAY with ``code``, every exchange over."""
        if self.failed:
            return
        self.failed = True
        try:
            self._conn.close_connection(error_code=code, additional_data=reason.encode()[:200])
        except (h2.exceptions.ProtocolError, *GARBAGE_ERRORS):
            pass  # the GOAWAY is a courtesy; the socket closes anyway
        xids = tuple(self._streams)
        self._streams.clear()
        self._by_sid.clear()
        self._events.append(LayerFailed(reason=reason, status_hint=self.status_hint, xids=xids))


def header_list(headers: object) -> Fields:
    """h2 hands out header tuples; with ``header_encoding=None`` they hold bytes."""
    return [(bytes(name), bytes(value)) for name, value in headers]  # type: ignore[attr-defined]


def split_pseudo(headers: Fields) -> tuple[dict[bytes, bytes], Fields]:
    """Pseudo-header fields (h2 validated their place and names) and the rest."""
    pseudo = {name: value for name, value in headers if name.startswith(b":")}
    return pseudo, [(name, value) for name, value in headers if not name.startswith(b":")]
