"""The filter language: every operator, precedence, errors that point at the mistake."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interceptkit import Flow, FlowTable, Headers, Request, Response, compile_filter
from interceptkit.core.websocket import WebSocketData


def flow(url: str = "http://shop.test/", *, method: str = "GET", status: int | None = 200,
         rtype: str | None = "text/html", qtype: str | None = None, qbody: bytes = b"",
         sbody: bytes = b"<p>hello</p>", qheaders: tuple[tuple[str, str], ...] = (),
         sheaders: tuple[tuple[str, str], ...] = (), error: str | None = None,
         version: str = "HTTP/1.1") -> Flow:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    headers = Headers([("Host", authority), *qheaders] + ([("Content-Type", qtype)] if qtype else []))
    request = Request(method=method, scheme=scheme, host=authority, port=80, path=slash + path,
                      headers=headers, content=qbody, http_version=version)
    result = Flow(id=1, request=request, error=error)
    if status is not None:
        rheaders = Headers([*sheaders] + ([("Content-Type", rtype)] if rtype else []))
        result.response = Response(status=status, headers=rheaders, content=sbody)
    return result


def matches(expr: str, f: Flow) -> bool:
    return compile_filter(expr)(f)


# -- every operator ------------------------------------------------------------------------


@pytest.mark.parametrize("ctype, expected", [
    ("application/javascript", True), ("text/css", True), ("image/png", True), ("font/woff2", True),
    ("application/font-woff", True), ("text/html", False), ("application/json", False),
])
def test_asset(ctype: str, expected: bool) -> None:
    assert matches("~a", flow(rtype=ctype)) is expected


def test_asset_needs_a_response() -> None:
    assert not matches("~a", flow(status=None))


def test_body_any_request_response() -> None:
    post = flow(method="POST", qbody=b'{"user": "ada"}', sbody=b"created")
    assert matches("~b ada", post) and matches("~b created", post)
    assert matches("~bq ada", post) and not matches("~bq created", post)
    assert matches("~bs created", post) and not matches("~bs ada", post)


def test_body_searches_the_decoded_body() -> None:
    f = flow(sbody=gzip.compress(b"secret token"), sheaders=(("Content-Encoding", "gzip"),))
    assert matches("~bs 'secret token'", f)


def test_body_that_does_not_decode_is_searched_raw() -> None:
    f = flow(sbody=b"not gzip at all", sheaders=(("Content-Encoding", "gzip"),))
    assert matches("~bs 'gzip at'", f)


def test_status() -> None:
    assert matches("~c 200", flow()) and not matches("~c 404", flow())
    assert not matches("~c 200", flow(status=None))


def test_domain_regex_case_insensitive() -> None:
    f = flow("http://API.example.com/x")
    assert matches("~d api.example.com", f) and matches(r"~d example\.com$", f)
    assert not matches("~d other.org", f)


def test_error() -> None:
    assert matches("~e", flow(status=None, error="connection refused"))
    assert not matches("~e", flow())


def test_headers_any_request_response() -> None:
    f = flow(qheaders=(("Authorization", "Bearer abc"),), sheaders=(("Set-Cookie", "sid=1"),))
    assert matches("~h 'authorization: bearer'", f) and matches("~h set-cookie", f)
    assert matches("~hq authorization", f) and not matches("~hq set-cookie", f)
    assert matches("~hs 'sid=1'", f) and not matches("~hs authorization", f)


def test_method() -> None:
    assert matches("~m post", flow(method="POST")) and not matches("~m POST", flow())


def test_has_no_response_and_has_response() -> None:
    assert matches("~q", flow(status=None)) and not matches("~q", flow())
    assert matches("~s", flow()) and not matches("~s", flow(status=None))


def test_content_type_any_request_response() -> None:
    f = flow(method="POST", qtype="application/x-www-form-urlencoded", rtype="application/json")
    assert matches("~t json", f) and matches("~t form", f)
    assert matches("~tq form", f) and not matches("~tq json", f)
    assert matches("~ts json", f) and not matches("~ts form", f)


def test_url_and_bare_word() -> None:
    f = flow("http://shop.test/checkout?step=2")
    assert matches("~u /checkout", f) and matches("/checkout", f) and matches("step=2", f)
    assert not matches("~u /cart", f) and not matches("/cart", f)


def test_websocket() -> None:
    f = flow(status=101)
    assert not matches("~websocket", f)
    f.websocket = WebSocketData()
    assert matches("~websocket", f)


def test_http2() -> None:
    assert matches("~http2", flow(version="HTTP/2")) and not matches("~http2", flow())


# -- combining ----------------------------------------------------------------------------------


def test_not_and_or() -> None:
    post201 = flow(method="POST", status=201)
    assert matches("~m POST & ~c 201", post201)
    assert not matches("~m POST & ~c 200", post201)
    assert matches("~c 200 | ~c 201", post201)
    assert matches("!~c 200", post201) and not matches("!~c 201", post201)


def test_side_by_side_means_and() -> None:
    assert matches("~m POST ~c 201", flow(method="POST", status=201))
    assert not matches("~m POST ~c 201", flow(method="GET", status=201))


def test_and_binds_tighter_than_or() -> None:
    get = flow(method="GET", status=500)
    # (~m POST & ~c 201) | ~c 500 -> true; ~m POST & (~c 201 | ~c 500) -> false
    assert matches("~m POST & ~c 201 | ~c 500", get)
    assert not matches("~m POST & (~c 201 | ~c 500)", get)


def test_not_binds_tighter_than_and() -> None:
    f = flow(method="GET", status=200)
    assert not matches("!~m GET & ~c 200", f)       # (!GET) & 200
    assert matches("!(~m GET & ~c 404)", f)


def test_quoted_values_with_spaces_and_specials() -> None:
    f = flow("http://shop.test/a?x=1&y=(2)", sbody=b"hello world")
    assert matches('~bs "hello world"', f)
    assert matches(r"~u 'x=1&y=\(2\)'", f)
    assert matches(r'~bs "hello \"world" | ~c 200', f)


def test_keyword_filters_and_callables_still_work() -> None:
    table = FlowTable([flow(method="POST", status=201), flow()])
    assert len(table.where("~m POST & ~c 201")) == 1
    assert len(table.where(method="POST")) == 1
    assert len(table.where(lambda f: f.response is not None and f.response.status == 200)) == 1
    assert len(table.where("~s", method="GET")) == 1


# -- errors point at the mistake ---------------------------------------------------------


@pytest.mark.parametrize("expr, pos, words", [
    ("~m GET & ~x", 9, "unknown operator '~x'"),
    ("~m", 2, "~m needs a value"),
    ("~c abc", 3, "three-digit status"),
    ("(~m GET", 7, "expected ')'"),
    ("~m GET )", 7, "unexpected ')'"),
    ("~m GET &", 8, "expected a filter, found end"),
    ("", 0, "empty filter"),
    ("~u 'open", 3, "unterminated"),
    ("~u a(b", 6, "expected ')' (to close the '(' at 4)"),
    ("~d ab[", 5, "bad regular expression"),
    ("~m GET | | ~c 200", 9, "expected a filter, found '|'"),
])
def test_error_shows_a_caret_at_the_position(expr: str, pos: int, words: str) -> None:
    with pytest.raises(ValueError) as info:
        compile_filter(expr)
    message = str(info.value)
    assert words in message and f"position {pos}" in message
    lines = message.splitlines()
    assert lines[1] == f"  {expr}"
    assert lines[2] == "  " + " " * pos + "^"


def test_deep_nesting_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="nested deeper"):
        compile_filter("(" * 500 + "~s" + ")" * 500)
    with pytest.raises(ValueError, match="nested deeper"):
        compile_filter("!" * 500 + "~s")


def test_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        compile_filter(42)  # type: ignore[arg-type]


_ALPHABET = st.sampled_from(list("~!&|()'\"\\ abcdemqsuthwp2[]*+?.^$0123456789{}") +
                            ["~m", "~c", "~bq", "~hs", "~websocket", "~http2", "~a", " & ", " | "])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(_ALPHABET, max_size=25).map("".join)))
def test_parsing_never_raises_anything_but_value_error(expr: str) -> None:
    samples = [flow(), flow(status=None, error="x"), flow(method="POST", qbody=b"\x00\xff")]
    try:
        predicate = compile_filter(expr)
    except ValueError:
        return
    for sample in samples:  # and what compiles, runs on any flow
        assert predicate(sample) in (True, False)
