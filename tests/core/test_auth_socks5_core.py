"""Proxy authentication and SOCKS5 mode in the sans-IO core: transcripts, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from helpers import CLIENT, Driver, finished, of_type, opened, started, to_client, to_upstream

from interceptkit.core import commands as cmd
from interceptkit.core.config import ProxyConfig
from interceptkit.core.proxyauth import Credentials, basic_value
from interceptkit.core.socks5 import Method, Reply, encode_connect, encode_greeting

ADA = Credentials([("ada", "pw")])
GET = b"GET http://origin.test/a HTTP/1.1\r\nHost: origin.test\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def auth_line(user: str = "ada", password: str = "pw") -> bytes:
    return b"Proxy-Authorization: " + basic_value(user, password) + b"\r\n"


@pytest.mark.parametrize("split", [None, 1])
def test_a_request_without_credentials_gets_407_and_a_close(split) -> None:
    d = Driver(ProxyConfig(credentials=ADA), split=split)
    out = d.client(GET + b"\r\n")
    answer = to_client(out)
    assert answer.startswith(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
    assert b'Proxy-Authenticate: Basic realm="interceptkit"\r\n' in answer
    assert opened(out) == [] and started(out) == [] and of_type(out, cmd.CloseClient)
    assert any("407" in c.message and "no credentials" in c.message for c in of_type(out, cmd.Log))


def test_wrong_credentials_get_407_too() -> None:
    d = Driver(ProxyConfig(credentials=ADA))
    out = d.client(GET + auth_line("ada", "nope") + b"\r\n")
    assert to_client(out).startswith(b"HTTP/1.1 407 ") and opened(out) == []
    assert "nope" not in repr(d.transcript)  # the password is never logged


def test_valid_credentials_pass_once_per_connection_and_never_go_upstream() -> None:
    d = Driver(ProxyConfig(credentials=ADA))
    out = d.client(GET + auth_line() + b"\r\n")
    [flow] = started(out)
    assert flow.proxy_user == "ada" and "proxy-authorization" not in flow.request.headers
    d.connected()
    sent = to_upstream(d.transcript)
    assert sent.startswith(b"GET /a HTTP/1.1\r\n") and b"proxy-authorization" not in sent.lower()
    d.upstream(OK)
    # The second request on the same connection needs no header: the connection is authenticated.
    out = d.client(b"GET http://origin.test/b HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    [second] = started(out)
    assert second.proxy_user == "ada" and b"GET /b" in to_upstream(out)


def test_connect_without_credentials_gets_407() -> None:
    d = Driver(ProxyConfig(credentials=ADA))
    out = d.client(b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n")
    assert to_client(out).startswith(b"HTTP/1.1 407 ") and opened(out) == []


def test_a_checker_that_raises_refuses_without_crashing() -> None:
    def checker(user: str, password: str) -> bool:
        raise RuntimeError("database down")

    d = Driver(ProxyConfig(credentials=Credentials(checker=checker)))
    out = d.client(GET + auth_line() + b"\r\n")
    assert to_client(out).startswith(b"HTTP/1.1 407 ")
    assert any("database down" in c.message for c in of_type(out, cmd.Log))


def test_reverse_mode_never_asks_for_credentials() -> None:
    from interceptkit.core.config import Route

    d = Driver(ProxyConfig(mode="reverse", credentials=ADA, routes=(Route("/", "http", "127.0.0.1", 9000),)))
    out = d.client(b"GET /x HTTP/1.1\r\nHost: svc\r\n\r\n")
    assert opened(out) and started(out)[0].proxy_user is None


# -- SOCKS5 -------------------------------------------------------------------------------


def socks(credentials: Credentials | None = None, **kwargs) -> Driver:
    return Driver(ProxyConfig(mode="socks5", credentials=credentials, **kwargs))


@pytest.mark.parametrize("split", [None, 1])
def test_socks5_connect_becomes_a_relayed_tunnel(split) -> None:
    d = socks()
    out = d.client(encode_greeting(), split=split)
    assert to_client(out) == bytes([5, Method.NO_AUTH])
    out = d.client(encode_connect("origin.test", 7000) + b"early", split=split)
    [up] = opened(out)
    assert (up.host, up.port, up.tls) == ("origin.test", 7000, False)
    assert to_client(out) == b""  # the answer waits for the connection
    assert of_type(out, cmd.PauseClient)
    out = d.connected()
    assert to_client(out) == bytes([5, Reply.SUCCEEDED, 0, 1, 0, 0, 0, 0, 0, 0])
    assert to_upstream(out) == b"early" and of_type(out, cmd.ResumeClient)
    assert to_upstream(d.client(b"more")) == b"more"
    assert to_client(d.upstream(b"back")) == b"back"
    [flow] = finished(d.upstream_closed())
    assert flow.kind == "tunnel" and flow.request.authority == "origin.test:7000" and flow.error is None


@pytest.mark.parametrize("cause, timeout, code", [
    ("refused", False, 0x05),
    ("unreachable", False, 0x04),
    ("resolve", False, 0x04),
    ("network_unreachable", False, 0x03),
    ("timeout", True, 0x06),
    ("other", False, 0x01),
])
def test_socks5_connect_failures_get_their_reply_code(cause, timeout, code) -> None:
    d = socks()
    d.client(encode_greeting() + encode_connect("origin.test", 7000))
    # The same words for every cause: the reply follows the cause, not the text.
    out = d.connect_failed(reason="it did not work", timeout=timeout, cause=cause)
    assert to_client(out)[:2] == bytes([5, code]) and of_type(out, cmd.CloseClient)
    [flow] = finished(out)
    assert "it did not work" in (flow.error or "")


def test_socks5_reply_codes_no_longer_read_the_reason_text() -> None:
    d = socks()
    d.client(encode_greeting() + encode_connect("origin.test", 7000))
    out = d.connect_failed(reason="Connection refused")  # no cause given: the default
    assert to_client(out)[:2] == bytes([5, Reply.GENERAL_FAILURE])


def test_a_timeout_given_without_a_cause_is_still_ttl_expired() -> None:
    d = socks()
    d.client(encode_greeting() + encode_connect("origin.test", 7000))
    out = d.connect_failed(reason="connect timed out after 5 s", timeout=True)  # an older transport: no cause
    assert to_client(out)[:2] == bytes([5, Reply.TTL_EXPIRED])


def test_socks5_plain_http_inside_is_parsed_when_intercepting() -> None:
    d = socks(intercept=True, server_context=lambda name, alpn=(): None)  # type: ignore[arg-type, return-value]
    d.client(encode_greeting())
    out = d.client(encode_connect("10.0.0.1", 80) + b"GET /x HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    assert to_client(out) == bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0])  # answered at once, like a CONNECT
    [up] = opened(out)
    assert (up.host, up.port) == ("10.0.0.1", 80)
    [flow] = started(out)
    assert flow.request.url == "http://10.0.0.1/x" and flow.request.method == "GET"


def test_socks5_username_password_checks_the_credentials() -> None:
    d = socks(ADA)
    assert to_client(d.client(encode_greeting((Method.NO_AUTH, Method.USERNAME_PASSWORD)))) == b"\x05\x02"
    assert to_client(d.client(b"\x01\x03ada\x02pw")) == b"\x01\x00"
    out = d.client(encode_connect("origin.test", 80))
    d.connected()
    [flow] = started(d.transcript)
    assert flow.proxy_user == "ada" and opened(out)


def test_socks5_wrong_password_is_refused_and_closed() -> None:
    d = socks(ADA)
    d.client(encode_greeting((Method.USERNAME_PASSWORD,)))
    out = d.client(b"\x01\x03ada\x02no")
    assert to_client(out) == b"\x01\x01" and of_type(out, cmd.CloseClient)
    assert any("SOCKS5 handshake" in c.message and "wrong user name" in c.message for c in of_type(out, cmd.Log))


def test_socks5_without_auth_offered_gets_no_acceptable_method() -> None:
    d = socks(ADA)
    out = d.client(encode_greeting())
    assert to_client(out) == b"\x05\xff" and of_type(out, cmd.CloseClient)


def test_socks5_unsupported_command_and_a_stalled_handshake() -> None:
    d = socks()
    out = d.client(encode_greeting() + bytes([5, 3, 0, 1, 127, 0, 0, 1, 0, 53]))
    assert to_client(out)[:4] == b"\x05\x00\x05\x07" and of_type(out, cmd.CloseClient)
    stalled = socks()
    stalled.client(b"\x05")  # half a greeting, then nothing
    out = stalled.fire("idle")
    assert of_type(out, cmd.CloseClient)


def test_socks5_client_gone_during_the_handshake() -> None:
    d = socks()
    d.client(encode_greeting() + encode_connect("origin.test", 80))
    out = d.client_closed(aborted=True)
    assert of_type(out, cmd.CloseClient) and CLIENT == d.conn._client_address


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6), st.booleans())
def test_any_bytes_in_socks5_mode_never_cost_an_internal_error(chunks, auth) -> None:
    d = socks(ADA if auth else None)
    for chunk in [encode_greeting((Method.NO_AUTH, Method.USERNAME_PASSWORD)), *chunks]:
        d.client(chunk)
    d.connected()
    d.client_closed()
    assert not [c for c in of_type(d.transcript, cmd.Log) if c.level == "error"]


def test_socks5_ipv6_address_reaches_the_upstream_bracketed_in_the_authority() -> None:
    d = socks()
    out = d.client(encode_greeting() + encode_connect("::1", 8443))
    [up] = opened(out)
    assert (up.host, up.port) == ("::1", 8443)
    d.connected()
    [flow] = started(d.transcript)
    assert flow.request.authority == "[::1]:8443" and flow.request.host == "::1"
