"""Breakpoints on a running proxy: pause, edit from another thread, resume, kill, respond, time out.

The client runs on a worker thread (as a notebook's traffic would), the test
plays the user in "the next cell". Every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from origin import HELLO, Origin, curl, opener, wait_until
from tls_origin import OriginPKI, TLSOrigin

from interceptkit import Proxy


class Client:
    """One request on a worker thread; ``result()`` is (status, headers, body) or the exception."""

    def __init__(self, proxy: Proxy, url: str, data: bytes | None = None) -> None:
        self.outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(proxy, url, data), daemon=True)
        self._thread.start()

    def _run(self, proxy: Proxy, url: str, data: bytes | None) -> None:
        try:
            with opener(proxy).open(url, data=data, timeout=10) as response:
                self.outcome.append((response.status, dict(response.headers), response.read()))
        except urllib.error.HTTPError as exc:
            self.outcome.append((exc.code, dict(exc.headers), exc.read()))
        except Exception as exc:  # the test looks at it
            self.outcome.append(exc)

    def result(self) -> Any:
        self._thread.join(10)
        assert self.outcome, "the client did not finish"
        return self.outcome[0]


@pytest.fixture
def send(proxy: Proxy) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def factory(url: str, data: bytes | None = None) -> Client:
        client = Client(proxy, url, data)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client._thread.join(10)


def test_pause_edit_request_resume_and_the_origin_sees_the_edit(proxy: Proxy, origin: Origin,
                                                                 send: Callable[..., Client]) -> None:
    bp = proxy.breakpoint("~u /echo")
    client = send(origin.url("/echo"), b"original")
    flow = proxy.next_paused(timeout=5)
    assert flow.request.content == b"original" and flow in proxy.paused and flow in bp.held
    assert not client.outcome  # it really waits
    flow.request.headers["X-Edited"] = "yes"
    flow.request.set_content(b"edited body")
    flow.resume()
    status, headers, body = client.result()
    assert (status, body) == (200, b"edited body")
    [seen] = origin.requests
    assert seen.body == b"edited body" and seen.header("X-Edited") == "yes"
    assert len(proxy.paused) == 0
    with pytest.raises(RuntimeError, match="not paused"):
        flow.resume()


def test_other_traffic_keeps_flowing_while_a_flow_is_paused(proxy: Proxy, origin: Origin,
                                                            send: Callable[..., Client]) -> None:
    proxy.breakpoint("~u /echo")
    paused_client = send(origin.url("/echo"), b"x")
    flow = proxy.next_paused(timeout=5)
    assert opener(proxy).open(origin.url("/hello"), timeout=5).read() == HELLO
    flow.resume()
    assert paused_client.result()[0] == 200


def test_edit_the_response_at_the_response_breakpoint(proxy: Proxy, origin: Origin,
                                                      send: Callable[..., Client]) -> None:
    proxy.breakpoint(at="response", path="/hello")
    client = send(origin.url("/hello"))
    flow = proxy.next_paused(timeout=5)
    assert flow.response is not None and flow.response.content == HELLO
    flow.response.status = 418
    flow.response.headers["X-Teapot"] = "1"
    flow.response.set_content(b"short and stout")
    flow.resume()
    status, headers, body = client.result()
    assert (status, headers["X-Teapot"], body) == (418, "1", b"short and stout")


def test_kill_a_paused_flow(proxy: Proxy, origin: Origin, send: Callable[..., Client]) -> None:
    proxy.breakpoint("/hello")
    client = send(origin.url("/hello"))
    proxy.next_paused(timeout=5).kill()
    assert isinstance(client.result(), Exception)
    assert origin.requests == []
    wait_until(lambda: proxy.flows[-1].state != "open")
    assert proxy.flows[-1].error is not None


def test_respond_to_a_paused_flow(proxy: Proxy, origin: Origin, send: Callable[..., Client]) -> None:
    proxy.breakpoint("/hello")
    client = send(origin.url("/hello"))
    proxy.next_paused(timeout=5).respond(201, json={"mocked": True})
    status, _, body = client.result()
    assert (status, json.loads(body)) == (201, {"mocked": True})
    assert origin.requests == []


def test_timeout_resumes_unchanged_with_a_log_line(proxy: Proxy, origin: Origin, send: Callable[..., Client],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    proxy.breakpoint("~u /echo", timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="interceptkit"):
        client = send(origin.url("/echo"), b"as sent")
        flow = proxy.next_paused(timeout=5)
        flow.request.set_content(b"half-done edit")
        assert client.result()[2] == b"as sent"
    assert origin.requests[0].body == b"as sent"
    assert any("resumed unchanged" in r.getMessage() and f"#{flow.id}" in r.getMessage() for r in caplog.records)


def test_remove_resumes_everything_it_holds(proxy: Proxy, origin: Origin, send: Callable[..., Client]) -> None:
    bp = proxy.breakpoint("/hello")
    clients = [send(origin.url("/hello")) for _ in range(3)]
    assert wait_until(lambda: len(bp.held) == 3)
    assert bp.remove() == 3
    assert [c.result()[0] for c in clients] == [200, 200, 200]
    assert opener(proxy).open(origin.url("/hello"), timeout=5).read() == HELLO  # not paused any more
    assert not bp.active


def test_next_paused_times_out(proxy: Proxy) -> None:
    proxy.breakpoint("~u /never")
    with pytest.raises(TimeoutError):
        proxy.next_paused(timeout=0.05)


def test_bad_arguments_are_refused(proxy: Proxy) -> None:
    with pytest.raises(ValueError, match="'request' or 'response'"):
        proxy.breakpoint(at="headers")
    with pytest.raises(ValueError, match="timeout"):
        proxy.breakpoint(timeout=0)
    with pytest.raises(ValueError, match=r"\^"):
        proxy.breakpoint("~m (")


def test_stop_kills_paused_flows(proxy: Proxy, origin: Origin, send: Callable[..., Client]) -> None:
    proxy.breakpoint("/hello")
    client = send(origin.url("/hello"))
    flow = proxy.next_paused(timeout=5)
    proxy.stop()
    assert isinstance(client.result(), Exception)  # told at once, not left hanging
    assert flow.killed and len(proxy.paused) == 0 and origin.requests == []


def test_https_intercepted_flow_pauses_and_resumes_edited(new_proxy: Callable[..., Proxy], origin_pki: OriginPKI,
                                                          tls_origin: TLSOrigin) -> None:
    with new_proxy(upstream_ca=origin_pki.ca_path, read_timeout=10.0) as proxy:
        proxy.breakpoint("~u ^https://", path="/echo")
        result: list[Any] = []
        command = ("--cacert", str(proxy.ca_cert_path), "--data-binary", "from curl", tls_origin.url("/echo"))
        worker = threading.Thread(target=lambda: result.append(curl(*command, proxy=proxy, timeout=20)))
        worker.start()
        flow = proxy.next_paused(timeout=10)
        assert flow.request.scheme == "https" and flow.request.content == b"from curl"
        flow.request.set_content(b"edited in the next cell")
        flow.resume()
        worker.join(20)
    assert result[0].returncode == 0 and result[0].stdout == b"edited in the next cell"
    assert tls_origin.requests[0].body == b"edited in the next cell"


def test_reverse_mode_flow_pauses_and_resumes_edited(new_proxy: Callable[..., Proxy], origin: Origin) -> None:
    routes = {"/api": {"url": f"http://origin.test:{origin.port}", "strip": True}}
    with new_proxy(mode="reverse", routes=routes) as proxy:
        bp = proxy.breakpoint("~m POST")
        result: list[Any] = []
        url = f"{proxy.url}/api/echo"
        worker = threading.Thread(target=lambda: result.append(curl("--data-binary", "v1", url)))
        worker.start()
        flow = proxy.next_paused(timeout=10)
        flow.request.set_content(b"v2")
        flow.request.headers["X-Reviewed"] = "by a human"
        flow.resume()
        worker.join(20)
        bp.remove()
    assert result[0].stdout == b"v2"
    assert origin.requests[0].path == "/echo" and origin.requests[0].header("X-Reviewed") == "by a human"
