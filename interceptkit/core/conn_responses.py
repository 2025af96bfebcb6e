"""ProxyConnection, part: answers from upstream (or from hooks) back to the client.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from typing import Any

import h11

from ..flow import Headers, Response
from . import commands as cmd
from .base import ConnectionBase
from .http1 import (
    end_to_end_fields,
    h11_response,
    reframe,
    sized,
)
from .shaping import Pace, Shape
from .state import Exchange, Upstream, capture_body, set_held_body


class Responses(ConnectionBase):
    """Answers travelling back to the client: from the upstream, from a hook (mock), or held for a hook.

    Owns no state of its own: it works on the exchange in flight.
    """

    def _pump_upstream(self, up: Upstream) -> None:
        while self._upstream is up and self._waiting is None:
            try:
                event = up.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._upstream_failed(up, _describe_upstream_error(up, str(exc)))
                return
            kind = type(event)
            if kind is h11.Data:
                self._on_response_data(event.data)  # type: ignore[union-attr]
            elif kind is h11.Response:
                if not self._parent_refused(up, event):  # type: ignore[arg-type]
                    self._on_response(event)  # type: ignore[arg-type]
            elif kind is h11.EndOfMessage:
                self._on_response_end(up, event)  # type: ignore[arg-type]
                return
            elif kind is h11.InformationalResponse:
                self._on_informational(up, event)  # type: ignore[arg-type]
            elif kind is h11.ConnectionClosed:
                self._drop_upstream(up)
                return
            else:  # NEED_DATA or PAUSED
                return
        if self._waiting is not None and self._upstream is up:
            self._pause_upstream(up)  # bound what piles up while a hook runs

    def _on_informational(self, up: Upstream, event: h11.InformationalResponse) -> None:
        if event.status_code == 101:
            self._switch_protocols(up, event)
            return
        if self._client.their_http_version != b"1.1":
            return  # RFC 9110 15.2: no 1xx to an HTTP/1.0 client
        fields, _ = end_to_end_fields(event.headers.raw_items())
        self._to_client(self._client.send(
            h11.InformationalResponse(status_code=event.status_code, headers=fields, reason=event.reason)
        ))

    def _on_response(self, event: h11.Response) -> None:
        ex = self._exchange
        if ex is None:
            return
        raw = event.headers.raw_items()
        response = Response(
            status=event.status_code, reason=event.reason.decode("latin-1"),
            http_version="HTTP/" + event.http_version.decode("ascii"), headers=Headers.from_wire(raw),
        )
        ex.flow.response = ex.upstream_response = response
        ex.flow.timings.response_start = self._now
        ex.response_started = True
        self._hook("response_headers", ex, self._after_response_headers)

    def _after_response_headers(self, ex: Exchange, _: Any) -> None:
        flow = ex.flow
        if flow.killed or (flow.response is not ex.upstream_response):
            ex.discard_response = True  # the upstream's body goes nowhere now
            if flow.killed:
                self._kill(ex)
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
        ex.response_chunked = chunked and body_length is None
        fields = reframe(fields, chunked) if body_length is None else sized(fields, body_length)
        if body_length is None and "response_chunk" in self._config.hooks:
            # Chunk hooks may change sizes: let h11 frame the body (chunked,
            # or close-delimited for HTTP/1.0) instead of a stale length.
            fields = [(n, v) for n, v in fields if n.lower() != b"content-length"]
        fields.append((b"Via", self._config.via))
        if ex.flow.truncate_after is not None or ex.flow.pace_body is not None:  # once per response
            ex.body_shape = Shape(ex.flow.truncate_after, ex.flow.pace_body)
        reason = response.reason.encode("latin-1", "replace")
        try:
            head = (h11.Response(status_code=response.status, reason=reason, headers=fields) if ex.hooked
                    else h11_response(response.status, reason, fields))
            self._to_client(self._client.send(head))
        except (h11.LocalProtocolError, ValueError) as exc:  # only a hook's change can get here
            reason_text = f"a hook made an invalid response: {exc}"
            self._fail_exchange(ex, reason_text)
            self._drop_upstream_if_busy()
            self._answer(502, reason_text)

    def _on_response_data(self, data: bytes) -> None:
        ex = self._exchange
        if ex is None or ex.flow.response is None or ex.discard_response:
            return
        capture_body(ex.flow.response, data, self._config.body_capture_limit)
        if ex.response_parts is not None:
            if ex.hold(ex.response_parts, data, self._config.hook_body_limit):
                parts, ex.response_parts = ex.response_parts, None
                self._send_response_head(ex, None)
                for part in parts:
                    if self._exchange is ex:
                        self._send_body(ex, part)
        elif "response_chunk" in self._config.hooks:
            self._hook("response_chunk", ex, lambda ex_, result: self._send_chunk(ex_, data, result),
                       payload=data)
        else:
            self._send_body(ex, data)

    def _send_body(self, ex: Exchange, data: bytes) -> None:
        shape = ex.body_shape
        if shape is None:  # the hot path: no shaping asked for
            self._to_client(self._client.send(h11.Data(data=data)))
        elif shape.pace is not None:
            self._pace(ex, shape.pace, data)
        else:
            self._send_cut(ex, shape, data)

    def _send_cut(self, ex: Exchange, shape: Shape, data: bytes) -> None:
        send, now = shape.cut.take(data) if shape.cut is not None else (data, False)
        if send:
            self._to_client(self._client.send(h11.Data(data=send)))
        if now:
            self._fail_exchange(ex, f"response body truncated after {ex.flow.truncate_after} bytes")
            self._drop_upstream_if_busy()
            self._close_client()  # the client sees a short read (over TLS: after close_notify)

    def _pace(self, ex: Exchange, pace: Pace, data: bytes) -> None:
        """Queue ``data`` in pieces; one goes now if no tick is due, the rest on the "shape" timer."""
        pace.add(data)
        if not pace.ticking:
            self._tick(ex, pace)
        elif ex.upstream is not None:
            self._pause_upstream(ex.upstream)  # what is queued is all we hold: read on when it is out

    def _tick(self, ex: Exchange, pace: Pace) -> None:
        if not pace.queue:
            pace.ticking = False
            self._resume_upstream()
            if pace.end is not None:
                (up, trailers), pace.end = pace.end, None
                self._end_response(ex, up, trailers)
            return
        pace.ticking = True
        assert ex.body_shape is not None
        self._send_cut(ex, ex.body_shape, pace.queue.popleft())
        if self._exchange is ex:
            self._emit(cmd.StartTimer(name="shape", delay=pace.interval))

    def _on_shape_timer(self) -> None:
        ex = self._exchange
        pace = ex.body_shape.pace if ex is not None and ex.body_shape is not None else None
        if ex is not None and pace is not None and pace.ticking:
            self._tick(ex, pace)

    def _send_chunk(self, ex: Exchange, original: bytes, result: Any) -> None:
        """Send a chunk as the hooks left it: replaced (bytes), unchanged (None), or dropped (b"")."""
        if ex.flow.killed:
            self._kill(ex)
            return
        chunk = original if result is None else result
        if isinstance(chunk, (bytes, bytearray)) and chunk and self._exchange is ex:
            self._send_body(ex, bytes(chunk))

    def _on_response_end(self, up: Upstream, event: h11.EndOfMessage) -> None:
        ex = self._exchange
        if ex is None:
            return
        trailers = event.headers.raw_items()
        if ex.discard_response:
            self._finish_mocked_after_upstream(ex, up)
            return
        if ex.response_parts is not None:
            assert ex.flow.response is not None
            set_held_body(ex.flow.response, ex.response_parts)
            ex.response_parts = None
            self._hook("response", ex, lambda ex_, _: self._after_response_hook(ex_, up))
            return
        if not (trailers and ex.response_chunked and self._client.their_http_version == b"1.1"):
            trailers = []
        pace = ex.body_shape.pace if ex.body_shape is not None else None
        if pace is not None and pace.ticking:
            pace.end = (up, trailers)  # the end goes out after the last paced piece
            return
        self._end_response(ex, up, trailers)

    def _end_response(self, ex: Exchange, up: Upstream, trailers: list[tuple[bytes, bytes]]) -> None:
        self._to_client(self._client.send(h11.EndOfMessage(headers=trailers)))
        self._complete_exchange(ex, up)

    def _after_response_hook(self, ex: Exchange, up: Upstream) -> None:
        flow = ex.flow
        if flow.killed:
            self._kill(ex)
            return
        if self._send_held_response(ex):
            self._complete_exchange(ex, up)

    def _send_held_response(self, ex: Exchange) -> bool:
        """Send ``flow.response`` with its whole body; False if its head was refused."""
        response = ex.flow.response
        assert response is not None
        no_body = ex.flow.request.method == "HEAD" or response.status in (204, 304)
        self._send_response_head(ex, None if no_body else len(response.content))
        if self._exchange is not ex:
            return False
        if ex.body_shape is not None:
            ex.body_shape.pace = None  # a held or mocked body goes whole (only a cut applies)
        if response.content and not no_body:
            self._send_body(ex, response.content)
            if self._exchange is not ex:
                return False  # cut short (flow.truncate_after)
        self._to_client(self._client.send(h11.EndOfMessage()))
        return True

    def _complete_exchange(self, ex: Exchange, up: Upstream | None) -> None:
        flow = ex.flow
        flow.timings.end = self._now
        flow.state = "done"
        self._set_exchange(None)
        self._touch_client()  # idle time counts from the end of the answer
        self._emit(cmd.FlowFinished(flow=flow))
        self._after_exchange(up)

    def _send_mock(self, ex: Exchange) -> None:
        """Answer with the response a hook made; the upstream is not asked."""
        ex.flow.timings.response_start = self._now
        if not self._send_held_response(ex):
            return
        up = ex.upstream
        if up is not None and up.conn.our_state is not h11.IDLE:
            self._drop_upstream(up)  # a half-sent request cannot be taken back
            up = None
        self._complete_exchange(ex, up)

    def _finish_mocked_after_upstream(self, ex: Exchange, up: Upstream) -> None:
        """A response hook replaced the upstream's answer: send the replacement."""
        ex.discard_response = False
        ex.upstream = None
        if up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE:
            up.conn.start_next_cycle()
            up.reused = True
        else:
            self._drop_upstream(up)
        self._send_mock(ex)

    def _kill(self, ex: Exchange) -> None:
        """A hook called flow.kill(): no answer, the client connection closes (a reset if asked)."""
        reset = ex.flow.kill_reset
        self._fail_exchange(ex, "killed by a hook")
        self._drop_upstream_if_busy()
        self._close_client(reset=reset)

    def _after_exchange(self, up: Upstream | None) -> None:
        if up is not None and self._upstream is up:
            reusable = up.conn.our_state is h11.DONE and up.conn.their_state is h11.DONE
            # Bytes after a complete response answer nothing we asked: a
            # connection that sends them cannot be trusted with the next request.
            if reusable and not up.conn.trailing_data[0]:
                up.conn.start_next_cycle()
                up.reused = True
            else:
                self._drop_upstream(up)
        client = self._client
        if client.our_state is not h11.DONE or client.their_state is not h11.DONE:
            self._close_client()  # Connection: close, HTTP/1.0, or an unread request body
            return
        client.start_next_cycle()
        self._resume_client("pipeline")
        pipelined, closed = client.trailing_data
        if pipelined or closed:
            self._pump_client()


def _describe_upstream_error(up: Upstream, detail: str) -> str:
    if up.conn.their_state is h11.SEND_RESPONSE or "ConnectionClosed" in detail:
        return "upstream closed the connection before answering"
    if "incomplete" in detail or "peer closed" in detail:
        return "upstream closed the connection before the response was complete"
    return f"invalid response from upstream: {detail}"
