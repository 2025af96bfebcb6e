"""Redaction, request matching and the fault decisions, without sockets.

Flows are built by hand; the fault objects get time as an argument, so
nothing here sleeps.
"""

from __future__ import annotations

import json

import pytest

from interceptkit import Redact
from interceptkit.faults import Cut, Dribble, Throttle, split_options
from interceptkit.flow import Flow, Headers, Request, Response
from interceptkit.matching import RequestPattern, check_match_on, differences, explain_miss


def request(url: str = "https://api.test/items?page=1&sort=asc", method: str = "GET", *,
            headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> Request:
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    req = Request(method=method, scheme=scheme, host=host, port=443 if scheme == "https" else 80,
                  path="/" + path, headers=Headers(headers or []))
    req.content, req.body_size = body, len(body)
    return req


# -- redaction -----------------------------------------------------------------------------


def test_default_redaction_hides_credential_headers_and_leaves_the_flow_alone() -> None:
    live = request(headers=[("Authorization", "Bearer abc"), ("Cookie", "sid=1"), ("Accept", "*/*")])
    flow = Flow(id=1, request=live, response=Response(status=200, headers=Headers([("Set-Cookie", "sid=2")])))
    copy = Redact().flow(flow)
    assert copy.request.headers["Authorization"] == "<redacted>" and copy.request.headers["Cookie"] == "<redacted>"
    assert copy.response.headers["Set-Cookie"] == "<redacted>"  # type: ignore[union-attr]
    assert copy.request.headers["Accept"] == "*/*"
    assert flow.request.headers["Authorization"] == "Bearer abc"  # never the live traffic


def test_query_json_fields_and_values() -> None:
    redact = Redact(headers=(), query=["key"], json_fields=["password"], values=["tok-123"])
    live = request("https://api.test/login?key=k&user=tok-123", "POST",
                   headers=[("Content-Type", "application/json"), ("X-Api", "tok-123")],
                   body=json.dumps({"user": "ada", "nested": {"password": "pw"}, "note": "tok-123"}).encode())
    hidden = redact.request(live)
    assert hidden.path == "/login?key=<redacted>&user=<redacted>"
    assert hidden.headers["X-Api"] == "<redacted>"
    assert json.loads(hidden.content) == {"user": "ada", "nested": {"password": "<redacted>"}, "note": "<redacted>"}
    assert b"tok-123" in live.content


def test_redact_adds_to_what_is_set() -> None:
    redact = Redact().add(headers="X-Secret", values=["v"])
    assert {"authorization", "x-secret"} <= redact.headers and redact.values == ["v"]


# -- matching ------------------------------------------------------------------------------


def test_query_is_order_insensitive_and_says_what_differs() -> None:
    recorded = request("https://api.test/items?sort=asc&page=1")
    assert differences(request("https://api.test/items?page=1&sort=asc"), recorded, ["url"]) == []
    assert differences(request("https://api.test/items?page=2&sort=asc"), recorded, ["url"]) == [
        "query: page=2 vs page=1"]
    assert differences(request("https://api.test/other?page=1&sort=asc", "POST"), recorded,
                       ["method", "path"]) == ["method: POST vs GET", "path: /other vs /items"]


def test_redacted_recorded_fields_match_anything() -> None:
    recorded = request("https://api.test/items?key=<redacted>", headers=[("Authorization", "<redacted>")])
    live = request("https://api.test/items?key=other", headers=[("Authorization", "Bearer t")])
    assert differences(live, recorded, ["url", "headers:authorization"]) == []


def test_json_and_body_and_callable_matchers() -> None:
    a = request(method="POST", body=b'{"a": 1, "b": [1, 2]}')
    b = request(method="POST", body=b'{"b":[1,2],"a":1}')
    assert differences(a, b, ["json"]) == [] and differences(a, b, ["body"])[0].startswith("body: 21 bytes vs 17")

    def same_length(live: Request, recorded: Request) -> bool:
        return len(live.content) == len(recorded.content)

    assert differences(a, b, [same_length]) == ["matcher same_length: no match"]


def test_unknown_matchers_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown matcher 'verb'"):
        check_match_on(["method", "verb"])
    assert check_match_on("url") == ("url",)


def test_a_miss_names_the_nearest_candidate() -> None:
    near = RequestPattern("GET", "https://api.test/items", query={"page": "1"}, label="mock near")
    far = RequestPattern("POST", "https://other.test/*", label="mock far")
    text = explain_miss(request("https://api.test/items?page=2"), [far, near])
    assert "GET https://api.test/items?page=2" in text and "mock far: method: GET vs POST" in text
    assert text.split("nearest: ")[1].startswith("mock near\n  query: page=2 vs page=1")


# -- the fault decisions: time in, decision out -----------------------------------------------


def test_throttle_spreads_bytes_over_time() -> None:
    pacer = Throttle(1000)
    assert pacer.delay(100.0, 500) == pytest.approx(0.5)
    assert pacer.delay(100.5, 500) == pytest.approx(0.5)  # 1000 bytes due by t=101
    assert pacer.delay(103.0, 100) == 0.0  # late already: no wait


def test_cut_and_dribble() -> None:
    cut = Cut(10)
    assert cut.take(b"12345") == (b"12345", False)
    assert cut.take(b"6789abcdef") == (b"6789a", True)
    assert cut.take(b"more") == (b"", False)
    assert Dribble(chunk=3, interval=0.1).pieces(b"abcdefg") == [b"abc", b"def", b"g"]


def test_fault_options_are_split_from_filters() -> None:
    options, filters = split_options("delay", {"seconds": 2, "path": "/slow"})
    assert options == {"seconds": 2} and filters == {"path": "/slow"}
    with pytest.raises(ValueError, match="at='later'"):
        split_options("reset", {"at": "later"})


def test_a_miss_lists_at_most_twenty_candidates_nearest_first() -> None:
    candidates = [RequestPattern("GET", f"https://api.test/{i}", label=f"mock {i}") for i in range(30)]
    candidates.append(RequestPattern("GET", "https://api.test/items", query={"page": "1"}, label="mock near"))
    text = explain_miss(request("https://api.test/items?page=2"), candidates)
    assert text.count("  - mock") == 20 and "... and 11 more, further away" in text
    assert text.index("  - mock near") < text.index("  - mock 0")
