"""ProxyConnection, part: hooks returning, timers firing.

See connection.py for the theory of operation.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from typing import Any

import h11

from . import commands as cmd
from . import events as ev
from .base import ConnectionBase
from ..vocab import HookName
from .state import Exchange, Phase
from .websocket import WebSocketMessage


class Lifecycle(ConnectionBase):
    """Hooks and timers: owns the hook call the connection waits for and which timers are pending.

    Waiting for a hook is a state: ``RunHook(call=n)`` goes out, the
    exchange waits, and ``HookReturned(call=n)`` moves it on.
    """

    def _init_lifecycle(self) -> None:
        self._read_timer = False
        self._idle_timer = False
        #: The hook call the connection waits for: (call id, exchange, continuation).
        self._waiting: tuple[int, Exchange, Callable[[Exchange, Any], None]] | None = None
        self._hook_calls = count(1)

    def _hook(self, name: HookName, ex: Exchange, then: Callable[[Exchange, Any], None],
              payload: bytes | WebSocketMessage | None = None) -> None:
        """Run the hooks called ``name`` on the flow, then ``then(ex, result)``.

        With nothing attached to ``name`` this costs one set lookup.
        """
        if name not in self._config.hooks:
            then(ex, None)
            return
        ex.hooked = True
        call = next(self._hook_calls)
        self._waiting = (call, ex, then)
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
        waiting = self._waiting
        if waiting is None or waiting[0] != event.call:
            return
        self._waiting = None
        _, ex, then = waiting
        if ex.flow.state in ("open", "new"):  # not ended while the hook ran
            then(ex, event.result)
        self._continue()

    def _continue(self) -> None:
        """After a hook: take up what arrived meanwhile, on both sides."""
        if self._waiting is not None:
            return
        self._resume_upstream()
        up = self._upstream
        if self._phase is Phase.WEBSOCKET:
            self._resume_client("hook")
            self._pump_ws()
            return
        if self._phase is Phase.HTTP:
            self._resume_client("hook")
            if up is not None:
                self._pump_upstream(up)
            if self._waiting is None and self._phase is Phase.HTTP:
                self._pump_client()

    def _on_timer(self, event: ev.TimerFired) -> None:
        if event.timer == "read":
            self._read_timer = False
            self._check_read_timeout()
        elif event.timer == "idle":
            self._idle_timer = False
            self._check_idle_timeout()
        elif event.timer == "shape":
            self._on_shape_timer()
        elif event.timer == "sniff" and self._phase is Phase.SNIFF and not self._early:
            self._tunnel_raw()  # the client waits for the server to speak first

    def _check_read_timeout(self) -> None:
        ex, timeout = self._exchange, self._config.read_timeout
        up = ex.upstream if ex is not None else None
        if ex is None or up is None:
            return
        waited = self._now - up.last_activity
        if up.connected and not up.ready and waited >= timeout:
            self._upstream_failed(up, f"TLS handshake with the upstream took over {timeout:g} s", 504,
                                  timeout=True)
            return
        pace = ex.body_shape.pace if ex.body_shape is not None else None
        if not up.ready or self._client_blocked or self._waiting is not None or (pace and pace.ticking):
            # Connecting (the transport times that), the client is not
            # reading, a hook runs, or we pace the body (its upstream paused):
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
        timeout = self._config.idle_timeout
        idle = self._now - self._client_activity
        if self._phase in (Phase.TUNNEL, Phase.WEBSOCKET) and self._upstream is not None:
            idle = min(idle, self._now - self._upstream.last_activity)
        ex = self._exchange
        # While the upstream owes the answer, the read timer watches instead.
        awaiting_upstream = (ex is not None and ex.request_complete) or self._phase is Phase.CONNECTING
        if awaiting_upstream or idle < timeout:
            self._arm_idle_timer(timeout if awaiting_upstream else timeout - idle)
        elif ex is not None and not ex.response_started:
            self._fail_exchange(ex, "the client stopped sending its request")
            self._answer(408, "the request did not arrive in time")
        elif self._phase is Phase.HTTP and self._client.their_state is h11.SEND_BODY:
            self._answer(408, "the request did not arrive in time")
        elif self._phase is Phase.TUNNEL:
            self._abort("idle timeout")
        elif self._phase is Phase.WEBSOCKET:
            self._ws_idle_close()
        else:
            self._close_client()
