"""ProxyConnection, part: answers from upstream (or from hooks) back to the client.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from typing import Any

from ..flow import Response
from ..headers import wire_headers
from . import commands as cmd
from .base import ConnectionBase
from .errors import ProxyError
from .exchange import ANSWERING, DONE, Exchange, REPLACED, RESPONDING, set_held_body, unbind
from .http1 import end_to_end_fields, reframe, sized
from .layers import DataReceived, HeadReceived, MessageEnded, ResponseHead
from .shaping import Pace, Shape
from .state import Upstream


class Responses(ConnectionBase):
    """The response direction of the exchange logic: from the upstream, from a hook (mock), or held for a hook.

    Owns no state of its own: it works on the exchanges, and writes through
    the client's layer.
    """

    def _pump_upstream(self, up: Upstream) -> None:
        """Take up what ``up``'s layer holds (the rest of a response after a hook)."""
        if up.id in self._upstreams and not self._hook_blocks_client():
            self._upstream_events(up, up.layer.pop_events())

    def _on_informational(self, up: Upstream, ex: Exchange, head: ResponseHead) -> None:
        if head.status == 101:
            self._switch_protocols(up, ex, head)
            return
        fields, _ = end_to_end_fields(head.headers)
        self._client.send_informational(ex.xid, ResponseHead(status=head.status, headers=fields,
                                                             reason=head.reason))

    def _on_response(self, up: Upstream, ex: Exchange | None, event: HeadReceived) -> None:
        """A final response head from ``up``'s layer."""
        head = event.head
        assert isinstance(head, ResponseHead)
        if ex is None or (up.parent is not None and self._parent_refused(up, head)):
            return
        ex.response_bodyless = event.end_stream
        response = Response(
            status=head.status, reason=head.reason.decode("latin-1"),
            http_version="HTTP/" + head.http_version.decode("ascii"), headers=wire_headers(head.headers),
        )
        ex.flow.response = ex.upstream_response = response
        ex.flow.timings.response_start = self._now
        ex.enter(ANSWERING)
        self._hook("response_headers", ex)

    def _after_response_headers(self, ex: Exchange, _: Any, payload: Any = None) -> None:
        flow = ex.flow
        if flow.killed:
            self._kill(ex)
            return
        if flow.response is not ex.upstream_response:
            ex.enter(REPLACED)  # the upstream's body goes nowhere now
            return
        response = flow.response
        if "response" in self._config.hooks and response is not None and not response.stream:
            ex.response_parts = []
        else:
            self._send_response_head(ex, None)

    def _send_response_head(self, ex: Exchange, body_length: int | None) -> None:
        response = ex.flow.response
        assert response is not None
        fields, chunked = end_to_end_fields(response.headers.fields)
        fields = reframe(fields, chunked) if body_length is None else sized(fields, body_length)
        if body_length is None and "response_chunk" in self._config.hooks:
            # Chunk hooks may change sizes: let the layer frame the body
            # (chunked, or close-delimited for HTTP/1.0) instead of a stale length.
            fields = [(n, v) for n, v in fields if n.lower() != b"content-length"]
        fields.append((b"Via", self._config.via_for(response.http_version)))
        if ex.flow.truncate_after is not None or ex.flow.pace_body is not None:  # once per response
            ex.body_shape = Shape(ex.flow.truncate_after, ex.flow.pace_body)
        head = ResponseHead(status=response.status, reason=response.reason.encode("latin-1", "replace"),
                            headers=fields)
        # A body-less answer from an h2 origin ends with its head (END_STREAM on HEADERS).
        end_stream = ex.response_bodyless and body_length is None and ex.response_parts is None
        try:
            self._client.send_head(ex.xid, head, validate=ex.hooked, end_stream=end_stream)
            ex.response_ended = end_stream
        except ProxyError as exc:  # only a hook's change can get here
            up = ex.upstream
            self._fail_exchange(ex, exc.reason)
            self._drop_upstream_if_busy(up)
            self._answer(exc.status, exc.reason, ex.xid)
            return
        ex.enter(RESPONDING)

    def _on_response_data(self, up: Upstream, ex: Exchange | None, event: DataReceived) -> None:
        data = event.data
        if ex is None:
            up.layer.consumed(event.xid, len(data))
            return
        response = ex.flow.response
        if ex.state is not REPLACED and response is not None:  # else the body goes nowhere
            response.capture_piece(data, self._config.body_capture_limit)
            if ex.response_parts is not None:
                if ex.hold(ex.response_parts, data, self._config.hook_body_limit):
                    parts, ex.response_parts = ex.response_parts, None
                    self._send_response_head(ex, None)
                    for part in parts:
                        if ex.live:
                            self._send_body(ex, part)
            elif "response_chunk" in self._config.hooks:
                self._hook("response_chunk", ex, payload=data)
            elif ex.body_shape is None:  # the hot path, without the call _send_body would be
                self._client.send_data(ex.xid, data)
            else:
                self._send_body(ex, data)
        if self._client.multiplexed or up.layer.multiplexed:  # HTTP/1 both sides: no window, nothing to say
            self._upstream_data_sent_on(ex, up, len(data))

    def _send_body(self, ex: Exchange, data: bytes) -> None:
        shape = ex.body_shape
        if shape is None:  # the hot path: no shaping asked for
            self._client.send_data(ex.xid, data)
        elif shape.pace is not None:
            self._pace(ex, shape.pace, data)
        else:
            self._send_cut(ex, shape, data)

    def _send_cut(self, ex: Exchange, shape: Shape, data: bytes) -> None:
        send, now = shape.cut.take(data) if shape.cut is not None else (data, False)
        if send:
            self._client.send_data(ex.xid, send)
        if now:
            up = ex.upstream
            self._fail_exchange(ex, f"response body truncated after {ex.flow.truncate_after} bytes")
            self._drop_upstream_if_busy(up)
            self._end_stream_badly(ex)  # the client sees a short read (over TLS: after close_notify)

    def _pace(self, ex: Exchange, pace: Pace, data: bytes) -> None:
        """Queue ``data`` in pieces; one goes now if no tick is due, the rest on the "shape" timer."""
        pace.add(data)
        if not pace.ticking:
            self._tick(ex, pace)
        elif ex.upstream is not None:
            self._pause_upstream(ex.upstream, "pace")  # what is queued is all we hold: read on when it is out

    def _tick(self, ex: Exchange, pace: Pace) -> None:
        if not pace.queue:
            pace.ticking = False
            self._resume_upstreams("pace")
            if pace.end is not None:
                up, pace.end = pace.end, None
                self._end_response(ex, up)
            return
        pace.ticking = True
        assert ex.body_shape is not None
        self._send_cut(ex, ex.body_shape, pace.queue.popleft())
        if ex.live:
            # Keyed by the exchange, as "hold" and "upload": several paced HTTP/2 streams tick apart.
            self._emit(cmd.StartTimer(name="shape", key=ex.xid, delay=pace.interval))

    def _on_shape_timer(self, xid: int) -> None:
        ex = self._exchanges.get(xid)
        pace = ex.body_shape.pace if ex is not None and ex.body_shape is not None else None
        if ex is not None and pace is not None and pace.ticking:
            self._tick(ex, pace)

    def _after_chunk_hook(self, ex: Exchange, result: Any, original: Any) -> None:
        """Send a chunk as the hooks left it: replaced (bytes), unchanged (None), or dropped (b"")."""
        if ex.flow.killed:
            self._kill(ex)
            return
        chunk = original if result is None else result
        if isinstance(chunk, (bytes, bytearray)) and chunk and ex.live:
            self._send_body(ex, bytes(chunk))

    def _on_response_end(self, up: Upstream, ex: Exchange | None, event: MessageEnded) -> None:
        if ex is None:
            return
        if ex.state is REPLACED:
            self._finish_mocked_after_upstream(ex, up)
            return
        if ex.response_parts is not None:
            assert ex.flow.response is not None
            set_held_body(ex.flow.response, ex.response_parts)
            ex.response_parts = None
            ex.response_trailers = ()
            self._hook("response", ex)
            return
        pace = ex.body_shape.pace if ex.body_shape is not None else None
        if pace is not None and pace.ticking:
            pace.end = up  # the end goes out after the last paced piece
            return
        self._end_response(ex, up)

    def _end_response(self, ex: Exchange, up: Upstream | None) -> None:
        trailers = ex.response_trailers
        if trailers and self._client.can_send_trailers(ex.xid):
            self._client.send_trailers(ex.xid, trailers)
        elif not ex.response_ended:
            if trailers:  # HTTP/1 carries trailers only in a chunked body (RFC 9112 7.1.2)
                names = ", ".join(sorted({n.decode("latin-1").lower() for n, _ in trailers}))
                self._log("info", f"trailers dropped for an HTTP/1 client ({names}): {ex.flow.request.url}")
            self._client.end(ex.xid)
        self._complete_exchange(ex, up)

    def _after_response_hook(self, ex: Exchange, _: Any, payload: Any = None) -> None:
        flow = ex.flow
        if flow.killed:
            self._kill(ex)
            return
        if self._send_held_response(ex):
            self._complete_exchange(ex, ex.upstream)

    def _send_held_response(self, ex: Exchange) -> bool:
        """Send ``flow.response`` with its whole body; False if its head was refused, or
        its body streams from a source (conn_streams.py completes the exchange then)."""
        response = ex.flow.response
        assert response is not None
        no_body = ex.flow.request.method == "HEAD" or response.status in (204, 304)
        source = None if no_body else response.source
        self._send_response_head(ex, None if no_body or source is not None else len(response.content))
        if not ex.live:
            return False
        if source is not None:
            self._stream_body(ex, source)
            return False
        if ex.body_shape is not None:
            ex.body_shape.pace = None  # a held or mocked body goes whole (only a cut applies)
        if response.content and not no_body:
            self._send_body(ex, response.content)
            if not ex.live:
                return False  # cut short (flow.truncate_after)
        self._client.end(ex.xid)
        return True

    def _upstream_data_sent_on(self, ex: Exchange, up: Upstream, n: int) -> None:
        """``n`` response bytes went to the client: acknowledge them upstream once the client took them.

        A slow HTTP/2 client closes its window; then an HTTP/2 origin gets no
        WINDOW_UPDATE and an HTTP/1 origin is not read, so a slow reader slows
        its writer instead of growing our memory.
        """
        if self._client.writable(ex.xid):
            up.layer.consumed(ex.up_xid, n)
            return
        ex.unacked += n
        if not up.layer.multiplexed:
            self._pause_upstream(up, "window")

    def _client_took(self, ex: Exchange) -> None:
        """The client's window opened for ``ex``: what waited for it may flow again."""
        up = ex.upstream
        if up is None or not self._client.writable(ex.xid):
            return
        if ex.unacked:
            up.layer.consumed(ex.up_xid, ex.unacked)
            ex.unacked = 0
        if "window" in up.paused_for:
            self._resume_upstream(up, "window")
            self._pump_upstream(up)

    def _complete_exchange(self, ex: Exchange, up: Upstream | None) -> None:
        flow = ex.flow
        flow.timings.end = self._now
        flow.state = "done"
        ex.enter(DONE)
        self._remove_exchange(ex)
        self._touch_client()  # idle time counts from the end of the answer
        self._emit(cmd.FlowFinished(flow=flow))
        self._after_exchange(up)

    def _send_mock(self, ex: Exchange) -> None:
        """Answer with the response a hook made; the upstream is not asked."""
        ex.flow.timings.response_start = self._now
        if not self._send_held_response(ex):
            return
        up = ex.upstream
        if up is not None and up.layer.sending:
            self._drop_upstream(up)  # a half-sent request cannot be taken back
            up = None
        self._complete_exchange(ex, up)

    def _finish_mocked_after_upstream(self, ex: Exchange, up: Upstream) -> None:
        """A response hook replaced the upstream's answer: send the replacement."""
        unbind(ex)
        if up.layer.next_cycle():
            up.reused = True
        else:
            self._drop_upstream(up)
        self._send_mock(ex)

    def _kill(self, ex: Exchange) -> None:
        """A hook called flow.kill(): no answer, the client connection closes (a reset if asked)."""
        reset, up = ex.flow.kill_reset, ex.upstream
        self._fail_exchange(ex, "killed by a hook")
        self._drop_upstream_if_busy(up)
        if self._client.multiplexed and not reset:
            self._client.reset(ex.xid, "killed by a hook")  # HTTP/2: that stream only (RST_STREAM CANCEL)
        else:
            self._close_client(reset=reset)

    def _after_exchange(self, up: Upstream | None) -> None:
        if up is not None and up.id in self._upstreams:
            if up.layer.next_cycle():
                up.reused = True
                self._resume_upstream(up, "window")  # that stream's window no longer holds it back
            else:
                self._drop_upstream(up)
        if not self._client.next_cycle():
            self._close_client()  # Connection: close, HTTP/1.0, or an unread request body
            return
        self._resume_client("pipeline")
        if self._client.input_waiting:  # HTTP/1: only a pipelined request or an EOF is worth a read
            self._pump_client()
