"""The Proxy object's lifecycle as a user drives it: start, stop, with, async with, event loops."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.error

import pytest
from origin import HELLO, opener

from interceptkit import Proxy, ProxyStartError, static_resolver


def _get(proxy: Proxy, url: str) -> bytes:
    with opener(proxy).open(url, timeout=10) as response:
        return response.read()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_port_zero_picks_a_port_and_url_is_right(origin, new_proxy):
    proxy = new_proxy()
    proxy.start()
    try:
        assert proxy.running
        assert proxy.port != 0
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        assert _accepts(proxy.port)
        assert _get(proxy, origin.url("/hello")) == HELLO
    finally:
        proxy.stop()
    assert not proxy.running
    assert not _accepts(proxy.port)


def test_stop_twice_and_stop_before_start_are_fine(new_proxy):
    proxy = new_proxy()
    proxy.stop()  # never started
    proxy.start()
    proxy.stop()
    proxy.stop()
    assert not proxy.running


def test_start_twice_is_harmless(origin, new_proxy):
    proxy = new_proxy()
    try:
        assert proxy.start() is proxy
        port = proxy.port
        assert proxy.start() is proxy
        assert proxy.port == port
        assert _get(proxy, origin.url("/hello")) == HELLO
    finally:
        proxy.stop()


def test_context_manager(origin, new_proxy):
    with new_proxy() as proxy:
        assert proxy.running
        port = proxy.port
        assert _get(proxy, origin.url("/hello")) == HELLO
        assert len(proxy.flows) == 1
    assert not proxy.running
    assert not _accepts(port)
    assert len(proxy.flows) == 1  # the record outlives the proxy


def test_context_manager_stops_on_exception(new_proxy):
    with pytest.raises(RuntimeError, match="boom"), new_proxy() as proxy:
        port = proxy.port
        raise RuntimeError("boom")
    assert not proxy.running
    assert not _accepts(port)


def test_async_with_inside_asyncio_run(origin, new_proxy):
    async def main() -> tuple[bytes, int]:
        async with new_proxy() as proxy:
            assert proxy.running
            body = await asyncio.to_thread(_get, proxy, origin.url("/hello"))
            return body, proxy.port

    body, port = asyncio.run(main())
    assert body == HELLO
    assert not _accepts(port)


def test_sync_start_from_inside_a_running_event_loop(origin, new_proxy):
    """Like a Jupyter cell: the caller's loop is running when it calls start()."""

    async def main() -> bytes:
        proxy = new_proxy()
        proxy.start()  # sync call with a loop running in this thread
        try:
            # The proxy must not need this loop: it runs on its own thread.
            return await asyncio.to_thread(_get, proxy, origin.url("/hello"))
        finally:
            proxy.stop()

    assert asyncio.run(main()) == HELLO


def test_blocking_request_from_the_loop_thread_does_not_block_proxy(origin, new_proxy):
    """A notebook cell that blocks its loop on a request must still get an answer."""

    async def main() -> bytes:
        with new_proxy() as proxy:
            return _get(proxy, origin.url("/hello"))  # blocks the running loop on purpose

    assert asyncio.run(main()) == HELLO


def test_two_proxies_with_different_resolvers_do_not_interfere(origin, new_proxy):
    first = new_proxy(resolver=static_resolver({"a.test": "127.0.0.1"}))
    second = new_proxy(resolver=static_resolver({"b.test": "127.0.0.1"}))
    with first, second:
        assert first.port != second.port
        assert _get(first, origin.url("/hello", host="a.test")) == HELLO
        assert _get(second, origin.url("/hello", host="b.test")) == HELLO
        for proxy, unknown in ((first, "b.test"), (second, "a.test")):
            with pytest.raises(urllib.error.HTTPError) as info:
                _get(proxy, origin.url("/hello", host=unknown))
            assert info.value.code == 502
        assert [f.request.host for f in first.flows] == ["a.test", "b.test"]
        assert [f.request.host for f in second.flows] == ["b.test", "a.test"]
        first.stop()
        assert _get(second, origin.url("/hello", host="b.test")) == HELLO  # unaffected


def test_proxies_used_from_several_threads(origin, new_proxy):
    results: list[bytes] = []
    errors: list[BaseException] = []

    def worker(proxy: Proxy) -> None:
        try:
            for _ in range(5):
                results.append(_get(proxy, origin.url("/hello")))
        except (OSError, AssertionError) as exc:  # reported below
            errors.append(exc)

    with new_proxy() as first, new_proxy() as second:
        threads = [threading.Thread(target=worker, args=(p,)) for p in (first, second, first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert not errors, errors
        assert results == [HELLO] * 20
        assert len(first.flows) == 10 and len(second.flows) == 10


def test_port_in_use_raises_proxy_start_error(new_proxy):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        proxy = new_proxy(port=port, resolver=static_resolver({}))
        with pytest.raises(ProxyStartError) as info:
            proxy.start()
        assert isinstance(info.value, OSError)
        assert str(port) in str(info.value)
        assert not proxy.running
        proxy.stop()  # still fine


def test_flows_can_be_read_while_traffic_flows(origin, new_proxy):
    with new_proxy() as proxy:
        for _ in range(5):
            _get(proxy, origin.url("/hello"))
            assert repr(proxy.flows)  # no crash reading from another thread
        assert len(proxy.flows) == 5
        assert proxy.flows[-1].response.status == 200
        assert len(proxy.flows[1:3]) == 2
