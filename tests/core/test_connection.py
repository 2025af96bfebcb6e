"""ProxyConnection, driven in memory: whole exchanges as transcripts of commands.

No sockets: a Driver (helpers.py) feeds events with a fake clock and collects
commands. Most exchanges run twice, with the input fed whole and one byte at a
time; transcripts join adjacent sends, so both must read the same.
"""

from __future__ import annotations

import ssl

import pytest
from helpers import (
    VIA,
    Driver,
    body_of,
    chunked,
    closes_client,
    errors_logged,
    field_names,
    field_values,
    finished,
    of_type,
    ok,
    opened,
    script,
    started,
    status_of,
    to_client,
    to_upstream,
)

from interceptkit.core.commands import (
    CloseClient,
    CloseUpstream,
    Command,
    Log,
    OpenUpstream,
    PauseClient,
    ResumeClient,
    SendToClient,
    SendToUpstream,
    StartTimer,
)
from interceptkit.core.config import ProxyConfig

GET = b"GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
GET_UP = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nVia: " + VIA + b"\r\n\r\n"


def relayed(body: bytes = b"hello", *fields: bytes, status: bytes = b"200 OK", close: bool = False) -> bytes:
    """What the client gets for ``ok(body, *fields)``: the same plus our Via.

    ``close``: h11 adds ``Connection: close`` last when the client connection ends.
    """
    lines = [b"HTTP/1.1 " + status, b"Content-Length: %d" % len(body), *fields, b"Via: " + VIA]
    lines += [b"Connection: close"] if close else []
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(path: str = "/", host: str = "example.com", version: str = "1.1", *extra: str) -> bytes:
    lines = [f"GET http://{host}{path} HTTP/{version}", f"Host: {host}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_answer(out: list[Command], status: int, *fragments: str) -> bytes:
    """The proxy answered ``status`` with a one-line text reason and closed the client."""
    data = to_client(out)
    assert status_of(data) == status, data
    body = body_of(data)
    assert body.startswith(b"%d " % status) and body.endswith(b"\n") and body.count(b"\n") == 1, body
    for fragment in fragments:
        assert fragment.encode() in body, body
    assert b"text/plain" in data.split(b"\r\n\r\n")[0]
    assert isinstance(out[-1], CloseClient)
    return body


@pytest.fixture(params=[None, 1], ids=["whole", "bytewise"])
def split(request: pytest.FixtureRequest) -> int | None:
    param: int | None = request.param
    return param


# -- forward exchanges ---------------------------------------------------------


def test_get_whole_exchange(split: int | None) -> None:
    d = Driver(split=split)
    assert script(d.transcript) == [StartTimer(name="idle", delay=120.0)]
    assert script(d.client(GET)) == [
        ("FlowStarted", 1),
        OpenUpstream(upstream=1, host="example.com", port=80, tls=False, reuse=True),
        StartTimer(name="read", delay=60.0),
    ]
    assert script(d.connected()) == [SendToUpstream(upstream=1, data=GET_UP)]
    assert script(d.upstream(ok(b"hello"))) == [SendToClient(data=relayed(b"hello")), ("FlowFinished", 1, None)]
    assert not closes_client(d.transcript) and not errors_logged(d.transcript)


def test_request_before_connect_is_sent_once_connected(split: int | None) -> None:
    d = Driver(split=split)
    d.client(GET[:20])
    assert not opened(d.transcript)  # nothing happens before the head is complete
    d.client(GET[20:])
    assert to_upstream(d.transcript) == b""  # not connected yet
    assert to_upstream(d.connected()) == GET_UP


@pytest.mark.parametrize(
    ("target", "client_host", "host", "port", "sent_host"),
    [
        ("http://example.com/", "example.com", "example.com", 80, b"example.com"),
        ("http://example.com:80/", "example.com", "example.com", 80, b"example.com"),
        ("http://Example.COM:8080/x", "example.com", "example.com", 8080, b"example.com:8080"),
        ("http://example.com/", "evil.example", "example.com", 80, b"example.com"),
        ("http://[2001:db8::1]:8080/", "x", "2001:db8::1", 8080, b"[2001:db8::1]:8080"),
        ("http://127.0.0.1:9/", "127.0.0.1:9", "127.0.0.1", 9, b"127.0.0.1:9"),
    ],
)
def test_host_comes_from_the_target(target: str, client_host: str, host: str, port: int, sent_host: bytes) -> None:
    # RFC 9112 3.2.2: a proxy replaces Host with the absolute-form target's authority.
    d = Driver()
    out = d.client(f"GET {target} HTTP/1.1\r\nHost: {client_host}\r\n\r\n".encode())
    assert opened(out) == [OpenUpstream(upstream=1, host=host, port=port)]
    sent = to_upstream(d.connected())
    assert field_values(sent, b"host") == [sent_host]


def test_http10_request_without_host_gets_one() -> None:
    d = Driver()
    d.client(b"GET http://example.com:8000/ HTTP/1.0\r\n\r\n")
    sent = to_upstream(d.connected())
    assert sent.startswith(b"GET / HTTP/1.1\r\nHost: example.com:8000\r\n")


def test_hop_by_hop_fields_are_removed() -> None:
    d = Driver()
    d.client(
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n"
        b"Connection: keep-alive, X-Private, x-other\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\nX-Private: secret\r\nX-Other: 1\r\n"
        b"Accept: text/html\r\nCookie: a=1\r\n\r\n"
    )
    sent = to_upstream(d.connected())
    assert field_names(sent) == {b"host", b"accept", b"cookie", b"via"}
    d.upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Srv\r\nX-Srv: 1\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nETag: \"e\"\r\n\r\nok"
    )
    answer = to_client(d.transcript)
    assert field_names(answer) == {b"content-length", b"etag", b"via"}
    assert body_of(answer) == b"ok"


def test_via_is_added_both_ways_after_existing_ones() -> None:
    d = Driver()
    d.client(get("/", "example.com", "1.1", "Via: 1.0 fred"))
    sent = to_upstream(d.connected())
    assert field_values(sent, b"via") == [b"1.0 fred", VIA]
    d.upstream(ok(b"", b"Via: 1.1 cache"))
    assert field_values(to_client(d.transcript), b"via") == [b"1.1 cache", VIA]


def test_x_forwarded_for_is_off_by_default() -> None:
    d = Driver()
    d.client(GET)
    assert b"x-forwarded-for" not in field_names(to_upstream(d.connected()))


def test_x_forwarded_for_when_configured() -> None:
    d = Driver(ProxyConfig(forwarded_for=True))
    d.client(GET)
    assert field_values(to_upstream(d.connected()), b"x-forwarded-for") == [b"192.0.2.10"]
    d.upstream(ok())
    d.client(get("/2", "example.com", "1.1", "X-Forwarded-For: 198.51.100.7"))
    assert field_values(to_upstream(d.transcript[-3:]), b"x-forwarded-for") == [b"198.51.100.7, 192.0.2.10"]


def test_flow_records_the_exchange() -> None:
    d = Driver()
    d.client(b"POST http://example.com/up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\n")
    d.advance(1)
    d.connected()
    d.advance(1)
    d.client(b"data")
    d.advance(2)
    d.upstream(b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n")
    d.advance(1)
    d.upstream(b"abc")
    [flow] = started(d.transcript)
    assert finished(d.transcript) == [flow]
    assert (flow.request.method, flow.request.url, flow.request.http_version) == (
        "POST", "http://example.com/up", "HTTP/1.1")
    assert (flow.request.content, flow.request.body_size) == (b"data", 4)
    assert flow.response is not None
    assert (flow.response.status, flow.response.reason, flow.response.content) == (201, "Created", b"abc")
    assert (flow.response.body_size, flow.response.headers["content-type"]) == (3, "text/plain")
    assert (flow.state, flow.error, flow.kind) == ("done", None, "http")
    assert flow.client_address == ("192.0.2.10", 50123)
    assert flow.server_address == ("203.0.113.5", 80)
    t = flow.timings
    assert (t.start, t.connect_start, t.connect_end, t.request_sent, t.response_start, t.end) == (
        1000.0, 1000.0, 1001.0, 1002.0, 1004.0, 1005.0)
    assert flow.duration == 5.0


def test_body_capture_is_limited_but_counted() -> None:
    d = Driver(ProxyConfig(body_capture_limit=4))
    d.client(GET)
    d.connected()
    d.upstream(ok(b"0123456789"), split=3)
    [flow] = finished(d.transcript)
    assert flow.response is not None
    assert (flow.response.content, flow.response.body_size, flow.response.truncated) == (b"0123", 10, True)
    assert body_of(to_client(d.transcript)) == b"0123456789"


# -- keep-alive ----------------------------------------------------------------


def test_keep_alive_reuses_the_upstream(split: int | None) -> None:
    d = Driver(split=split)
    d.client(GET)
    d.connected()
    d.upstream(ok(b"one"))
    assert script(d.client(get("/2"))) == [
        ("FlowStarted", 2),
        SendToUpstream(upstream=1, data=b"GET /2 HTTP/1.1\r\nHost: example.com\r\nVia: " + VIA + b"\r\n\r\n"),
    ]
    assert script(d.upstream(ok(b"two"))) == [SendToClient(data=relayed(b"two")), ("FlowFinished", 2, None)]
    assert len(opened(d.transcript)) == 1
    assert not of_type(d.transcript, CloseUpstream) and not closes_client(d.transcript)


def test_switching_host_releases_the_old_upstream_to_the_pool() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(ok())
    assert script(d.client(get("/", "other.example:8080"))) == [
        ("FlowStarted", 2),
        CloseUpstream(upstream=1, reusable=True),
        OpenUpstream(upstream=2, host="other.example", port=8080),
    ]
    assert to_upstream(d.connected(2), 2).startswith(b"GET / HTTP/1.1\r\nHost: other.example:8080\r\n")


def test_client_connection_close_is_honoured() -> None:
    d = Driver()
    d.client(get("/", "example.com", "1.1", "Connection: close"))
    assert b"connection" not in field_names(to_upstream(d.connected()))
    out = d.upstream(ok())
    assert script(out) == [
        SendToClient(data=relayed(b"hello", close=True)),
        ("FlowFinished", 1, None),
        CloseUpstream(upstream=1, reusable=True),
        CloseClient(),
    ]


def test_upstream_connection_close_stays_on_its_hop() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    out = d.upstream(ok(b"x", b"Connection: close"))
    assert script(out) == [
        SendToClient(data=relayed(b"x")),
        ("FlowFinished", 1, None),
        CloseUpstream(upstream=1, reusable=False),
    ]
    out = d.client(get("/2"))
    assert opened(out) == [OpenUpstream(upstream=2, host="example.com", port=80)]


def test_http10_client_is_closed_after_the_response(split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"GET http://example.com/ HTTP/1.0\r\nUser-Agent: old\r\n\r\n")
    assert to_upstream(d.connected()).startswith(b"GET / HTTP/1.1\r\nHost: example.com\r\n")
    out = d.upstream(ok(b"hi"))
    assert to_client(out) == relayed(b"hi", close=True)
    assert script(out)[-3:] == [("FlowFinished", 1, None), CloseUpstream(upstream=1, reusable=True), CloseClient()]


def test_client_half_close_after_request_still_gets_the_answer() -> None:
    d = Driver()
    d.client(GET)
    assert d.client_closed() == []
    d.connected()
    out = d.upstream(ok())
    assert to_client(out) == relayed()
    assert closes_client(out) and finished(out)[0].error is None


def test_eof_between_requests_closes() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(ok())
    assert script(d.client_closed()) == [CloseUpstream(upstream=1, reusable=True), CloseClient()]


# -- bodies ---------------------------------------------------------------------


def test_content_length_request_body(split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"PUT http://example.com/f HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello world")
    sent = to_upstream(d.connected())
    assert sent == (b"PUT /f HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\nVia: " + VIA
                    + b"\r\n\r\nhello world")


def test_chunked_request_stays_chunked(split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
    d.connected()
    d.client(chunked(b"hello ", b"world"))
    sent = to_upstream(d.transcript)
    body = body_of(sent)
    assert field_values(sent, b"transfer-encoding") == [b"chunked"]
    assert b"content-length" not in field_names(sent)
    assert body.endswith(b"0\r\n\r\n")
    # re-chunking may cut differently; the payload must be the same
    assert _dechunk(body) == b"hello world"
    d.upstream(ok())
    [flow] = finished(d.transcript)
    assert (flow.request.content, flow.request.body_size) == (b"hello world", 11)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, body = out + body[:size], body[size + 2 :]


def test_chunked_response_to_http11_client(split: int | None) -> None:
    d = Driver(split=split)
    d.client(GET)
    d.connected()
    d.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"abc", b"defg"))
    answer = to_client(d.transcript)
    assert field_values(answer, b"transfer-encoding") == [b"chunked"]
    assert _dechunk(body_of(answer)) == b"abcdefg" and answer.endswith(b"0\r\n\r\n")
    assert not closes_client(d.transcript)
    assert finished(d.transcript)[0].response.body_size == 7


def test_chunked_response_to_http10_client_is_close_delimited(split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"GET http://example.com/ HTTP/1.0\r\n\r\n")
    d.connected()
    out = d.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"abc", b"de"))
    answer = to_client(d.transcript)
    assert b"transfer-encoding" not in field_names(answer)
    assert b"content-length" not in field_names(answer)
    assert body_of(answer) == b"abcde"
    assert closes_client(out)


def test_close_delimited_response_is_chunked_for_an_http11_client() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
    d.upstream(b"part two")
    out = d.upstream_closed()
    answer = to_client(d.transcript)
    assert field_values(answer, b"transfer-encoding") == [b"chunked"]
    assert _dechunk(body_of(answer)) == b"part one, part two"
    assert script(out) == [SendToClient(data=b"0\r\n\r\n"), ("FlowFinished", 1, None),
                           CloseUpstream(upstream=1, reusable=False)]
    assert not closes_client(d.transcript)  # the client keeps its connection


def test_trailers_on_a_chunked_response() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
               + chunked(b"abc", trailers=b"X-Checksum: 42\r\n"))
    answer = to_client(d.transcript)
    assert answer.endswith(b"0\r\nX-Checksum: 42\r\n\r\n")


def test_head_keeps_content_length_without_body(split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"HEAD http://example.com/big HTTP/1.1\r\nHost: example.com\r\n\r\n")
    d.connected()
    out = d.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert to_client(out) == b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nVia: " + VIA + b"\r\n\r\n"
    assert finished(out)[0].error is None
    d.client(get("/next"))  # and the connection goes on
    assert to_upstream(d.transcript[-2:]).startswith(b"GET /next")


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_bodyless_statuses(status: bytes) -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    out = d.upstream(b"HTTP/1.1 " + status + b"\r\nETag: \"x\"\r\n\r\n")
    assert to_client(out) == b"HTTP/1.1 " + status + b"\r\nETag: \"x\"\r\nVia: " + VIA + b"\r\n\r\n"
    assert [f.response.status for f in finished(out)] == [int(status[:3])]
    assert not closes_client(out)


def test_expect_100_continue(split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"PUT http://example.com/f HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n"
             b"Expect: 100-continue\r\n\r\n")
    head = to_upstream(d.connected())
    assert field_values(head, b"expect") == [b"100-continue"]
    assert script(d.upstream(b"HTTP/1.1 100 Continue\r\n\r\n")) == [
        SendToClient(data=b"HTTP/1.1 100 Continue\r\n\r\n")]
    assert script(d.client(b"hello")) == [SendToUpstream(upstream=1, data=b"hello"),
                                          StartTimer(name="read", delay=60.0)]
    out = d.upstream(ok(b"", status=b"201 Created"))
    assert status_of(to_client(out)) == 201 and finished(out)[0].error is None


def test_other_1xx_is_relayed_to_http11_clients() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    out = d.upstream(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + ok())
    assert to_client(out) == (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                              + relayed())


def test_1xx_is_not_sent_to_http10_clients() -> None:
    d = Driver()
    d.client(b"GET http://example.com/ HTTP/1.0\r\n\r\n")
    d.connected()
    out = d.upstream(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + ok())
    assert to_client(out) == relayed(b"hello", close=True)


def test_pipelined_requests_are_answered_in_order(split: int | None) -> None:
    d = Driver(split=split)
    second = b"GET /2 HTTP/1.1\r\nHost: example.com\r\nVia: " + VIA + b"\r\n\r\n"
    out = d.client(GET + get("/2"))
    assert script(out) == [
        ("FlowStarted", 1),
        OpenUpstream(upstream=1, host="example.com", port=80),
        StartTimer(name="read", delay=60.0),
        PauseClient(),  # the second request waits in the parser: stop reading
    ]
    assert to_upstream(d.connected()) == GET_UP  # only the first one
    out = d.upstream(ok(b"one"))
    assert script(out)[:2] == [SendToClient(data=relayed(b"one")), ("FlowFinished", 1, None)]
    assert script(out)[-2:] == [("FlowStarted", 2), SendToUpstream(upstream=1, data=second)]
    out = d.upstream(ok(b"two"))
    assert script(out) == [SendToClient(data=relayed(b"two")), ("FlowFinished", 2, None)]
    # reading resumes once nothing waits any more
    flags = [type(c) for c in d.transcript if isinstance(c, (PauseClient, ResumeClient))]
    assert flags[0] is PauseClient and flags[-1] is ResumeClient
    assert to_client(d.transcript) == relayed(b"one") + relayed(b"two")


# -- CONNECT ------------------------------------------------------------------------

CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def test_connect_relays_bytes_unchanged(split: int | None) -> None:
    d = Driver(split=split)
    assert script(d.client(CONNECT)) == [
        ("FlowStarted", 1),
        OpenUpstream(upstream=1, host="example.com", port=443, tls=False, reuse=False),
    ]
    assert to_client(d.transcript) == b""  # no 200 before the upstream is there
    assert script(d.connected()) == [SendToClient(data=ESTABLISHED)]
    blob = bytes(range(256)) + b"GET / HTTP/1.1\r\n\r\n"
    assert script(d.client(blob)) == [SendToUpstream(upstream=1, data=blob)]
    assert script(d.upstream(blob[::-1])) == [SendToClient(data=blob[::-1])]
    [flow] = started(d.transcript)
    assert (flow.kind, flow.request.method, flow.request.host, flow.request.port) == (
        "tunnel", "CONNECT", "example.com", 443)


def test_bytes_sent_with_the_connect_are_not_lost() -> None:
    d = Driver()
    d.client(CONNECT + b"\x16\x03\x01early")
    d.client(b"-later")  # while the upstream is still connecting
    out = d.connected()
    assert script(out) == [SendToClient(data=ESTABLISHED),
                           SendToUpstream(upstream=1, data=b"\x16\x03\x01early-later")]


@pytest.mark.parametrize("closing", ["client", "upstream"])
def test_either_side_closing_ends_the_tunnel(closing: str) -> None:
    d = Driver()
    d.client(CONNECT)
    d.advance(1)
    d.connected()
    d.client(b"12345")
    d.upstream(b"abc")
    d.advance(2)
    out = d.client_closed() if closing == "client" else d.upstream_closed()
    assert {type(c) for c in out} >= {CloseClient, CloseUpstream}
    [flow] = finished(out)
    assert flow.response is not None
    assert (flow.request.body_size, flow.response.body_size, flow.response.status) == (5, 3, 200)
    assert (flow.error, flow.state, flow.timings.end) == (None, "done", 1003.0)
    assert d.client(b"more") == [] and d.upstream(b"more") == []


@pytest.mark.parametrize("closing", ["client", "upstream"])
def test_tunnel_upstream_is_never_pooled(closing: str) -> None:
    # Regression (a bug this suite found): a CONNECT tunnel's upstream is released with
    # CloseUpstream(reusable=True), so the transport pools a raw relayed socket for later HTTP
    # requests
    d = Driver()
    d.client(CONNECT)
    d.connected()
    d.client(b"raw")
    out = d.client_closed() if closing == "client" else d.upstream_closed()
    assert of_type(out, CloseUpstream) == [CloseUpstream(upstream=1, reusable=False)]


@pytest.mark.parametrize(("timeout", "status"), [(False, 502), (True, 504)])
def test_connect_failure(timeout: bool, status: int) -> None:
    d = Driver()
    d.client(CONNECT)
    out = d.connect_failed(reason="connection refused", timeout=timeout)
    assert_answer(out, status, "example.com:443", "connection refused")
    [flow] = finished(out)
    assert flow.error is not None and "connection refused" in flow.error and flow.state == "error"


@pytest.mark.parametrize("target", [b"example.com", b"example.com:", b"example.com:0", b"user@example.com:443",
                                    b"[::1]", b"example.com:443x"])
def test_bad_connect_target(target: bytes) -> None:
    d = Driver()
    out = d.client(b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_answer(out, 400, "CONNECT")
    assert not opened(out)


# -- bad input ----------------------------------------------------------------------

BAD_REQUESTS = {
    "request line": (b"GARBAGE\r\n\r\n", 400, ""),
    "request line spaces": (b"GET  http://example.com/ HTTP/1.1\r\nHost: e\r\n\r\n", 400, ""),
    "header line": (b"GET http://example.com/ HTTP/1.1\r\nHost: e\r\nno colon here\r\n\r\n", 400, ""),
    "header name": (b"GET http://example.com/ HTTP/1.1\r\nHost: e\r\nBad Name: 1\r\n\r\n", 400, ""),
    "cl and te": ((b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, "Content-Length and Transfer-Encoding"),
    "two lengths": ((b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n"
                     b"Content-Length: 4\r\n\r\nabcd"), 400, "Content-Length"),
    "bad length": (b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: -1\r\n\r\n", 400, ""),
    "te in http/1.0": (b"POST http://example.com/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                       400, "HTTP/1.0"),
    "unknown te": (b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: gzip\r\n\r\n", 501, ""),
    "userinfo": (b"GET http://user:pw@example.com/ HTTP/1.1\r\nHost: e\r\n\r\n", 400, "userinfo"),
    "port too big": (b"GET http://example.com:99999/ HTTP/1.1\r\nHost: e\r\n\r\n", 400, "port"),
    "port not a number": (b"GET http://example.com:8o/ HTTP/1.1\r\nHost: e\r\n\r\n", 400, "port"),
    "empty host": (b"GET http:///x HTTP/1.1\r\nHost: e\r\n\r\n", 400, "host"),
    "bad host": (b"GET http://exa<mple.com/ HTTP/1.1\r\nHost: e\r\n\r\n", 400, "host"),
    "scheme": (b"GET ftp://example.com/ HTTP/1.1\r\nHost: e\r\n\r\n", 400, "request-target"),
    "missing host": (b"GET http://example.com/ HTTP/1.1\r\n\r\n", 400, "Host"),
    "two hosts": (b"GET http://example.com/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host"),
    "loop": (b"GET http://example.com/ HTTP/1.1\r\nHost: e\r\nVia: 1.1 interceptkit (interceptkit)\r\n\r\n",
             508, "loop"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_requests_are_answered_and_never_forwarded(name: str, split: int | None) -> None:
    raw, status, fragment = BAD_REQUESTS[name]
    d = Driver(split=split)
    d.client(raw)
    assert_answer(d.transcript, status, fragment)
    assert not opened(d.transcript) and not to_upstream(d.transcript)
    assert not errors_logged(d.transcript)
    assert d.client(GET) == []  # nothing is read after the answer


def test_header_block_over_the_limit_is_431_when_it_trickles_in() -> None:
    d = Driver(ProxyConfig(max_header_size=1024), split=100)
    d.client(b"GET http://example.com/ HTTP/1.1\r\nHost: e\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
    assert_answer(d.transcript, 431)
    assert not opened(d.transcript)


def test_header_block_over_the_limit_is_431_when_it_arrives_whole() -> None:
    # Regression (a bug this suite found): a header block larger than max_header_size is accepted
    # when it arrives in one read (h11 only limits *incomplete* events)
    d = Driver(ProxyConfig(max_header_size=1024))
    d.client(b"GET http://example.com/ HTTP/1.1\r\nHost: e\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
    assert_answer(d.transcript, 431)
    assert not opened(d.transcript)


def test_invalid_chunk_size_is_400_and_the_upstream_request_is_not_completed(split: int | None) -> None:
    d = Driver(split=split)
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n")
    d.connected()
    out = d.client(b"3\r\nabc\r\nzz\r\nsmuggled\r\n0\r\n\r\n")
    assert_answer(out, 400)
    sent = to_upstream(d.transcript)
    assert b"smuggled" not in sent and not sent.endswith(b"0\r\n\r\n")
    assert CloseUpstream(upstream=1, reusable=False) in out
    [flow] = finished(out)
    assert flow.error is not None and "bad request" in flow.error


def test_obs_fold_never_reaches_upstream_as_a_fold() -> None:
    d = Driver()
    d.client(b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Folded: a\r\n  b\r\n\tc\r\n\r\n")
    if opened(d.transcript):  # forwarded: the fold became spaces
        sent = to_upstream(d.connected())
        assert b"\r\n " not in sent and b"\r\n\t" not in sent
        assert field_values(sent, b"x-folded") == [b"a b c"]
    else:  # or refused
        assert_answer(d.transcript, 400)


def test_request_body_truncated_by_client_eof() -> None:
    d = Driver()
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 10\r\n\r\nabc")
    d.connected()
    out = d.client_closed()
    assert closes_client(out) and finished(out)[0].error is not None
    assert not to_upstream(out)


# -- requests addressed to the proxy itself -------------------------------------------


@pytest.mark.parametrize(
    "request_line",
    [b"GET / HTTP/1.1", b"GET /anything?x=1 HTTP/1.1", b"GET http://interceptkit/ HTTP/1.1",
     b"GET http://InterceptKit/cert HTTP/1.1", b"GET http://127.0.0.1:8080/ HTTP/1.1",
     b"GET http://localhost:8080/x HTTP/1.1"],
)
def test_info_page(request_line: bytes) -> None:
    config = ProxyConfig(listen_addresses=frozenset({("127.0.0.1", 8080), ("localhost", 8080)}))
    d = Driver(config)
    out = d.client(request_line + b"\r\nHost: 127.0.0.1:8080\r\n\r\n")
    answer = to_client(out)
    assert status_of(answer) == 200
    assert b"interceptkit" in body_of(answer) and b"/cert/pem" in body_of(answer)
    assert field_values(answer, b"content-type")[0].startswith(b"text/html")
    assert int(field_values(answer, b"content-length")[0]) == len(body_of(answer))
    assert not opened(out) and not started(out) and closes_client(out)


def test_info_page_serves_the_ca() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    d = Driver(ProxyConfig(ca_cert_pem=pem, ca_cert_der=b"\x30\x82"))
    answer = to_client(d.client(b"GET /cert/pem HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert body_of(answer) == pem
    d = Driver(ProxyConfig(ca_cert_pem=pem, ca_cert_der=b"\x30\x82"))
    answer = to_client(d.client(b"GET http://interceptkit/cert/cer HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert body_of(answer) == b"\x30\x82"


def test_own_listen_address_is_not_a_loop() -> None:
    d = Driver(ProxyConfig(listen_addresses=frozenset({("127.0.0.1", 8080)})))
    out = d.client(b"GET http://127.0.0.1:8080/ HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
    assert status_of(to_client(out)) == 200 and not opened(out)
    d = Driver(ProxyConfig(listen_addresses=frozenset({("127.0.0.1", 8080)})))
    out = d.client(b"GET http://127.0.0.1:8081/ HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n\r\n")
    assert opened(out) == [OpenUpstream(upstream=1, host="127.0.0.1", port=8081)]


# -- upstream failures ---------------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "status"), [(False, 502), (True, 504)])
def test_upstream_connect_failed(timeout: bool, status: int) -> None:
    d = Driver()
    d.client(GET)
    out = d.connect_failed(reason="Name or service not known", timeout=timeout)
    assert_answer(out, status, "example.com:80", "Name or service not known")
    [flow] = finished(out)
    assert flow.state == "error" and "Name or service not known" in (flow.error or "")
    assert flow.response is None


def test_upstream_closes_mid_body_content_length(split: int | None) -> None:
    d = Driver(split=split)
    d.client(GET)
    d.connected()
    d.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    out = d.upstream_closed()
    assert to_client(d.transcript) == b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nVia: " + VIA + b"\r\n\r\nabc"
    assert closes_client(out)
    [flow] = finished(out)
    assert flow.state == "error" and "before the response was complete" in (flow.error or "")


def test_upstream_closes_mid_body_chunked() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    out = d.upstream_closed()
    answer = to_client(d.transcript)
    assert not answer.endswith(b"0\r\n\r\n")  # no terminator: the client sees the truncation
    assert closes_client(out) and finished(out)[0].error


def test_upstream_closes_before_answering_a_fresh_connection() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    out = d.upstream_closed()
    assert_answer(out, 502, "closed the connection before answering")
    assert opened(out) == []  # a fresh connection is not retried
    assert finished(out)[0].error


def test_invalid_response_is_502() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    out = d.upstream(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    assert_answer(out, 502, "invalid response from upstream")
    assert not errors_logged(out)


def _second_request_on_kept_alive(d: Driver, request: bytes) -> None:
    d.client(GET)
    d.connected()
    d.upstream(ok(b"one"))
    d.client(request)


def test_reused_connection_closed_is_retried_transparently() -> None:
    d = Driver()
    second = get("/2")
    _second_request_on_kept_alive(d, second)
    out = d.upstream_closed()
    assert script(out) == [CloseUpstream(upstream=1, reusable=False),
                           OpenUpstream(upstream=2, host="example.com", port=80, reuse=False)]
    out = d.connected(2)
    assert to_upstream(out, 2) == b"GET /2 HTTP/1.1\r\nHost: example.com\r\nVia: " + VIA + b"\r\n\r\n"
    out = d.upstream(ok(b"two"), upstream=2)
    assert to_client(out) == relayed(b"two")
    assert finished(out)[0].error is None
    assert not closes_client(d.transcript)


def test_retry_resends_the_body_of_an_idempotent_request() -> None:
    d = Driver()
    _second_request_on_kept_alive(d, b"PUT http://example.com/f HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n\r\nxyz")
    d.upstream_closed()
    sent = to_upstream(d.connected(2), 2)
    assert sent.startswith(b"PUT /f HTTP/1.1\r\n") and sent.endswith(b"\r\n\r\nxyz")


def test_post_is_not_retried() -> None:
    d = Driver()
    _second_request_on_kept_alive(d, b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 1\r\n\r\nx")
    out = d.upstream_closed()
    assert_answer(out, 502)
    assert opened(out) == []


def test_retry_happens_once() -> None:
    d = Driver()
    _second_request_on_kept_alive(d, get("/2"))
    d.upstream_closed()
    d.connected(2, reused=True)
    out = d.upstream_closed(2)
    assert_answer(out, 502)
    assert opened(out) == []


def test_pooled_connection_closed_is_retried() -> None:
    # Regression (a bug this suite found): a connection handed out by the pool
    # (UpstreamConnected(reused=True)) is not retried: replay is only armed when the upstream was
    # reused *before* the request head was sent
    d = Driver()
    d.client(GET)
    d.connected(reused=True)
    out = d.upstream_closed()
    assert opened(out) == [OpenUpstream(upstream=2, host="example.com", port=80, reuse=False)]
    assert to_upstream(d.connected(2), 2) == GET_UP


def test_read_timeout_is_504() -> None:
    d = Driver(ProxyConfig(read_timeout=30))
    d.client(GET)
    d.connected()
    assert d.timers["read"] == 1030.0
    out = d.fire("read")
    assert_answer(out, 504, "did not answer within 30 s")
    assert CloseUpstream(upstream=1, reusable=False) in out
    assert finished(out)[0].error


def test_read_timer_rearms_when_there_was_activity() -> None:
    d = Driver(ProxyConfig(read_timeout=30))
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 2\r\n\r\na")
    d.connected()
    d.advance(20)
    d.client(b"b")  # request completes at 1020: the timer starts now
    assert d.timers["read"] == 1050.0
    out = d.fire("read", at=1040.0)  # early (a timer left from before, or a slow transport)
    assert script(out) == [StartTimer(name="read", delay=10.0)]
    out = d.fire("read", at=1050.0)
    assert_answer(out, 504)


def test_read_timer_after_the_response_is_harmless() -> None:
    d = Driver(ProxyConfig(read_timeout=30))
    d.client(GET)
    d.connected()
    d.upstream(ok())
    assert d.fire("read") == []
    assert not closes_client(d.transcript)


def test_read_timeout_survives_a_slow_connect() -> None:
    # Regression (a bug this suite found): a read timer that fires while the upstream is still
    # connecting is dropped and never re-armed: an upstream that connects and then never answers
    # hangs the client forever
    d = Driver(ProxyConfig(read_timeout=5))
    d.client(GET)
    d.fire("read", at=1006.0)  # the connect takes longer than read_timeout
    d.connected()
    assert "read" in d.timers
    assert_answer(d.fire("read"), 504)


def test_stalled_response_body_times_out() -> None:
    # Regression (a bug this suite found): an upstream that stalls after the response headers is
    # never timed out (the read timer ignores started responses, the idle timer treats the exchange
    # as busy forever)
    d = Driver(ProxyConfig(read_timeout=5, idle_timeout=60))
    d.client(GET)
    d.connected()
    d.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
    for _ in range(10):  # ten minutes of silence from the upstream
        name = min(d.timers, key=d.timers.__getitem__)
        if closes_client(d.fire(name)):
            break
    assert closes_client(d.transcript)
    [flow] = finished(d.transcript)
    assert flow.error


def test_idle_timer_closes_an_idle_keep_alive_client() -> None:
    d = Driver(ProxyConfig(idle_timeout=120))
    d.client(GET)
    d.connected()
    d.upstream(ok())
    d.advance(50)
    d.client(get("/2"))  # activity at 1050
    d.upstream(ok())
    out = d.fire("idle")  # due at 1120: only 70 s idle
    assert script(out) == [StartTimer(name="idle", delay=50.0)]
    out = d.fire("idle")
    assert script(out) == [CloseUpstream(upstream=1, reusable=True), CloseClient()]


def test_idle_timer_does_not_close_a_busy_connection() -> None:
    d = Driver(ProxyConfig(idle_timeout=120, read_timeout=1000))
    d.client(GET)
    d.connected()
    out = d.fire("idle")
    assert not closes_client(out) and of_type(out, StartTimer)


def test_idle_timer_answers_408_to_an_unfinished_request_body() -> None:
    # Regression (a bug this suite found): a client that stops in the middle of its request body is
    # never timed out (the 408 branch of the idle check is unreachable: an exchange in flight counts
    # as busy); the connection and its upstream are held forever
    d = Driver(ProxyConfig(idle_timeout=10, read_timeout=1000))
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\n\r\nab")
    d.connected()
    for _ in range(5):
        if "idle" not in d.timers or closes_client(d.fire("idle")):
            break
    assert_answer(d.transcript, 408)
    assert finished(d.transcript)[0].error


def test_idle_timeout_counts_from_the_end_of_the_exchange() -> None:
    # Regression (a bug this suite found): idle time is counted from the client's last byte, not
    # from the end of the last exchange: a keep-alive connection is closed right after a long
    # response
    d = Driver(ProxyConfig(idle_timeout=120, read_timeout=1000))
    d.client(GET)
    d.connected()
    d.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
    d.fire("idle")  # at 1120 the exchange is busy: re-armed for 1240
    d.now = 1239.0
    d.upstream(b"def")  # the response completes at 1239
    out = d.fire("idle")  # 1 s later
    assert not closes_client(out)


# -- more bugs found ---------------------------------------------------------------------


def test_extra_bytes_after_a_response_are_not_the_next_answer() -> None:
    # Regression (a bug this suite found): bytes after a complete response stay in the upstream
    # parser and are served as the answer to the next request on that connection
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(ok(b"one") + ok(b"SMUGGLED"))
    d.client(get("/2"))
    if opened(d.transcript[-3:]):
        d.connected(2)
        d.upstream(ok(b"two"), upstream=2)
    else:
        d.upstream(ok(b"two"))
    assert b"SMUGGLED" not in to_client(d.transcript)


def test_http10_without_host_inside_an_intercepted_tunnel() -> None:
    # Regression (a bug this suite found): an HTTP/1.0 request without Host inside an intercepted
    # CONNECT raises h11 'Missing mandatory Host' (internal error)
    d = Driver(ProxyConfig(intercept=True, server_context=lambda host, alpn=(): ssl.create_default_context()))
    d.client(b"CONNECT example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n")
    out = d.client(b"GET / HTTP/1.0\r\n\r\n")
    assert not errors_logged(out)
    sent = to_upstream(d.connected(1))
    assert field_values(sent, b"host") == [b"example.com"]


def test_no_error_logs_in_normal_exchanges() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(ok())
    d.client(CONNECT.replace(b"example.com", b"other.example"))
    assert not errors_logged(d.transcript)


def test_connection_naming_content_length_does_not_break_framing() -> None:
    # Regression (a bug this suite found): 'Connection: content-length' makes end_to_end_fields drop
    # the request's Content-Length, so h11 refuses the body: internal error
    d = Driver()
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nConnection: content-length\r\n"
             b"Content-Length: 3\r\n\r\nabc")
    d.connected()
    assert not errors_logged(d.transcript)
    sent = to_upstream(d.transcript)
    assert sent.endswith(b"\r\n\r\nabc") and field_values(sent, b"content-length") == [b"3"]


@pytest.mark.parametrize("raw", [BAD_REQUESTS["cl and te"][0], BAD_REQUESTS["loop"][0], BAD_REQUESTS["request line"][0],
                                 b"CONNECT example.com HTTP/1.1\r\nHost: x\r\n\r\n"],
                         ids=["cl and te", "loop", "request line", "connect without port"])
def test_refused_requests_are_recorded(raw: bytes) -> None:
    d = Driver()
    out = d.client(raw)
    assert status_of(to_client(out)) >= 400
    assert any(f.error for f in finished(out)) or of_type(out, Log)


@pytest.mark.parametrize("case", ["connect failed", "bad target", "info page"])
def test_answers_to_head_have_no_body(case: str) -> None:
    d = Driver()
    if case == "connect failed":
        d.client(b"HEAD http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        d.connect_failed()
    elif case == "bad target":
        d.client(b"HEAD http://user@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    else:
        d.client(b"HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    answer = to_client(d.transcript)
    assert answer.endswith(b"\r\n\r\n") and answer.count(b"\r\n\r\n") == 1, answer[-80:]


def test_unsolicited_response_on_an_idle_upstream() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(ok())
    d.upstream(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    out = d.client(get("/2"))
    assert not errors_logged(out)
    assert opened(out) == [OpenUpstream(upstream=2, host="example.com", port=80)]
    d.connected(2)
    assert to_client(d.upstream(ok(b"two"), upstream=2)) == relayed(b"two")


def test_idle_upstream_closing_is_noticed() -> None:
    d = Driver()
    d.client(GET)
    d.connected()
    d.upstream(ok())
    assert script(d.upstream_closed()) == [CloseUpstream(upstream=1, reusable=False)]
    out = d.client(get("/2"))
    assert opened(out) == [OpenUpstream(upstream=2, host="example.com", port=80)]
    assert not closes_client(d.transcript)


def test_early_final_response_before_the_request_body_is_done() -> None:
    # e.g. a 413 while the client still uploads: relay it, then close both sides.
    d = Driver()
    d.client(b"POST http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 100\r\n\r\nfirst part")
    d.connected()
    out = d.upstream(ok(b"too big", status=b"413 Content Too Large"))
    assert status_of(to_client(out)) == 413 and body_of(to_client(out)) == b"too big"
    assert CloseUpstream(upstream=1, reusable=False) in out and closes_client(out)
    assert d.client(b"rest of the body") == []


def test_slow_upstream_connect_pauses_a_large_upload() -> None:
    d = Driver(ProxyConfig(pending_limit=100))
    out = d.client(b"PUT http://example.com/ HTTP/1.1\r\nHost: e\r\nContent-Length: 500\r\n\r\n" + b"x" * 200)
    assert PauseClient() in out  # more than pending_limit is waiting for the upstream
    out = d.connected()
    assert to_upstream(out).endswith(b"x" * 200) and ResumeClient() in out
    assert to_upstream(d.client(b"y" * 300)) == b"y" * 300


def test_pipelined_client_stays_paused_until_its_turn() -> None:
    d = Driver()
    d.client(GET + get("/2"))
    assert ResumeClient() not in d.connected()  # the second request still waits
    out = d.upstream(ok(b"one"))
    assert ResumeClient() in out  # now it is its turn
