"""Forward proxying with real clients: curl and urllib through the proxy to a real origin."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request

import pytest
from origin import HELLO, curl, opener, pattern, pattern_sha256, wait_flows_done

# -- GET ----------------------------------------------------------------------------


def test_curl_get(proxy, origin):
    result = curl(origin.url("/hello"), proxy=proxy, check=True)
    assert result.stdout == HELLO
    [seen] = origin.requests
    assert seen.method == "GET" and seen.path == "/hello"  # origin-form upstream
    assert seen.header("Host") == f"origin.test:{origin.port}"


def test_urllib_get(proxy, origin):
    with opener(proxy).open(origin.url("/hello"), timeout=10) as response:
        assert response.status == 200
        assert response.read() == HELLO
        assert response.headers["Content-Type"] == "text/plain"


def test_hop_by_hop_headers_do_not_reach_origin(proxy, origin):
    result = curl("-H", "Proxy-Connection: keep-alive", "-H", "Connection: X-Secret",
                  "-H", "X-Secret: 1", "-H", "X-Kept: yes", origin.url("/headers"), proxy=proxy, check=True)
    names = {name.lower(): value for name, value in json.loads(result.stdout)}
    assert names["x-kept"] == "yes"
    assert "proxy-connection" not in names
    assert "x-secret" not in names  # named in Connection: hop-by-hop
    assert "via" in names and "interceptkit" in names["via"]


def test_status_codes_pass_through(proxy, origin):
    for status in (201, 204, 404, 500):
        result = curl("-o", "/dev/null", "-w", "%{http_code}", origin.url(f"/status/{status}"), proxy=proxy)
        assert result.stdout.decode() == str(status)


# -- POST bodies --------------------------------------------------------------------


def test_curl_post_sized_body(proxy, origin, tmp_path):
    body = pattern(200_000)
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    result = curl("--data-binary", f"@{path}", "-H", "Content-Type: application/octet-stream",
                  origin.url("/echo"), proxy=proxy, check=True)
    assert result.stdout == body
    [seen] = origin.requests
    assert seen.method == "POST" and seen.framing == "length" and seen.body == body


def test_curl_post_chunked_body(proxy, origin, tmp_path):
    body = pattern(150_000)
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    result = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}",
                  origin.url("/echo"), proxy=proxy, check=True)
    assert result.stdout == body
    [seen] = origin.requests
    assert seen.body == body
    assert seen.framing == "chunked"


def test_urllib_post_sized_and_chunked(proxy, origin):
    client = opener(proxy)
    request = urllib.request.Request(origin.url("/echo"), data=b"x" * 5000, method="POST")
    with client.open(request, timeout=10) as response:
        assert response.read() == b"x" * 5000
        assert response.headers["X-Echo-Framing"] == "length"
    # An iterable body without a length: urllib sends it chunked.
    request = urllib.request.Request(origin.url("/echo"), data=iter([b"abc", b"", b"defg" * 1000]), method="POST")
    with client.open(request, timeout=10) as response:
        assert response.read() == b"abc" + b"defg" * 1000
        assert response.headers["X-Echo-Framing"] == "chunked"


def test_request_headers_reach_origin(proxy, origin):
    request = urllib.request.Request(origin.url("/echo"), data=b"{}", headers={"X-Custom": "42",
                                                                             "Content-Type": "application/json"})
    with opener(proxy).open(request, timeout=10) as response:
        seen = {name.lower(): value for name, value in json.loads(response.headers["X-Echo-Headers"])}
    assert seen["x-custom"] == "42"
    assert seen["content-type"] == "application/json"
    assert seen["content-length"] == "2"


# -- HEAD ----------------------------------------------------------------------------


def test_curl_head(proxy, origin):
    result = curl("--head", origin.url("/bytes/5000"), proxy=proxy, check=True)
    head = result.stdout.decode("latin-1")
    assert head.startswith("HTTP/1.1 200")
    assert "content-length: 5000" in head.lower()
    assert head.endswith("\r\n\r\n")  # no body follows the head


def test_head_then_get_on_same_connection(proxy, origin):
    # HEAD's Content-Length must not make the proxy wait for a body: the GET
    # after it on the same curl connection has to come back promptly.
    started = time.monotonic()
    result = curl("--head", origin.url("/bytes/5000"), "--next", "--proxy", proxy.url,
                  origin.url("/hello"), proxy=proxy, check=True, timeout=15)
    assert time.monotonic() - started < 5
    assert result.stdout.endswith(HELLO)
    request = urllib.request.Request(origin.url("/bytes/5000"), method="HEAD")
    with opener(proxy).open(request, timeout=10) as response:
        assert response.headers["Content-Length"] == "5000"
        assert response.read() == b""


# -- Expect: 100-continue ----------------------------------------------------------


def test_expect_100_continue_explicit(proxy, origin, tmp_path):
    body = pattern(300_000)
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    started = time.monotonic()
    # A long expect100 timeout: if the proxy swallowed the 100, curl would stall.
    result = curl("-v", "--expect100-timeout", "8", "-H", "Expect: 100-continue",
                  "--data-binary", f"@{path}", origin.url("/echo"), proxy=proxy, check=True)
    elapsed = time.monotonic() - started
    assert result.stdout == body
    assert b"HTTP/1.1 100 Continue" in result.stderr
    assert elapsed < 5
    [seen] = origin.requests
    assert (seen.header("Expect") or "").lower() == "100-continue"


def test_expect_100_continue_large_body(proxy, origin, tmp_path):
    body = pattern(2 * 1024 * 1024 + 123)  # curl adds Expect: 100-continue by itself above 1 MiB
    path = tmp_path / "body.bin"
    path.write_bytes(body)
    result = curl("-v", "--expect100-timeout", "8", "--data-binary", f"@{path}",
                  origin.url("/echo"), proxy=proxy, check=True)
    assert b"Expect: 100-continue" in result.stderr
    assert b"HTTP/1.1 100 Continue" in result.stderr
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(body).digest()


# -- big bodies --------------------------------------------------------------------


def test_curl_20mb_download_matches(proxy, origin, tmp_path):
    size = 20 * 1024 * 1024
    out = tmp_path / "download.bin"
    result = curl("-o", str(out), "-w", "%{size_download}", origin.url(f"/bytes/{size}"), proxy=proxy,
                  check=True)
    assert result.stdout.decode() == str(size)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == pattern_sha256(size)
    [flow] = wait_flows_done(proxy, 1)
    assert flow.response.body_size == size
    assert flow.response.truncated  # only a prefix is kept on the flow
    assert len(flow.response.content) <= 64 * 1024


def test_urllib_chunked_download(proxy, origin):
    size = 3 * 1024 * 1024 + 17
    with opener(proxy).open(origin.url(f"/chunked/{size}"), timeout=20) as response:
        data = response.read()
        assert response.headers["Transfer-Encoding"] == "chunked"
    assert len(data) == size and data == pattern(size)


# -- keep-alive ----------------------------------------------------------------------


def test_curl_several_urls_reuse_one_origin_connection(proxy, origin):
    urls = [origin.url("/hello"), origin.url("/bytes/10"), origin.url("/chunked/2000"), origin.url("/hello")]
    result = curl("-v", *urls, proxy=proxy, check=True)
    assert result.stdout == HELLO + pattern(10) + pattern(2000) + HELLO
    assert result.stderr.count(b"Re-using existing connection") >= 3  # one client connection
    assert origin.served_counts() == [4]  # ... and one origin connection served all four


def test_pool_reuses_origin_connection_across_clients(proxy, origin):
    client = opener(proxy)
    for _ in range(3):  # urllib opens a new connection (Connection: close) every time
        with client.open(origin.url("/hello"), timeout=10) as response:
            assert response.read() == HELLO
    assert sum(origin.served_counts()) == 3
    assert len(origin.served_counts()) == 1, origin.served_counts()


def test_post_then_get_on_one_connection(proxy, origin, tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(b"payload")
    result = curl("--data-binary", f"@{path}", origin.url("/echo"), "--next", "--proxy", proxy.url,
                  origin.url("/hello"), proxy=proxy, check=True)
    assert result.stdout == b"payload" + HELLO
    assert origin.served_counts() == [2]


# -- flows -----------------------------------------------------------------------------


def test_flows_record_method_url_status_sizes(proxy, origin, tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(b"0123456789")
    curl(origin.url("/hello"), proxy=proxy, check=True)
    curl("--data-binary", f"@{path}", origin.url("/echo?x=1"), proxy=proxy, check=True)
    curl(origin.url("/status/404"), proxy=proxy)
    flows = wait_flows_done(proxy, 3)
    assert [f.request.method for f in flows] == ["GET", "POST", "GET"]
    assert [f.request.url for f in flows] == [
        origin.url("/hello"), origin.url("/echo?x=1"), origin.url("/status/404"),
    ]
    assert [f.response.status for f in flows] == [200, 200, 404]
    assert flows[0].response.body_size == len(HELLO)
    assert flows[0].response.content == HELLO
    assert flows[1].request.body_size == 10 and flows[1].request.content == b"0123456789"
    assert flows[1].response.body_size == 10
    for flow in flows:
        assert flow.state == "done" and flow.error is None
        assert flow.duration is not None and 0 <= flow.duration < 10
        assert flow.request.host == "origin.test" and flow.request.port == origin.port
        assert flow.server_address == ("127.0.0.1", origin.port)


@pytest.mark.parametrize("client", ["curl", "urllib"])
def test_each_request_is_one_flow(proxy, origin, client):
    for _ in range(3):
        if client == "curl":
            curl(origin.url("/hello"), proxy=proxy, check=True)
        else:
            with opener(proxy).open(origin.url("/hello"), timeout=10) as response:
                response.read()
    flows = wait_flows_done(proxy, 3)
    assert len(flows) == 3
    assert len({f.id for f in flows}) == 3
