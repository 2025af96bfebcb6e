"""The flow model as hooks and notebooks use it: headers, bodies, URLs, timings."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from interceptkit import Flow, Headers, Request, Response


def _request(**kwargs: object) -> Request:
    defaults: dict[str, object] = dict(method="GET", scheme="https", host="api.example.test", port=443,
                                       path="/users?id=7&sort=name")
    defaults.update(kwargs)
    return Request(**defaults)  # type: ignore[arg-type]


def test_headers_are_case_insensitive_and_keep_wire_order_and_casing() -> None:
    headers = Headers([("Content-Type", "text/html"), ("Set-Cookie", "a=1"), ("set-cookie", "b=2")])
    assert headers["content-type"] == "text/html"
    assert headers.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert headers.fields == [(b"Content-Type", b"text/html"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")]
    assert "CONTENT-TYPE" in headers and "x-missing" not in headers


def test_assigning_a_header_replaces_every_value_in_place_of_the_first() -> None:
    headers = Headers([("A", "1"), ("X-Multi", "one"), ("B", "2"), ("x-multi", "two")])
    headers["X-MULTI"] = "only"
    assert headers.items() == [("A", "1"), ("X-Multi", "only"), ("B", "2")]
    headers.add("X-New", "n")
    del headers["a"]
    assert headers.items() == [("X-Multi", "only"), ("B", "2"), ("X-New", "n")]
    with pytest.raises(KeyError):
        del headers["absent"]


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send
])
def test_text_and_json_undo_content_encoding(encoding: str, compress: object) -> None:
    body = json.dumps({"name": "Zoë"}, ensure_ascii=False).encode("utf-8")
    response = Response(status=200, headers=Headers([("Content-Encoding", encoding),
                                                     ("Content-Type", "application/json")]),
                        content=compress(body))  # type: ignore[operator]
    assert response.json() == {"name": "Zoë"}
    assert "Zoë" in response.text


def test_text_uses_the_declared_charset() -> None:
    response = Response(status=200, headers=Headers([("Content-Type", "text/plain; charset=iso-8859-1")]),
                        content="café".encode("latin-1"))
    assert response.text == "café"


def test_unknown_content_encoding_is_a_clear_error() -> None:
    response = Response(status=200, headers=Headers([("Content-Encoding", "snappy")]), content=b"x")
    with pytest.raises(ValueError, match="unsupported Content-Encoding: snappy"):
        response.decoded_content()


def test_setting_text_keeps_content_length_in_step_and_drops_the_encoding() -> None:
    response = Response(status=200, headers=Headers([("Content-Encoding", "gzip"), ("Content-Length", "99")]),
                        content=gzip.compress(b"old"))
    response.text = "new body"
    assert response.content == b"new body"
    assert response.headers["content-length"] == "8"
    assert "content-encoding" not in response.headers


def test_request_url_and_query_are_derived_and_settable() -> None:
    request = _request()
    assert request.url == "https://api.example.test/users?id=7&sort=name"
    assert request.query == {"id": "7", "sort": "name"}
    assert request.path_only == "/users"
    request.url = "http://other.test:8080/x?y=1"
    assert (request.scheme, request.host, request.port, request.path) == ("http", "other.test", 8080, "/x?y=1")
    assert _request(host="::1", port=8443).url == "https://[::1]:8443/users?id=7&sort=name"


def test_respond_builds_a_json_answer_and_marks_the_flow_mocked() -> None:
    flow = Flow(id=1, request=_request())
    flow.respond(201, json={"ok": True}, headers={"X-Mock": "yes"})
    assert flow.response is not None
    assert flow.response.status == 201
    assert flow.response.json() == {"ok": True}
    assert flow.response.headers["content-type"] == "application/json"
    assert flow.response.headers["content-length"] == str(len(flow.response.content))
    assert flow.response.headers["x-mock"] == "yes"
    assert flow.metadata["mocked"] is True


def test_timing_phases_are_durations_between_the_recorded_points() -> None:
    flow = Flow(id=1, request=_request())
    t = flow.timings
    t.start, t.connect_start, t.connect_end, t.tls_end = 100.0, 100.0, 100.010, 100.030
    t.request_sent, t.response_start, t.end = 100.031, 100.131, 100.181
    phases = t.phases()
    assert phases["connect"] == pytest.approx(0.010)
    assert phases["tls"] == pytest.approx(0.020)
    assert phases["wait"] == pytest.approx(0.100)
    assert phases["receive"] == pytest.approx(0.050)
    assert flow.duration == pytest.approx(0.181)


def test_a_flow_without_a_connect_has_no_connect_phase() -> None:
    flow = Flow(id=1, request=_request())
    flow.timings.start, flow.timings.end = 5.0, 5.5
    assert flow.timings.phases()["connect"] is None
