"""The parent-proxy state of an upstream, as transcripts (no sockets).

connected -> our CONNECT sent -> the parent's answer read with h11 -> 2xx:
the tunnel is open (TLS starts, or relaying begins, with any bytes that came
after the answer); anything else, or no answer, is a 502 naming the parent.
Plain HTTP needs no CONNECT: it is sent to the parent in absolute-form.
"""

from __future__ import annotations

import base64
import ssl

import pytest
from helpers import VIA, Driver, body_of, finished, ok, opened, status_of, to_client, to_upstream

from interceptkit.core.config import ProxyConfig
from interceptkit.core.upstreamproxy import parse_upstream_proxy
from interceptkit.policy import host_matcher

PARENT = parse_upstream_proxy("http://ada:pw@10.0.0.1:3128")
AUTH = b"Proxy-Authorization: Basic " + base64.b64encode(b"ada:pw")
CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"


@pytest.fixture(params=[None, 1], ids=["whole", "bytewise"])
def split(request: pytest.FixtureRequest) -> int | None:
    return request.param


def driver(split: int | None = None, **extra: object) -> Driver:
    return Driver(ProxyConfig(upstream_proxy=PARENT, **extra), split=split)  # type: ignore[arg-type]


def test_plain_http_is_sent_to_the_parent_in_absolute_form_with_its_credentials(split) -> None:
    d = driver(split)
    out = d.client(b"GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\n"
                   b"Proxy-Authorization: Basic Y2xpZW50OnNlY3JldA==\r\n\r\n")
    [open_] = opened(out)
    assert (open_.host, open_.port, open_.tls, open_.reuse) == ("10.0.0.1", 3128, False, True)
    sent = to_upstream(d.connected())
    assert sent == (b"GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\nVia: " + VIA
                    + b"\r\n" + AUTH + b"\r\n\r\n")  # the client's own credentials are gone
    assert status_of(to_client(d.upstream(ok(b"hi")))) == 200


def test_a_relayed_tunnel_opens_through_a_connect_to_the_parent(split) -> None:
    d = driver(split)
    [open_] = opened(d.client(CONNECT))
    assert (open_.host, open_.port, open_.reuse) == ("10.0.0.1", 3128, False)
    out = d.connected()
    assert to_upstream(out) == CONNECT[:-2] + AUTH + b"\r\n\r\n"
    assert to_client(out) == b""  # the client waits for the parent's answer
    # The bytes after the parent's answer are the server's: relayed, not lost.
    answer = to_client(d.upstream(b"HTTP/1.1 100 Wait\r\n\r\nHTTP/1.1 200 Connection established\r\n\r\nSSH-2.0"))
    assert status_of(answer) == 200 and answer.endswith(b"\r\n\r\nSSH-2.0")
    assert to_upstream(d.client(b"ping")) == b"ping"


def test_tls_towards_the_server_starts_inside_the_parent_tunnel() -> None:
    d = driver(upstream_context=ssl.create_default_context())
    [open_] = opened(d.client(b"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"))
    assert (open_.host, open_.port) == ("10.0.0.1", 3128)
    assert to_upstream(d.connected()).startswith(b"CONNECT example.com:443 HTTP/1.1\r\n")
    hello = to_upstream(d.upstream(b"HTTP/1.1 200 OK\r\n\r\n"))
    assert hello[:1] == b"\x16"  # a TLS handshake record: the ClientHello


@pytest.mark.parametrize("answer, said", [
    (b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
     "answered CONNECT with 407 Proxy Authentication Required"),
    (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nno!", "answered CONNECT with 502 Bad Gateway"),
    (b"SSH-2.0-nonsense\r\n\r\n", "answered CONNECT with invalid HTTP"),
])
def test_a_refusing_parent_gives_a_502_naming_it(split, answer: bytes, said: str) -> None:
    d = driver(split)
    d.client(CONNECT)
    d.connected()
    reply = to_client(d.upstream(answer))
    assert status_of(reply) == 502
    assert f"upstream proxy http://10.0.0.1:3128 {said}".encode() in body_of(reply)
    assert b"pw" not in reply and b"ada" not in reply


def test_a_parent_that_closes_without_answering() -> None:
    d = driver()
    d.client(CONNECT)
    d.connected()
    d.upstream(b"HTTP/1.1 2")
    reply = to_client(d.upstream_closed())
    assert status_of(reply) == 502
    assert b"upstream proxy http://10.0.0.1:3128 closed the connection without answering CONNECT" in reply


def test_an_unreachable_parent_gives_a_502_naming_it() -> None:
    d = driver()
    d.client(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    reply = to_client(d.connect_failed(reason="connection refused"))
    assert status_of(reply) == 502
    assert b"upstream proxy http://10.0.0.1:3128 cannot be reached (for example.com:80): connection refused" in reply
    [flow] = finished(d.transcript)
    assert flow.error is not None and "upstream proxy http://10.0.0.1:3128" in flow.error


def test_bypassed_hosts_are_opened_directly() -> None:
    d = driver(upstream_proxy_bypass=host_matcher(["*.corp.test"]))
    [open_] = opened(d.client(b"GET http://wiki.corp.test/ HTTP/1.1\r\nHost: wiki.corp.test\r\n\r\n"))
    assert (open_.host, open_.port) == ("wiki.corp.test", 80)
    assert to_upstream(d.connected()).startswith(b"GET / HTTP/1.1\r\n")


def test_a_407_to_a_plain_request_is_the_parents_and_becomes_a_502() -> None:
    d = driver()
    d.client(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    d.connected()
    reply = to_client(d.upstream(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                 b"Proxy-Authenticate: Basic realm=x\r\nContent-Length: 0\r\n\r\n"))
    assert status_of(reply) == 502 and b"Proxy-Authenticate" not in reply
    assert b"upstream proxy http://10.0.0.1:3128 answered 407 Proxy Authentication Required" in reply
