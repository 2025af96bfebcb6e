"""Chaining to an upstream (parent) proxy, over real loopback sockets with curl.

The chain is ``curl -> interceptkit -> parent -> origin``. The child's
resolver knows no names at all (only the parent's IP literal), so anything
that reaches the origin went through the parent. The parent is a second
interceptkit (relaying tunnels, not decrypting) or, to see exactly what the
child sends and to refuse it, a tiny raw-socket server written here.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import pytest
from origin import HELLO, Origin, curl, wait_flows_done
from tls_origin import OriginPKI, TLSOrigin

from interceptkit import Proxy, static_resolver


@pytest.fixture
def make(make: Callable[..., Proxy], tmp_path: Path) -> Callable[..., Proxy]:
    """The shared factory with a CA folder per proxy and shorter timeouts;
    ``names=False`` gives a proxy that cannot resolve any name."""
    made = count()

    def factory(names: bool = True, **kwargs: object) -> Proxy:
        if not names:
            kwargs.setdefault("resolver", static_resolver({}))
        kwargs.setdefault("confdir", tmp_path / f"ca-{next(made)}")
        kwargs.setdefault("read_timeout", 5.0)
        kwargs.setdefault("connect_timeout", 3.0)
        return make(**kwargs)

    return factory


class RawParent:
    """A parent proxy in a few lines: records each request head, answers ``answer`` and closes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.heads: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(3)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    self.heads.append(head)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


@pytest.fixture
def raw_parent() -> Iterator[Callable[[bytes], RawParent]]:
    made: list[RawParent] = []

    def factory(answer: bytes) -> RawParent:
        made.append(RawParent(answer))
        return made[-1]

    try:
        yield factory
    finally:
        for parent in made:
            parent.stop()


def https(proxy: Proxy, url: str, *args: str) -> bytes:
    result = curl("--cacert", str(proxy.ca_cert_path), "--capath", "/nonexistent", *args, url,
                  proxy=proxy, timeout=15)
    assert result.returncode == 0, result.stderr
    return result.stdout


def requests_of(proxy: Proxy, count: int) -> list:
    return [f for f in wait_flows_done(proxy, count) if f.request.method != "CONNECT"]


# -- the chain -----------------------------------------------------------------------------


def test_plain_http_goes_through_the_parent_with_its_credentials(make, origin: Origin) -> None:
    parent = make()
    child = make(names=False, upstream_proxy=f"http://ada:s%40cret@127.0.0.1:{parent.port}")
    result = curl(origin.url("/hello"), "--proxy-user", "client:own-secret", proxy=child, timeout=15)
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO
    [seen] = origin.wait_for_requests(1)
    assert seen.path == "/hello"
    # Neither the parent's credentials nor the client's reach the origin.
    assert seen.header("Proxy-Authorization") is None
    [at_parent] = requests_of(parent, 1)
    assert at_parent.request.url == origin.url("/hello")
    assert at_parent.request.headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"ada:s@cret").decode()
    [flow] = requests_of(child, 1)
    assert flow.error is None and flow.response is not None and flow.response.status == 200


def test_https_is_intercepted_and_tunnelled_through_the_parent(make, tls_origin: TLSOrigin) -> None:
    parent = make(intercept=False)
    child = make(names=False, upstream_proxy=parent.url)
    assert https(child, tls_origin.url("/hello?x=1")) == HELLO
    [seen] = tls_origin.requests
    assert seen.path == "/hello?x=1"
    [flow] = requests_of(child, 2)
    assert flow.request.url == tls_origin.url("/hello?x=1")  # decrypted here
    assert flow.server_tls is not None and flow.server_tls.sni == "origin.test"  # verified as usual
    [tunnel] = wait_flows_done(parent, 1)
    assert tunnel.request.method == "CONNECT" and tunnel.request.authority == f"origin.test:{tls_origin.port}"


def test_an_ignored_host_is_relayed_through_a_connect_to_the_parent(make, tls_origin: TLSOrigin,
                                                                     origin_pki: OriginPKI) -> None:
    parent = make(intercept=False)
    child = make(names=False, upstream_proxy=parent.url, ignore_hosts=["origin.test"])
    result = curl("--cacert", str(origin_pki.ca_path), "--capath", "/nonexistent", tls_origin.url("/hello"),
                  proxy=child, timeout=15)
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO
    [tunnel] = wait_flows_done(parent, 1)
    assert tunnel.request.method == "CONNECT"


def test_plain_connections_to_the_parent_are_pooled(make, origin: Origin) -> None:
    parent = make()
    child = make(names=False, upstream_proxy=parent.url)
    for path in ("/hello", "/hello?2"):
        assert curl(origin.url(path), proxy=child, timeout=15).stdout == HELLO
    flows = requests_of(parent, 2)
    assert len(flows) == 2
    # One child->parent connection carried both requests (one client address at the parent).
    assert len({f.client_address for f in flows}) == 1
    assert [f.request.path for f in requests_of(child, 2)] == ["/hello", "/hello?2"]


def test_bypassed_hosts_are_reached_directly(make, origin: Origin, raw_parent) -> None:
    parent = raw_parent(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
    child = make(upstream_proxy=f"http://127.0.0.1:{parent.port}", upstream_proxy_bypass=["*.test"])
    assert curl(origin.url("/hello"), proxy=child, timeout=15).stdout == HELLO
    assert parent.heads == []


def test_reverse_mode_reaches_its_route_through_the_parent(make, origin: Origin) -> None:
    parent = make()
    child = make(names=False, mode="reverse", routes={"/": f"http://origin.test:{origin.port}"},
                 upstream_proxy=parent.url)
    assert curl(f"http://127.0.0.1:{child.port}/hello", timeout=15).stdout == HELLO
    [at_parent] = requests_of(parent, 1)
    assert at_parent.request.url == origin.url("/hello")


def test_an_authenticated_chain_each_proxy_checks_its_own_credentials(make, origin: Origin,
                                                                      tls_origin: TLSOrigin) -> None:
    parent = make(intercept=False, proxy_auth=("parent-user", "parent-pw"))
    child = make(names=False, proxy_auth=("client", "client-pw"),
                 upstream_proxy=f"http://parent-user:parent-pw@127.0.0.1:{parent.port}")
    result = curl(origin.url("/hello"), "--proxy-user", "client:client-pw", proxy=child, timeout=15)
    assert result.stdout == HELLO, result.stderr
    assert https(child, tls_origin.url("/hello"), "--proxy-user", "client:client-pw") == HELLO
    [seen] = origin.wait_for_requests(1)
    assert seen.header("Proxy-Authorization") is None
    assert len(tls_origin.requests) == 1
    at_parent = wait_flows_done(parent, 2)
    assert sorted(f.request.method for f in at_parent) == ["CONNECT", "GET"]
    assert {f.proxy_user for f in at_parent} == {"parent-user"}  # the child's pair, not the client's
    assert {f.proxy_user for f in requests_of(child, 3)} == {"client"}
    # Without the parent's credentials the parent refuses, and the client hears it was the parent.
    stranger = make(names=False, upstream_proxy=parent.url)
    refused = curl("-i", origin.url("/hello"), proxy=stranger, timeout=15)
    assert refused.stdout.startswith(b"HTTP/1.1 502"), refused.stdout
    assert f"upstream proxy {parent.url} answered 407".encode() in refused.stdout


# -- a parent that refuses, or is not there --------------------------------------------------


def test_a_parent_that_answers_407_gives_a_502_naming_it(make, tls_origin: TLSOrigin, raw_parent) -> None:
    parent = raw_parent(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
    child = make(names=False, upstream_proxy=f"http://ada:pw@127.0.0.1:{parent.port}")
    result = curl("--cacert", str(child.ca_cert_path), "--capath", "/nonexistent", "-i",
                  "--proxy-user", "client:own-secret", tls_origin.url("/hello"), proxy=child, timeout=15)
    assert b"HTTP/2 502" in result.stdout, result.stdout  # curl spoke h2 inside the tunnel
    address = f"http://127.0.0.1:{parent.port}"
    assert f"upstream proxy {address} answered CONNECT with 407 Proxy Authentication Required".encode() \
        in result.stdout
    assert b"pw" not in result.stdout.partition(b"\r\n\r\n")[2].split(b"Connection established")[-1]
    [head] = parent.heads
    assert head.startswith(f"CONNECT origin.test:{tls_origin.port} HTTP/1.1\r\n".encode())
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"ada:pw") in head
    assert b"own-secret" not in head and base64.b64encode(b"client:own-secret") not in head
    [flow] = requests_of(child, 2)
    assert flow.error is not None and "upstream proxy" in flow.error and address in flow.error
    assert "407" in flow.error
    assert tls_origin.requests == []


def test_an_unreachable_parent_gives_a_502_naming_it(make, origin: Origin) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    child = make(names=False, upstream_proxy=f"http://127.0.0.1:{port}")
    result = curl("-i", origin.url("/hello"), proxy=child, timeout=15)
    assert result.stdout.startswith(b"HTTP/1.1 502"), result.stdout
    assert f"upstream proxy http://127.0.0.1:{port} cannot be reached".encode() in result.stdout
    [flow] = requests_of(child, 1)
    assert flow.error is not None and f"upstream proxy http://127.0.0.1:{port}" in flow.error
    assert origin.requests == []
