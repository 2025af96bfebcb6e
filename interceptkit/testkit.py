"""What a test author drives through a Proxy: mocks, strict mode, cassettes, assertions, waits.

Policy tier (beside hooks, matching and cassette). One :class:`TestKit`
per proxy owns the mocks it made and the cassettes attached to it; the
``Proxy`` methods of the same names are thin calls into it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .cassette import Cassette, refuse
from .flow import Flow
from .hooks import FlowFilter, HookHandle, HookRegistry, make_filter
from .matching import Candidate, Matcher, RequestPattern, distance, flow_lines, nearest
from .redact import Redact

_RESPONSE_KEYS = {"status", "json", "text", "content", "headers", "reason"}


class _MockCandidate:
    """A mock as strict mode lists it."""

    def __init__(self, handle: HookHandle, pattern: RequestPattern) -> None:
        self.handle = handle
        self.pattern = pattern
        self.label = handle.label

    def differences(self, request: Any) -> list[str]:
        return self.pattern.differences(request)


class TestKit:
    """The testing side of one proxy (see the module docstring)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, registry: HookRegistry, redaction: Redact) -> None:
        self.registry = registry
        self.redaction = redaction
        self.mocks: list[_MockCandidate] = []
        self.cassettes: list[Cassette] = []
        #: Blocks and strict modes: with mocks and cassettes, what answers without an upstream.
        self._local: list[HookHandle] = []
        self._lock = threading.Lock()

    # -- mocks ----------------------------------------------------------------------

    def mock(self, method: str | None, url: str, *, times: int | None = None,
             query: dict[str, Any] | None = None, match_headers: dict[str, str] | None = None,
             match_json: Any = None, responses: Sequence[dict[str, Any]] | None = None,
             **response: Any) -> HookHandle:
        """See :meth:`Proxy.mock`."""
        answers = _check_responses(responses, response)
        pattern = RequestPattern(method, url, query=query, headers=match_headers, json=match_json)
        handle = HookHandle(self.registry, [], label=f"mock {pattern.describe()}", acting=True)

        def answer(flow: Flow) -> None:
            if (times is not None and handle.calls >= times) or flow.response is not None:
                return
            kwargs = answers[min(handle.calls, len(answers) - 1)]
            handle.acted(flow)
            flow.respond(**kwargs)
            flow.metadata["matched_by"] = handle.label
            if times is not None and handle.calls >= times:
                handle.remove()

        stage = "request" if pattern.needs_body else "request_headers"
        handle.hooks.append(self.registry.add(stage, answer, pattern.matches))
        self._keep(handle, _MockCandidate(handle, pattern))
        return handle

    def _keep(self, handle: HookHandle, candidate: _MockCandidate) -> None:
        with self._lock:
            self.mocks.append(candidate)
        handle.on_remove(lambda: self._forget(candidate))

    def _forget(self, candidate: _MockCandidate) -> None:
        with self._lock:
            if candidate in self.mocks:
                self.mocks.remove(candidate)

    def candidates(self) -> list[Candidate]:
        """Every active mock and recording: what a strict miss is compared with."""
        with self._lock:
            found: list[Candidate] = [m for m in self.mocks if m.handle.active]
            cassettes = list(self.cassettes)
        for cassette in cassettes:
            found += cassette.candidates()
        return found

    def unused_mocks(self) -> list[str]:
        with self._lock:
            return [m.label for m in self.mocks if not m.handle.calls]

    def block(self, host: str | None, *, status: int, kill: bool, **filters: Any) -> HookHandle:
        """See :meth:`Proxy.block`."""
        flow_filter = make_filter(host=host, **filters)
        handle = HookHandle(self.registry, [], label=f"block {host or ''}".strip(), acting=True)

        def refuse_flow(flow: Flow) -> None:
            handle.acted(flow)
            flow.metadata["matched_by"] = handle.label
            if kill:
                flow.kill()
            else:
                flow.respond(status, text=f"blocked by interceptkit: {flow.request.url}\n")

        handle.hooks.append(self.registry.add("request_headers", refuse_flow, flow_filter))
        self._local.append(handle)
        if host is not None and not filters:
            # Only a host-wide block may refuse the CONNECT itself: with a path
            # (say) the tunnel must open so other paths keep working.
            handle.hooks.append(self.registry.add("tunnel", refuse_flow, make_filter(host=host)))
        return handle

    # -- strict mode and cassettes ----------------------------------------------------------

    def strict(self, status: int = 599) -> HookHandle:
        """See :meth:`Proxy.strict`."""
        def miss(flow: Flow) -> None:
            if flow.response is None and not flow.killed and "matched_by" not in flow.metadata:
                refuse(flow, self.candidates(), status)
                handle.acted(flow)

        handle = HookHandle(self.registry, [], label=f"strict mode ({status})", acting=True)
        handle.hooks.append(self.registry.add("request", miss, order=2))
        self._local.append(handle)
        return handle

    def answers_locally(self) -> bool:
        """Whether mocks, blocks, strict mode or a cassette may answer requests here.

        Then no upstream is contacted before a request asks for it (the ALPN
        upstream-first step is skipped): a mocked host must never be reached,
        nor its name resolved.
        """
        with self._lock:
            self._local = [h for h in self._local if h.active]
            return bool(self._local or self.cassettes or any(m.handle.active for m in self.mocks))

    def cassette(self, path: str | os.PathLike[str], *, record_mode: str, match_on: Iterable[Matcher],
                 allow_repeats: bool) -> Cassette:
        """See :meth:`Proxy.cassette`."""
        cassette = Cassette(path, record_mode=record_mode, match_on=match_on, allow_repeats=allow_repeats,
                            redact=Redact().merge(self.redaction))
        others: Callable[[], list[Candidate]] = lambda: [m for m in self.candidates() if m not in cassette.recordings]  # noqa: E731
        handle = cassette.attach(self.registry, others)
        with self._lock:
            self.cassettes.append(cassette)
        handle.on_remove(lambda: self._detach(cassette))
        return cassette

    def _detach(self, cassette: Cassette) -> None:
        with self._lock:
            if cassette in self.cassettes:
                self.cassettes.remove(cassette)

    def close(self) -> None:
        """Nothing to stop: cassettes answer through the proxy itself (kept for Proxy.stop)."""


def _check_responses(responses: Sequence[dict[str, Any]] | None, single: dict[str, Any]) -> list[dict[str, Any]]:
    """The answers a mock gives in turn (the last one repeats); TypeError for unknown keys."""
    unknown = set(single) - _RESPONSE_KEYS
    if unknown:
        raise TypeError(f"mock() got unexpected keyword(s) {sorted(unknown)}; a response takes "
                        f"{sorted(_RESPONSE_KEYS)}, a match takes query=, match_headers=, match_json=")
    if responses is None:
        return [single]
    if single and set(single) - {"status"} or single.get("status", 200) != 200:
        raise TypeError("give either responses=[...] or one response's keywords, not both")
    answers = [dict(r) for r in responses]
    if not answers:
        raise ValueError("responses=[] has no response in it")
    for answer in answers:
        if not isinstance(answer, dict) or set(answer) - _RESPONSE_KEYS:
            raise TypeError(f"each response is a dict of {sorted(_RESPONSE_KEYS)}, not {answer!r}")
    return answers


# -- assertions --------------------------------------------------------------------------------


def assert_requested(flows: Iterable[Flow], method: str | None = None, url: str | None = None, *,
                     times: int | None = None, json: Any = None, where: FlowFilter | None = None) -> list[Flow]:
    """The flows that match; AssertionError (with a table of what was seen) otherwise."""
    pattern = RequestPattern(method, url, json=json)
    check = make_filter(where)
    seen = [f for f in flows if f.request.method != "CONNECT"]
    matched = [f for f in seen if pattern.matches(f) and (check is None or check(f))]
    if (times is None and matched) or (times is not None and len(matched) == times):
        return matched
    wanted = "at least one request" if times is None else f"{times} request(s)"
    lines = [f"expected {wanted} matching {pattern.describe()}"
             + (" and where=" + getattr(where, "__name__", "...") if where is not None else "")
             + f", saw {len(matched)}", "", f"requests seen ({len(seen)}):", *flow_lines(seen)]
    if seen and not matched:
        best = min(seen, key=lambda f: distance(pattern.differences(f.request)))
        lines += ["", f"nearest: #{best.id} {best.request.method} {best.request.url}",
                  *(f"  {d}" for d in pattern.differences(best.request))]
    raise AssertionError("\n".join(lines))


def assert_all_mocks_used(kit: TestKit) -> None:
    unused = kit.unused_mocks()
    if unused:
        raise AssertionError("mocks that never answered:\n" + "\n".join(f"  - {label}" for label in unused))


# -- waiting ---------------------------------------------------------------------------------------


class FlowWaiter:
    """The first flow that finishes and matches; an ``on_flow`` listener."""

    def __init__(self, predicate: FlowFilter | None) -> None:
        self.predicate = predicate
        self.flow: Flow | None = None
        self.event = threading.Event()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Flow]]] = []

    def __call__(self, flow: Flow) -> None:
        if self.flow is not None or (self.predicate is not None and not self.predicate(flow)):
            return
        self.flow = flow
        self.event.set()
        for loop, future in self._futures:
            loop.call_soon_threadsafe(_resolve, future, flow)

    def future(self) -> asyncio.Future[Flow]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Flow] = loop.create_future()
        self._futures.append((loop, future))
        if self.flow is not None:
            future.set_result(self.flow)
        return future


def _resolve(future: asyncio.Future[Flow], flow: Flow) -> None:
    if not future.done():  # a timed-out waiter's future is cancelled already
        future.set_result(flow)


OnFlow = Callable[[Callable[[Flow], None]], Callable[[], None]]


def wait_for(on_flow: OnFlow, where: FlowFilter | None, timeout: float, filters: dict[str, Any]) -> Flow:
    """See :meth:`Proxy.wait_for`; ``on_flow`` adds a listener and returns its remover."""
    waiter = FlowWaiter(make_filter(where, **filters))
    remove = on_flow(waiter)
    try:
        if not waiter.event.wait(timeout) or waiter.flow is None:
            raise TimeoutError(timeout_message(where, filters, timeout))
        return waiter.flow
    finally:
        remove()


async def wait_for_async(on_flow: OnFlow, where: FlowFilter | None, timeout: float,
                         filters: dict[str, Any]) -> Flow:
    waiter = FlowWaiter(make_filter(where, **filters))
    remove = on_flow(waiter)
    try:
        return await asyncio.wait_for(waiter.future(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(timeout_message(where, filters, timeout)) from None
    finally:
        remove()


def timeout_message(where: Any, filters: dict[str, Any], timeout: float) -> str:
    wanted = ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None) or "any flow"
    return f"no flow matching {wanted}{' and where=' if where else ''} finished within {timeout:g} s"


__all__ = ["FlowWaiter", "TestKit", "assert_all_mocks_used", "assert_requested", "nearest", "wait_for",
           "wait_for_async"]
