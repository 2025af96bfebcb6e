"""What a user sees: the table and a flow in Jupyter (HTML) and in a terminal (text)."""

from __future__ import annotations

import gzip
import re
from xml.etree import ElementTree

from interceptkit import Flow, FlowTable, Headers, Request, Response
from interceptkit.display import human_duration, human_size
from interceptkit.flow import Timings

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
T0 = 1_700_000_000.0


def make_flow(id: int, url: str = "http://shop.test/", *, status: int | None = 200, body: bytes = b"ok",
              ctype: str = "text/plain", duration: float | None = 0.0123, error: str | None = None,
              headers: list[tuple[str, str]] | None = None) -> Flow:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    request = Request(method="GET", scheme=scheme, host=authority, port=443 if scheme == "https" else 80,
                      path=slash + path, headers=Headers([("Host", authority), ("Accept", "*/*")]))
    flow = Flow(id=id, request=request, client_address=("127.0.0.1", 40000 + id), error=error)
    if status is not None:
        flow.response = Response(status=status, reason="Reason", content=body,
                                 headers=Headers([("Content-Type", ctype), *(headers or [])]))
    start = T0 + id * 0.01
    flow.timings = Timings(start=start, connect_start=start + 0.001, connect_end=start + 0.002,
                           tls_end=start + 0.003, request_sent=start + 0.004, response_start=start + 0.008,
                           end=None if duration is None else start + duration)
    flow.state = "open" if duration is None else ("error" if error else "done")
    return flow


def cells(html: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", html)


# -- values ------------------------------------------------------------------------------


def test_human_sizes_and_durations() -> None:
    assert [human_size(n) for n in (0, 999, 1500, 2_500_000, None)] == ["0 B", "999 B", "1.5 kB", "2.5 MB", ""]
    assert [human_duration(s) for s in (0.000_25, 0.0123, 1.5)] == ["250 µs", "12.3 ms", "1.50 s"]


# -- the table -----------------------------------------------------------------------------


def test_table_html_is_compact_colored_and_human() -> None:
    long_url = "http://shop.test/" + "very-long-segment/" * 10 + "end?q=1"
    table = FlowTable([
        make_flow(1, body=b"x" * 1500), make_flow(2, status=404), make_flow(3, status=503),
        make_flow(4, long_url), make_flow(5, status=None, duration=None),
        make_flow(6, status=None, error="cannot resolve nowhere.test"),
    ])
    html = table._repr_html_()
    assert html.count("<tr>") == 7  # header + 6 rows
    assert "<th" in html and ">status</th>" in html and ">url</th>" in html
    assert "1.5 kB" in html and "12.3 ms" in html
    assert re.search(r"color:#2e7d32[^>]*>200<", html)  # 2xx green
    assert re.search(r"color:#e65100[^>]*>404<", html)  # 4xx orange
    assert re.search(r"color:#c62828[^>]*>503<", html)  # 5xx red
    assert re.search(r'title="in flight|title="open', html) and ">…<" in html
    assert 'title="cannot resolve nowhere.test"' in html and ">error<" in html
    assert f'title="{long_url}"' in html  # the whole URL on hover
    shown = next(c for c in cells(html) if "very-long" in c)
    assert "…" in shown and len(re.sub("<[^>]+>", "", shown)) <= 60
    assert "6 flows · 1 in flight" in html


def test_table_html_escapes_what_came_off_the_wire() -> None:
    flow = make_flow(1, "http://shop.test/<script>alert(1)</script>", ctype="text/html<img src=x onerror=alert(1)>")
    html = FlowTable([flow])._repr_html_()
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html


def test_table_html_shows_the_newest_rows_of_a_big_table() -> None:
    html = FlowTable([make_flow(i) for i in range(1, 251)])._repr_html_()
    assert html.count("<tr>") == 201 and ">250<" in html and ">50<" not in html
    assert "showing the newest 200" in html


def test_selected_columns_are_what_is_shown() -> None:
    html = FlowTable([make_flow(1)]).select("method", "status")._repr_html_()
    assert re.findall(r"<th[^>]*>(\w+)</th>", html) == ["method", "status"]


def test_text_repr_is_aligned_and_bounded() -> None:
    table = FlowTable([make_flow(i, status=200 + i) for i in range(1, 26)])
    lines = repr(table).splitlines()
    assert lines[0] == "<FlowTable: 25 flows>"
    assert "5 earlier flows not shown" in lines[1]
    header, first = lines[2], lines[3]
    assert header.split() == ["id", "time", "method", "url", "status", "content_type", "response_size", "duration"]
    assert header.index("status") == first.index("206")  # columns line up
    assert len(lines) == 3 + 20
    assert repr(FlowTable()) == "<FlowTable: 0 flows>"


# -- one flow -------------------------------------------------------------------------------


def test_flow_html_has_request_and_response_side_by_side() -> None:
    flow = make_flow(1, "https://api.shop.test/v1/items", body=b'{"items":[1,2],"next":null}',
                     ctype="application/json", headers=[("X-Trace", "abc")])
    html = flow._repr_html_()
    sides = re.findall(r'<td style="vertical-align:top[^"]*"><div style="font-weight:700">(\w+)</div>', html)
    assert sides == ["Request", "Response"]
    assert "GET /v1/items HTTP/1.1" in html and "HTTP/1.1 200 Reason" in html
    assert ">X-Trace<" in html and ">abc<" in html and ">Accept<" in html
    text = re.sub(r"<[^>]+>", "", html).replace("&quot;", '"')
    assert '"items": [ 2 items12]' in text and '"next": null' in text  # JSON as a tree
    assert "<details open" in html and "<script" not in html
    assert "12.3 ms" in html


def test_flow_html_bodies_text_image_binary_truncated_gzip() -> None:
    text = make_flow(1, body="héllo <b>world</b>".encode(), ctype="text/plain; charset=utf-8")._repr_html_()
    assert "héllo &lt;b&gt;world&lt;/b&gt;" in text
    image = make_flow(2, body=PNG, ctype="image/png")._repr_html_()
    assert '<img src="data:image/png;base64,iVBORw0KGgo' in image
    binary = make_flow(3, body=bytes(range(40)), ctype="application/octet-stream")._repr_html_()
    assert "00000000  00 01 02 03" in binary and "binary" in binary
    cut = make_flow(4, body=b"a" * 100)
    assert cut.response is not None
    cut.response.body_size, cut.response.truncated = 10_000, True
    assert "only the first 100 B of 10.0 kB were kept" in cut._repr_html_()
    zipped = make_flow(5, body=gzip.compress(b'{"zipped": true}'), ctype="application/json",
                       headers=[("Content-Encoding", "gzip")])
    assert '"zipped": true' in re.sub(r"<[^>]+>", "", zipped._repr_html_()).replace("&quot;", '"')


def test_flow_html_waterfall_and_errors() -> None:
    flow = make_flow(1, "https://shop.test/", status=502, error="upstream refused")
    flow.hook_errors.append("request hook f raised: ValueError: nope")
    html = flow._repr_html_()
    assert "<svg" in html and html.count("<rect") == 6  # blocked connect tls send wait receive
    for phase in ("connect 1.0 ms", "tls 1.0 ms", "wait 4.0 ms"):
        assert phase in html
    assert "upstream refused" in html and "ValueError: nope" in html
    waiting = make_flow(2, status=None, duration=None)._repr_html_()
    assert "in flight" in waiting and "open" in waiting


# -- the timeline ----------------------------------------------------------------------------


def test_timeline_is_inline_svg_with_a_row_per_flow() -> None:
    table = FlowTable([make_flow(i, f"http://shop.test/p{i}") for i in range(1, 6)])
    timeline = table.timeline()
    html = timeline._repr_html_()
    assert html.startswith("<div><svg") and html.count("<g>") == 5
    assert "#3 GET shop.test/p3" in html and "<title>GET http://shop.test/p3 → 200</title>" in html
    assert timeline.to_svg().startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    ElementTree.fromstring(timeline.to_svg())  # well-formed: it also opens as an .svg file
    text = repr(timeline).splitlines()
    assert text[0].startswith("<Timeline: 5 flows over") and len(text) == 6
    assert all("|" in line and "█" in line for line in text[1:])
    starts = [line.index("▓") for line in text[1:]]
    assert starts == sorted(starts)  # later flows start further right
    assert FlowTable().timeline()._repr_html_() == "<i>no flows</i>"
    assert len(FlowTable([make_flow(i) for i in range(1, 30)]).timeline(limit=10).flows) == 10
