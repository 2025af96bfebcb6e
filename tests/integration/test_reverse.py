"""Reverse mode: a route table in front of origins, checked at the origins.

The clients talk to the proxy directly (no proxy settings); the origins are
the standard-library :class:`Origin` (plain, or with TLS from a test CA that
the proxy is told to trust with ``upstream_ca``). Only 127.0.0.1; names
resolve through a static table; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from origin import (
    HELLO,
    Origin,
    body_of,
    pattern,
    pattern_sha256,
    raw_exchange,
    read_head,
    status_of,
    wait_until,
)

from interceptkit import Proxy, static_resolver
from interceptkit.certs import CertStore
from interceptkit.policy import parse_routes

NAMES = {"origin.test": "127.0.0.1", "localhost": "127.0.0.1", "other.test": "127.0.0.1"}


# -- fixtures ------------------------------------------------------------------------------------


class TLSOrigin(Origin):
    """The same origin, serving HTTPS with a certificate from the tests' CA."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        # Handshake in the handler thread, so a silent client cannot block accept().
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA of the tests' own and a certificate for localhost/127.0.0.1 (files)."""
    folder = tmp_path_factory.mktemp("reverse-test-ca")
    store = CertStore.load_or_create(folder / "ca")
    leaf = store.leaf_for("localhost", ["127.0.0.1"])
    (folder / "cert.pem").write_bytes(leaf.chain_pem)
    (folder / "key.pem").write_bytes(leaf.key_pem)
    return {"ca": store.ca_cert_path, "cert": folder / "cert.pem", "key": folder / "key.pem"}


@pytest.fixture(scope="module")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reverse-proxy-home")


@pytest.fixture
def reverse(make: Callable[..., Proxy], confdir: Path) -> Callable[..., Proxy]:
    """Start reverse proxies (the shared factory: stopped at teardown) that trust no extra CA unless told."""

    def factory(routes: dict[str, Any], **kwargs: Any) -> Proxy:
        kwargs.setdefault("resolver", static_resolver(NAMES))
        kwargs.setdefault("confdir", confdir)
        kwargs.setdefault("upstream_ca", None)
        return make(mode="reverse", routes=routes, **kwargs)

    return factory


@pytest.fixture
def origins() -> Iterator[Callable[..., Origin]]:
    made: list[Origin] = []

    def factory(context: ssl.SSLContext | None = None) -> Origin:
        server = (TLSOrigin(context) if context is not None else Origin()).start()
        made.append(server)
        return server

    try:
        yield factory
    finally:
        for server in made:
            server.stop()


@pytest.fixture
def origin(origins: Callable[..., Origin]) -> Origin:
    return origins()


@pytest.fixture
def tls_origin(origins: Callable[..., Origin], test_ca: dict[str, Path]) -> Origin:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(test_ca["cert"], test_ca["key"])
    return origins(context)


def get(proxy: Proxy, path: str, *, host: str = "public.example", headers: dict[str, str] | None = None,
        method: str = "GET", body: bytes | None = None, context: ssl.SSLContext | None = None,
        timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One request straight to the proxy (it is the server, as far as the client knows)."""
    if context is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "localhost", proxy.port, context=context, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def last_seen(origin: Origin) -> Any:
    requests = origin.wait_for_requests(1)
    assert requests, "the origin saw no request"
    return requests[-1]


def done_flows(proxy: Proxy, count: int, timeout: float = 5.0) -> list[Any]:
    wait_until(lambda: sum(1 for f in proxy.flows if f.state != "open") >= count, timeout)
    return [f for f in proxy.flows if f.state != "open"]


# -- the route table, without sockets ---------------------------------------------------------------


def test_routes_are_sorted_longest_prefix_first() -> None:
    routes = parse_routes({"/": "http://a.test", "/api/v2": "http://c.test", "/api": "http://b.test"})
    assert [r.prefix for r in routes] == ["/api/v2", "/api", "/"]


@pytest.mark.parametrize("prefix, path, matches", [
    ("/api", "/api", True), ("/api", "/api/", True), ("/api", "/api/x", True), ("/api", "/api?q=1", True),
    ("/api", "/apix", False), ("/api", "/ap", False), ("/api", "/", False), ("/api/", "/api/x", True),
    ("/", "/anything", True),
])
def test_prefix_matches_on_a_segment_boundary(prefix: str, path: str, matches: bool) -> None:
    [route] = parse_routes({prefix: "http://a.test"})
    assert route.matches(path) is matches


@pytest.mark.parametrize("spec, path, target", [
    ({"url": "http://a.test", "strip": True}, "/api/users", "/users"),
    ({"url": "http://a.test", "strip": True}, "/api", "/"),
    ({"url": "http://a.test", "strip": True}, "/api?q=1", "/?q=1"),
    ({"url": "http://a.test", "strip": True}, "/api/", "/"),
    ({"url": "http://a.test/base", "strip": True}, "/api/users?x=1", "/base/users?x=1"),
    ({"url": "http://a.test/base/", "strip": True}, "/api/users", "/base/users"),
    ("http://a.test", "/api/users?x=1", "/api/users?x=1"),
    ("http://a.test/base", "/api/users", "/base/api/users"),
])
def test_route_target_path(spec: Any, path: str, target: str) -> None:
    [route] = parse_routes({"/api": spec})
    assert route.target(path) == target


@pytest.mark.parametrize("routes", [
    {"api": "http://a.test"},  # no leading slash
    {"/": "not a url"},
    {"/": "ftp://a.test/"},
])
def test_bad_routes_are_refused(routes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_routes(routes)


def test_reverse_mode_needs_routes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Proxy(port=0, mode="reverse", confdir=tmp_path / "home", resolver=static_resolver(NAMES))


# -- routing -----------------------------------------------------------------------------------------


def test_longest_prefix_wins_and_strip_is_per_route(reverse: Callable[..., Proxy],
                                                    origins: Callable[..., Origin]) -> None:
    root, api, v2 = origins(), origins(), origins()
    proxy = reverse({
        "/": f"http://origin.test:{root.port}",
        "/api": f"http://origin.test:{api.port}",
        "/api/v2": {"url": f"http://origin.test:{v2.port}", "strip": True},
    })
    assert get(proxy, "/hello")[0] == 200
    get(proxy, "/api/echo?x=1")  # unstripped: the origin has no /api/echo and says 404
    status, _, body = get(proxy, "/api/v2/hello?y=2")
    assert (status, body) == (200, HELLO)
    get(proxy, "/api/v2x")  # not under /api/v2: the /api route, unstripped
    assert [r.path for r in root.requests] == ["/hello"]
    assert [r.path for r in api.requests] == ["/api/echo?x=1", "/api/v2x"]
    assert [r.path for r in v2.requests] == ["/hello?y=2"]


def test_route_base_path_is_prepended(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/svc": {"url": f"http://origin.test:{origin.port}/base", "strip": True},
                     "/keep": f"http://origin.test:{origin.port}/base"})
    get(proxy, "/svc/hello?q=1")
    get(proxy, "/svc")
    get(proxy, "/keep/hello")
    assert [r.path for r in origin.requests] == ["/base/hello?q=1", "/base/", "/base/keep/hello"]


def test_unmatched_path_is_404_with_a_reason(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/api": f"http://origin.test:{origin.port}"})
    status, _headers, body = get(proxy, "/elsewhere/x?secret=1")
    assert status == 404
    assert b"no route" in body.lower() and b"/elsewhere/x" in body
    assert b"secret" not in body  # the reason names the path, not the query
    assert len(body) < 500
    status, _, _ = get(proxy, "/apix")
    assert status == 404
    assert origin.requests == []


def test_unmatched_path_keeps_serving(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/api": {"url": f"http://origin.test:{origin.port}", "strip": True}})
    response = raw_exchange(proxy.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                                        b"GET /api/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 404
    # Whether or not that connection stayed open after the 404, the proxy still serves.
    assert get(proxy, "/api/echo")[0] == 200


def test_absolute_form_request_is_routed_by_its_path(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/api": {"url": f"http://origin.test:{origin.port}", "strip": True}})
    response = raw_exchange(proxy.port, b"GET http://public.example/api/hello HTTP/1.1\r\n"
                                        b"Host: public.example\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200 and body_of(response) == HELLO
    assert last_seen(origin).path == "/hello"


def test_connect_is_not_a_tunnel_in_reverse_mode(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    response = raw_exchange(proxy.port, f"CONNECT 127.0.0.1:{origin.port} HTTP/1.1\r\n"
                                        f"Host: 127.0.0.1:{origin.port}\r\n\r\n".encode())
    assert 400 <= status_of(response) < 500
    assert origin.requests == []


# -- Host and forwarded fields, at the origin -----------------------------------------------------------


def test_host_is_rewritten_to_the_upstream(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/ip": {"url": f"http://127.0.0.1:{origin.port}", "strip": True},
                     "/": f"http://origin.test:{origin.port}"})
    get(proxy, "/headers", host="public.example")
    get(proxy, "/ip/headers", host="public.example:8443")
    first, second = origin.wait_for_requests(2)
    assert first.header("Host") == f"origin.test:{origin.port}"
    assert second.header("Host") == f"127.0.0.1:{origin.port}"
    assert [v for k, v in first.headers if k.lower() == "host"] == [f"origin.test:{origin.port}"]


def test_keep_host_sends_the_clients_host(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"}, keep_host=True)
    get(proxy, "/headers", host="public.example:8443")
    seen = last_seen(origin)
    assert seen.header("Host") == "public.example:8443"
    assert seen.header("X-Forwarded-Host") == "public.example:8443"
    [flow] = done_flows(proxy, 1)
    assert flow.request.host == "origin.test"  # where it went, whatever the Host said


def test_forwarded_fields_are_added(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    get(proxy, "/headers", host="public.example")
    seen = last_seen(origin)
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == "public.example"
    assert seen.header("Via") is not None and "interceptkit" in seen.header("Via")


def test_forwarded_fields_are_appended_to(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    get(proxy, "/headers", host="public.example", headers={
        "X-Forwarded-For": "203.0.113.7, 198.51.100.2", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "edge.example"})
    seen = last_seen(origin)
    assert seen.header("X-Forwarded-For") == "203.0.113.7, 198.51.100.2, 127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "https, http"
    assert seen.header("X-Forwarded-Host") == "edge.example, public.example"
    for name in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"):
        assert sum(1 for k, _ in seen.headers if k.lower() == name) == 1


def test_forwarded_fields_split_over_several_lines_are_appended_once(reverse: Callable[..., Proxy],
                                                                     origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    raw_exchange(proxy.port, b"GET /headers HTTP/1.1\r\nHost: public.example\r\n"
                             b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.2\r\n"
                             b"Connection: close\r\n\r\n")
    seen = last_seen(origin)
    values = [v for k, v in seen.headers if k.lower() == "x-forwarded-for"]
    # Our address comes last, once, after every earlier hop.
    assert ", ".join(values).split(", ") == ["203.0.113.7", "198.51.100.2", "127.0.0.1"]


def test_http10_client_without_host(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    response = raw_exchange(proxy.port, b"GET /hello HTTP/1.0\r\n\r\n")
    assert status_of(response) == 200 and body_of(response) == HELLO
    seen = last_seen(origin)
    assert seen.header("Host") == f"origin.test:{origin.port}"
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Host") is None  # there was no Host to forward


def test_hop_by_hop_fields_do_not_reach_the_origin(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    get(proxy, "/headers", headers={"Connection": "X-Private", "X-Private": "secret", "Keep-Alive": "timeout=5",
                                    "Proxy-Connection": "keep-alive", "X-End-To-End": "kept"})
    seen = last_seen(origin)
    names = {k.lower() for k, _ in seen.headers}
    assert "x-private" not in names and "keep-alive" not in names and "proxy-connection" not in names
    assert seen.header("X-End-To-End") == "kept"


# -- HTTPS upstreams and TLS on the listening side --------------------------------------------------------


def test_https_upstream_verified_with_upstream_ca(reverse: Callable[..., Proxy], tls_origin: Origin,
                                                  test_ca: dict[str, Path]) -> None:
    proxy = reverse({"/secure": {"url": f"https://localhost:{tls_origin.port}", "strip": True}},
                    upstream_ca=test_ca["ca"])
    status, _, body = get(proxy, "/secure/hello")
    assert (status, body) == (200, HELLO)
    seen = last_seen(tls_origin)
    assert seen.path == "/hello"
    assert seen.header("Host") == f"localhost:{tls_origin.port}"
    assert seen.header("X-Forwarded-Proto") == "http"  # what the client spoke to us
    [flow] = done_flows(proxy, 1)
    assert flow.request.scheme == "https"
    assert flow.server_tls is not None and flow.server_tls.version is not None


def test_https_upstream_with_an_untrusted_certificate_is_502(reverse: Callable[..., Proxy],
                                                             tls_origin: Origin) -> None:
    proxy = reverse({"/": f"https://localhost:{tls_origin.port}"})  # no upstream_ca
    status, _, body = get(proxy, "/hello")
    assert status == 502
    assert b"certificate" in body.lower() or b"tls" in body.lower()
    assert tls_origin.requests == []


def test_https_upstream_with_the_wrong_name_is_502(reverse: Callable[..., Proxy], tls_origin: Origin,
                                                   test_ca: dict[str, Path]) -> None:
    proxy = reverse({"/": f"https://other.test:{tls_origin.port}"}, upstream_ca=test_ca["ca"])
    assert get(proxy, "/hello")[0] == 502
    assert tls_origin.requests == []


@pytest.mark.parametrize("how", ["certfile", "tls_name"])
def test_tls_on_the_listening_side(reverse: Callable[..., Proxy], origin: Origin, test_ca: dict[str, Path],
                                   how: str) -> None:
    if how == "certfile":
        proxy = reverse({"/": f"http://origin.test:{origin.port}"}, certfile=test_ca["cert"],
                        keyfile=test_ca["key"])
        context = ssl.create_default_context(cafile=str(test_ca["ca"]))
    else:
        proxy = reverse({"/": f"http://origin.test:{origin.port}"}, tls_name="localhost")
        context = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    assert proxy.url.startswith("https://")
    status, _, body = get(proxy, "/hello", host=f"localhost:{proxy.port}", context=context)
    assert (status, body) == (200, HELLO)
    seen = last_seen(origin)
    assert seen.header("X-Forwarded-Proto") == "https"
    assert seen.header("X-Forwarded-Host") == f"localhost:{proxy.port}"
    [flow] = done_flows(proxy, 1)
    assert flow.client_tls is not None and flow.client_tls.version is not None


def test_tls_listener_refuses_plain_http_and_keeps_serving(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"}, tls_name="localhost")
    response = raw_exchange(proxy.port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
    assert b"hello, world" not in response
    context = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    assert get(proxy, "/hello", host="localhost", context=context)[0] == 200
    assert [r.path for r in origin.requests] == ["/hello"]


def test_both_tls_sides_at_once(reverse: Callable[..., Proxy], tls_origin: Origin,
                                test_ca: dict[str, Path]) -> None:
    proxy = reverse({"/": f"https://localhost:{tls_origin.port}"}, tls_name="localhost",
                    upstream_ca=test_ca["ca"])
    context = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    body = pattern(300_000)
    status, _, echoed = get(proxy, "/echo", method="POST", body=body, host="localhost", context=context)
    assert status == 200 and echoed == body


def test_listening_tls_options_are_checked(tmp_path: Path, test_ca: dict[str, Path]) -> None:
    common = {"port": 0, "mode": "reverse", "routes": {"/": "http://127.0.0.1:9"}, "confdir": tmp_path / "home",
              "resolver": static_resolver(NAMES)}
    with pytest.raises(ValueError):
        Proxy(**common, keyfile=test_ca["key"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Proxy(**common, certfile=tmp_path / "missing.pem")  # type: ignore[arg-type]


# -- keep-alive, streaming, timeouts -------------------------------------------------------------------------


def test_upstream_connections_are_reused_across_clients(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    for _ in range(5):
        assert get(proxy, "/hello")[0] == 200
    assert sum(origin.served_counts()) == 5
    assert len(origin.served_counts()) < 5  # the pool kept at least one connection


def test_keep_alive_on_one_client_connection(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/a": {"url": f"http://origin.test:{origin.port}", "strip": True},
                     "/b": {"url": f"http://origin.test:{origin.port}", "strip": True}})
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        for path in ("/a/hello", "/b/hello", "/a/echo", "/a/hello"):
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
    finally:
        conn.close()
    assert [r.path for r in origin.requests] == ["/hello", "/hello", "/echo", "/hello"]
    assert sum(origin.served_counts()) == 4 and len(origin.served_counts()) <= 2


def test_https_upstream_kept_alive_for_one_client(reverse: Callable[..., Proxy], tls_origin: Origin,
                                                 test_ca: dict[str, Path]) -> None:
    proxy = reverse({"/": f"https://localhost:{tls_origin.port}"}, upstream_ca=test_ca["ca"])
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/hello")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == HELLO
    finally:
        conn.close()
    assert tls_origin.served_counts() == [3]


def test_large_download_streams(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    size = 8 * 1024 * 1024
    for path in (f"/bytes/{size}", f"/chunked/{size}"):
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            first = response.read(64 * 1024)  # arrives long before the body is complete
            digest = hashlib.sha256(first)
            while chunk := response.read(1 << 20):
                digest.update(chunk)
        finally:
            conn.close()
        assert digest.hexdigest() == pattern_sha256(size)
    flows = done_flows(proxy, 2)
    assert all(f.response.body_size == size and f.response.truncated for f in flows)


def test_large_upload_streams(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/up": {"url": f"http://origin.test:{origin.port}", "strip": True}})
    body = pattern(6 * 1024 * 1024)
    status, _headers, echoed = get(proxy, "/up/echo", method="POST", body=body)
    assert status == 200 and echoed == body
    assert last_seen(origin).framing == "length"
    # Chunked upload, in pieces.
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
    try:
        conn.request("POST", "/up/echo", body=iter([body[i: i + 500_000] for i in range(0, len(body), 500_000)]),
                     encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert response.status == 200 and response.read() == body
    finally:
        conn.close()
    assert last_seen(origin).framing == "chunked"


def test_response_starts_before_a_slow_upload_ends(reverse: Callable[..., Proxy]) -> None:
    """Both ways at once: what the upstream sends reaches the client while the client is still sending."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    received = bytearray()

    def upstream() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            _head, rest = read_head(conn)
            received.extend(rest)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nearly\r\n")
            deadline = time.monotonic() + 5
            while b"0\r\n\r\n" not in received and time.monotonic() < deadline:
                data = conn.recv(65536)
                if not data:
                    break
                received.extend(data)
            conn.sendall(b"4\r\nlate\r\n0\r\n\r\n")

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    proxy = reverse({"/": f"http://127.0.0.1:{listener.getsockname()[1]}"})
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            head, rest = read_head(sock)
            assert status_of(head) == 200
            deadline = time.monotonic() + 5
            while b"early" not in rest and time.monotonic() < deadline:
                rest += sock.recv(65536)
            assert b"early" in rest  # the request body is not finished yet
            sock.sendall(b"4\r\nlast\r\n0\r\n\r\n")
            while b"0\r\n\r\n" not in rest and time.monotonic() < deadline:
                data = sock.recv(65536)
                if not data:
                    break
                rest += data
            assert b"late" in rest
    finally:
        thread.join(timeout=5)
        listener.close()
    assert b"first" in received and b"last" in received


def test_slow_upstream_is_504(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"}, read_timeout=0.5)
    started = time.monotonic()
    status, _, body = get(proxy, "/slow?s=3")
    assert status == 504 and time.monotonic() - started < 2.5
    assert b"did not answer" in body
    [flow] = done_flows(proxy, 1)
    assert flow.error is not None


def test_refused_upstream_is_502(reverse: Callable[..., Proxy]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    proxy = reverse({"/": f"http://127.0.0.1:{port}"})
    status, _, body = get(proxy, "/x")
    assert status == 502 and b"refused" in body.lower()
    [flow] = done_flows(proxy, 1)
    assert flow.error is not None and "refused" in flow.error.lower()


def test_unresolvable_upstream_is_502(reverse: Callable[..., Proxy]) -> None:
    proxy = reverse({"/": "http://nowhere.invalid:80"})
    status, _, body = get(proxy, "/x")
    assert status == 502 and b"nowhere.invalid" in body


def test_connect_timeout_is_504(reverse: Callable[..., Proxy]) -> None:
    # A listener with a full accept queue: the SYN goes unanswered, so connecting hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        time.sleep(0.1)
        proxy = reverse({"/": f"http://127.0.0.1:{port}"}, connect_timeout=0.5)
        started = time.monotonic()
        status, _, _body = get(proxy, "/x")
        assert status == 504 and time.monotonic() - started < 3
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_upstream_closing_mid_body_is_visible(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    response = raw_exchange(proxy.port, b"GET /close-mid-body HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 200
    assert len(body_of(response)) < 1000  # cut short, and the connection closed to say so
    [flow] = done_flows(proxy, 1)
    assert flow.error is not None


def test_https_upstream_stuck_in_the_tls_handshake_times_out(reverse: Callable[..., Proxy]) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts (the kernel does), never speaks TLS
    try:
        proxy = reverse({"/": f"https://localhost:{listener.getsockname()[1]}"}, read_timeout=0.5,
                        connect_timeout=0.5, idle_timeout=1.0)
        try:
            status = get(proxy, "/x", timeout=2.5)[0]
        except TimeoutError:
            status = None
        assert status in (502, 504)
    finally:
        listener.close()


# -- flows and hooks, as in forward mode ------------------------------------------------------------------


def test_every_exchange_is_a_flow(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/api": {"url": f"http://origin.test:{origin.port}", "strip": True}})
    get(proxy, "/api/hello")
    get(proxy, "/api/echo", method="POST", body=b"payload")
    get(proxy, "/api/status/503")
    flows = done_flows(proxy, 3)
    assert [(f.request.method, f.request.path, f.response.status) for f in flows] == [
        ("GET", "/hello", 200), ("POST", "/echo", 200), ("GET", "/status/503", 503)]
    assert flows[0].request.host == "origin.test" and flows[0].request.port == origin.port
    assert flows[0].request.headers["Host"] == "public.example"  # as the client sent it
    assert flows[0].response.content == HELLO
    assert flows[1].request.content == b"payload"
    assert all(f.client_address is not None and f.client_address[0] == "127.0.0.1" for f in flows)
    assert all(f.server_address == ("127.0.0.1", origin.port) for f in flows)
    assert all(f.kind == "http" and f.error is None for f in flows)


def test_request_and_response_hooks_apply(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/api": {"url": f"http://origin.test:{origin.port}", "strip": True}})
    calls: list[str] = []

    def request_headers(flow: Any) -> None:
        calls.append("request_headers")
        flow.request.headers["X-Added"] = "by hook"

    def request(flow: Any) -> None:
        calls.append("request")
        flow.request.content = flow.request.content.upper()

    def response(flow: Any) -> None:
        calls.append("response")
        flow.response.content = flow.response.content + b"+hooked"
        flow.response.headers["X-Hooked"] = "1"

    proxy.on("request_headers", request_headers)
    proxy.on("request", request)
    proxy.on("response", response)
    proxy.on("done", lambda flow: calls.append("done"))
    status, headers, body = get(proxy, "/api/echo", method="POST", body=b"abc")
    assert status == 200 and body == b"ABC+hooked" and headers["x-hooked"] == "1"
    seen = last_seen(origin)
    assert seen.body == b"ABC" and seen.header("X-Added") == "by hook"
    wait_until(lambda: "done" in calls, 5)
    assert calls == ["request_headers", "request", "response", "done"]


def test_hook_can_change_where_a_request_goes(reverse: Callable[..., Proxy], origins: Callable[..., Origin]) -> None:
    first, second = origins(), origins()
    proxy = reverse({"/": f"http://origin.test:{first.port}"})
    proxy.on("request_headers", lambda flow: setattr(flow.request, "port", second.port))
    assert get(proxy, "/hello")[0] == 200
    assert first.requests == [] and [r.path for r in second.requests] == ["/hello"]


def test_mock_block_and_kill(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    proxy.mock("GET", f"http://origin.test:{origin.port}/mocked", json={"mocked": True})
    proxy.block(path="/blocked*", status=451)
    proxy.on("request_headers", lambda flow: flow.kill() if flow.request.path == "/killed" else None)
    status, _, body = get(proxy, "/mocked")
    assert status == 200 and json.loads(body) == {"mocked": True}
    assert get(proxy, "/blocked/x")[0] == 451
    response = raw_exchange(proxy.port, b"GET /killed HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response == b""
    assert get(proxy, "/hello")[0] == 200
    assert [r.path for r in origin.requests] == ["/hello"]
    flows = done_flows(proxy, 4)
    assert [f.error is not None for f in flows] == [False, False, True, False]


def test_response_chunk_hook_sees_streamed_bodies(reverse: Callable[..., Proxy], origin: Origin) -> None:
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    sizes: list[int] = []

    def shout(flow: Any, chunk: bytes) -> bytes:
        sizes.append(len(chunk))
        return chunk.upper()

    proxy.on("response_chunk", shout)
    status, _, body = get(proxy, "/hello")
    assert status == 200 and body == HELLO.upper()
    assert sum(sizes) == len(HELLO)


def test_error_hook_on_upstream_failure(reverse: Callable[..., Proxy]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proxy = reverse({"/": f"http://127.0.0.1:{port}"})
    errors: list[str] = []
    proxy.on("error", lambda flow: errors.append(flow.error))
    assert get(proxy, "/x")[0] == 502
    assert wait_until(lambda: errors, 5)
    assert "refused" in errors[0].lower()


def test_proxy_pages_are_not_served_in_reverse_mode(reverse: Callable[..., Proxy], origin: Origin) -> None:
    """In reverse mode every path belongs to the routes: the proxy's own pages are not served."""
    proxy = reverse({"/": f"http://origin.test:{origin.port}"})
    status, _headers, body = get(proxy, "/cert/pem")
    assert status == 404 and body == b"not found\n"  # the origin's answer
    assert [r.path for r in origin.requests] == ["/cert/pem"]
