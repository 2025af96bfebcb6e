"""Mocks with matchers and sequences, strict mode, assertions and waits, with real clients.

Clients: httpx and curl through the proxy to origin.py on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from origin import HELLO, Origin, curl, wait_flows_done

from interceptkit import Flow, Proxy


def http(proxy: Proxy) -> httpx.Client:
    return httpx.Client(proxy=proxy.url, timeout=5, trust_env=False)


def test_mock_matches_query_headers_and_json(proxy: Proxy, origin: Origin) -> None:
    base = f"http://origin.test:{origin.port}"
    page1 = proxy.mock("GET", f"{base}/items", query={"page": "1"}, json={"page": 1})
    tokened = proxy.mock("GET", f"{base}/me", match_headers={"X-Token": "t1"}, text="me\n")
    created = proxy.mock("POST", f"{base}/users", match_json={"name": "ada", "admin": False}, status=201,
                         json={"id": 7})
    with http(proxy) as client:
        assert client.get(f"{base}/items?sort=asc&page=1").json() == {"page": 1}
        assert client.get(f"{base}/items?page=2").status_code == 404  # the origin's answer
        assert client.get(f"{base}/me", headers={"X-Token": "t1"}).text == "me\n"
        assert client.get(f"{base}/me", headers={"X-Token": "t2"}).status_code == 404
        answer = client.post(f"{base}/users", content=b'{"admin": false, "name": "ada"}')
        assert answer.status_code == 201 and answer.json() == {"id": 7}
        assert client.post(f"{base}/users", json={"name": "bob", "admin": False}).status_code == 404
    assert (page1.calls, tokened.calls, created.calls) == (1, 1, 1)
    assert [f.request.path for f in page1.flows] == ["/items?sort=asc&page=1"]
    assert created.flows[0].response.status == 201  # type: ignore[union-attr]


def test_mock_response_sequence(proxy: Proxy, origin: Origin) -> None:
    mock = proxy.mock("GET", origin.url("/flaky"), responses=[dict(status=500), dict(json={"ok": True})])
    statuses = [curl("-o", "/dev/null", "-w", "%{http_code}", origin.url("/flaky"), proxy=proxy).stdout
                for _ in range(3)]
    assert statuses == [b"500", b"200", b"200"]  # the last one repeats
    assert mock.calls == 3 and len(mock.flows) == 3
    with pytest.raises(TypeError, match="either responses"):
        proxy.mock("GET", "*", responses=[dict(status=500)], text="both")
    with pytest.raises(TypeError, match="each response"):
        proxy.mock("GET", "*", responses=[dict(code=500)])


def test_strict_mode_explains_the_miss(proxy: Proxy, origin: Origin) -> None:
    base = f"http://origin.test:{origin.port}"
    proxy.mock("GET", f"{base}/items", query={"page": "1"}, json=[])
    proxy.mock("DELETE", f"{base}/items/*", status=204)
    strict = proxy.strict()
    result = curl("-i", f"{base}/items?page=2", proxy=proxy)
    text = result.stdout.decode()
    assert text.startswith("HTTP/1.1 599")
    assert f"GET {base}/items?page=2" in text  # names the request
    assert f"mock GET {base}/items query=page=1" in text and f"mock DELETE {base}/items/*" in text
    nearest = text.split("nearest: ", 1)[1]
    assert nearest.startswith(f"mock GET {base}/items") and "query: page=2 vs page=1" in nearest
    assert origin.requests == []  # never a silent pass-through
    [flow] = [f for f in proxy.flows if f.metadata.get("unmatched")]
    assert flow.request.path == "/items?page=2" and strict.calls == 1
    assert curl(f"{base}/items?page=1", proxy=proxy).stdout == b"[]"  # mocks still answer
    strict.remove()
    assert curl(origin.url("/hello"), proxy=proxy).stdout == HELLO


def test_strict_status_is_configurable(proxy: Proxy, origin: Origin) -> None:
    proxy.strict(status=418)
    result = curl("-o", "/dev/null", "-w", "%{http_code}", origin.url("/hello"), proxy=proxy)
    assert result.stdout == b"418"


def test_assert_requested_shows_what_was_seen(proxy: Proxy, origin: Origin) -> None:
    with http(proxy) as client:
        client.post(origin.url("/echo"), json={"n": 1})
        client.get(origin.url("/hello"))
    wait_flows_done(proxy, 2)
    assert len(proxy.assert_requested("POST", origin.url("/echo"), json={"n": 1}, times=1)) == 1
    proxy.assert_requested(url=origin.url("/hel*"))
    with pytest.raises(AssertionError) as raised:
        proxy.assert_requested("POST", origin.url("/echo"), json={"n": 2})
    message = str(raised.value)
    assert message.startswith(f'expected at least one request matching POST {origin.url("/echo")} json={{"n": 2}}')
    assert "requests seen (2):" in message and origin.url("/hello") in message
    assert 'json: {"n": 1} vs {"n": 2}' in message.split("nearest:", 1)[1]
    with pytest.raises(AssertionError, match="expected 2 request"):
        proxy.assert_requested("GET", times=2)


def test_assert_all_mocks_used_names_the_unused(proxy: Proxy, origin: Origin) -> None:
    used = proxy.mock("GET", origin.url("/a"), text="a")
    proxy.mock("GET", origin.url("/never"), text="b")
    curl(origin.url("/a"), proxy=proxy, check=True)
    with pytest.raises(AssertionError, match=r"mock GET .*/never"):
        proxy.assert_all_mocks_used()
    assert used.calls == 1


def test_wait_for_returns_the_next_finished_flow(proxy: Proxy, origin: Origin) -> None:
    curl(origin.url("/hello"), proxy=proxy, check=True)  # finished before the call: not returned
    threading.Timer(0.1, lambda: curl(origin.url("/status/201"), proxy=proxy)).start()
    flow = proxy.wait_for(timeout=5)
    assert isinstance(flow, Flow) and flow.request.path == "/status/201"
    with pytest.raises(TimeoutError, match="path='/nothing'"):
        proxy.wait_for(path="/nothing", timeout=0.2)


def test_wait_for_async(proxy: Proxy, origin: Origin) -> None:
    async def main() -> Flow:
        waiting = asyncio.ensure_future(proxy.wait_for_async(where=lambda f: f.request.path == "/hello"))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(curl, origin.url("/hello"), proxy=proxy)
        return await waiting

    started = time.monotonic()
    assert asyncio.run(main()).response.status == 200  # type: ignore[union-attr]
    assert time.monotonic() - started < 5
