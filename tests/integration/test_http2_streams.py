"""HTTP/2 streams are exchanges (issue 10, point 4), through the intercepting proxy.

Many streams on one client connection, each its own flow with the same hooks,
mocks, kill and body hooks as HTTP/1; a killed stream is reset alone; streams
towards an HTTP/1.1-only origin share a pool of upstream connections.
Clients: httpx (AsyncClient, http2=True) and the bare h2 client of h2_clients.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

import httpx
from h2_clients import H2Tunnel, intercepted, trust
from h2_origin import H2Origin
from origin import pattern, pattern_sha256
from tls_origin import TLSOrigin

from interceptkit import Flow, Proxy

CANCEL = 0x8


async def _gather(proxy: Proxy, urls: list[str], warm: str | None = None) -> list[httpx.Response | BaseException]:
    """GET ``urls`` at once over one client; ``warm`` first, alone: httpcore opens one connection
    per request until it knows the first one is HTTP/2, so the burst then shares that one."""
    async with httpx.AsyncClient(http2=True, proxy=proxy.url, verify=trust(proxy.ca_cert_path),
                                 trust_env=False, timeout=15) as client:
        if warm is not None:
            assert (await client.get(warm)).http_version == "HTTP/2"
        return await asyncio.wait_for(
            asyncio.gather(*(client.get(u) for u in urls), return_exceptions=True), 30)


def test_50_concurrent_streams_on_one_connection_are_50_flows_with_their_hooks(
        make: Callable[..., Proxy], h2_origin: H2Origin) -> None:
    proxy = make()
    requests_seen: list[str] = []
    responses_seen: list[str] = []

    async def tag_request(flow: Flow) -> None:
        requests_seen.append(flow.request.path)
        flow.request.headers["x-hooked"] = flow.request.query["i"]

    def tag_response(flow: Flow) -> None:
        responses_seen.append(flow.request.path)
        flow.response.headers["x-answered"] = "by-hook"

    proxy.on("request", tag_request)
    proxy.on("response", tag_response)
    responses = asyncio.run(_gather(proxy, [h2_origin.url(f"/proto?i={i}") for i in range(50)],
                                    warm=h2_origin.url("/proto?i=warm")))
    assert all(isinstance(r, httpx.Response) for r in responses), [r for r in responses if not isinstance(r, httpx.Response)]
    for i, response in enumerate(responses):
        assert isinstance(response, httpx.Response)
        assert response.http_version == "HTTP/2" and response.status_code == 200
        assert response.headers["x-answered"] == "by-hook"
        seen = response.json()
        assert seen["query"] == f"i={i}" and ["x-hooked", str(i)] in seen["headers"]
        assert seen["http_version"] == "2"
    flows = [f for f in intercepted(proxy, 51) if f.request.query["i"] != "warm"]
    assert len(flows) == 50 and len(requests_seen) == 51 and len(responses_seen) == 51
    assert sorted(f.request.query["i"] for f in flows) == sorted(str(i) for i in range(50))
    assert len({f.id for f in flows}) == 50
    assert len({f.client_address for f in flows}) == 1  # all on one client connection
    assert {f.request.http_version for f in flows} == {"HTTP/2"}


def test_kill_resets_only_its_own_stream(make: Callable[..., Proxy], h2_origin: H2Origin) -> None:
    proxy = make()
    proxy.on("request", lambda flow: flow.kill(), path="/hello")
    with H2Tunnel.through(proxy, "localhost", h2_origin.tls_port, proxy.ca_cert_path) as tunnel:
        before = [tunnel.request(f"/bytes/{200_000 + i}") for i in range(3)]
        killed = tunnel.request("/hello")
        after = [tunnel.request(f"/proto?n={i}") for i in range(3)]
        results = tunnel.wait()
        assert results[killed].reset == CANCEL and results[killed].status is None
        for i, sid in enumerate(before):
            assert results[sid].ended and bytes(results[sid].body) == pattern(200_000 + i)
        assert all(results[sid].ended and results[sid].status == 200 for sid in after)
        # the connection is still good for new streams
        again = tunnel.request("/proto?n=again")
        assert tunnel.wait([again])[again].status == 200
        assert tunnel.goaway is None
    flows = intercepted(proxy, 8)
    [dead] = [f for f in flows if f.request.path == "/hello"]
    assert dead.error == "killed by a hook" and dead.state == "error"
    assert all(f.error is None for f in flows if f is not dead)


def test_kill_with_httpx_fails_one_request_and_the_others_complete(make: Callable[..., Proxy],
                                                                  h2_origin: H2Origin) -> None:
    proxy = make()
    proxy.on("request", lambda flow: flow.kill(), path="/hello")
    urls = [h2_origin.url(f"/proto?i={i}") for i in range(10)]
    urls.insert(5, h2_origin.url("/hello"))
    responses = asyncio.run(_gather(proxy, urls))
    failed = [r for r in responses if not isinstance(r, httpx.Response)]
    assert len(failed) == 1 and isinstance(failed[0], httpx.HTTPError) and responses[5] is failed[0]
    assert all(r.status_code == 200 and r.http_version == "HTTP/2"
               for r in responses if isinstance(r, httpx.Response))


def test_a_mock_answers_one_stream_and_the_others_reach_the_origin(make: Callable[..., Proxy],
                                                                   h2_origin: H2Origin) -> None:
    proxy = make()
    mock = proxy.mock("GET", h2_origin.url("/mocked"), json={"mocked": True}, status=202)
    urls = [h2_origin.url("/proto?i=1"), h2_origin.url("/mocked"), h2_origin.url("/proto?i=2")]
    first, mocked, last = asyncio.run(_gather(proxy, urls))
    assert isinstance(mocked, httpx.Response) and mocked.status_code == 202 and mocked.json() == {"mocked": True}
    assert mocked.http_version == "HTTP/2" and mock.calls == 1
    assert isinstance(first, httpx.Response) and first.json()["query"] == "i=1"
    assert isinstance(last, httpx.Response) and last.json()["query"] == "i=2"
    flows = intercepted(proxy, 3)
    [flow] = [f for f in flows if f.request.path == "/mocked"]
    assert flow.metadata.get("mocked") is True and flow.request.http_version == "HTTP/2"


def test_response_chunk_hooks_see_an_h2_body_and_it_arrives_whole(make: Callable[..., Proxy],
                                                                 h2_origin: H2Origin) -> None:
    proxy = make()
    sizes: list[int] = []

    def count(flow: Any, chunk: bytes) -> bytes:
        sizes.append(len(chunk))
        return chunk

    proxy.on("response_chunk", count)
    with httpx.Client(http2=True, proxy=proxy.url, verify=trust(proxy.ca_cert_path), trust_env=False,
                      timeout=15) as client:
        response = client.get(h2_origin.url("/bytes/5000000"))
    assert response.http_version == "HTTP/2"
    assert hashlib.sha256(response.content).hexdigest() == pattern_sha256(5_000_000)
    assert sum(sizes) == 5_000_000 and len(sizes) > 1


def test_streams_to_an_http1_origin_reuse_one_pooled_connection(make: Callable[..., Proxy],
                                                                tls_origin: TLSOrigin) -> None:
    proxy = make()
    with H2Tunnel.through(proxy, "origin.test", tls_origin.port, proxy.ca_cert_path, alpn=("h2",)) as tunnel:
        for i in range(6):
            sid = tunnel.request(f"/json?i={i}")
            assert tunnel.wait([sid])[sid].status == 200
    assert len(tls_origin.connections) == 1 and tls_origin.served_counts() == [6]  # not one per stream


def test_concurrent_streams_to_an_http1_origin_use_several_pooled_connections(make: Callable[..., Proxy],
                                                                             tls_origin: TLSOrigin) -> None:
    proxy = make()
    arrived: list[int] = []

    async def all_together(flow: Flow) -> None:
        # hold each request until all six are in the proxy: they then go upstream at once
        arrived.append(flow.id)
        for _ in range(500):
            if len(arrived) >= 6:
                return
            await asyncio.sleep(0.01)

    proxy.on("request", all_together)
    with H2Tunnel.through(proxy, "origin.test", tls_origin.port, proxy.ca_cert_path, alpn=("h2",)) as tunnel:
        sids = [tunnel.request(f"/bytes/{1_000_000 + i}") for i in range(6)]
        results = tunnel.wait(sids, timeout=20)
    for i, sid in enumerate(sids):
        assert results[sid].status == 200 and bytes(results[sid].body) == pattern(1_000_000 + i)
    assert 2 <= len(tls_origin.connections) <= 6, tls_origin.served_counts()
    assert sum(tls_origin.served_counts()) == 6


def test_a_stream_the_client_resets_ends_its_flow_with_an_error_and_the_connection_goes_on(
        make: Callable[..., Proxy], h2_origin: H2Origin) -> None:
    proxy = make()
    with H2Tunnel.through(proxy, "localhost", h2_origin.tls_port, proxy.ca_cert_path) as tunnel:
        big = tunnel.request("/bytes/50000000")
        tunnel.read_slowly(big, rate=64 * 1024, seconds=0.5)  # the answer has started
        assert tunnel.streams[big].status == 200
        tunnel.reset(big)
        after = tunnel.request("/proto?after=reset")
        assert tunnel.wait([after])[after].status == 200
    flows = intercepted(proxy, 2)
    [cancelled] = [f for f in flows if f.request.path == "/bytes/50000000"]
    assert cancelled.state == "error" and cancelled.error and "reset" in cancelled.error
    assert [f.error for f in flows if f is not cancelled] == [None]
