"""What the CLI prints per flow (interceptkit.flowlog), built from Flow objects."""

from __future__ import annotations

import gzip

import pytest

from interceptkit.flow import Flow, Headers, Request, Response
from interceptkit.flowlog import FlowFormatter, answered_status, body_preview


def make_flow(response: Response | None = None, error: str | None = None, **request: object) -> Flow:
    fields = dict(method="GET", scheme="http", host="example.test", port=80, path="/x")
    fields.update(request)  # type: ignore[arg-type]
    flow = Flow(id=1, request=Request(**fields), response=response, error=error)  # type: ignore[arg-type]
    flow.timings.start, flow.timings.end = 10.0, 10.012
    return flow


def test_one_line_at_detail_1():
    flow = make_flow(Response(status=200, content=b"x" * 2048))
    assert FlowFormatter(1).format(flow) == "GET http://example.test/x 200 2.0kB 12ms"


def test_a_failure_shows_the_status_the_proxy_answered():
    refused = make_flow(error="cannot connect to 127.0.0.1:1: Connection refused")
    assert FlowFormatter(1).format(refused).split()[2] == "502"
    slow = make_flow(error="cannot connect to 10.0.0.1:80: connect timed out after 10 s")
    assert answered_status(slow) == 504
    assert answered_status(make_flow(error="upstream did not answer within 60 s")) == 504
    killed = make_flow(error="killed by a hook")
    assert answered_status(killed) is None
    assert FlowFormatter(1).format(killed) == "GET http://example.test/x ERR - 12ms (killed by a hook)"


def test_detail_0_is_empty_and_other_values_are_refused():
    assert FlowFormatter(0).format(make_flow(Response(status=200))) == ""
    with pytest.raises(ValueError):
        FlowFormatter(4)


def test_detail_2_headers_with_proxy_credentials_redacted():
    headers = Headers([("Accept", "*/*"), ("Proxy-Authorization", "Basic dXNlcjpwYXNz")])
    flow = make_flow(Response(status=404, reason="Not Found", headers=Headers([("Server", "t")])),
                     headers=headers)
    lines = FlowFormatter(2).format(flow).splitlines()
    assert lines[1:] == [
        "    > GET /x HTTP/1.1", "    > Accept: */*", "    > Proxy-Authorization: [redacted]",
        "    < HTTP/1.1 404 Not Found", "    < Server: t",
    ]


def test_detail_3_decodes_and_cuts_text_at_4_kib():
    text = ("line\n" * 2000).encode()
    response = Response(status=200, headers=Headers([("Content-Encoding", "gzip"),
                                                     ("Content-Type", "text/plain")]),
                        content=gzip.compress(text))
    preview = body_preview(response)
    assert preview.startswith("line\nline\n")
    assert preview.endswith(f"... {len(text) - 4096:,} more bytes")
    assert len(preview) < 4200


def test_binary_body_is_a_hex_summary():
    response = Response(status=200, content=bytes(range(256)))
    assert body_preview(response) == ("<binary, 256 bytes: 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f ...>")


def test_a_truncated_capture_says_so():
    response = Response(status=200, content=b"abc")
    response.body_size, response.truncated = 10_000, True
    assert body_preview(response) == "abc (captured 3B of 10.0kB)"


def test_colours_only_when_asked():
    flow = make_flow(Response(status=503))
    assert "\033[" not in FlowFormatter(1, color=False).format(flow)
    assert "\033[1m\033[31m503\033[0m" in FlowFormatter(1, color=True).format(flow)
