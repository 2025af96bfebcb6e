"""Regression tests for defects found by driving the proxy as a new user would (issue 9, part 1)."""

from __future__ import annotations

import ssl

import pytest
from helpers import Driver, finished, opened, to_client, to_upstream
from test_connection import GET, assert_answer, get

from interceptkit.core.commands import CloseClient
from interceptkit.core.config import ProxyConfig, Route

REVERSE = (Route(prefix="/", scheme="http", host="127.0.0.1", port=9000),)


def _driver(mode: str, read_timeout: float = 30) -> Driver:
    """A client that already had one answer on a kept-alive upstream connection."""
    if mode == "reverse":
        d = Driver(ProxyConfig(mode="reverse", routes=REVERSE, read_timeout=read_timeout))
        first, second = b"GET /1 HTTP/1.1\r\nHost: app\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: app\r\n\r\n"
    elif mode == "intercepted":
        d = Driver(ProxyConfig(intercept=True, read_timeout=read_timeout,
                               server_context=lambda host, alpn=(): ssl.create_default_context()))
        d.client(b"CONNECT example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n")
        first, second = b"GET /1 HTTP/1.1\r\nHost: example.com\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    else:
        d = Driver(ProxyConfig(read_timeout=read_timeout))
        first, second = GET, get("/2")
    d.client(first)
    d.connected()
    d.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    d.client(second)
    return d


# -- 1. the read timeout holds on every upstream connection ------------------------


@pytest.mark.parametrize("mode", ["forward", "intercepted", "reverse"])
def test_hung_upstream_on_a_reused_connection_gets_504(mode: str) -> None:
    d = _driver(mode)
    assert b"GET /2" in to_upstream(d.transcript, 1)
    out = d.fire("read", at=d.now + 30)
    assert b" 504 " in to_client(out).split(b"\r\n")[0]
    assert opened(out) == []  # a timeout is not a stale connection: no retry
    assert isinstance(out[-1], CloseClient)
    assert finished(out)[-1].error


def test_hung_upstream_from_the_pool_gets_504() -> None:
    d = Driver(ProxyConfig(read_timeout=30))
    d.client(GET)
    d.connected(reused=True)  # the transport handed out a pooled connection
    out = d.fire("read")
    assert_answer(out, 504, "did not answer within 30 s")
    assert opened(out) == []


def test_a_retried_request_is_still_timed() -> None:
    d = _driver("forward")
    d.upstream_closed()  # closed before any response byte: retried on a fresh connection
    assert opened(d.transcript)[-1].upstream == 2
    d.advance(100)
    d.connected(2)
    assert b"GET /2" in to_upstream(d.transcript, 2)
    out = d.fire("read", at=d.now + 30)
    assert_answer(out, 504)


# -- 2, 3. HTTP versions ------------------------------------------------------------


@pytest.mark.parametrize("version", [b"9.9", b"2.0", b"0.9", b"1.2", b"3.0"])
@pytest.mark.parametrize("split", [None, 1])
def test_unsupported_http_version_is_505(version: bytes, split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"GET http://example.com/ HTTP/" + version + b"\r\nHost: example.com\r\n\r\n")
    assert_answer(d.transcript, 505)
    assert not opened(d.transcript) and not to_upstream(d.transcript)


@pytest.mark.parametrize("line", [b"GET /\r\n", b"GET http://example.com/\r\n", b"POST /form\n"])
@pytest.mark.parametrize("split", [None, 1])
def test_http09_simple_request_is_400_at_once(line: bytes, split: int | None) -> None:
    d = Driver(split=split)
    d.client(line)  # nothing else follows: an HTTP/0.9 client waits for the answer
    assert_answer(d.transcript, 400, "HTTP/0.9")
    assert not opened(d.transcript)


def test_a_request_line_in_pieces_is_not_mistaken_for_http09() -> None:
    d = Driver()
    d.client(b"GET http://example.com/ HT")
    d.client(b"TP/1.1\r\nHost: example.com\r\n\r\n")
    assert opened(d.transcript) and not to_client(d.transcript)


# -- 4. body sizes -------------------------------------------------------------------


@pytest.mark.parametrize("length", [b"9223372036854775808", b"99999999999999999999999"])
def test_content_length_beyond_63_bits_is_400(length: bytes) -> None:
    d = Driver()
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: " + length + b"\r\n\r\n")
    assert_answer(d.transcript, 400, "Content-Length")
    assert not opened(d.transcript)


def test_largest_content_length_is_accepted() -> None:
    d = Driver()
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 9223372036854775807\r\n\r\n")
    assert opened(d.transcript) and not to_client(d.transcript)


@pytest.mark.parametrize("size", [b"8000000000000000", b"FFFFFFFFFFFFFFFFFFFF", b"0000008000000000000000"])
@pytest.mark.parametrize("split", [None, 1])
def test_chunk_size_beyond_63_bits_is_400(size: bytes, split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n")
    d.connected()
    out = d.client(b"3\r\nabc\r\n" + size + b"\r\n")
    assert_answer(out, 400, "chunk size")
    assert finished(out)[0].error


@pytest.mark.parametrize("body", [b"FFFFFFFFFFFFFFFFFF\r\nabc", b"3\r\nabc\r\n8000000000000000\r\n"])
def test_chunk_size_beyond_63_bits_in_the_heads_read_is_400_before_any_upstream(body: bytes) -> None:
    # The head and the size arrive in one read: h11 must not parse the chunk before the guard sees it.
    d = Driver()
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert_answer(d.transcript, 400, "chunk size")
    assert not opened(d.transcript)


def test_large_but_valid_chunk_size_waits_for_its_bytes() -> None:
    d = Driver()
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n")
    d.connected()
    assert not to_client(d.client(b"7FFFFFFFFFFFFFFF\r\nabc"))


def test_sized_body_over_max_request_body_is_413_at_once() -> None:
    d = Driver(ProxyConfig(max_request_body=10))
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 11\r\n\r\n")
    assert_answer(d.transcript, 413)
    assert not opened(d.transcript)


def test_sized_body_at_max_request_body_passes() -> None:
    d = Driver(ProxyConfig(max_request_body=10))
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 10\r\n\r\n0123456789")
    d.connected()
    assert to_upstream(d.transcript).endswith(b"0123456789")
    assert not to_client(d.transcript)


@pytest.mark.parametrize("split", [None, 1])
def test_chunked_body_crossing_max_request_body_is_413_then_closed(split: int | None) -> None:
    d = Driver(ProxyConfig(max_request_body=10), split=split)
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n")
    d.connected()
    d.client(b"5\r\n01234\r\n")
    assert not to_client(d.transcript)
    out = d.client(b"6\r\n56789a\r\n0\r\n\r\n")
    assert_answer(out, 413)
    assert not to_upstream(d.transcript).endswith(b"0\r\n\r\n")
    assert finished(out)[0].error


def test_max_request_body_is_off_by_default() -> None:
    d = Driver()
    body = b"x" * 100_000
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    d.connected()
    assert to_upstream(d.transcript).endswith(body)
