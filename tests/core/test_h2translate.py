"""Header translation between HTTP/1.1 and HTTP/2 heads."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events

from interceptkit.core.h2translate import (
    h1_request_to_h2,
    h1_response_to_h2,
    h2_request_to_h1,
    h2_response_to_h1,
    reason_phrase,
    strip_h2c_upgrade,
    trailers_for_h1,
)
from interceptkit.core.http2 import request_fields
from interceptkit.core.layers import RequestHead, ResponseHead


def h2_get(target: bytes = b"/", **kw: object) -> RequestHead:
    fields: dict[str, object] = {"method": b"GET", "scheme": b"https", "authority": b"a.test", "http_version": b"2"}
    return RequestHead(target=target, **{**fields, **kw})  # type: ignore[arg-type]


def h1(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> RequestHead:
    return RequestHead(method=method, target=target, headers=headers)


def test_h2_request_to_h1_puts_host_first_and_joins_cookies() -> None:
    head = h2_get(b"/p?q=1", authority=b"example.test:8443",
                  headers=[(b"accept", b"*/*"), (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")])
    assert h2_request_to_h1(head) == RequestHead(method=b"GET", target=b"/p?q=1", http_version=b"1.1", headers=[
        (b"host", b"example.test:8443"), (b"accept", b"*/*"), (b"cookie", b"a=1; b=2"), (b"x", b"y")])


def test_h2_request_authority_wins_over_a_host_field() -> None:
    assert h2_request_to_h1(h2_get(headers=[(b"host", b"evil.test")])).headers == [(b"host", b"a.test")]


def test_h2_connect_targets_the_authority() -> None:
    head = RequestHead(method=b"CONNECT", target=b"db.test:5432", authority=b"db.test:5432", http_version=b"2")
    assert h2_request_to_h1(head) == RequestHead(method=b"CONNECT", target=b"db.test:5432",
                                                 headers=[(b"host", b"db.test:5432")])


def test_h1_connect_becomes_an_h2_connect_with_the_authority() -> None:
    head = h1_request_to_h2(h1(b"CONNECT", b"db.test:5432", [(b"Host", b"db.test:5432")]), scheme=b"https")
    assert (head.target, head.authority, head.scheme) == (b"db.test:5432", b"db.test:5432", None)
    assert request_fields(head)[:2] == [(b":method", b"CONNECT"), (b":authority", b"db.test:5432")]


def test_h1_request_to_h2_lowercases_and_drops_connection_fields_but_keeps_te_trailers() -> None:
    headers = [(b"Host", b"api.test"), (b"Content-Type", b"application/grpc"), (b"TE", b"trailers, deflate"),
               (b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"), (b"Keep-Alive", b"timeout=5"),
               (b"Proxy-Connection", b"keep-alive"), (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"h2c"),
               (b"HTTP2-Settings", b"AAMAAABkAAQCAAAAAAIAAAAA"), (b"Cookie", b"a=1")]
    head = h1_request_to_h2(h1(b"POST", b"/svc/Method", headers), scheme=b"https")
    assert head == RequestHead(method=b"POST", target=b"/svc/Method", scheme=b"https", authority=b"api.test",
                               http_version=b"2", headers=[(b"content-type", b"application/grpc"),
                                                           (b"cookie", b"a=1"), (b"te", b"trailers")])


def test_h1_te_without_trailers_is_dropped() -> None:
    head = h1_request_to_h2(h1(b"GET", b"/", [(b"Host", b"a"), (b"TE", b"gzip")]), scheme=b"http")
    assert head.headers == []


def test_h1_absolute_form_target_supplies_scheme_and_authority() -> None:
    head = h1_request_to_h2(h1(b"GET", b"http://a.test:8080/x?y", [(b"Host", b"a.test:8080")]), scheme=b"https")
    assert (head.scheme, head.authority, head.target) == (b"http", b"a.test:8080", b"/x?y")
    bare = h1_request_to_h2(h1(b"GET", b"http://a.test", []), scheme=b"https")
    assert (bare.authority, bare.target) == (b"a.test", b"/")


def test_the_upstream_layer_refuses_heads_http2_cannot_carry() -> None:
    assert request_fields(h1(b"GET", b"/", [])) == "request head without a scheme (HTTP/2 needs :scheme)"
    absolute = RequestHead(method=b"GET", target=b"http://a.test/x", scheme=b"http")
    assert request_fields(absolute) == "request target not in origin form (HTTP/2 needs a :path)"


def test_translated_h1_request_is_accepted_by_a_validating_h2_server() -> None:
    """What h1_request_to_h2 produces, framed as the upstream layer frames it, passes h2's own inbound validation."""
    head = h1_request_to_h2(h1(b"GET", b"/", [(b"Host", b"a.test"), (b"User-Agent", b"curl"), (b"TE", b"trailers"),
                                              (b"Connection", b"close")]), scheme=b"https")
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    fields = request_fields(head)
    assert not isinstance(fields, str)
    client.send_headers(1, fields, end_stream=True)
    events = server.receive_data(client.data_to_send())
    request = next(e for e in events if isinstance(e, h2.events.RequestReceived))
    assert (b"user-agent", b"curl") in request.headers and (b"te", b"trailers") in request.headers
    assert (b":authority", b"a.test") in request.headers and (b":path", b"/") in request.headers


def test_responses_both_ways() -> None:
    h1_head = ResponseHead(status=200, reason=b"OK", headers=[
        (b"Content-Type", b"text/html"), (b"Connection", b"keep-alive"), (b"Transfer-Encoding", b"chunked"),
        (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")])
    assert h1_response_to_h2(h1_head) == ResponseHead(
        status=200, http_version=b"2",
        headers=[(b"content-type", b"text/html"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")])
    assert h2_response_to_h1(ResponseHead(status=404, headers=[(b"content-length", b"3")], http_version=b"2")) == \
        ResponseHead(status=404, reason=b"Not Found", headers=[(b"content-length", b"3")])
    assert reason_phrase(299) == b""
    assert h2_response_to_h1(ResponseHead(status=599)).reason == b""


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
