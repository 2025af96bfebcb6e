"""Header translation between HTTP/1.1 and HTTP/2 heads."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events

from interceptkit.core.h2events import RequestHead, ResponseHead
from interceptkit.core.h2translate import (
    h1_request_to_h2,
    h1_response_to_h2,
    h2_request_to_h1,
    h2_response_to_h1,
    reason_phrase,
    strip_h2c_upgrade,
    trailers_for_h1,
)


def test_h2_request_to_h1_puts_host_first_and_joins_cookies() -> None:
    head = RequestHead(method=b"GET", scheme=b"https", authority=b"example.test:8443", path=b"/p?q=1",
                       headers=[(b"accept", b"*/*"), (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")])
    assert h2_request_to_h1(head) == (b"GET", b"/p?q=1", [
        (b"host", b"example.test:8443"), (b"accept", b"*/*"), (b"cookie", b"a=1; b=2"), (b"x", b"y")])


def test_h2_request_authority_wins_over_a_host_field() -> None:
    head = RequestHead(method=b"GET", scheme=b"https", authority=b"a.test", path=b"/",
                       headers=[(b"host", b"evil.test")])
    assert h2_request_to_h1(head)[2] == [(b"host", b"a.test")]


def test_h2_connect_targets_the_authority() -> None:
    head = RequestHead(method=b"CONNECT", scheme=b"", authority=b"db.test:5432", path=b"")
    assert h2_request_to_h1(head) == (b"CONNECT", b"db.test:5432", [(b"host", b"db.test:5432")])


def test_h1_request_to_h2_lowercases_and_drops_connection_fields_but_keeps_te_trailers() -> None:
    headers = [(b"Host", b"api.test"), (b"Content-Type", b"application/grpc"), (b"TE", b"trailers, deflate"),
               (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"Keep-Alive", b"timeout=5"),
               (b"Proxy-Connection", b"keep-alive"), (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"h2c"),
               (b"HTTP2-Settings", b"AAMAAABkAAQCAAAAAAIAAAAA"), (b"Cookie", b"a=1")]
    head = h1_request_to_h2(b"POST", b"/svc/Method", headers, scheme=b"https")
    assert head == RequestHead(method=b"POST", scheme=b"https", authority=b"api.test", path=b"/svc/Method",
                               headers=[(b"content-type", b"application/grpc"), (b"cookie", b"a=1"),
                                        (b"te", b"trailers")])


def test_h1_te_without_trailers_is_dropped() -> None:
    head = h1_request_to_h2(b"GET", b"/", [(b"Host", b"a"), (b"TE", b"gzip")], scheme=b"http")
    assert head.headers == []


def test_h1_absolute_form_target_supplies_scheme_and_authority() -> None:
    head = h1_request_to_h2(b"GET", b"http://a.test:8080/x?y", [(b"Host", b"a.test:8080")], scheme=b"https")
    assert (head.scheme, head.authority, head.path) == (b"http", b"a.test:8080", b"/x?y")
    bare = h1_request_to_h2(b"GET", b"http://a.test", [], scheme=b"https")
    assert (bare.authority, bare.path) == (b"a.test", b"/")


def test_translated_h1_request_is_accepted_by_a_validating_h2_server() -> None:
    """What h1_request_to_h2 produces passes h2's own inbound validation."""
    head = h1_request_to_h2(b"GET", b"/", [(b"Host", b"a.test"), (b"User-Agent", b"curl"), (b"TE", b"trailers"),
                                           (b"Connection", b"close")], scheme=b"https")
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    fields = [(b":method", head.method), (b":scheme", head.scheme), (b":path", head.path),
              (b":authority", head.authority), *head.headers]
    client.send_headers(1, fields, end_stream=True)
    events = server.receive_data(client.data_to_send())
    request = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert (b"user-agent", b"curl") in request.headers and (b"te", b"trailers") in request.headers


def test_responses_both_ways() -> None:
    assert h1_response_to_h2(200, [(b"Content-Type", b"text/html"), (b"Connection", b"keep-alive"),
                                   (b"Transfer-Encoding", b"chunked"), (b"Set-Cookie", b"a=1"),
                                   (b"Set-Cookie", b"b=2")]) == ResponseHead(
        status=200, headers=[(b"content-type", b"text/html"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")])
    assert h2_response_to_h1(ResponseHead(status=404, headers=[(b"content-length", b"3")])) == (
        404, b"Not Found", [(b"content-length", b"3")])
    assert reason_phrase(299) == b""
    assert h2_response_to_h1(ResponseHead(status=599))[1] == b""


def test_trailers_reach_an_h1_client_only_when_chunked() -> None:
    trailers = [(b"grpc-status", b"0")]
    assert trailers_for_h1(trailers, chunked=True) == trailers
    assert trailers_for_h1(trailers, chunked=False) is None


def test_upgrade_h2c_is_stripped_other_upgrades_kept() -> None:
    offer = [(b"Host", b"a"), (b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"h2c"),
             (b"HTTP2-Settings", b"AAMAAABkAAQCAAAAAAIAAAAA")]
    assert strip_h2c_upgrade(offer) == [(b"Host", b"a")]
    mixed = [(b"Connection", b"Upgrade, HTTP2-Settings"), (b"Upgrade", b"websocket, h2c")]
    assert strip_h2c_upgrade(mixed) == [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
