"""The SOCKS5 handshake (RFC 1928, RFC 1929): bytes in, events and bytes out; no sockets."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interceptkit.core.socks5 import (
    AddressType, ConnectRequested, HandshakeFailed, Method, Reply, Socks5Handshake, Socks5StateError, State,
    encode_connect, encode_greeting,
)

NO_AUTH_GREETING = encode_greeting((Method.NO_AUTH,))


def credentials(user: str, password: str) -> bytes:
    u, p = user.encode(), password.encode()
    return bytes([1, len(u)]) + u + bytes([len(p)]) + p


def check(user: str, password: str) -> bool:
    return hmac.compare_digest(user.encode(), b"ada") & hmac.compare_digest(password.encode(), b"secret")


def feed(handshake: Socks5Handshake, data: bytes, *, byte_by_byte: bool) -> list:
    if not byte_by_byte:
        return handshake.receive_data(data)
    events = []
    for i in range(len(data)):
        events += handshake.receive_data(data[i:i + 1])
    return events


both = pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "bytewise"])


@both
@pytest.mark.parametrize("host, port, request_bytes, kind", [
    ("127.0.0.1", 8080, b"\x01\x7f\x00\x00\x01\x1f\x90", AddressType.IPV4),
    ("::1", 443, b"\x04" + b"\x00" * 15 + b"\x01\x01\xbb", AddressType.IPV6),
    ("example.test", 80, b"\x03\x0cexample.test\x00\x50", AddressType.DOMAIN),
])
def test_connect_without_auth(byte_by_byte, host, port, request_bytes, kind):
    hs = Socks5Handshake()
    assert feed(hs, NO_AUTH_GREETING, byte_by_byte=byte_by_byte) == []
    assert hs.data_to_send() == b"\x05\x00"
    events = feed(hs, b"\x05\x01\x00" + request_bytes, byte_by_byte=byte_by_byte)
    assert events == [ConnectRequested(host=host, port=port, address_type=kind)]
    assert hs.state is State.WAIT_REPLY
    hs.reply(Reply.SUCCEEDED, ("127.0.0.1", 5555))
    assert hs.data_to_send() == b"\x05\x00\x00\x01\x7f\x00\x00\x01\x15\xb3"
    assert hs.state is State.ESTABLISHED


@both
def test_username_password(byte_by_byte):
    hs = Socks5Handshake(authenticate=check)
    feed(hs, encode_greeting((Method.NO_AUTH, Method.USERNAME_PASSWORD)), byte_by_byte=byte_by_byte)
    assert hs.data_to_send() == b"\x05\x02"  # auth required: no-auth is not chosen
    assert feed(hs, credentials("ada", "secret"), byte_by_byte=byte_by_byte) == []
    assert hs.data_to_send() == b"\x01\x00"
    [event] = feed(hs, encode_connect("origin.test", 443), byte_by_byte=byte_by_byte)
    assert event == ConnectRequested("origin.test", 443, AddressType.DOMAIN, user="ada")


@both
def test_wrong_password_fails_with_status_1(byte_by_byte):
    hs = Socks5Handshake(authenticate=check)
    feed(hs, encode_greeting((Method.USERNAME_PASSWORD,)), byte_by_byte=byte_by_byte)
    hs.data_to_send()
    [event] = feed(hs, credentials("ada", "wrong"), byte_by_byte=byte_by_byte)
    assert isinstance(event, HandshakeFailed) and "wrong user name or password" in event.reason
    assert "wrong" not in event.reason.replace("wrong user", "")  # the password is never echoed
    assert hs.data_to_send() == b"\x01\x01"
    assert hs.state is State.FAILED


def test_auth_required_but_not_offered_gets_no_acceptable_methods():
    hs = Socks5Handshake(authenticate=check)
    [event] = hs.receive_data(NO_AUTH_GREETING)
    assert isinstance(event, HandshakeFailed)
    assert hs.data_to_send() == b"\x05\xff"


def test_no_methods_at_all_gets_no_acceptable_methods():
    hs = Socks5Handshake()
    [event] = hs.receive_data(b"\x05\x00")
    assert isinstance(event, HandshakeFailed) and hs.data_to_send() == b"\x05\xff"


@pytest.mark.parametrize("command, name", [(0x02, "BIND"), (0x03, "UDP_ASSOCIATE"), (0x09, "0x09")])
def test_unsupported_commands_get_reply_7(command, name):
    hs = Socks5Handshake()
    hs.receive_data(NO_AUTH_GREETING)
    hs.data_to_send()
    [event] = hs.receive_data(bytes([5, command, 0, 1, 127, 0, 0, 1, 0, 80]))
    assert event == HandshakeFailed(f"command {name} is not supported", Reply.COMMAND_NOT_SUPPORTED)
    assert hs.data_to_send() == b"\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00"


def test_unknown_address_type_gets_reply_8():
    hs = Socks5Handshake()
    hs.receive_data(NO_AUTH_GREETING)
    hs.data_to_send()
    [event] = hs.receive_data(b"\x05\x01\x00\x07")  # answered as soon as the type is read
    assert isinstance(event, HandshakeFailed) and event.reply is Reply.ADDRESS_TYPE_NOT_SUPPORTED
    assert hs.data_to_send()[:2] == b"\x05\x08"


@pytest.mark.parametrize("name", [b"", b"bad host", b"caf\xc3\xa9.test"])
def test_bad_domain_names_get_a_general_failure(name):
    hs = Socks5Handshake()
    hs.receive_data(NO_AUTH_GREETING)
    hs.data_to_send()
    [event] = hs.receive_data(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x00\x50")
    assert isinstance(event, HandshakeFailed) and event.reply is Reply.GENERAL_FAILURE
    assert hs.data_to_send()[:2] == b"\x05\x01"


def test_socks4_and_http_get_no_answer():
    for data in (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b"GET / HTTP/1.1\r\n\r\n"):
        hs = Socks5Handshake()
        [event] = hs.receive_data(data)
        assert isinstance(event, HandshakeFailed) and "not SOCKS5" in event.reason
        assert hs.data_to_send() == b""


def test_bytes_after_the_request_are_handed_to_the_tunnel():
    hs = Socks5Handshake()
    [event] = hs.receive_data(NO_AUTH_GREETING + encode_connect("10.0.0.1", 443) + b"\x16\x03\x01early")
    assert isinstance(event, ConnectRequested)
    assert hs.trailing_data == b"\x16\x03\x01early"
    hs.receive_data(b"-more")
    hs.reply(Reply.SUCCEEDED)
    hs.receive_data(b"-after")
    assert hs.trailing_data == b"\x16\x03\x01early-more-after"


def test_failure_reply_and_misuse():
    hs = Socks5Handshake()
    with pytest.raises(Socks5StateError):
        hs.reply(Reply.SUCCEEDED)  # nothing was asked yet
    hs.receive_data(NO_AUTH_GREETING + encode_connect("::1", 1))
    hs.data_to_send()
    hs.reply(Reply.CONNECTION_REFUSED, ("::", 0))
    assert hs.data_to_send() == b"\x05\x05\x00\x04" + b"\x00" * 18
    assert hs.state is State.FAILED
    assert hs.receive_data(b"anything") == []


def test_no_auth_server_accepts_a_client_offering_only_username_password():
    hs = Socks5Handshake()
    hs.receive_data(encode_greeting((Method.USERNAME_PASSWORD,)))
    assert hs.data_to_send() == b"\x05\x02"
    hs.receive_data(credentials("anyone", "x"))
    assert hs.data_to_send() == b"\x01\x00"
    [event] = hs.receive_data(encode_connect("127.0.0.1", 80))
    assert isinstance(event, ConnectRequested) and event.user == "anyone"


# -- any bytes at all --------------------------------------------------------------------


def outcome(hs: Socks5Handshake, events: list) -> tuple:
    return (hs.state, events, hs.data_to_send(), hs.trailing_data, hs.user)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_any_bytes_never_raise_and_bytewise_equals_whole(data, with_auth):
    authenticate = check if with_auth else None
    whole = Socks5Handshake(authenticate)
    bytewise = Socks5Handshake(authenticate)
    result_whole = outcome(whole, feed(whole, data, byte_by_byte=False))
    result_bytewise = outcome(bytewise, feed(bytewise, data, byte_by_byte=True))
    assert result_whole == result_bytewise
    assert len(result_whole[1]) <= 1  # at most one decisive event


prefixes = st.sampled_from([b"", NO_AUTH_GREETING, encode_greeting((Method.USERNAME_PASSWORD,)),
                            encode_greeting((Method.USERNAME_PASSWORD,)) + credentials("ada", "secret"),
                            NO_AUTH_GREETING + b"\x05\x01\x00"])


@settings(max_examples=400, deadline=None)
@given(prefixes, st.binary(max_size=300), st.booleans())
def test_any_bytes_after_a_valid_start_never_raise(prefix, data, with_auth):
    # Random bytes rarely get past the greeting; starting from real prefixes
    # sends them into the auth and request parsers too.
    hs = Socks5Handshake(check if with_auth else None)
    events = feed(hs, prefix + data, byte_by_byte=True)
    other = Socks5Handshake(check if with_auth else None)
    assert outcome(hs, events) == outcome(other, feed(other, prefix + data, byte_by_byte=False))
    for event in events:
        assert isinstance(event, (ConnectRequested, HandshakeFailed))
        if isinstance(event, ConnectRequested):
            assert 0 <= event.port <= 65535 and event.host
