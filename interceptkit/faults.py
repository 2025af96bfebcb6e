"""Faults for resilience tests: delays, throttling, resets, hangs, short and slow bodies.

Policy tier. ``proxy.fault(kind, **options_and_filters)`` builds one with
:func:`install`. Each kind's decision (how long to wait, where to cut, how
to split) is a small pure object that takes time and bytes as inputs
(:class:`Throttle`, :class:`Cut`, :class:`Dribble`). A hook attaches the
fault to a flow and returns at once; the core applies it on its own timers
(time arrives on events), so they act the same through intercepted TLS and
core tests drive them without sleeping: a delay is ``flow.hold(seconds)``, a
hang ``flow.hold()`` (until the fault is removed or the client leaves), a
reset ``flow.kill(reset=True)``, a truncate ``flow.truncate_after``, a
dribble or a download throttle ``flow.pace_body`` and an upload throttle
``flow.pace_upload``. A reset at accept has no flow: :class:`ConnectResets`
is the proxy's ``ProxyConfig.reset_at_connect``, asked on every connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


class ConnectResets:
    """The "reset at=connect" faults of one proxy, as the core asks for them.

    Called with each accepted client's address (``ProxyConfig.reset_at_connect``,
    on the proxy's loop); True makes the core answer ``CloseClient(reset=True)``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: list[tuple[HookHandle, int | None]] = []

    def add(self, handle: HookHandle, times: int | None) -> None:
        with self._lock:
            self._handles.append((handle, times))
        handle.on_remove(lambda: self._remove(handle))

    def _remove(self, handle: HookHandle) -> None:
        with self._lock:
            self._handles = [(h, t) for h, t in self._handles if h is not handle]

    def __call__(self, address: tuple[str, int] | None) -> bool:
        with self._lock:
            for handle, times in self._handles:
                if times is None or handle.calls < times:
                    handle.acted(None)  # a connection, not a flow
                    return True
        return False


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


def install(registry: HookRegistry, link: ConnectResets, kind: str, *, where: FlowFilter | None = None,
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


Build = Callable[[dict[str, Any], _Chooser, ConnectResets, HookHandle], list[tuple[str, Callable[..., Any], int]]]


def _delay(options: dict[str, Any], chosen: _Chooser, link: ConnectResets, handle: HookHandle) -> list[Any]:
    seconds = float(options["seconds"])

    def wait(flow: Flow) -> None:  # the core holds the exchange on its "hold" timer
        flow.hold(seconds)

    return [("request_headers", wait, -1)]  # before mocks and cassettes: it delays their answers too


def _throttle(options: dict[str, Any], chosen: _Chooser, link: ConnectResets, handle: HookHandle) -> list[Any]:
    rate = float(options["bytes_per_second"])
    piece = max(1, min(16_384, int(rate / 20)))  # about 20 pieces a second

    def pace(flow: Flow) -> None:  # the core sends the body in pieces on its "shape" timer
        flow.pace_body = (piece, piece / rate)

    def pace_upload(flow: Flow) -> None:  # request pieces towards the upstream on its "upload" timer
        flow.pace_upload = (piece, piece / rate)

    if options["direction"] == "upload":
        return [("request_headers", pace_upload, -1)]
    return [("response_headers", pace, 0)]


def _reset(options: dict[str, Any], chosen: _Chooser, link: ConnectResets, handle: HookHandle) -> list[Any]:
    def reset(flow: Flow, data: Any = None) -> None:
        flow.kill(reset=True)  # the core asks the transport for the RST (CloseClient(reset=True))

    at = options["at"]
    if at == "body":
        return [("response_chunk", reset, -1)]
    if at == "connect" and chosen.filter is None:
        link.add(handle, chosen.times)  # nothing to filter on: the core asks on accept
        return []
    hooks = [("request_headers", reset, -1)]
    if at == "connect":  # filtered: as soon as the filters can be checked
        hooks.append(("tunnel", reset, -1))  # HTTPS: before "200 Connection established"
    return hooks


def _hang(options: dict[str, Any], chosen: _Chooser, link: ConnectResets, handle: HookHandle) -> list[Any]:
    held: list[Flow] = []
    lock = threading.Lock()

    def hang(flow: Flow) -> None:  # the core holds the exchange with no timer: until released
        flow.hold()
        with lock:
            held[:] = [f for f in held if f.state == "open"]  # what ended on its own is not held
            held.append(flow)

    def release() -> None:  # removing the fault closes the connections it held
        with lock:
            flows = list(held)
            held.clear()
        for flow in flows:
            if flow.state == "open":
                flow.kill()
                flow.release()  # the core moves the exchange on: killed, its connection closes

    handle.on_remove(release)
    return [("request_headers", hang, -1)]


def _truncate(options: dict[str, Any], chosen: _Chooser, link: ConnectResets, handle: HookHandle) -> list[Any]:
    after = int(options["after"])

    def cut(flow: Flow) -> None:
        flow.truncate_after = after  # the core cuts the body there (a Cut) and closes: plain and TLS alike

    return [("response_headers", cut, 1)]


def _dribble(options: dict[str, Any], chosen: _Chooser, link: ConnectResets, handle: HookHandle) -> list[Any]:
    plan = Dribble(int(options["chunk"]), float(options["interval"]))

    def dribble(flow: Flow) -> None:  # the core splits the body and sends it on its "shape" timer
        flow.pace_body = (plan.chunk, plan.interval)

    return [("response_headers", dribble, 2)]


def _status(options: dict[str, Any], chosen: _Chooser, link: ConnectResets, handle: HookHandle) -> list[Any]:
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
