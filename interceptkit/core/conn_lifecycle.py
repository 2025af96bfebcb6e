"""ProxyConnection, part: hooks returning, timers firing.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from . import commands as cmd
from . import events as ev
from .base import ConnectionBase
from ..vocab import HookName
from .exchange import Exchange, PendingHook
from .state import Phase, Upstream
from .websocket import WebSocketMessage


class Lifecycle(ConnectionBase):
    """Hooks and timers: owns the hook calls that are out and which timers are pending.

    Waiting for a hook is a state of the exchange: ``RunHook(call=n)`` goes
    out and the exchange records it (``Exchange.waiting``); ``HookReturned(call=n)``
    moves it on through the table of what follows each hook (connection.py).
    """

    def _init_lifecycle(self) -> None:
        self._read_timer = False
        self._idle_timer = False
        #: The exchange each hook call that is out belongs to, by call id.
        self._calls: dict[int, Exchange] = {}
        self._hook_calls = count(1)

    def _hook(self, name: HookName, ex: Exchange, payload: bytes | WebSocketMessage | None = None) -> None:
        """Run the hooks called ``name`` on the flow; what follows each hook runs when it returns.

        With nothing attached to ``name`` this costs one set lookup, and what
        follows runs now.
        """
        if name not in self._config.hooks:
            self._after_hooks[name](self, ex, None, payload)
            return
        ex.hooked = True
        call = next(self._hook_calls)
        ex.waiting = PendingHook(call, name, payload)
        self._calls[call] = ex
        self._client.pause(ex.xid)  # HTTP/1: h11 holds what comes next until the hook returns
        self._emit(cmd.RunHook(name=name, flow=ex.flow, call=call, payload=payload))

    def _arm_read_timer(self, delay: float) -> None:
        if not self._read_timer:
            self._read_timer = True
            self._emit(cmd.StartTimer(name="read", delay=delay))

    def _arm_idle_timer(self, delay: float) -> None:
        if not self._idle_timer:
            self._idle_timer = True
            self._emit(cmd.StartTimer(name="idle", delay=delay))

    def _on_hook_returned(self, event: ev.HookReturned) -> None:
        ex = self._calls.pop(event.call, None)
        pending = ex.waiting if ex is not None else None
        if ex is None or pending is None or pending.call != event.call:
            return
        ex.waiting = None
        if ex.flow.state in ("open", "new") and not self._start_hold(ex, pending, event.result):
            self._after_hooks[pending.name](self, ex, event.result, pending.payload)  # not ended, not held (conn_holds)
        self._continue(ex)

    def _continue(self, ex: Exchange) -> None:
        """After a hook: take up what arrived for ``ex`` meanwhile, then read on."""
        if not self._hook_blocks_client():
            self._resume_upstreams()
            self._resume_client("hook")
        self._client.resume(ex.xid)
        if ex.upstream is not None and ex.upstream.layer.multiplexed:
            ex.upstream.layer.resume(ex.up_xid)  # HTTP/2: its acknowledgements flow again
        while ex.inbox and ex.waiting is None:
            source, event = ex.inbox.pop(0)  # (None until a hook held an event)
            self._deliver(source, event)
        if self._hook_blocks_client():
            return
        resume = _RESUME.get(self._phase)
        if resume is not None:
            resume(self)

    def _resume_http(self) -> None:
        self._resume_upstreams()
        self._resume_client("hook")
        self._client.resume(0)
        for up in list(self._upstreams.values()):
            self._pump_upstream(up)
        if not self._hook_blocks_client() and self._phase is Phase.HTTP:
            self._pump_client()

    def _resume_websocket(self) -> None:
        self._resume_upstreams()
        self._resume_client("hook")
        self._pump_ws()

    def _on_timer(self, event: ev.TimerFired) -> None:
        if event.timer == "read":
            self._read_timer = False
            self._check_read_timeout()
        elif event.timer == "idle":
            self._idle_timer = False
            self._check_idle_timeout()
        elif event.timer == "shape":
            self._on_shape_timer(event.key)  # per exchange, by its xid
        elif event.timer in ("hold", "upload"):
            self._on_exchange_timer(event)  # per exchange: routed by its key, the xid (conn_holds)
        elif event.timer == "sniff" and self._phase is Phase.SNIFF and not self._tunnel.has_early:
            self._tunnel_raw()  # the client waits for the server to speak first

    def _check_read_timeout(self) -> None:
        for ex in list(self._exchanges.values()):
            if ex.upstream is not None and ex.live:
                self._check_exchange_read_timeout(ex, ex.upstream)

    def _check_exchange_read_timeout(self, ex: Exchange, up: Upstream) -> None:
        timeout = self._config.read_timeout
        waited = self._now - up.last_activity
        if up.connected and not up.ready and waited >= timeout:
            self._upstream_failed(up, f"TLS handshake with the upstream took over {timeout:g} s", 504,
                                  timeout=True)
            return
        pace = ex.body_shape.pace if ex.body_shape is not None else None
        if (not up.ready or self._client_blocked or self._hook_blocks_client() or ex.waiting is not None
                or (pace and pace.ticking)):
            # Connecting (the transport times that), the client is not
            # reading, a hook runs or holds it, or we pace the body (its upstream paused):
            # none of that is the upstream's delay.
            self._arm_read_timer(timeout)
            return
        if waited < timeout:
            self._arm_read_timer(timeout - waited)
        elif ex.response_started:
            self._upstream_failed(up, f"upstream stalled: no data for {timeout:g} s", timeout=True)
        else:
            self._upstream_failed(up, f"upstream did not answer within {timeout:g} s", 504, timeout=True)

    def _check_idle_timeout(self) -> None:
        if self._phase is Phase.CLOSED:
            return
        if self._client.multiplexed and self._phase is Phase.HTTP:
            self._check_idle_streams()
            return
        timeout = self._config.idle_timeout
        idle = self._now - self._client_activity
        primary = self._primary()
        if self._phase in (Phase.TUNNEL, Phase.WEBSOCKET) and primary is not None:
            idle = min(idle, self._now - primary.last_activity)
        ex = self._current()
        # While the upstream owes the answer, the read timer watches instead; while a
        # hook runs or holds the exchange (conn_holds), the client is not the one idle.
        awaiting_upstream = ((ex is not None and (ex.request_complete or ex.waiting is not None))
                             or self._phase is Phase.CONNECTING)
        if awaiting_upstream or idle < timeout:
            self._arm_idle_timer(timeout if awaiting_upstream else timeout - idle)
        elif ex is not None and not ex.response_started:
            self._fail_exchange(ex, "the client stopped sending its request")
            self._answer(408, "the request did not arrive in time")
        else:
            _IDLE[self._phase](self, ex)

    def _check_idle_streams(self) -> None:
        """HTTP/2: streams whose request stopped arriving get 408; with none left, a quiet connection closes."""
        timeout = self._config.idle_timeout
        idle = self._now - self._client_activity
        exchanges = list(self._exchanges.values())
        if any(ex.request_complete for ex in exchanges) or idle < timeout:
            self._arm_idle_timer(timeout if exchanges else timeout - idle)
            return
        for ex in exchanges:
            if not ex.response_started:
                self._exchange_error(ex, 408, "the request did not arrive in time")
        if not self._exchanges:
            self._close_client()  # GOAWAY, then the close
        else:
            self._arm_idle_timer(timeout)

    def _idle_http(self, ex: Exchange | None) -> None:
        if self._client.receiving_body:
            self._answer(408, "the request did not arrive in time")
        else:
            self._close_client()

    def _idle_tunnel(self, ex: Exchange | None) -> None:
        self._abort("idle timeout")

    def _idle_websocket(self, ex: Exchange | None) -> None:
        self._ws_idle_close()

    def _idle_close(self, ex: Exchange | None) -> None:
        self._close_client()


#: What reading resumes after the last hook returned, by phase (others: nothing is read).
_RESUME: dict[Phase, Callable[[Lifecycle], None]] = {
    Phase.HTTP: Lifecycle._resume_http,
    Phase.WEBSOCKET: Lifecycle._resume_websocket,
}

#: What an idle timeout does, by phase.
_IDLE: dict[Phase, Callable[[Lifecycle, Exchange | None], None]] = {
    Phase.HTTP: Lifecycle._idle_http,
    Phase.SOCKS: Lifecycle._idle_close,
    Phase.CONNECTING: Lifecycle._idle_close,
    Phase.SNIFF: Lifecycle._idle_close,
    Phase.TUNNEL: Lifecycle._idle_tunnel,
    Phase.WEBSOCKET: Lifecycle._idle_websocket,
}
