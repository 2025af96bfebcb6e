"""Faults for resilience tests: delays, throttling, resets, hangs, short and slow bodies.

Policy tier. ``proxy.fault(kind, **options_and_filters)`` builds one with
:func:`install`. Each kind's decision (how long to wait, where to cut, how
to split) is a small pure object that takes time and bytes as inputs
(:class:`Throttle`, :class:`Cut`, :class:`Dribble`), so it can move into the
core's timers. A hook attaches the fault to a flow; the core applies it: a
reset is ``flow.kill(reset=True)``, a truncate ``flow.truncate_after``, a
dribble or a download throttle ``flow.pace_body`` (pieces sent on the core's
"shape" timer), so they act the same through intercepted TLS. Delay, hang
and upload throttle still wait in async hooks on the proxy's loop. A narrow
:class:`ClientLink` covers the one thing with no flow: a reset at accept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .core.shaping import Cut
from .flow import Flow
from .hooks import FlowFilter, HookHandle, HookRegistry, make_filter

#: Each kind's options and their defaults (None: no default, or optional).
KINDS: dict[str, dict[str, Any]] = {
    "delay": {"seconds": 1.0},
    "throttle": {"bytes_per_second": 50_000, "direction": "download"},
    "reset": {"at": "headers"},
    "hang": {},
    "truncate": {"after": 1024},
    "dribble": {"chunk": 1, "interval": 0.05},
    "status": {"code": 503, "retry_after": None},
}
_CHOICES = {"direction": ("download", "upload"), "at": ("connect", "headers", "body")}


class ClientLink(Protocol):
    """What a fault may do to a flow's client connection, beyond hooks."""

    def reset_connection(self, address: tuple[str, int] | None) -> None:
        """Reset the client connection from ``address`` now (before any request)."""


class SessionLink:
    """A :class:`ClientLink` over the transport's client sessions (found by client address)."""

    def __init__(self, server: Callable[[], Any]) -> None:
        self._server = server

    def reset_connection(self, address: tuple[str, int] | None) -> None:
        server = self._server()
        if server is not None:  # no flow to kill yet: the transport resets the accepted socket
            server.reset_client(address)


# -- the decisions: pure, time and bytes in ------------------------------------------------


class Throttle:
    """Bytes per second: how long to wait before sending ``size`` more bytes at ``now``."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = float(bytes_per_second)
        self.start: float | None = None
        self.sent = 0

    def delay(self, now: float, size: int) -> float:
        if self.start is None:
            self.start = now
        self.sent += size
        return max(0.0, self.start + self.sent / self.rate - now)


@dataclass(frozen=True)
class Dribble:
    """A body in pieces of ``chunk`` bytes, ``interval`` seconds apart."""

    chunk: int
    interval: float

    def pieces(self, data: bytes) -> list[bytes]:
        return [data[i:i + self.chunk] for i in range(0, len(data), self.chunk)]


def split_options(kind: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(options, filters)`` for ``kind``; raises ValueError/TypeError for bad ones."""
    if kind not in KINDS:
        raise ValueError(f"unknown fault {kind!r}; faults are: {', '.join(KINDS)}")
    defaults = KINDS[kind]
    options = {**defaults, **{k: v for k, v in arguments.items() if k in defaults}}
    filters = {k: v for k, v in arguments.items() if k not in defaults}
    for name, allowed in _CHOICES.items():
        if name in options and options[name] not in allowed:
            raise ValueError(f"{kind} fault: {name}={options[name]!r}; use one of {', '.join(allowed)}")
    for name in ("seconds", "bytes_per_second", "after", "chunk", "interval", "code"):
        value = options.get(name)
        if value is not None and (not isinstance(value, (int, float)) or value < 0 or
                                  (name in ("bytes_per_second", "chunk") and value <= 0)):
            raise ValueError(f"{kind} fault: {name} must be a positive number, not {value!r}")
    return options, filters


# -- installing one --------------------------------------------------------------------------


def install(registry: HookRegistry, link: ClientLink, kind: str, *, where: FlowFilter | None = None,
            times: int | None = None, **arguments: Any) -> HookHandle:
    """Attach a fault; returns its handle (``.remove()``, ``.calls``, ``.flows``).

    Keywords that are not options of ``kind`` are filters, as for hooks
    (TypeError for one that is neither).
    """
    options, filters = split_options(kind, arguments)
    try:
        flow_filter = make_filter(where, **filters)
    except TypeError as exc:
        raise TypeError(f"{kind} fault: {exc}; its options are: {', '.join(KINDS[kind]) or 'none'}") from None
    label = f"fault {kind} " + " ".join(f"{k}={v}" for k, v in {**options, **filters}.items() if v is not None)
    handle = HookHandle(registry, [], label=label.strip(), acting=True)
    chosen = _Chooser(handle, flow_filter, times)
    for name, fn, order in _BUILDERS[kind](options, chosen, link, handle):
        handle.hooks.append(registry.add(name, fn, chosen.seen, order=order))
    return handle


class _Chooser:
    """Which flows a fault acts on: those its filter matches, at most ``times`` of them."""

    def __init__(self, handle: HookHandle, flow_filter: FlowFilter | None, times: int | None) -> None:
        self.handle = handle
        self.filter = flow_filter
        self.times = times
        self.flows: set[int] = set()

    def take(self, flow: Flow) -> bool:
        """True for a flow the fault acts on (counted once, when first seen)."""
        if id(flow) in self.flows:
            return True
        if self.filter is not None and not self.filter(flow):
            return False
        if self.times is not None and self.handle.calls >= self.times:
            return False
        self.flows.add(id(flow))
        self.handle.acted(flow)
        return True

    def seen(self, flow: Flow) -> bool:
        return id(flow) in self.flows or self.take(flow)


Build = Callable[[dict[str, Any], _Chooser, ClientLink, HookHandle], list[tuple[str, Callable[..., Any], int]]]


def _delay(options: dict[str, Any], chosen: _Chooser, link: ClientLink, handle: HookHandle) -> list[Any]:
    seconds = float(options["seconds"])

    async def wait(flow: Flow) -> None:
        await asyncio.sleep(seconds)

    return [("request_headers", wait, -1)]  # before mocks and cassettes: it delays their answers too


def _throttle(options: dict[str, Any], chosen: _Chooser, link: ClientLink, handle: HookHandle) -> list[Any]:
    rate = float(options["bytes_per_second"])

    def pace(flow: Flow) -> None:  # the core sends the body in pieces on its "shape" timer
        piece = max(1, min(16_384, int(rate / 20)))  # about 20 pieces a second
        flow.pace_body = (piece, piece / rate)

    async def pace_upload(flow: Flow) -> None:
        # No per-chunk request hook exists: the held body leaves after the time it takes at ``rate``.
        await asyncio.sleep(Throttle(rate).delay(time.monotonic(), len(flow.request.content)))

    if options["direction"] == "upload":
        return [("request", pace_upload, -1)]
    return [("response_headers", pace, 0)]


def _reset(options: dict[str, Any], chosen: _Chooser, link: ClientLink, handle: HookHandle) -> list[Any]:
    def reset(flow: Flow, data: Any = None) -> None:
        flow.kill(reset=True)  # the core asks the transport for the RST (CloseClient(reset=True))

    def reset_connection(address: tuple[str, int] | None) -> None:
        if chosen.times is None or handle.calls < chosen.times:
            handle.acted(None)
            link.reset_connection(address)

    at = options["at"]
    if at == "body":
        return [("response_chunk", reset, -1)]
    if at == "connect" and chosen.filter is None:
        return [("client_connected", reset_connection, -1)]  # nothing to filter on: at once
    hooks = [("request_headers", reset, -1)]
    if at == "connect":  # filtered: as soon as the filters can be checked
        hooks.append(("tunnel", reset, -1))  # HTTPS: before "200 Connection established"
    return hooks


def _hang(options: dict[str, Any], chosen: _Chooser, link: ClientLink, handle: HookHandle) -> list[Any]:
    held: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, Flow]] = []

    async def hang(flow: Flow) -> None:
        released = asyncio.Event()
        held.append((asyncio.get_running_loop(), released, flow))
        await released.wait()

    def release() -> None:  # removing the fault closes the connections it held
        for loop, event, flow in held:
            flow.kill()
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
        held.clear()

    handle.on_remove(release)
    return [("request_headers", hang, -1)]


def _truncate(options: dict[str, Any], chosen: _Chooser, link: ClientLink, handle: HookHandle) -> list[Any]:
    after = int(options["after"])

    def cut(flow: Flow) -> None:
        flow.truncate_after = after  # the core cuts the body there (a Cut) and closes: plain and TLS alike

    return [("response_headers", cut, 1)]


def _dribble(options: dict[str, Any], chosen: _Chooser, link: ClientLink, handle: HookHandle) -> list[Any]:
    plan = Dribble(int(options["chunk"]), float(options["interval"]))

    def dribble(flow: Flow) -> None:  # the core splits the body and sends it on its "shape" timer
        flow.pace_body = (plan.chunk, plan.interval)

    return [("response_headers", dribble, 2)]


def _status(options: dict[str, Any], chosen: _Chooser, link: ClientLink, handle: HookHandle) -> list[Any]:
    code, retry_after = int(options["code"]), options["retry_after"]
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}

    def answer(flow: Flow) -> None:
        flow.respond(code, text=f"fault injected by interceptkit: {code}\n", headers=headers)
        flow.metadata["matched_by"] = handle.label

    return [("request_headers", answer, -1)]


_BUILDERS: dict[str, Build] = {
    "delay": _delay, "throttle": _throttle, "reset": _reset, "hang": _hang,
    "truncate": _truncate, "dribble": _dribble, "status": _status,
}
