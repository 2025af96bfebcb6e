"""CONNECT tunnels: a raw byte relay between the client and a TCP server.

Most tests use ``intercept=False``: every CONNECT is a plain byte relay, the
proxy connects first and answers 200 (or 502) after. The default
(``intercept=True``) answers 200 at once and sniffs the first bytes; the
tests at the end check that non-TLS traffic still passes in that mode.
"""

from __future__ import annotations

import socket
import time

import pytest
from origin import (
    HELLO,
    curl,
    read_head,
    read_until_closed,
    status_of,
    wait_flows_done,
    wait_until,
)


@pytest.fixture
def proxy(proxy_factory):
    """A relaying proxy (no HTTPS interception)."""
    return proxy_factory(intercept=False, read_timeout=10.0)


@pytest.fixture
def intercepting_proxy(proxy_factory):
    return proxy_factory(intercept=True, read_timeout=10.0)


def _connect_request(port: int, host: str = "127.0.0.1") -> bytes:
    return f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def _recv_exactly(sock: socket.socket, n: int, already: bytes = b"", timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = already
    while len(data) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"got {len(data)} of {n} bytes: {data[:100]!r}")
        sock.settimeout(remaining)
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += piece
    return data


def _open_tunnel(proxy, port: int, early: bytes = b"") -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(_connect_request(port) + early)
    head, rest = read_head(sock)
    assert status_of(head) == 200, head
    return sock, rest


def test_connect_relays_bytes_both_ways(proxy, echo_server):
    sock, rest = _open_tunnel(proxy, echo_server.port)
    with sock:
        assert rest == b""
        for message in (b"ping", b"\x00\xff binary \r\n\r\n", bytes(range(256)) * 300):
            sock.sendall(message)
            assert _recv_exactly(sock, len(message)) == message
    [flow] = wait_flows_done(proxy, 1)
    assert flow.request.method == "CONNECT"
    assert flow.response is not None and flow.response.status == 200


def test_bytes_sent_with_the_connect_are_not_lost(proxy, echo_server):
    early = b"EARLY-BYTES-IN-THE-SAME-PACKET" * 10
    sock, rest = _open_tunnel(proxy, echo_server.port, early=early)
    with sock:
        assert _recv_exactly(sock, len(early), already=rest) == early
        sock.sendall(b"after")
        assert _recv_exactly(sock, 5) == b"after"
    assert wait_until(lambda: bytes(echo_server.received) == early + b"after")


def test_client_close_closes_the_server_side(proxy, echo_server):
    sock, _ = _open_tunnel(proxy, echo_server.port)
    sock.sendall(b"hi")
    assert _recv_exactly(sock, 2) == b"hi"
    sock.close()
    assert wait_until(lambda: echo_server.endings == ["eof"], timeout=2), echo_server.endings
    [flow] = wait_flows_done(proxy, 1)
    assert flow.state != "open"


def test_client_half_close_closes_the_server_side(proxy, echo_server):
    sock, _ = _open_tunnel(proxy, echo_server.port)
    with sock:
        sock.sendall(b"hi")
        assert _recv_exactly(sock, 2) == b"hi"
        sock.shutdown(socket.SHUT_WR)
        assert wait_until(lambda: echo_server.endings == ["eof"], timeout=2), echo_server.endings
        assert read_until_closed(sock, timeout=3) == b""


def test_server_close_closes_the_client_side(proxy, echo_server):
    sock, _ = _open_tunnel(proxy, echo_server.port)
    with sock:
        sock.sendall(b"CLOSE!")
        started = time.monotonic()
        assert read_until_closed(sock, timeout=5) == b""
        assert time.monotonic() - started < 3  # closed, not timed out
    [flow] = wait_flows_done(proxy, 1)
    assert flow.state == "done"
    assert flow.request.body_size == len(b"CLOSE!")


def test_connect_to_refused_port_gets_502(proxy):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(_connect_request(port))
        response = read_until_closed(sock)
    assert status_of(response) == 502
    assert f"127.0.0.1:{port}".encode() in response
    [flow] = wait_flows_done(proxy, 1)
    assert flow.state == "error" and flow.error


def test_connect_to_unresolvable_name_gets_502(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(_connect_request(443, host="nowhere.test"))
        response = read_until_closed(sock)
    assert status_of(response) == 502
    assert b"nowhere.test" in response


def test_connect_with_bad_target_gets_400(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"CONNECT no-port-here HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_until_closed(sock)
    assert status_of(response) == 400


def test_tunnel_leftovers_never_reach_another_clients_request(proxy, origin):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, _ = read_head(sock)
        assert status_of(head) == 200
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Injected: ")  # an unfinished request
        time.sleep(0.2)
    time.sleep(0.2)
    # Another client, a plain request through the proxy to the same server:
    result = curl(f"http://127.0.0.1:{origin.port}/status/201", proxy=proxy, check=True)
    assert result.stdout == b"status 201\n"
    # Regression: the tunnel's socket was once pooled, so the next request was
    # appended to its unfinished one (served /hello to a client asking /status/201).
    injected = [seen for seen in origin.requests if seen.header("X-Injected") is not None]
    assert all("status/201" not in (seen.header("X-Injected") or "") for seen in injected)
    [mine] = [seen for seen in origin.requests if seen.path == "/status/201"]
    assert all(seen.connection != mine.connection for seen in injected)


def test_curl_proxytunnel_to_origin(proxy, origin):
    # curl -p: CONNECT origin.test:PORT (resolved by the static resolver), then HTTP inside.
    result = curl("-v", "--proxytunnel", origin.url("/hello"), proxy=proxy, check=True)
    assert result.stdout == HELLO
    assert b"CONNECT origin.test:" in result.stderr
    [flow] = wait_flows_done(proxy, 1)
    assert flow.request.method == "CONNECT"
    assert flow.request.host == "origin.test" and flow.request.port == origin.port
    assert flow.server_address == ("127.0.0.1", origin.port)


def test_several_tunnels_at_once(proxy, echo_server):
    tunnels = [_open_tunnel(proxy, echo_server.port)[0] for _ in range(5)]
    try:
        for index, sock in enumerate(tunnels):
            sock.sendall(b"tunnel-%d" % index)
        for index, sock in enumerate(tunnels):
            expected = b"tunnel-%d" % index
            assert _recv_exactly(sock, len(expected)) == expected
    finally:
        for sock in tunnels:
            sock.close()
    assert echo_server.accepted == 5


# -- the default, intercepting proxy with traffic that is not TLS ----------------------


def test_intercepting_proxy_relays_raw_bytes(intercepting_proxy, echo_server):
    early = b"\x00\x01raw protocol, not TLS, not HTTP"
    sock, rest = _open_tunnel(intercepting_proxy, echo_server.port, early=early)
    with sock:
        assert _recv_exactly(sock, len(early), already=rest) == early
        sock.sendall(b"more")
        assert _recv_exactly(sock, 4) == b"more"


def test_intercepting_proxy_sees_http_inside_tunnel(intercepting_proxy, origin):
    result = curl("--proxytunnel", origin.url("/hello"), proxy=intercepting_proxy, check=True)
    assert result.stdout == HELLO
    flows = wait_flows_done(intercepting_proxy, 1)
    assert [(f.request.method, f.request.path, f.response.status) for f in flows] == [("GET", "/hello", 200)]


def test_intercepting_proxy_refused_port_closes_tunnel(intercepting_proxy):
    # The 200 went out before connecting, so a failure can only close the tunnel.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sock, rest = _open_tunnel(intercepting_proxy, port, early=b"hello?")
    with sock:
        assert rest + read_until_closed(sock, timeout=5) == b""
    [flow] = wait_flows_done(intercepting_proxy, 1)
    assert flow.state == "error" and "127.0.0.1" in flow.error
