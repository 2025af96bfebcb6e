"""Faults observed by real clients: curl subprocesses, httpx and raw sockets.

Each kind is seen the way a resilience test would see it: a client timeout,
a ``ConnectionResetError`` (a TCP RST, not an orderly close), a short read,
a slow or piecemeal body, a status the origin never sent.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from origin import HELLO, Origin, curl, pattern, wait_until

from interceptkit import Proxy


def http(proxy: Proxy, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(proxy=proxy.url, timeout=timeout, trust_env=False)


def raw_get(proxy: Proxy, url: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(f"GET {url} HTTP/1.1\r\nHost: origin.test\r\n\r\n".encode())
    return sock


def test_delay_makes_a_client_time_out(proxy: Proxy, origin: Origin) -> None:
    fault = proxy.fault("delay", seconds=0.6, path="/hello")
    with http(proxy, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
        client.get(origin.url("/hello"))
    started = time.monotonic()
    with http(proxy) as client:
        assert client.get(origin.url("/hello")).content == HELLO
        assert time.monotonic() - started >= 0.55
        assert client.get(origin.url("/status/204")).status_code == 204  # other paths: no delay
    assert fault.calls == 2 and [f.request.path for f in fault.flows] == ["/hello", "/hello"]


def test_throttle_download_and_upload(proxy: Proxy, origin: Origin) -> None:
    proxy.fault("throttle", bytes_per_second=400_000, path="/bytes/*")
    started = time.monotonic()
    with http(proxy) as client:
        body = client.get(origin.url("/bytes/200000")).content
    assert body == pattern(200_000) and time.monotonic() - started >= 0.45
    proxy.fault("throttle", bytes_per_second=200_000, direction="upload", path="/echo")
    started = time.monotonic()
    with http(proxy) as client:
        echoed = client.post(origin.url("/echo"), content=b"u" * 100_000).content
    assert echoed == b"u" * 100_000 and time.monotonic() - started >= 0.45


def test_reset_before_the_response_is_a_connection_reset(proxy: Proxy, origin: Origin) -> None:
    fault = proxy.fault("reset")  # at="headers"
    sock = raw_get(proxy, origin.url("/hello"))
    with pytest.raises(ConnectionResetError):
        while sock.recv(65536):
            pass
    sock.close()
    result = curl(origin.url("/hello"), proxy=proxy)
    assert result.returncode == 56 and b"reset by peer" in result.stderr
    assert fault.calls == 2 and origin.requests == []


def test_reset_in_the_body_comes_after_the_head(proxy: Proxy, origin: Origin) -> None:
    proxy.fault("reset", at="body")
    result = curl("-i", origin.url("/bytes/100000"), proxy=proxy)
    assert result.returncode == 56 and b"reset by peer" in result.stderr
    assert result.stdout.startswith(b"HTTP/1.1 200")


def test_reset_at_connect_refuses_the_tunnel(proxy: Proxy) -> None:
    proxy.fault("reset", at="connect", host="origin.test")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n")
    with pytest.raises(ConnectionResetError):
        while sock.recv(65536):
            pass
    sock.close()


def test_reset_at_connect_without_filters_resets_before_any_request(proxy: Proxy, origin: Origin) -> None:
    fault = proxy.fault("reset", at="connect", times=1)
    with pytest.raises(ConnectionResetError):  # nothing sent: the accept is answered by RST
        # (the RST may even reach connect() itself before it returns)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            while sock.recv(65536):
                pass
    assert fault.calls == 1 and fault.flows == []  # a connection, not a flow
    assert curl(origin.url("/hello"), proxy=proxy).stdout == HELLO  # times=1: spent


def test_hang_never_answers_until_removed(proxy: Proxy, origin: Origin) -> None:
    fault = proxy.fault("hang", path="/hello")
    result = curl("--max-time", "1", origin.url("/hello"), proxy=proxy, timeout=10)
    assert result.returncode == 28  # curl: operation timed out
    sock = raw_get(proxy, origin.url("/hello"))
    assert wait_until(lambda: fault.calls == 2)
    fault.remove()  # lets go of what it holds: the connection closes
    assert sock.recv(100) == b""
    sock.close()
    assert origin.requests == []


def test_truncate_is_a_short_read(proxy: Proxy, origin: Origin) -> None:
    proxy.fault("truncate", after=1024, path="/bytes/*")
    result = curl(origin.url("/bytes/100000"), proxy=proxy)
    assert result.returncode == 18 and len(result.stdout) == 1024  # curl: partial file
    received = bytearray()
    # The origin's Content-Length is kept (the core cuts, no chunk hook reframes): httpx names the shortfall.
    with http(proxy) as client, pytest.raises(httpx.RemoteProtocolError, match="received 1024 bytes, expected 5000"):
        with client.stream("GET", origin.url("/bytes/5000")) as response:
            for piece in response.iter_raw():
                received += piece
    assert bytes(received) == pattern(1024)


def test_dribble_sends_the_body_in_tiny_pieces(proxy: Proxy, origin: Origin) -> None:
    proxy.fault("dribble", chunk=100, interval=0.02, path="/bytes/*")
    started, pieces = time.monotonic(), []
    with http(proxy) as client, client.stream("GET", origin.url("/bytes/1000")) as response:
        pieces = list(response.iter_raw())
    assert b"".join(pieces) == pattern(1000)
    assert len(pieces) >= 5 and max(len(p) for p in pieces) <= 200
    assert time.monotonic() - started >= 0.18


def test_status_answers_instead_of_the_upstream_and_times_limits_it(proxy: Proxy, origin: Origin) -> None:
    fault = proxy.fault("status", code=503, retry_after=5, times=1)
    result = curl("-i", origin.url("/hello"), proxy=proxy)
    assert result.stdout.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in result.stdout
    assert curl(origin.url("/hello"), proxy=proxy).stdout == HELLO  # times=1: then it is spent
    assert fault.calls == 1 and len(origin.requests) == 1


def test_fault_arguments_are_checked_at_once(proxy: Proxy) -> None:
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        proxy.fault("explode")
    with pytest.raises(TypeError, match="its options are: seconds"):
        proxy.fault("delay", secs=1)
    with pytest.raises(ValueError, match="direction"):
        proxy.fault("throttle", direction="sideways")
    with pytest.raises(ValueError, match="positive"):
        proxy.fault("dribble", chunk=0)
    assert not proxy.hooks.active
