"""Proxy authentication and the upstream proxy's URL, the pure parts (no sockets)."""

from __future__ import annotations

import base64

import pytest

from interceptkit.core.proxyauth import (
    CHALLENGE, Credentials, basic_value, challenge_answer, parse_basic, parse_user_password,
)
from interceptkit.core.upstreamproxy import UpstreamProxy, parse_upstream_proxy


def basic(raw: bytes) -> bytes:
    return b"Basic " + base64.b64encode(raw)


@pytest.mark.parametrize("value, expected", [
    (basic(b"ada:secret"), ("ada", "secret")),
    (b"basic " + base64.b64encode(b"ada:se:cr:et"), ("ada", "se:cr:et")),  # scheme any case; ':' in password
    ("Basic " + base64.b64encode("zoë:pässword".encode()).decode(), ("zoë", "pässword")),
    (basic(b":empty-user"), ("", "empty-user")),
    (b"Bearer abc", None),
    (b"Basic", None),
    (b"Basic !!!notbase64", None),
    (basic(b"no-colon"), None),
    (b"", None),
])
def test_parse_basic(value, expected):
    assert parse_basic(value) == expected


def test_basic_value_round_trips():
    assert parse_basic(basic_value("ada", "p:w")) == ("ada", "p:w")


def test_pair_and_lines_and_callable():
    pair = Credentials.of(("ada", "secret"))
    assert pair.check("ada", "secret")
    assert not pair.check("ada", "secreT") and not pair.check("Ada", "secret") and not pair.check("", "")
    many = Credentials.from_lines("# team\nada:secret\n\n  bob:pa:ss  \n")
    assert many.check("bob", "pa:ss") and many.check("ada", "secret") and not many.check("bob", "secret")
    seen = []
    custom = Credentials.of(lambda user, password: seen.append(user) or password == "ok")
    assert custom.check("x", "ok") and not custom.check("y", "no") and seen == ["x", "y"]


def test_authenticate_a_header_value():
    credentials = Credentials.of(("ada", "secret"))
    assert credentials.authenticate(basic(b"ada:secret")) == "ada"
    assert credentials.authenticate(basic(b"ada:wrong")) is None
    assert credentials.authenticate(None) is None
    assert credentials.authenticate(b"Digest username=ada") is None


def test_check_compares_in_constant_time(monkeypatch):
    # Every stored pair is compared, user and password, even after a match.
    import interceptkit.core.proxyauth as module

    calls = []
    real = module.hmac.compare_digest
    monkeypatch.setattr(module.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    credentials = Credentials.from_lines("ada:secret\nbob:other\ncy:third\n")
    assert credentials.check("ada", "secret")
    assert len(calls) == 6
    calls.clear()
    assert not credentials.check("nobody", "x")
    assert len(calls) == 6


def test_repr_never_shows_passwords():
    assert "secret" not in repr(Credentials.of(("ada", "secret")))
    assert "secret" not in repr(parse_upstream_proxy("http://ada:secret@127.0.0.1:3128"))


@pytest.mark.parametrize("text, message", [
    ("", "no user:password lines"),
    ("# only a comment\n", "no user:password lines"),
    ("ada:secret\nbroken-line\n", "line 2: want USER:PASSWORD"),
    ("ada:\n", "line 1: the password for 'ada' is empty"),
    (":pw\n", "line 1: the user name is empty"),
])
def test_bad_files_say_which_line(text, message):
    with pytest.raises(ValueError, match=message):
        Credentials.from_lines(text)


def test_bad_specs():
    with pytest.raises(ValueError, match="no ':'"):
        parse_user_password("ada")
    with pytest.raises(TypeError):
        Credentials.of(("ada",))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Credentials()


def test_the_407_answer():
    status, fields, body = challenge_answer()
    assert status == 407
    assert CHALLENGE == (b"Proxy-Authenticate", b'Basic realm="interceptkit"') and CHALLENGE in fields
    assert (b"Content-Length", str(len(body)).encode()) in fields
    assert b"--proxy-user" in body


# -- --upstream-proxy ----------------------------------------------------------------------


def test_parse_upstream_proxy():
    plain = parse_upstream_proxy("http://127.0.0.1:3128")
    assert plain == UpstreamProxy("127.0.0.1", 3128)
    assert plain.authorization is None and plain.address == "http://127.0.0.1:3128"
    with_auth = parse_upstream_proxy("http://ada:p%40ss%3Aw@[::1]:8080/")
    assert (with_auth.host, with_auth.port, with_auth.user, with_auth.password) == ("::1", 8080, "ada", "p@ss:w")
    assert with_auth.address == "http://[::1]:8080"
    assert with_auth.authorization == (b"Proxy-Authorization", basic_value("ada", "p@ss:w"))


def test_connect_request_through_the_parent():
    parent = parse_upstream_proxy("http://ada:secret@127.0.0.1:3128")
    request = parent.connect_request("origin.test", 443)
    assert request == (b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n"
                       b"Proxy-Authorization: " + basic_value("ada", "secret") + b"\r\n\r\n")
    assert parse_upstream_proxy("http://127.0.0.1:1").connect_request("::1", 80).startswith(
        b"CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n")
    assert parent.refused("answered 407 Proxy Authentication Required") == (
        "upstream proxy http://127.0.0.1:3128 answered 407 Proxy Authentication Required")


@pytest.mark.parametrize("url, message", [
    ("https://127.0.0.1:3128", "only http://"),
    ("socks5://127.0.0.1:1080", "only http://"),
    ("127.0.0.1:3128", "only http://"),
    ("http://127.0.0.1", "give its port"),
    ("http://127.0.0.1:0", "port 0"),
    ("http://127.0.0.1:99999", "out of range"),
    ("http://:3128", "no host"),
    ("http://127.0.0.1:3128/path", "no path"),
    ("http://ada@127.0.0.1:3128", "user:password"),
])
def test_bad_upstream_proxies(url, message):
    with pytest.raises(ValueError, match=message):
        parse_upstream_proxy(url)
