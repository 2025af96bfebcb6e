"""Unit tests of the hook policy layer: make_filter, HookRegistry, HookHandle, HookRunner.

No proxy and no sockets: flows are built by hand.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from interceptkit.flow import Flow, Headers, Request, Response
from interceptkit.hooks import (
    HANDLER_ALIASES,
    HOOK_NAMES,
    HookHandle,
    HookRegistry,
    HookRunner,
    handler_methods,
    make_filter,
)


def make_flow(method: str = "GET", url: str = "https://api.example.com/users/7?x=1", *,
              status: int | None = None, request_type: str | None = None,
              response_type: str | None = None) -> Flow:
    scheme, rest = url.split("://", 1)
    netloc, _, path = rest.partition("/")
    host, _, port = netloc.partition(":")
    request = Request(method=method, scheme=scheme, host=host,
                      port=int(port) if port else (443 if scheme == "https" else 80), path="/" + path,
                      headers=Headers([("Content-Type", request_type)] if request_type else []))
    flow = Flow(id=1, request=request)
    if status is not None:
        flow.response = Response(status=status, headers=Headers(
            [("Content-Type", response_type)] if response_type else []))
    return flow


# -- make_filter ---------------------------------------------------------------------------


def test_no_filter_is_none() -> None:
    assert make_filter() is None
    assert make_filter(host=None, method=None) is None


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="hostname"):
        make_filter(hostname="x")


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("api.example.com", "api.example.com", True),
    ("API.Example.com", "api.EXAMPLE.com", True),
    ("*.example.com", "api.example.com", True),
    ("*.example.com", "a.b.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "example.com.evil.test", False),
    ("example.*", "example.org", True),
    ("localhost", "127.0.0.1", False),
])
def test_host_glob(pattern: str, host: str, expected: bool) -> None:
    check = make_filter(host=pattern)
    assert check is not None
    assert check(make_flow(url=f"http://{host}/")) is expected


def test_method_name_or_list_case_insensitive() -> None:
    assert make_filter(method="post")(make_flow("POST"))  # type: ignore[misc]
    assert not make_filter(method="post")(make_flow("GET"))  # type: ignore[misc]
    check = make_filter(method=["get", "HEAD"])
    assert check is not None and check(make_flow("HEAD")) and check(make_flow("GET"))
    assert not check(make_flow("DELETE"))


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("/api/*", "/api/users?x=1", True),
    ("/api/*", "/API/users", True),
    ("/api/*", "/other/api/x", False),
    ("*/users/*", "/v1/users/7", True),
    ("/exact", "/exact", True),
    ("/exact", "/exact?q", False),
    ("/exact*", "/exact?q", True),
])
def test_path_glob_includes_the_query(pattern: str, path: str, expected: bool) -> None:
    check = make_filter(path=pattern)
    assert check is not None
    assert check(make_flow(url=f"http://h{path}")) is expected


def test_url_glob_on_the_whole_url() -> None:
    check = make_filter(url="https://api.example.com/users/*")
    assert check is not None
    assert check(make_flow(url="https://api.example.com/users/7"))
    assert not check(make_flow(url="http://api.example.com/users/7"))  # scheme counts
    assert not check(make_flow(url="https://api.example.com:8443/users/7"))  # so does a port


@pytest.mark.parametrize(("value", "status", "expected"), [
    (404, 404, True),
    (404, 200, False),
    (range(200, 300), 204, True),
    (range(200, 300), 300, False),
    ((500, 599), 599, True),  # a pair is inclusive
    ((500, 599), 499, False),
    ({301, 302}, 302, True),
    ([301, 302], 303, False),
])
def test_status(value: Any, status: int, expected: bool) -> None:
    check = make_filter(status=value)
    assert check is not None
    assert check(make_flow(status=status)) is expected


def test_status_without_a_response_does_not_match() -> None:
    check = make_filter(status=range(1000))
    assert check is not None and not check(make_flow())


def test_content_type_prefers_the_response() -> None:
    check = make_filter(content_type="json")
    assert check is not None
    assert check(make_flow(status=200, response_type="application/json; charset=utf-8"))
    assert check(make_flow(status=200, response_type="Application/JSON"))
    assert not check(make_flow(status=200, response_type="text/html", request_type="application/json"))
    # Before the response exists (request hooks) the request's type is used.
    assert check(make_flow(request_type="application/vnd.api+json"))
    assert not check(make_flow())


def test_where_and_keywords_are_and_ed() -> None:
    check = make_filter(lambda flow: flow.request.port == 443, host="*.example.com", method="GET")
    assert check is not None
    assert check(make_flow())
    assert not check(make_flow(url="http://api.example.com/"))
    assert not check(make_flow("POST"))
    assert not check(make_flow(url="https://example.org/"))


def test_a_lone_where_is_returned_as_is() -> None:
    def where(flow: Flow) -> bool:
        return True

    assert make_filter(where) is where


# -- HookRegistry ------------------------------------------------------------------------------


def test_add_get_remove_in_order() -> None:
    registry = HookRegistry()
    a = registry.add("request", lambda f: None)
    b = registry.add("request", lambda f: None)
    c = registry.add("response", lambda f: None)
    assert registry.get("request") == (a, b)
    assert registry.active == {"request", "response"}
    registry.remove(a)
    assert registry.get("request") == (b,) and not registry.contains(a) and registry.contains(b)
    registry.remove(b)
    assert registry.active == {"response"} and registry.get("request") == ()
    registry.remove(b)  # twice is harmless
    registry.clear()
    assert registry.active == set() and registry.get("response") == () and not registry.contains(c)


def test_unknown_name_and_non_callable_are_refused() -> None:
    registry = HookRegistry()
    with pytest.raises(ValueError, match="unknown hook 'requests'"):
        registry.add("requests", lambda f: None)
    with pytest.raises(TypeError):
        registry.add("request", "not callable")  # type: ignore[arg-type]
    assert registry.active == set()


def test_readers_get_snapshots() -> None:
    registry = HookRegistry()
    first = registry.add("request", lambda f: None)
    snapshot = registry.get("request")
    registry.add("request", lambda f: None)
    registry.remove(first)
    assert snapshot == (first,)


def test_registries_are_independent() -> None:
    one, two = HookRegistry(), HookRegistry()
    one.add("request", lambda f: None)
    assert two.active == set() and two.get("request") == ()


def test_concurrent_add_and_remove() -> None:
    registry = HookRegistry()
    keep = registry.add("response", lambda f: None)
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(300):
                hook = registry.add("request", lambda f: None)
                registry.remove(hook)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert registry.get("request") == () and "request" not in registry.active
    assert registry.get("response") == (keep,)


def test_every_documented_hook_name_is_accepted() -> None:
    registry = HookRegistry()
    for name in HOOK_NAMES:
        registry.add(name, lambda *a: None)
    assert registry.active == set(HOOK_NAMES)
    assert {"client_connected", "tunnel", "request_headers", "request", "response_headers",
            "response_chunk", "response", "done", "error", "websocket_message",
            "client_disconnected"} <= set(HOOK_NAMES)


# -- HookHandle and handler classes ---------------------------------------------------------------


def test_handle_removes_and_stays_callable() -> None:
    registry = HookRegistry()

    def fn(flow: Flow) -> str:
        return "called"

    handle = HookHandle(registry, [registry.add("request", fn), registry.add("response", fn)])
    assert handle.active and handle(make_flow()) == "called"
    handle.remove()
    assert not handle.active and registry.active == set()
    handle.remove()
    assert "removed" in repr(handle)


def test_handler_methods_maps_both_naming_styles() -> None:
    class Ours:
        def request(self, flow: Flow) -> None: ...
        def response(self, flow: Flow) -> None: ...
        def helper(self) -> None: ...
        done = "not callable"

    class Theirs:
        def on_request_received(self, flow: Flow) -> None: ...
        def on_response_complete(self, flow: Flow) -> None: ...
        def on_client_connected(self, address: object) -> None: ...
        def on_something_else(self) -> None: ...

    assert sorted(name for name, _ in handler_methods(Ours())) == ["request", "response"]
    assert sorted(name for name, _ in handler_methods(Theirs())) == ["client_connected", "done", "request"]
    assert set(HANDLER_ALIASES.values()) <= set(HOOK_NAMES)


# -- HookRunner -----------------------------------------------------------------------------------


class Done:
    def __init__(self) -> None:
        self.results: list[tuple[str | None, Any]] = []
        self.event = threading.Event()

    def __call__(self, error: str | None, payload: Any) -> None:
        self.results.append((error, payload))
        self.event.set()


def test_sync_hooks_run_inline_in_order() -> None:
    registry = HookRegistry()
    order: list[str] = []
    registry.add("request", lambda f: order.append("first"))
    registry.add("request", lambda f: order.append("second"))
    registry.add("request", lambda f: order.append("third"))
    done = Done()
    HookRunner(registry).run("request", make_flow(), None, done)
    assert order == ["first", "second", "third"]
    assert done.results == [(None, None)]


def test_data_hooks_chain_their_results() -> None:
    registry = HookRegistry()
    registry.add("response_chunk", lambda f, d: d + b"1")
    registry.add("response_chunk", lambda f, d: None)  # None keeps the data
    registry.add("response_chunk", lambda f, d: d + b"2")
    done = Done()
    HookRunner(registry).run("response_chunk", make_flow(), b"x", done)
    assert done.results == [(None, b"x12")]


def test_filters_choose_the_hooks() -> None:
    registry = HookRegistry()
    seen: list[str] = []
    registry.add("request", lambda f: seen.append("posts"), make_filter(method="POST"))
    registry.add("request", lambda f: seen.append("all"))
    HookRunner(registry).run("request", make_flow("GET"), None, Done())
    assert seen == ["all"]


def test_a_raising_hook_is_recorded_logged_once_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    registry = HookRegistry()
    after: list[int] = []

    def broken(flow: Flow) -> None:
        raise KeyError("missing")

    registry.add("request", broken)
    registry.add("request", lambda f: after.append(1))
    runner = HookRunner(registry)
    flows = [make_flow(), make_flow()]
    results = []
    with caplog.at_level(logging.ERROR, logger="interceptkit"):
        for flow in flows:
            done = Done()
            runner.run("request", flow, None, done)
            results += done.results
    assert after == [1, 1]  # the next hook still ran
    assert all(error is not None and "request" in error for error, _ in results)
    for flow in flows:
        [message] = flow.hook_errors
        assert "broken" in message and "KeyError" in message
    tracebacks = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(tracebacks) == 1 and "Traceback" in tracebacks[0].getMessage()


def test_a_raising_filter_skips_its_hook() -> None:
    registry = HookRegistry()
    ran: list[int] = []
    registry.add("request", lambda f: ran.append(1), lambda flow: 1 / 0)  # type: ignore[arg-type,return-value]
    flow = make_flow()
    HookRunner(registry).run("request", flow, None, Done())
    assert ran == [] and len(flow.hook_errors) == 1 and "ZeroDivisionError" in flow.hook_errors[0]


def test_async_and_thread_hooks_keep_the_order() -> None:
    registry = HookRegistry()
    order: list[str] = []
    main = threading.get_ident()
    threads: list[int] = []

    async def slow(flow: Flow) -> None:
        await asyncio.sleep(0.02)
        order.append("async")

    def blocking(flow: Flow) -> None:
        threads.append(threading.get_ident())
        order.append("thread")

    async def data(flow: Flow, chunk: bytes) -> bytes:
        await asyncio.sleep(0)
        return chunk.upper()

    registry.add("request", lambda f: order.append("sync"))
    registry.add("request", slow)
    registry.add("request", blocking, thread=True)
    registry.add("request", lambda f: order.append("last"))
    registry.add("response_chunk", data)

    async def main_coroutine() -> tuple[Done, Done]:
        runner = HookRunner(registry)
        done, chunk_done = Done(), Done()
        runner.run("request", make_flow(), None, done)
        runner.run("response_chunk", make_flow(), b"abc", chunk_done)
        for _ in range(500):
            if done.event.is_set() and chunk_done.event.is_set():
                break
            await asyncio.sleep(0.01)
        return done, chunk_done

    done, chunk_done = asyncio.run(main_coroutine())
    assert order == ["sync", "async", "thread", "last"]
    assert threads and threads[0] != main
    assert done.results == [(None, None)]
    assert chunk_done.results == [(None, b"ABC")]


def test_an_async_hook_that_raises_is_recorded() -> None:
    registry = HookRegistry()

    async def broken(flow: Flow) -> None:
        await asyncio.sleep(0)
        raise ValueError("async bug")

    registry.add("response", broken)
    flow = make_flow(status=200)

    async def go() -> Done:
        done = Done()
        HookRunner(registry).run("response", flow, None, done)
        for _ in range(200):
            if done.event.is_set():
                break
            await asyncio.sleep(0.01)
        return done

    done = asyncio.run(go())
    [(error, _)] = done.results
    assert error is not None and "ValueError" in flow.hook_errors[0]


# -- registration is checked at once (issue 9, defect 5) ------------------------------------


def test_a_where_that_is_not_callable_is_refused_when_the_hook_is_added() -> None:
    from interceptkit import Proxy

    proxy = Proxy(port=0)
    with pytest.raises(TypeError, match=r"filters are keywords \(path=\"/api/\*\".*or a callable"):
        proxy.on("request", lambda flow: None, where={"path": "/api/*"})
    with pytest.raises(TypeError, match="where= must be a callable"):
        HookRegistry().add("request", lambda flow: None, where=42)  # type: ignore[arg-type]
    assert not proxy.hooks.active  # nothing was registered


def test_unknown_hook_names_and_non_callables_are_refused_at_once() -> None:
    from interceptkit import Proxy

    proxy = Proxy(port=0)
    with pytest.raises(ValueError, match="unknown hook 'requets'"):
        proxy.on("requets")  # the decorator form too, before any function is given
    with pytest.raises(TypeError, match="a hook must be callable"):
        proxy.on("request", "print")  # type: ignore[arg-type]
    assert not proxy.hooks.active


def test_hooks_run_by_order_then_as_added_and_remember_their_flows() -> None:
    registry = HookRegistry()
    ran: list[str] = []
    registry.add("request", lambda flow: ran.append("late"), order=2)
    registry.add("request", lambda flow: ran.append("first"))
    registry.add("request", lambda flow: ran.append("early"), order=-1)
    registry.add("request", lambda flow: ran.append("second"))
    flow = make_flow()
    HookRunner(registry).run("request", flow, None, None)
    assert ran == ["early", "first", "second", "late"]
    handle = HookHandle(registry, list(registry.get("request")))
    assert handle.flows == [flow]
