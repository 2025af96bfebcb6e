"""Breakpoints: pause matching flows, edit them from the next cell, resume.

Theory of operation. A breakpoint is an ordinary async hook (``request`` or
``response``) with a filter. When it runs, it parks the flow: it registers a
future on the proxy's loop in :class:`PausedFlows` and awaits it, so that
exchange waits in its "hook running" state while every other connection
keeps flowing (the core never blocks on a hook). The user's thread finds the
flow (``proxy.paused``, ``proxy.next_paused()``), edits it in place and calls
``flow.resume()`` (or ``kill()``, ``respond()``); that reaches
:meth:`PausedFlows.resume` through the flow's owner, which completes the
future with ``call_soon_threadsafe``. The hook returns and the core goes on
with whatever the flow now holds. A timeout puts the message back as it was
paused and resumes it, with a log line.

:class:`PausedFlows` is the one owner of the paused state; a lock guards it,
since the proxy thread adds and the user's thread resumes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .flow import Flow, Message
from .hooks import HookHandle

log = logging.getLogger("interceptkit")

#: Where a breakpoint can stop a flow: the hook it rides on.
BREAK_AT = ("request", "response")


@dataclass(eq=False)
class _Pause:
    flow: Flow
    breakpoint: Breakpoint
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    #: The message as it was when paused: a timeout puts it back.
    saved: Message | None
    since: float = field(default_factory=time.time)
    handed_out: bool = False


class PausedFlows:
    """The flows paused at any breakpoint of one proxy, oldest first."""

    def __init__(self) -> None:
        self._pauses: dict[Flow, _Pause] = {}
        self._changed = threading.Condition()

    def flows(self, breakpoint: Breakpoint | None = None) -> list[Flow]:
        with self._changed:
            return [p.flow for p in self._pauses.values() if breakpoint in (None, p.breakpoint)]

    async def hold(self, flow: Flow, breakpoint: Breakpoint) -> None:
        """Park ``flow`` until it is resumed or ``breakpoint.timeout`` passes (the hook body)."""
        loop = asyncio.get_running_loop()
        message = flow.request if breakpoint.at == "request" else flow.response
        pause = _Pause(flow, breakpoint, loop, loop.create_future(),
                       None if message is None else message.copy())
        with self._changed:
            self._pauses[flow] = pause
            self._changed.notify_all()
        try:
            await asyncio.wait_for(asyncio.shield(pause.future), breakpoint.timeout)
        except asyncio.TimeoutError:
            self._expire(pause, message)
        finally:
            with self._changed:
                self._pauses.pop(flow, None)

    def _expire(self, pause: _Pause, message: Message | None) -> None:
        if message is not None and pause.saved is not None:
            message._assign(pause.saved)
        flow = pause.flow
        log.warning("breakpoint: flow #%d %s %s resumed unchanged after %g s at %s (timeout)",
                    flow.id, flow.request.method, flow.request.url, pause.breakpoint.timeout,
                    pause.breakpoint.at)

    def resume(self, flow: Flow) -> bool:
        """Let ``flow`` go on; False when it is not paused (any thread)."""
        with self._changed:
            pause = self._pauses.pop(flow, None)
        if pause is None:
            return False
        pause.loop.call_soon_threadsafe(_finish, pause.future)
        return True

    def resume_all(self, breakpoint: Breakpoint | None = None) -> int:
        flows = self.flows(breakpoint)
        return sum(self.resume(flow) for flow in flows)

    def next(self, timeout: float | None = None) -> Flow:
        """The oldest paused flow not handed out before; waits for one. Raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                pause = next((p for p in self._pauses.values() if not p.handed_out), None)
                if pause is not None:
                    pause.handed_out = True
                    return pause.flow
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no flow paused at a breakpoint within {timeout:g} s")
                self._changed.wait(remaining)

    def forget(self) -> None:
        """The proxy stopped: its loop and the futures on it are gone."""
        with self._changed:
            self._pauses.clear()
            self._changed.notify_all()


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Breakpoint:
    """What :meth:`Proxy.breakpoint` returns: ``.held`` flows, ``.remove()``.

    Args (see :meth:`Proxy.breakpoint`): where it stops (``at``), how long a
    flow may stay paused (``timeout`` seconds, None for ever).
    """

    def __init__(self, paused: PausedFlows, at: str, timeout: float | None) -> None:
        if at not in BREAK_AT:
            raise ValueError(f"a breakpoint stops at 'request' or 'response', not {at!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
        self._paused = paused
        self.at = at
        self.timeout = timeout
        self.handle: HookHandle | None = None

    def attach(self, on: Callable[..., HookHandle], where: Any, filters: dict[str, Any]) -> Breakpoint:
        async def pause(flow: Flow) -> None:
            if self.handle is not None and self.handle.active:
                self.handle.calls += 1
                await self._paused.hold(flow, self)

        self.handle = on(self.at, pause, where=where, **filters)
        return self

    @property
    def held(self) -> list[Flow]:
        """The flows paused here now, oldest first."""
        return self._paused.flows(self)

    @property
    def active(self) -> bool:
        return self.handle is not None and self.handle.active

    def remove(self) -> int:
        """Stop pausing flows and resume every flow paused here; returns how many."""
        if self.handle is not None:
            self.handle.remove()
        return self._paused.resume_all(self)

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        hits = self.handle.calls if self.handle is not None else 0
        return f"<Breakpoint at {self.at} {state}, {hits} hits, {len(self.held)} paused>"
