"""Hooks on a running proxy, driven by real loopback traffic (curl and urllib).

The origin is the plain HTTP one from origin.py (what it records is what
really arrived); HTTPS hooks are in test_https.py. Waits are bounded, and a
hook that must stay "in flight" waits on an event the test releases, so no
assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from origin import (
    HELLO,
    Origin,
    curl,
    opener,
    pattern,
    pattern_sha256,
    wait_flows_done,
    wait_until,
)

from interceptkit import Flow, Proxy


def get(proxy: Proxy, url: str, *args: str) -> Any:
    """curl through the proxy; ``--include`` so status and headers can be read."""
    return curl("--include", *args, url, proxy=proxy, timeout=15)


def _out(output: Any) -> bytes:
    return output if isinstance(output, bytes) else output.stdout


def status(output: Any) -> int:
    return int(_out(output).split(b" ", 2)[1])


def header(output: Any, name: str) -> list[str]:
    head = _out(output).partition(b"\r\n\r\n")[0].decode("latin-1")
    return [line.partition(":")[2].strip() for line in head.split("\r\n")[1:]
            if line.partition(":")[0].strip().lower() == name.lower()]


def body(output: Any) -> bytes:
    return _out(output).partition(b"\r\n\r\n")[2]


class Gate:
    """Holds a hook until the test opens it (bounded), and says when a hook is waiting."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    async def hold_async(self, flow: Flow) -> None:
        self.entered.set()
        for _ in range(1000):
            if self.opened.is_set():
                return
            await asyncio.sleep(0.01)

    def hold_blocking(self, flow: Flow) -> None:
        self.entered.set()
        self.opened.wait(10)


class Background:
    """A curl call on another thread."""

    def __init__(self, proxy: Proxy, url: str) -> None:
        self.result: Any = None
        self._thread = threading.Thread(target=self._run, args=(proxy, url), daemon=True)
        self._thread.start()

    def _run(self, proxy: Proxy, url: str) -> None:
        self.result = get(proxy, url)

    def join(self) -> Any:
        self._thread.join(timeout=20)
        assert not self._thread.is_alive()
        return self.result

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


# -- changing requests and responses --------------------------------------------------------------


def test_request_hook_changes_what_the_origin_sees(proxy: Proxy, origin: Origin) -> None:
    def rewrite(flow: Flow) -> None:
        assert flow.request.content == b"old body"
        flow.request.method = "PUT"
        flow.request.url = origin.url("/echo?rewritten=1")
        flow.request.headers["X-Added"] = "by hook"
        del flow.request.headers["User-Agent"]
        flow.request.set_content(b"the new, longer body")

    proxy.on("request", rewrite)
    request = urllib.request.Request(origin.url("/hello"), data=b"old body", method="POST",
                                     headers={"User-Agent": "test-agent"})
    with opener(proxy).open(request, timeout=10) as response:
        assert response.read() == b"the new, longer body"
        assert response.headers["X-Echo-Method"] == "PUT"
    [seen] = origin.requests
    assert (seen.method, seen.path, seen.body) == ("PUT", "/echo?rewritten=1", b"the new, longer body")
    assert seen.header("X-Added") == "by hook" and seen.header("User-Agent") is None
    assert seen.header("Content-Length") == str(len(b"the new, longer body"))


def test_response_hook_changes_what_the_client_sees(proxy: Proxy, origin: Origin) -> None:
    def rewrite(flow: Flow) -> None:
        assert flow.response is not None and flow.response.content == HELLO
        flow.response.status = 418
        flow.response.reason = "I'm a teapot"
        flow.response.headers["X-Hooked"] = "yes"
        flow.response.text = "short and stout"

    proxy.on("response", rewrite)
    result = get(proxy, origin.url("/hello"))
    assert result.returncode == 0, result.stderr
    assert status(result.stdout) == 418
    assert header(result.stdout, "X-Hooked") == ["yes"]
    assert body(result.stdout) == b"short and stout"
    [flow] = wait_flows_done(proxy, 1)
    assert flow.response is not None and flow.response.status == 418


def test_respond_answers_without_the_origin(proxy: Proxy, origin: Origin) -> None:
    proxy.on("request", lambda flow: flow.respond(201, json={"mocked": True, "path": flow.request.path}))
    result = get(proxy, origin.url("/users/1"))
    assert status(result.stdout) == 201
    assert json.loads(body(result.stdout)) == {"mocked": True, "path": "/users/1"}
    assert header(result.stdout, "Content-Type") == ["application/json"]
    assert origin.requests == [] and origin.connections == []


def test_kill_closes_the_client_connection(proxy: Proxy, origin: Origin) -> None:
    proxy.on("request", lambda flow: flow.kill(), path="/hello")
    result = get(proxy, origin.url("/hello"))
    assert result.returncode == 52, (result.returncode, result.stderr)  # empty reply from server
    [flow] = wait_flows_done(proxy, 1)
    assert flow.error == "killed by a hook"
    assert origin.requests == []
    assert get(proxy, origin.url("/headers")).returncode == 0  # other paths unaffected


def test_kill_from_a_response_hook(proxy: Proxy, origin: Origin) -> None:
    proxy.on("response", lambda flow: flow.kill())
    result = get(proxy, origin.url("/hello"))
    assert result.returncode == 52 and result.stdout == b""
    assert len(origin.requests) == 1


# -- how hooks run -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "thread"])
def test_a_waiting_hook_delays_only_its_own_flow(proxy: Proxy, origin: Origin, kind: str) -> None:
    gate = Gate()
    if kind == "async":
        proxy.on("request", gate.hold_async, path="/echo")
    else:
        proxy.on("request", gate.hold_blocking, path="/echo", thread=True)
    held = Background(proxy, origin.url("/echo"))
    try:
        assert gate.entered.wait(10)
        other = get(proxy, origin.url("/hello"))  # another connection, meanwhile
        assert other.returncode == 0 and body(other.stdout) == HELLO
        assert not held.done
        assert [r.path for r in origin.requests] == ["/hello"]
    finally:
        gate.opened.set()
    result = held.join()
    assert result.returncode == 0 and status(result.stdout) == 200
    assert [r.path for r in origin.requests] == ["/hello", "/echo"]


def test_a_raising_hook_is_skipped_and_reported_once(proxy: Proxy, origin: Origin,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    def broken_hook(flow: Flow) -> None:
        raise RuntimeError("bug in user code")

    proxy.on("request", broken_hook)
    proxy.on("response", lambda flow: flow.response.headers.__setitem__("X-After", "ran"))
    with caplog.at_level(logging.ERROR, logger="interceptkit"):
        for _ in range(2):
            result = get(proxy, origin.url("/hello"))
            assert result.returncode == 0 and body(result.stdout) == HELLO
            assert header(result.stdout, "X-After") == ["ran"]
        flows = wait_flows_done(proxy, 2)
    for flow in flows:
        assert flow.error is None
        [message] = flow.hook_errors
        assert "broken_hook" in message and "RuntimeError" in message and "bug in user code" in message
    reports = [r for r in caplog.records if "broken_hook" in r.getMessage()]
    assert len(reports) == 1
    assert "Traceback" in reports[0].getMessage()


def test_hooks_run_in_the_order_added(proxy: Proxy, origin: Origin) -> None:
    def step(n: int) -> Callable[[Flow], None]:
        def hook(flow: Flow) -> None:
            previous = flow.request.headers.get("X-Order")
            flow.request.headers["X-Order"] = f"{previous},{n}" if previous else str(n)
        return hook

    for n in (1, 2, 3):
        proxy.on("request_headers", step(n))
    proxy.on("request", step(4))
    get(proxy, origin.url("/hello"))
    assert origin.requests[0].header("X-Order") == "1,2,3,4"


def test_decorator_and_remove(proxy: Proxy, origin: Origin) -> None:
    @proxy.on("response", status=200)
    def stamp(flow: Flow) -> None:
        assert flow.response is not None
        flow.response.headers["X-Stamp"] = "yes"

    assert header(get(proxy, origin.url("/hello")).stdout, "X-Stamp") == ["yes"]
    assert header(get(proxy, origin.url("/status/404")).stdout, "X-Stamp") == []  # the filter
    stamp.remove()
    assert not stamp.active
    assert header(get(proxy, origin.url("/hello")).stdout, "X-Stamp") == []
    stamp.remove()  # harmless


def test_hooks_added_and_removed_while_a_request_is_in_flight(proxy: Proxy, origin: Origin) -> None:
    gate = Gate()
    holder = proxy.on("request_headers", gate.hold_async)

    held = Background(proxy, origin.url("/hello"))
    assert gate.entered.wait(10)
    late = proxy.on("response", lambda flow: flow.response.headers.__setitem__("X-Late", "1"))
    gate.opened.set()
    assert header(held.join().stdout, "X-Late") == ["1"]

    gate.entered.clear()
    gate.opened.clear()
    held = Background(proxy, origin.url("/hello"))
    assert gate.entered.wait(10)
    late.remove()
    holder.remove()
    gate.opened.set()
    result = held.join()
    assert result.returncode == 0 and header(result.stdout, "X-Late") == []


def test_unknown_hook_names_and_filters_are_errors(proxy: Proxy) -> None:
    with pytest.raises(ValueError, match="unknown hook"):
        proxy.on("on_request", lambda flow: None)
    with pytest.raises(TypeError):
        proxy.on("request", lambda flow: None, hostname="x")


def test_done_error_and_connection_hooks(proxy: Proxy, origin: Origin) -> None:
    done: list[str] = []
    errors: list[str] = []
    connected: list[object] = []
    disconnected: list[object] = []
    proxy.on("done", lambda flow: done.append(flow.request.path))
    proxy.on("error", lambda flow: errors.append(flow.error or ""))
    proxy.on("client_connected", connected.append)
    proxy.on("client_disconnected", disconnected.append)
    get(proxy, origin.url("/hello"))
    get(proxy, "http://127.0.0.1:9/unreachable")  # nothing listens on the discard port
    assert wait_until(lambda: len(done) == 2 and len(errors) == 1 and len(disconnected) == 2, 10)
    assert done == ["/hello", "/unreachable"]
    assert "127.0.0.1:9" in errors[0]
    assert len(connected) == 2 and all(isinstance(a, tuple) and a[0] == "127.0.0.1" for a in connected)


# -- filters ------------------------------------------------------------------------------------------


def test_filters_through_real_traffic(proxy: Proxy, origin: Origin) -> None:
    def tag(name: str) -> Callable[[Flow], None]:
        return lambda flow: flow.response.headers.add("X-Match", name)

    proxy.on("response", tag("host"), host="origin.*")
    proxy.on("response", tag("ip"), host="127.0.0.1")
    proxy.on("response", tag("post"), method="POST")
    proxy.on("response", tag("status-path"), path="/status/*")
    proxy.on("response", tag("404"), status=404)
    proxy.on("response", tag("5xx"), status=range(500, 600))
    proxy.on("response", tag("json"), content_type="json")
    proxy.on("response", tag("where"), where=lambda flow: flow.request.query.get("q") == "1")
    proxy.on("response", tag("and"), method="GET", status=(200, 299), host="origin.test")

    get(proxy, origin.url("/hello"))
    curl("--data-binary", "x", origin.url("/echo"), proxy=proxy, timeout=15)
    get(proxy, origin.url("/status/404"))
    get(proxy, origin.url("/status/503"))
    get(proxy, origin.url("/headers?q=1"))
    get(proxy, f"http://127.0.0.1:{origin.port}/hello")
    flows = wait_flows_done(proxy, 6)
    tags = {f"{f.request.method} {f.request.host} {f.request.path}": f.response.headers.get_all("X-Match")
            for f in flows}
    assert tags == {
        "GET origin.test /hello": ["host", "and"],
        "POST origin.test /echo": ["host", "post"],
        "GET origin.test /status/404": ["host", "status-path", "404"],
        "GET origin.test /status/503": ["host", "status-path", "5xx"],
        "GET origin.test /headers?q=1": ["host", "json", "where", "and"],
        "GET 127.0.0.1 /hello": ["ip"],
    }


# -- bodies -------------------------------------------------------------------------------------------


def test_large_download_with_a_response_hook_arrives_intact(proxy: Proxy, origin: Origin,
                                                             tmp_path: Path) -> None:
    sizes: list[int] = []
    proxy.on("response", lambda flow: sizes.append(len(flow.response.content)))
    small, large = 512 * 1024, 6 * 1024 * 1024 + 3  # under and over the 4 MiB hook limit
    for size in (small, large):
        out = tmp_path / f"body-{size}"
        result = curl("-o", str(out), origin.url(f"/bytes/{size}"), proxy=proxy, timeout=30)
        assert result.returncode == 0, result.stderr
        assert hashlib.sha256(out.read_bytes()).hexdigest() == pattern_sha256(size)
    assert sizes[0] == small  # the small body was whole for the hook
    flows = wait_flows_done(proxy, 2)
    assert [f.response.body_size for f in flows] == [small, large]
    assert all(f.error is None for f in flows)


def test_response_headers_hook_can_stream_the_body(proxy: Proxy, origin: Origin, tmp_path: Path) -> None:
    seen_by_response_hook: list[str] = []

    def stream_big(flow: Flow) -> None:
        assert flow.response is not None
        flow.response.stream = True

    proxy.on("response_headers", stream_big, path="/chunked/*")
    proxy.on("response", lambda flow: seen_by_response_hook.append(flow.request.path))
    size = 2 * 1024 * 1024
    out = tmp_path / "streamed"
    result = curl("-o", str(out), origin.url(f"/chunked/{size}"), proxy=proxy, timeout=30)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == pattern_sha256(size)
    get(proxy, origin.url("/hello"))
    assert "/hello" in seen_by_response_hook and f"/chunked/{size}" not in seen_by_response_hook


def test_response_chunk_hook_transforms_a_chunked_body(proxy: Proxy, origin: Origin, tmp_path: Path) -> None:
    chunks: list[int] = []

    def double_a(flow: Flow, data: bytes) -> bytes:
        chunks.append(len(data))
        return bytes(data).replace(b"a", b"aa")  # changes sizes; independent of chunk boundaries

    proxy.on("response_chunk", double_a)
    size = 300_000
    out = tmp_path / "transformed"
    result = curl("-o", str(out), origin.url(f"/chunked/{size}"), proxy=proxy, timeout=30)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == pattern(size).replace(b"a", b"aa")
    assert len(chunks) > 1 and sum(chunks) == size


# -- mock, block, handler classes ------------------------------------------------------------------------


def test_mock_with_times(proxy: Proxy, origin: Origin) -> None:
    mock = proxy.mock("GET", f"http://origin.test:{origin.port}/api/*", json={"fake": True}, status=202,
                      headers={"X-Mock": "1"}, times=2)
    results = [get(proxy, origin.url("/api/users")) for _ in range(3)]
    assert [status(r.stdout) for r in results] == [202, 202, 404]
    assert json.loads(body(results[0].stdout)) == {"fake": True}
    assert header(results[1].stdout, "X-Mock") == ["1"]
    assert mock.calls == 2 and not mock.active
    assert [r.path for r in origin.requests] == ["/api/users"]  # only the third reached the origin
    # A POST does not match a GET mock.
    other = proxy.mock("GET", f"http://origin.test:{origin.port}/echo", text="mocked")
    assert body(curl("--include", "--data-binary", "real", origin.url("/echo"), proxy=proxy,
                     timeout=15).stdout) == b"real"
    assert body(get(proxy, origin.url("/echo"))) == b"mocked" and other.calls == 1


def test_block_http_and_connect(proxy: Proxy, origin: Origin, tmp_path: Path) -> None:
    blocked = proxy.block(host="blocked.test")
    result = get(proxy, "http://blocked.test/anything")
    assert status(result.stdout) == 403 and b"blocked by interceptkit" in body(result.stdout)
    result = curl("--cacert", str(proxy.ca_cert_path), "https://blocked.test/", proxy=proxy, timeout=15)
    assert result.returncode == 56 and b"403" in result.stderr, (result.returncode, result.stderr)
    assert blocked.calls == 2
    assert body(get(proxy, origin.url("/hello"))) == HELLO  # other hosts pass
    flows = wait_flows_done(proxy, 3)
    connect = [f for f in flows if f.request.method == "CONNECT"]
    assert len(connect) == 1 and connect[0].response is not None and connect[0].response.status == 403
    blocked.remove()
    assert status(get(proxy, "http://blocked.test/anything").stdout) == 502  # now it is tried (and unknown)


def test_block_with_kill(proxy: Proxy, origin: Origin) -> None:
    proxy.block(host="origin.test", kill=True, path="/hello")
    assert get(proxy, origin.url("/hello")).returncode == 52
    assert body(get(proxy, origin.url("/headers"))) != b""


def test_handler_classes_with_both_naming_styles(proxy: Proxy, origin: Origin) -> None:
    class Ours:
        def __init__(self) -> None:
            self.statuses: list[int] = []

        def request(self, flow: Flow) -> None:
            flow.request.headers["X-Ours"] = "1"

        def response(self, flow: Flow) -> None:
            assert flow.response is not None
            self.statuses.append(flow.response.status)

    class Theirs:
        def __init__(self) -> None:
            self.completed: list[str] = []

        def on_request_received(self, flow: Flow) -> None:
            flow.request.headers["X-Theirs"] = "1"

        def on_response_complete(self, flow: Flow) -> None:
            self.completed.append(flow.request.path)

    ours, theirs = Ours(), Theirs()
    proxy.add(ours)
    proxy.add(theirs)
    get(proxy, origin.url("/hello"))
    assert wait_until(lambda: theirs.completed == ["/hello"], 5)
    first = origin.requests[0]
    assert first.header("X-Ours") == "1" and first.header("X-Theirs") == "1"
    assert ours.statuses == [200]

    proxy.remove(ours)
    get(proxy, origin.url("/headers"))
    assert wait_until(lambda: theirs.completed == ["/hello", "/headers"], 5)
    second = origin.requests[1]
    assert second.header("X-Ours") is None and second.header("X-Theirs") == "1"
    assert ours.statuses == [200]
    proxy.remove(theirs)
    proxy.remove(theirs)  # twice is harmless
    assert proxy.hooks.active == set()
    with pytest.raises(ValueError):
        proxy.add(object())


# -- bugs ------------------------------------------------------------------------------------------------


def test_adding_a_handler_twice_then_removing_it(proxy: Proxy) -> None:
    class Handler:
        def request(self, flow: Flow) -> None:
            pass

    handler = Handler()
    proxy.add(handler)
    try:
        proxy.add(handler)
    except ValueError:
        pass  # refusing a second add is fine too
    proxy.remove(handler)
    assert proxy.hooks.active == set()


def test_a_chunk_hook_returning_text_is_not_swallowed_silently(proxy: Proxy, origin: Origin) -> None:
    proxy.on("response_chunk", lambda flow, data: bytes(data).decode("latin-1"))
    result = curl(origin.url("/chunked/5000"), proxy=proxy, timeout=15)
    [flow] = wait_flows_done(proxy, 1)
    assert result.stdout == pattern(5000) or flow.hook_errors or flow.error
