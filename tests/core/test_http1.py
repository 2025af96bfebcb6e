"""Unit tests of the proxy semantics in interceptkit.core.http1."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interceptkit.core.errors import RemoteProtocolError
from interceptkit.core.http1 import (
    check_request_framing,
    connection_tokens,
    end_to_end_fields,
    format_authority,
    parse_absolute_url,
    parse_authority,
    plain_answer,
    reframe,
    replace_field,
)

# -- parse_authority -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "default", "expected"),
    [
        (b"example.com:8080", None, ("example.com", 8080)),
        (b"example.com", 80, ("example.com", 80)),
        (b"Example.COM", 443, ("example.com", 443)),
        (b"127.0.0.1:1", None, ("127.0.0.1", 1)),
        (b"1.2.3.4:65535", None, ("1.2.3.4", 65535)),
        (b"[::1]:8443", None, ("::1", 8443)),
        (b"[::1]", 443, ("::1", 443)),
        (b"[2001:DB8::1]:80", None, ("2001:db8::1", 80)),
        (b"[::ffff:192.0.2.1]:1", None, ("::ffff:192.0.2.1", 1)),
        (b"xn--bcher-kva.example:80", None, ("xn--bcher-kva.example", 80)),
        (b"under_score.example", 80, ("under_score.example", 80)),
    ],
)
def test_parse_authority(authority: bytes, default: int | None, expected: tuple[str, int]) -> None:
    assert parse_authority(authority, default) == expected


@pytest.mark.parametrize(
    ("authority", "default", "words"),
    [
        (b"example.com", None, "missing port"),
        (b"[::1]", None, "missing port"),
        (b"example.com:", 80, "port"),
        (b"example.com:0", 80, "port"),
        (b"example.com:65536", 80, "port"),
        (b"example.com:123456", 80, "port"),
        (b"example.com:+80", 80, "port"),
        (b"example.com:8o", 80, "port"),
        (b"example.com: 80", 80, "port"),
        (b"[::1]:99999", 80, "port"),
        (b"user@example.com:80", 80, "userinfo"),
        (b"user:pw@example.com", 80, "userinfo"),
        (b"::1", 80, "host"),  # an IPv6 literal needs brackets
        (b"[::1", 80, "IPv6"),
        (b"[::1]x", 80, "IPv6"),
        (b"[::1]:", 80, "port"),
        (b"[zz]:80", 80, "host"),
        (b"[fe80::1%25eth0]:80", 80, "host"),
        (b"", 80, "host"),
        (b":80", 80, "host"),
        (b"exa mple.com", 80, "host"),
        (b"exa<mple.com", 80, "host"),
        (b"\xff.example", 80, "host"),
    ],
)
def test_parse_authority_refuses(authority: bytes, default: int | None, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words) as info:
        parse_authority(authority, default)
    assert info.value.status == 400


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.sampled_from([None, 80]))
def test_parse_authority_never_raises_anything_else(authority: bytes, default: int | None) -> None:
    try:
        host, port = parse_authority(authority, default)
    except RemoteProtocolError:
        return
    assert 0 < port < 65536 and host and host == host.lower()
    host.encode("ascii")  # what reaches OpenUpstream and Host is ASCII


# -- parse_absolute_url ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"http://example.com", ("http", "example.com", 80, "/")),
        (b"http://example.com/", ("http", "example.com", 80, "/")),
        (b"http://example.com?x=1", ("http", "example.com", 80, "/?x=1")),
        (b"HTTP://Example.com/A/b", ("http", "example.com", 80, "/A/b")),
        (b"https://example.com/", ("https", "example.com", 443, "/")),
        (b"http://example.com:8080/p?q=1", ("http", "example.com", 8080, "/p?q=1")),
        (b"http://example.com/p#frag", ("http", "example.com", 80, "/p")),
        (b"http://example.com#frag", ("http", "example.com", 80, "/")),
        (b"http://[::1]:8080/x", ("http", "::1", 8080, "/x")),
        (b"ws://example.com/chat", ("ws", "example.com", 80, "/chat")),
        (b"wss://example.com/chat", ("wss", "example.com", 443, "/chat")),
        (b"http://example.com/p@x", ("http", "example.com", 80, "/p@x")),  # @ in the path is no userinfo
        (b"http://example.com?@evil/", ("http", "example.com", 80, "/?@evil/")),
        (b"http://example.com/%C3%A9?\xe9", ("http", "example.com", 80, "/%C3%A9?\xe9")),
    ],
)
def test_parse_absolute_url(target: bytes, expected: tuple[str, str, int, str]) -> None:
    assert parse_absolute_url(target) == expected


@pytest.mark.parametrize(
    "target",
    [b"ftp://example.com/", b"example.com/", b"/path", b"*", b"http:/x", b"http://", b"http:///x",
     b"http://user@example.com/", b"http://u:p@example.com/", b"http://example.com\\@evil/",
     b"http://example.com:99999/", b"http://:80/", b"http://exa mple/", b"javascript://x"],
)
def test_parse_absolute_url_refuses(target: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_absolute_url(target)


# -- hop-by-hop fields -------------------------------------------------------------------


def test_connection_tokens_are_lowercased_and_merged() -> None:
    fields = [(b"Connection", b"Keep-Alive , X-A"), (b"connection", b"x-b,close"), (b"X-A", b"1")]
    assert connection_tokens(fields) == {b"keep-alive", b"x-a", b"x-b", b"close"}


def test_end_to_end_fields_drops_hop_by_hop_and_named() -> None:
    fields = [
        (b"Host", b"a"), (b"CONNECTION", b"X-Foo , close"), (b"x-FOO", b"1"), (b"Keep-Alive", b"300"),
        (b"Proxy-Connection", b"keep-alive"), (b"TE", b"trailers"), (b"Upgrade", b"h2c"),
        (b"Proxy-Authorization", b"Basic x"), (b"Proxy-Authenticate", b"Basic"),
        (b"Connection", b"x-bar"), (b"X-Bar", b"2"), (b"Accept", b"*/*"), (b"Cookie", b"c=1"),
    ]
    kept, chunked = end_to_end_fields(fields)
    assert kept == [(b"Host", b"a"), (b"Accept", b"*/*"), (b"Cookie", b"c=1")]
    assert chunked is False


def test_end_to_end_fields_reports_chunked() -> None:
    kept, chunked = end_to_end_fields([(b"Transfer-Encoding", b"chunked"), (b"X", b"1")])
    assert (kept, chunked) == ([(b"X", b"1")], True)


def test_end_to_end_fields_keeps_the_upgrade_handshake() -> None:
    fields = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade, X-Private"), (b"X-Private", b"1"),
              (b"Sec-WebSocket-Key", b"k")]
    kept, _ = end_to_end_fields(fields, keep_upgrade=True)
    assert kept == [(b"Upgrade", b"websocket"), (b"Sec-WebSocket-Key", b"k"), (b"Connection", b"upgrade")]


def test_end_to_end_fields_keeps_order_and_case() -> None:
    fields = [(b"X-B", b"2"), (b"x-a", b"1"), (b"X-B", b"3")]
    assert end_to_end_fields(fields) == (fields, False)


# -- reframe and check_request_framing --------------------------------------------------------


def test_reframe_chunked_drops_content_length() -> None:
    fields = [(b"Content-Length", b"5"), (b"X", b"1")]
    assert reframe(list(fields), True) == [(b"X", b"1"), (b"Transfer-Encoding", b"chunked")]


def test_reframe_not_chunked_is_unchanged() -> None:
    fields = [(b"Content-Length", b"5"), (b"X", b"1")]
    assert reframe(list(fields), False) == fields


@pytest.mark.parametrize(
    ("fields", "version"),
    [
        ([(b"Content-Length", b"5")], b"1.1"),
        ([(b"Transfer-Encoding", b"chunked")], b"1.1"),
        ([(b"Content-Length", b"5")], b"1.0"),
        ([], b"1.0"),
        ([(b"X-Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")], b"1.1"),
    ],
)
def test_check_request_framing_accepts(fields: list[tuple[bytes, bytes]], version: bytes) -> None:
    check_request_framing(fields, version)


@pytest.mark.parametrize(
    ("fields", "version", "words"),
    [
        ([(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")], b"1.1", "both"),
        ([(b"transfer-encoding", b"chunked"), (b"content-length", b"0")], b"1.1", "both"),
        ([(b"Transfer-Encoding", b"chunked")], b"1.0", "HTTP/1.0"),
    ],
)
def test_check_request_framing_refuses(fields: list[tuple[bytes, bytes]], version: bytes, words: str) -> None:
    with pytest.raises(RemoteProtocolError, match=words) as info:
        check_request_framing(fields, version)
    assert info.value.status == 400


# -- small builders ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "scheme", "expected"),
    [("example.com", 80, "http", b"example.com"), ("example.com", 443, "https", b"example.com"),
     ("example.com", 443, "http", b"example.com:443"), ("example.com", 80, None, b"example.com:80"),
     ("::1", 8080, "http", b"[::1]:8080"), ("::1", 80, "http", b"[::1]")],
)
def test_format_authority(host: str, port: int, scheme: str | None, expected: bytes) -> None:
    assert format_authority(host, port, scheme) == expected


def test_replace_field_puts_one_first() -> None:
    fields = [(b"A", b"1"), (b"host", b"x"), (b"HOST", b"y")]
    assert replace_field(fields, b"Host", b"z") == [(b"Host", b"z"), (b"A", b"1")]


def test_plain_answer_is_one_line_of_text() -> None:
    response, body = plain_answer(502, "cannot connect to example.com:80: refused")
    assert body == b"502 Bad Gateway: cannot connect to example.com:80: refused\n"
    assert response.status_code == 502
    fields = {name.lower(): value for name, value in response.headers.raw_items()}
    assert fields[b"content-length"] == str(len(body)).encode()
    assert fields[b"content-type"].startswith(b"text/plain")


def test_append_to_field_extends_the_last_line_of_a_repeated_field() -> None:
    from interceptkit.core.http1 import append_to_field

    fields = [(b"X-Forwarded-For", b"203.0.113.7"), (b"Accept", b"*/*"), (b"x-forwarded-for", b"198.51.100.2")]
    assert append_to_field(fields, b"X-Forwarded-For", b"127.0.0.1") == [
        (b"X-Forwarded-For", b"203.0.113.7"), (b"Accept", b"*/*"), (b"x-forwarded-for", b"198.51.100.2, 127.0.0.1")]
    assert append_to_field([], b"X-Forwarded-For", b"127.0.0.1") == [(b"X-Forwarded-For", b"127.0.0.1")]


def test_forward_mode_x_forwarded_for_cannot_be_spoofed_with_two_lines() -> None:
    from interceptkit.core import ClientConnected, ClientDataReceived, ProxyConfig, ProxyConnection, SendToUpstream
    from interceptkit.core import UpstreamConnected

    conn = ProxyConnection(ProxyConfig(forwarded_for=True), ("127.0.0.1", 5000))
    conn.handle(ClientConnected(time=0.0, address=("127.0.0.1", 5000)))
    conn.handle(ClientDataReceived(time=0.0, data=b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n"
                                   b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n"))
    sent = b"".join(c.data for c in conn.handle(UpstreamConnected(time=0.0, upstream=1))
                    if isinstance(c, SendToUpstream))
    assert b"X-Forwarded-For: 10.0.0.1\r\n" in sent
    assert b"X-Forwarded-For: 10.0.0.2, 127.0.0.1\r\n" in sent
