"""ProxyConnection, part: mock bodies streamed from a source, piece by piece.

See connection.py for the theory of operation. ``flow.respond(body=...)``
with an iterator, a file or a path leaves ``response.source`` set. Once the
head went out, the core asks the transport for one piece at a time
(``PullBody(xid, source)``); the transport answers ``BodyPiece(xid, data,
end)`` only when the client can take more, so a body of any size passes
with one piece in memory. The exchange is complete when the piece marked
``end`` went out.
"""

from __future__ import annotations

from collections.abc import Callable

from . import commands as cmd
from . import events as ev
from .base import ConnectionBase
from .exchange import Exchange, RESPONDING
from .state import Upstream


class Streams(ConnectionBase):
    """Streamed mock bodies: owns no state of its own; the exchange's ``streaming`` is the source."""

    # What other parts offer this one (conn_responses.py).
    _send_body: Callable[[Exchange, bytes], None]
    _complete_exchange: Callable[[Exchange, Upstream | None], None]

    def _stream_body(self, ex: Exchange, source: object) -> None:
        """The head is out: pull the body's first piece (pacing does not apply, as to any mock body)."""
        if ex.body_shape is not None:
            ex.body_shape.pace = None
        ex.streaming = source
        self._emit(cmd.PullBody(xid=ex.xid, source=source))

    def _on_body_piece(self, event: ev.BodyPiece) -> None:
        ex = self._exchanges.get(event.xid)
        if ex is None or ex.streaming is None or ex.state is not RESPONDING:
            return  # it ended meanwhile (the client left, a cut): the transport closes the source
        response = ex.flow.response
        if event.data:
            if response is not None:
                response.body_size += len(event.data)  # counted, not kept: it may be any size
            self._send_body(ex, event.data)
            if not ex.live:  # cut short (flow.truncate_after)
                self._emit(cmd.PullBody(xid=event.xid, source=ex.streaming, stop=True))
                return
        if event.error is not None:
            self._emit(cmd.PullBody(xid=event.xid, source=ex.streaming, stop=True))
            self._fail_exchange(ex, f"the mock body could not be read: {event.error}")
            self._end_stream_badly(ex)  # the client sees a short read, never a complete-looking answer
        elif event.end:
            self._end_stream(ex)
        else:
            self._emit(cmd.PullBody(xid=ex.xid, source=ex.streaming))

    def _end_stream(self, ex: Exchange) -> None:
        ex.streaming = None
        self._client.end(ex.xid)
        up = ex.upstream
        if up is not None and up.layer.sending:
            self._drop_upstream(up)  # a half-sent request cannot be taken back
            up = None
        self._complete_exchange(ex, up)
