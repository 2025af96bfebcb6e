"""Hooks: plain callables attached to a running proxy, each with an optional filter.

The core asks for hooks by name (``RunHook``) and waits; :class:`HookRunner`
runs the matching callables in the order they were added, sync ones inline,
async ones as tasks on the proxy's loop, ``thread=True`` ones on a worker
thread, and reports back. A hook that raises is recorded on the flow and
skipped: the exchange goes on.
"""

from __future__ import annotations

import asyncio
import fnmatch
import inspect
import logging
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from .filters import compile_filter
from .flow import Flow
from .vocab import HOOK_NAMES


log = logging.getLogger("interceptkit")

#: Hooks that receive ``(flow, data)`` and may return a replacement for ``data``.
DATA_HOOKS = frozenset({"response_chunk", "websocket_message"})
#: Names used by handler-style libraries, mapped onto ours.
HANDLER_ALIASES = {
    "on_client_connected": "client_connected",
    "on_request_received": "request",
    "on_response_received": "response",
    "on_response_chunk": "response_chunk",
    "on_response_complete": "done",
    "on_error": "error",
    "on_websocket_message": "websocket_message",
    "on_client_disconnected": "client_disconnected",
}

FlowFilter = Callable[[Flow], bool]
#: How many flows a hook or handle remembers in ``.flows``.
HANDLE_FLOW_LIMIT = 10_000


# -- filters -------------------------------------------------------------------


def make_filter(where: FlowFilter | str | None = None, **keywords: Any) -> FlowFilter | None:
    """One predicate from a callable or a filter expression and/or keywords, all AND-ed together.

    A string is compiled by :func:`interceptkit.filters.compile_filter`
    (``"~m POST & ~c 201"``; ValueError with a caret when malformed).

    Keywords: ``host`` (glob, e.g. ``"*.example.com"``), ``method`` (a name or
    a list), ``path`` (glob on path and query, e.g. ``"/api/*"``), ``url``
    (glob on the whole URL), ``status`` (an int, a ``range``, a ``(low,
    high)`` pair or a collection), ``content_type`` (a substring, e.g.
    ``"json"``). Raises TypeError for an unknown keyword or for a ``where``
    that is neither a callable nor a filter expression (a ``str``).
    """
    where = _check_where(where)
    checks: list[FlowFilter] = [] if where is None else [where]
    for key, value in keywords.items():
        if value is None:
            continue
        if key not in _KEYWORD_CHECKS:
            raise TypeError(f"unknown filter {key!r}; use one of {sorted(_KEYWORD_CHECKS)} or where=")
        checks.append(_KEYWORD_CHECKS[key](value))
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]
    return lambda flow: all(check(flow) for check in checks)


def _check_where(where: Any) -> FlowFilter | None:
    """``where=`` checked when a hook is added, not on every flow it would see."""
    if where is None or callable(where):
        return cast("FlowFilter | None", where)
    if isinstance(where, str):
        return compile_filter(where)
    raise TypeError(
        f"where= must be a callable (flow) -> bool or a filter expression, not {type(where).__name__}; "
        f"filters are keywords (path=\"/api/*\", host=\"*.example.com\") or a callable "
        f"(where=lambda flow: ...)")


def _glob(attribute: Callable[[Flow], str]) -> Callable[[Any], FlowFilter]:
    def build(pattern: str) -> FlowFilter:
        pattern = pattern.lower()
        return lambda flow: fnmatch.fnmatchcase(attribute(flow).lower(), pattern)

    return build


def _method(value: str | list[str] | tuple[str, ...]) -> FlowFilter:
    methods = {value.upper()} if isinstance(value, str) else {m.upper() for m in value}
    return lambda flow: flow.request.method in methods


def _status(value: Any) -> FlowFilter:
    if isinstance(value, int):
        wanted: Callable[[int], bool] = value.__eq__
    elif isinstance(value, tuple) and len(value) == 2:
        low, high = value
        wanted = lambda status: low <= status <= high  # noqa: E731
    else:
        wanted = value.__contains__  # a range, set or list
    return lambda flow: flow.response is not None and wanted(flow.response.status)


def _content_type(value: str) -> FlowFilter:
    needle = value.lower()

    def check(flow: Flow) -> bool:
        message = flow.response if flow.response is not None else flow.request
        return needle in message.content_type

    return check


_KEYWORD_CHECKS: dict[str, Callable[[Any], FlowFilter]] = {
    "host": _glob(lambda flow: flow.request.host),
    "path": _glob(lambda flow: flow.request.path),
    "url": _glob(lambda flow: flow.request.url),
    "method": _method,
    "status": _status,
    "content_type": _content_type,
}


# -- the registry ----------------------------------------------------------------


@dataclass(eq=False)
class Hook:
    name: str
    fn: Callable[..., Any]
    where: FlowFilter | None = None
    thread: bool = False
    #: Hooks run by ascending order, then as added: mocks 0, cassettes 1, strict 2.
    order: int = 0
    #: Whether this hook's traceback was logged already (report once).
    reported: bool = False
    #: The flows this hook ran on, in order (bounded: a long-lived hook must not leak).
    flows: deque[Flow] = field(default_factory=lambda: deque(maxlen=HANDLE_FLOW_LIMIT))

    def saw(self, flow: Flow) -> None:
        if not self.flows or self.flows[-1] is not flow:  # data hooks run many times per flow
            self.flows.append(flow)

    def matches(self, flow: Flow) -> bool:
        if self.where is None:
            return True
        try:
            return bool(self.where(flow))
        except Exception:  # a broken filter skips its hook, like a raising hook
            self.report(flow, "filter")
            return False

    def report(self, flow: Flow | None, what: str = "hook") -> None:
        label = getattr(self.fn, "__qualname__", repr(self.fn))
        message = f"{self.name} {what} {label} raised: {traceback.format_exc(limit=-1).strip().splitlines()[-1]}"
        if flow is not None:
            flow.hook_errors.append(message)
        if not self.reported:
            self.reported = True
            log.error("%s\n%s", message, traceback.format_exc())


class HookHandle:
    """What :meth:`Proxy.on` returns: ``.remove()`` detaches the hook(s).

    It is callable like the function it wraps, so the decorator form keeps
    the decorated name usable.
    """

    def __init__(self, registry: HookRegistry, hooks: list[Hook], *, label: str = "",
                 acting: bool = False) -> None:
        self._registry = registry
        self.hooks = hooks
        #: What it is, for messages: ``mock GET http://api/*``.
        self.label = label
        #: How many times the hook(s) acted (counted by mocks, blocks and faults).
        self.calls = 0
        # Mocks, blocks and faults keep the flows they acted on; plain hooks
        # report the flows their functions ran on.
        self._acted: deque[Flow] | None = deque(maxlen=HANDLE_FLOW_LIMIT) if acting else None
        self._on_remove: list[Callable[[], None]] = []

    def acted(self, flow: Flow | None) -> None:
        """Count one action on ``flow`` (for mocks, blocks and faults; None: on a connection)."""
        self.calls += 1
        if self._acted is not None and flow is not None:
            self._acted.append(flow)

    @property
    def flows(self) -> list[Flow]:
        """The flows it handled, in order."""
        if self._acted is not None:
            return list(self._acted)
        seen = {id(f): f for hook in self.hooks for f in hook.flows}
        return sorted(seen.values(), key=lambda f: f.id)

    def on_remove(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once when the handle is removed (faults release what they hold)."""
        self._on_remove.append(fn)

    def remove(self) -> None:
        for hook in self.hooks:
            self._registry.remove(hook)
        callbacks, self._on_remove = self._on_remove, []
        for fn in callbacks:
            fn()

    @property
    def active(self) -> bool:
        return any(self._registry.contains(hook) for hook in self.hooks)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.hooks[0].fn(*args, **kwargs)

    def __repr__(self) -> str:
        names = self.label or ", ".join(h.name for h in self.hooks)
        return f"<HookHandle {names} {'active' if self.active else 'removed'}, {self.calls} calls>"


@dataclass
class HookRegistry:
    """Hooks by name. Readers get immutable snapshots, so hooks can be added
    and removed from any thread while requests are in flight."""

    _hooks: dict[str, tuple[Hook, ...]] = field(default_factory=dict)
    #: The names with at least one hook: the core's cheap "anyone listening?".
    active: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, fn: Callable[..., Any], where: FlowFilter | None = None,
            thread: bool = False, order: int = 0) -> Hook:
        """Attach ``fn``; raises ValueError for an unknown name, TypeError for a
        ``fn`` or ``where`` that is not callable."""
        check_hook_name(name)
        if not callable(fn):
            raise TypeError(f"a hook must be callable (flow) -> None, not {type(fn).__name__}: {fn!r:.60}")
        hook = Hook(name, fn, _check_where(where), thread, order)
        with self._lock:
            hooks = (*self._hooks.get(name, ()), hook)
            self._hooks[name] = tuple(sorted(hooks, key=lambda h: h.order))  # stable: keeps add order
            self.active.add(name)
        return hook

    def remove(self, hook: Hook) -> None:
        with self._lock:
            remaining = tuple(h for h in self._hooks.get(hook.name, ()) if h is not hook)
            self._hooks[hook.name] = remaining
            if not remaining:
                self.active.discard(hook.name)

    def contains(self, hook: Hook) -> bool:
        return hook in self._hooks.get(hook.name, ())

    def get(self, name: str) -> tuple[Hook, ...]:
        return self._hooks.get(name, ())

    def clear(self) -> None:
        with self._lock:
            self._hooks.clear()
            self.active.clear()


def check_hook_name(name: Any) -> None:
    """Raise ValueError unless ``name`` is one of :data:`HOOK_NAMES`."""
    if name not in HOOK_NAMES:
        raise ValueError(f"unknown hook {name!r}; hooks are: {', '.join(HOOK_NAMES)}")


def handler_methods(obj: object) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The (hook name, bound method) pairs a handler object provides."""
    for attribute in dir(obj):
        name = HANDLER_ALIASES.get(attribute, attribute if attribute in HOOK_NAMES else None)
        if name is None:
            continue
        method = getattr(obj, attribute)
        if callable(method):
            yield name, method


# -- running them ------------------------------------------------------------------

Done = Callable[[str | None, Any], None]


class HookRunner:
    """Runs the hooks of one name on one flow, in order, on the proxy's loop."""

    def __init__(self, registry: HookRegistry) -> None:
        self.registry = registry
        #: Strong references to running hook tasks (asyncio keeps weak ones).
        self._tasks: set[asyncio.Task[Any]] = set()

    def run(self, name: str, subject: Any, payload: Any, done: Done | None) -> None:
        """Run the hooks; call ``done(error, payload)`` when all have finished.

        Sync hooks run inline (no task, no loop round-trip): the common case
        costs a function call per hook.
        """
        hooks = iter(self.registry.get(name))
        self._continue(hooks, name, subject, payload, None, done)

    def _continue(self, hooks: Iterator[Hook], name: str, subject: Any, payload: Any,
                  error: str | None, done: Done | None) -> None:
        flow = subject if isinstance(subject, Flow) else None
        for hook in hooks:
            if flow is not None:
                if not hook.matches(flow):
                    continue
                hook.saw(flow)
            if hook.thread:
                self._spawn(self._in_thread(hook, hooks, name, subject, payload, error, done))
                return
            try:
                result = _call(hook, name, subject, payload)
                if inspect.isawaitable(result):
                    self._spawn(self._awaiting(result, hook, hooks, name, subject, payload, error, done))
                    return
                payload = _next_payload(name, result, payload)
            except Exception:
                hook.report(flow)
                error = error or f"{name} hook failed"
        if done is not None:
            done(error, payload)

    async def _awaiting(self, awaitable: Any, hook: Hook, hooks: Iterator[Hook], name: str,
                        subject: Any, payload: Any, error: str | None, done: Done | None) -> None:
        try:
            payload = _next_payload(name, await awaitable, payload)
        except Exception:
            hook.report(subject if isinstance(subject, Flow) else None)
            error = error or f"{name} hook failed"
        self._continue(hooks, name, subject, payload, error, done)

    async def _in_thread(self, hook: Hook, hooks: Iterator[Hook], name: str, subject: Any,
                         payload: Any, error: str | None, done: Done | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, _call, hook, name, subject, payload)
            if inspect.isawaitable(result):
                result = await result
            payload = _next_payload(name, result, payload)
        except Exception:
            hook.report(subject if isinstance(subject, Flow) else None)
            error = error or f"{name} hook failed"
        self._continue(hooks, name, subject, payload, error, done)

    def cancel(self) -> None:
        """Cancel the hooks still running (at shutdown: nobody waits for them any more)."""
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _call(hook: Hook, name: str, subject: Any, payload: Any) -> Any:
    if name in DATA_HOOKS:
        return hook.fn(subject, payload)
    return hook.fn(subject)


def _next_payload(name: str, result: Any, payload: Any) -> Any:
    """A data hook's return value replaces the data; None leaves it as it was.

    Raises TypeError for a replacement of the wrong kind (a ``str`` for a
    body chunk, say), so it is reported instead of losing data silently.
    """
    if name not in DATA_HOOKS or result is None:
        return payload
    allowed: tuple[type, ...] = (bytes, bytearray) if name == "response_chunk" else (str, bytes, bytearray)
    if isinstance(result, allowed) or (name == "websocket_message" and result is payload):
        return result
    raise TypeError(f"a {name} hook must return {' or '.join(t.__name__ for t in allowed)} or None, "
                    f"not {type(result).__name__}")
