"""ProxyConnection, part: exchanges held on the core's timers, paced uploads, resets at accept.

See connection.py for the theory of operation. A hook only says what it
wants, on the flow; time does the rest here, so no hook sleeps on a loop and
core tests drive it all by feeding ``TimerFired`` events:

- ``flow.hold(seconds)`` / ``flow.hold()``: when the hook returns, the
  exchange keeps waiting (its ``waiting`` becomes a :class:`PendingHold`, so
  what arrives for it meanwhile still goes to its inbox); a "hold" timer
  keyed by its xid, a ``HoldReleased`` event (``flow.release()``), or the
  client going away ends it. Then what follows the hook runs, as it would
  have at once.
- ``flow.pace_upload = (bytes, seconds)``: request body pieces go towards
  the upstream one per "upload" tick (keyed by the xid); the client is not
  read while pieces wait, so the proxy holds one read at most.
- ``ProxyConfig.reset_at_connect(address)``: true answers a new connection
  with ``CloseClient(reset=True)`` before it sends anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from . import commands as cmd
from . import events as ev
from .base import ConnectionBase
from .exchange import Exchange, PendingHold, PendingHook
from .shaping import Pace


class Holds(ConnectionBase):
    """Holds and upload pacing: owns no state of its own; it works on the exchange's
    ``waiting`` (a :class:`PendingHold`) and ``upload_pace``."""

    # What other parts offer this one (defined in conn_lifecycle.py and conn_requests.py).
    _continue: Callable[[Exchange], None]
    _end_request_upstream: Callable[[Exchange], None]
    _on_client_connected: Callable[[ev.ClientConnected], None]

    # -- holds ----------------------------------------------------------------------

    def _start_hold(self, ex: Exchange, pending: PendingHook, result: Any) -> bool:
        """The hook that just returned asked for a hold: keep ``ex`` waiting; False if it did not."""
        flow = ex.flow
        seconds = flow.hold_for
        if seconds is None or flow.killed:  # released before it began, or killed: no wait
            return False
        flow.hold_for = None  # taken: a later hook holds again only if it asks again
        if self._exchanges.get(ex.xid) is not ex:  # a CONNECT's or a WebSocket's flow: not an HTTP exchange
            self._log("warning", f"flow #{flow.id}: hold() is for HTTP exchanges; ignored in the {pending.name} hook")
            return False
        forever = math.isinf(seconds)
        ex.waiting = PendingHold(pending.name, pending.payload, result, forever)
        if not forever:
            self._emit(cmd.StartTimer(name="hold", key=ex.xid, delay=seconds))
        return True

    def _on_exchange_timer(self, event: ev.TimerFired) -> None:
        """A per-exchange timer ("hold", "upload"), routed to its exchange by the key (its xid)."""
        ex = self._exchanges.get(event.key)
        if ex is None:
            return  # it ended meanwhile
        if event.timer == "hold":
            if isinstance(ex.waiting, PendingHold) and not ex.waiting.forever:
                self._end_hold(ex)
        elif ex.upload_pace is not None and ex.upload_pace.ticking:
            self._upload_tick(ex, ex.upload_pace)

    def _on_hold_released(self, event: ev.HoldReleased) -> None:
        for ex in list(self._exchanges.values()):
            if ex.flow.id == event.flow_id and isinstance(ex.waiting, PendingHold):
                self._end_hold(ex)

    def _end_hold(self, ex: Exchange) -> None:
        """The hold is over: what follows its hook runs now, then what arrived meanwhile."""
        hold = ex.waiting
        assert isinstance(hold, PendingHold)
        ex.waiting = None
        if ex.flow.state in ("open", "new"):
            self._after_hooks[hold.name](self, ex, hold.result, hold.payload)
        self._continue(ex)

    def _holding_forever(self) -> bool:
        """An exchange waits for a release that only the policy side can give (a hang)."""
        return any(isinstance(ex.waiting, PendingHold) and ex.waiting.forever and not ex.response_started
                   for ex in self._exchanges.values())

    def _on_client_eof_held(self) -> bool:
        """The client half-closed while held forever: nothing will ever be sent, so let go of it."""
        if not self._holding_forever():
            return False
        self._abort("client went away while the exchange was held")
        return True

    # -- paced uploads ----------------------------------------------------------------

    def _pace_upload(self, ex: Exchange, data: bytes) -> bool:
        """Queue request body ``data`` when the flow asks for pacing; False: send it as usual."""
        pace = ex.upload_pace
        if pace is None:
            if ex.flow.pace_upload is None:
                return False
            pace = ex.upload_pace = Pace(*ex.flow.pace_upload)
        pace.add(data)
        if not pace.ticking:
            self._upload_tick(ex, pace)
        if pace.queue:
            self._pause_client("pace")  # what is queued is all we hold: read on once it is out
        return True

    def _upload_end_waits(self, ex: Exchange) -> bool:
        """The request's end goes after its last paced piece: True while pieces still wait."""
        pace = ex.upload_pace
        if pace is None or not (pace.ticking or pace.queue):
            return False
        pace.end = True
        return True

    def _upload_tick(self, ex: Exchange, pace: Pace) -> None:
        if not pace.queue:
            pace.ticking = False
            self._resume_client("pace")
            if pace.end is not None:
                pace.end = None
                self._end_request_upstream(ex)
            return
        pace.ticking = True
        piece = pace.queue.popleft()
        up = ex.upstream
        if up is not None and ex.live:
            ex.remember(piece, len(piece), self._config.retry_buffer_limit)
            self._frame(ex, up, piece)
        self._touch_client()  # the client is quiet because we pace it, not idle
        self._emit(cmd.StartTimer(name="upload", key=ex.xid, delay=pace.interval))

    # -- a reset at accept ---------------------------------------------------------------

    def _on_client_accepted(self, event: ev.ClientConnected) -> None:
        """``ClientConnected``: the policy may refuse the connection with a reset before anything."""
        self._on_client_connected(event)
        refuse = self._config.reset_at_connect
        if refuse is None:
            return
        try:
            reset = refuse(event.address)
        except Exception as exc:  # the policy's failure lets the client in, and says so
            self._log("error", f"reset_at_connect raised {exc!r}; the connection is let in")
            return
        if reset:
            self._log("info", "connection reset at accept (policy: reset_at_connect)")
            self._close_client(reset=True)
