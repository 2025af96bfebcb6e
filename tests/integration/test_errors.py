"""What a client sees when something is wrong: bad input, unreachable or broken upstreams."""

from __future__ import annotations

import http.client
import select
import socket
import time
import urllib.error

import pytest
from origin import (
    body_of,
    curl,
    header_of,
    opener,
    raw_exchange,
    read_head,
    read_until_closed,
    status_of,
    wait_flows_done,
)


def _closed_port() -> int:
    """A loopback port that was just bound and closed: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_one_line_answer(response: bytes, status: int) -> str:
    assert status_of(response) == status, response[:300]
    assert (header_of(response, "Connection") or "").lower() == "close"
    body = body_of(response)
    assert header_of(response, "Content-Length") == str(len(body))
    text = body.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text  # one line
    assert text.startswith(str(status))
    return text


# -- malformed input from the client ------------------------------------------------


def test_malformed_request_line_gets_400_then_close(proxy, origin):
    response = raw_exchange(proxy.port, b"THIS IS NOT HTTP\r\n\r\n")
    _assert_one_line_answer(response, 400)
    assert origin.requests == []


def test_garbage_target_gets_400(proxy, origin):
    response = raw_exchange(proxy.port, b"GET ftp://origin.test/x HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    _assert_one_line_answer(response, 400)


def _big_head(origin) -> bytes:
    """A request whose header block is about 71 KiB (limit: 64 KiB)."""
    return (f"GET {origin.url('/hello')} HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n".encode()
            + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70)) + b"\r\n")


def test_header_block_over_64k_gets_431_when_it_trickles_in(proxy, origin):
    head = _big_head(origin)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        for start in range(0, len(head), 1024):  # stop sending once the proxy answered
            if select.select([sock], [], [], 0.002)[0]:
                break
            try:
                sock.sendall(head[start:start + 1024])
            except OSError:
                break
        response = read_until_closed(sock, timeout=5)
    _assert_one_line_answer(response, 431)
    assert origin.requests == []


def test_header_block_over_64k_gets_431_in_one_packet(proxy, origin):
    response = raw_exchange(proxy.port, _big_head(origin))
    _assert_one_line_answer(response, 431)
    assert origin.requests == []


def test_content_length_and_transfer_encoding_gets_400_and_nothing_reaches_origin(proxy, origin):
    request = (f"POST {origin.url('/echo')} HTTP/1.1\r\nHost: origin.test\r\n"
               "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
               "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: origin.test\r\n\r\n").encode()
    response = raw_exchange(proxy.port, request)
    _assert_one_line_answer(response, 400)
    time.sleep(0.2)
    assert origin.requests == [] and origin.incomplete == []  # not a byte of it reached the origin


def test_differing_duplicate_content_length_gets_400(proxy, origin):
    request = (f"POST {origin.url('/echo')} HTTP/1.1\r\nHost: origin.test\r\n"
               "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!").encode()
    response = raw_exchange(proxy.port, request)
    _assert_one_line_answer(response, 400)
    time.sleep(0.2)
    assert origin.requests == []


def test_invalid_chunk_size_gets_400(proxy, origin):
    request = (f"POST {origin.url('/echo')} HTTP/1.1\r\nHost: origin.test\r\n"
               "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").encode()
    response = raw_exchange(proxy.port, request)
    _assert_one_line_answer(response, 400)
    [flow] = wait_flows_done(proxy, 1)
    assert flow.error and flow.state == "error"
    # The origin never got a complete request it could act on.
    assert origin.requests == []


def test_origin_form_request_gets_info_page(proxy):
    response = raw_exchange(proxy.port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n\r\n".encode())
    assert status_of(response) == 200
    assert "text/html" in (header_of(response, "Content-Type") or "")
    assert b"interceptkit" in body_of(response)


def test_browsing_to_the_proxy_url_gets_info_page(proxy):
    # Like a browser pointed at the proxy's own address (no proxy configured).
    result = curl(proxy.url + "/", check=True)
    assert b"interceptkit" in result.stdout
    assert len(proxy.flows) == 0  # not an exchange through the proxy


# -- upstream failures -----------------------------------------------------------


def test_unresolvable_host_gets_502_with_reason(proxy, origin):
    # "nowhere.test" is not in the proxy's static resolver: no DNS is asked.
    result = curl("-i", "http://nowhere.test/x", proxy=proxy)
    response = result.stdout
    assert status_of(response) == 502
    assert b"nowhere.test" in body_of(response)
    assert b"resolve" in body_of(response)
    [flow] = wait_flows_done(proxy, 1)
    assert flow.response is None or flow.response.status != 200
    assert flow.error and "nowhere.test" in flow.error


def test_unresolvable_host_urllib_sees_http_error(proxy):
    with pytest.raises(urllib.error.HTTPError) as info:
        opener(proxy).open("http://nowhere.test/x", timeout=10)
    assert info.value.code == 502
    assert b"resolve" in info.value.read()


def test_refused_connection_gets_502(proxy):
    port = _closed_port()
    result = curl("-i", f"http://127.0.0.1:{port}/", proxy=proxy)
    assert status_of(result.stdout) == 502
    assert f"127.0.0.1:{port}".encode() in body_of(result.stdout)
    [flow] = wait_flows_done(proxy, 1)
    assert flow.error and flow.state == "error"


def test_refused_connection_reason_says_refused(proxy):
    port = _closed_port()
    result = curl("-i", f"http://127.0.0.1:{port}/", proxy=proxy)
    assert b"refused" in body_of(result.stdout).lower()


def test_slow_origin_gets_504(proxy_factory, origin):
    proxy = proxy_factory(read_timeout=0.5)
    started = time.monotonic()
    result = curl("-i", origin.url("/slow"), proxy=proxy, timeout=10)
    elapsed = time.monotonic() - started
    assert status_of(result.stdout) == 504
    assert 0.4 < elapsed < 4  # the origin would answer after SLOW_SECONDS (5)
    assert b"0.5" in body_of(result.stdout)
    [flow] = wait_flows_done(proxy, 1)
    assert flow.error and "0.5" in flow.error


def test_slow_origin_within_timeout_is_fine(proxy_factory, origin):
    proxy = proxy_factory(read_timeout=2.0)
    result = curl(origin.url("/slow?s=0.3"), proxy=proxy, check=True, timeout=10)
    assert result.stdout == b"finally\n"


def test_origin_closing_mid_body_is_visible_to_curl(proxy, origin):
    result = curl(origin.url("/close-mid-body"), proxy=proxy)
    assert result.returncode == 18, (result.returncode, result.stderr)  # CURLE_PARTIAL_FILE
    assert len(result.stdout) == 100
    [flow] = wait_flows_done(proxy, 1)
    assert flow.state == "error" and flow.error
    assert flow.response is not None and flow.response.status == 200
    assert flow.response.body_size == 100


def test_origin_closing_mid_body_is_visible_to_urllib(proxy, origin):
    with opener(proxy).open(origin.url("/close-mid-body"), timeout=10) as response:
        assert response.headers["Content-Length"] == "1000"
        with pytest.raises(http.client.IncompleteRead) as info:
            response.read()
    assert len(info.value.partial) == 100


def test_origin_closing_mid_body_then_next_request_works(proxy, origin):
    curl(origin.url("/close-mid-body"), proxy=proxy)
    result = curl(origin.url("/hello"), proxy=proxy, check=True)
    assert result.stdout == b"hello, world\n"


def test_client_disconnecting_mid_request_records_error(proxy, origin):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall((f"POST {origin.url('/echo')} HTTP/1.1\r\nHost: origin.test\r\n"
                      "Content-Length: 1000\r\n\r\n").encode() + b"x" * 10)
        time.sleep(0.1)
    [flow] = wait_flows_done(proxy, 1)
    assert flow.state == "error" and flow.error
    assert origin.requests == []  # the origin never saw a complete request


def test_proxy_keeps_serving_after_errors(proxy, origin):
    raw_exchange(proxy.port, b"\x16\x03\x01garbage\r\n\r\n")
    raw_exchange(proxy.port, b"GET http://nowhere.test/ HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
    result = curl(origin.url("/hello"), proxy=proxy, check=True)
    assert result.stdout == b"hello, world\n"


def test_error_answer_on_keepalive_connection_closes_it(proxy, origin):
    """After a 502 the proxy says Connection: close and does close."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET http://nowhere.test/ HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
        head, _ = read_head(sock)
        assert status_of(head + b"\r\n\r\n") == 502
        read_until_closed(sock, timeout=3)
        sock.settimeout(1)
        assert sock.recv(1) == b""


# -- defects found by driving the proxy as a new user would (issue 9) ---------------


def test_hung_origin_on_a_reused_connection_gets_504(proxy_factory, origin):
    proxy = proxy_factory(read_timeout=0.5)
    started = time.monotonic()
    # One curl, two URLs: the second request goes out on the kept-alive connection.
    result = curl("-i", origin.url("/hello"), origin.url("/slow"), proxy=proxy, timeout=10)
    elapsed = time.monotonic() - started
    assert status_of(result.stdout) == 200
    assert b"HTTP/1.1 504" in result.stdout
    assert elapsed < 4  # the origin would answer after SLOW_SECONDS (5)
    assert len([r for r in origin.requests if r.path.startswith("/slow")]) == 1  # never retried


@pytest.mark.parametrize("version", [b"HTTP/9.9", b"HTTP/2.0"])
def test_unsupported_http_version_gets_505(proxy, origin, version):
    response = raw_exchange(proxy.port, b"GET " + origin.url("/hello").encode() + b" " + version
                            + b"\r\nHost: origin.test\r\n\r\n")
    _assert_one_line_answer(response, 505)
    assert origin.requests == []


def test_http09_request_gets_400_at_once(proxy, origin):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /\r\n")  # and wait, as an HTTP/0.9 client does
        response = read_until_closed(sock, timeout=3)
    _assert_one_line_answer(response, 400)


def test_content_length_beyond_63_bits_gets_400_at_once(proxy, origin):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"POST " + origin.url("/echo").encode() + b" HTTP/1.1\r\nHost: origin.test\r\n"
                     b"Content-Length: 99999999999999999999\r\n\r\n")
        response = read_until_closed(sock, timeout=3)
    _assert_one_line_answer(response, 400)
    assert origin.requests == []


def test_max_request_body_gets_413(proxy_factory, origin):
    proxy = proxy_factory(max_request_body=1000)
    result = curl("-i", "--data-binary", "x" * 2000, origin.url("/echo"), proxy=proxy, timeout=10)
    assert status_of(result.stdout) == 413
    assert origin.requests == []
    result = curl("--data-binary", "x" * 1000, origin.url("/echo"), proxy=proxy, timeout=10, check=True)
    assert result.stdout == b"x" * 1000
