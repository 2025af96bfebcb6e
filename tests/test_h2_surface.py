"""What a user sees of HTTP/2 flows: the table's protocol and ALPN columns, HAR, the log line, display.

Flows are built in memory the way the exchange logic records an h2 exchange:
``request.http_version`` is the client's protocol, ``response.http_version``
the upstream's, and each side's TLSInfo carries what ALPN selected.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interceptkit import Flow, FlowTable, Headers, Request, Response, TLSInfo
from interceptkit.display import flow_html
from interceptkit.flow import Timings
from interceptkit.flowlog import FlowFormatter
from interceptkit.har import har_http_version
from interceptkit.vocab import protocol_name


def make_flow(id: int, client: str = "HTTP/2", upstream: str = "HTTP/2", *,
              client_alpn: str | None = "h2", server_alpn: str | None = "h2") -> Flow:
    request = Request(method="GET", scheme="https", host="api.test", port=443, path="/items?page=2",
                      http_version=client, headers=Headers([("user-agent", "curl/8"), ("accept", "*/*")]))
    flow = Flow(id=id, request=request, client_address=("127.0.0.1", 50000 + id),
                server_address=("127.0.0.1", 443), state="done")
    flow.response = Response(status=200, reason="" if upstream == "HTTP/2" else "OK", http_version=upstream,
                             headers=Headers([("content-type", "application/json")]), content=b'{"ok": 1}')
    flow.client_tls = TLSInfo(sni="api.test", version="TLSv1.3", alpn=client_alpn)
    flow.server_tls = TLSInfo(sni="api.test", version="TLSv1.3", alpn=server_alpn)
    t = 1_714_557_600.0 + id
    flow.timings = Timings(start=t, connect_start=t, connect_end=t + 0.001, tls_end=t + 0.002,
                           request_sent=t + 0.003, response_start=t + 0.004, end=t + 0.005)
    return flow


@pytest.mark.parametrize("written, name", [
    ("HTTP/2", "HTTP/2"), ("HTTP/2.0", "HTTP/2"), ("h2", "HTTP/2"), ("http/2.0", "HTTP/2"), ("2", "HTTP/2"),
    ("HTTP/1.1", "HTTP/1.1"), ("http/1.1", "HTTP/1.1"), ("HTTP/1.0", "HTTP/1.0"), ("h3", "HTTP/3"),
])
def test_protocol_names(written: str, name: str) -> None:
    assert protocol_name(written) == name


# -- the table ------------------------------------------------------------------------------------


def test_the_table_has_a_protocol_column_of_the_clients_side() -> None:
    flows = FlowTable([make_flow(1), make_flow(2, "HTTP/1.1", "HTTP/2", client_alpn="http/1.1"),
                       make_flow(3, "HTTP/2", "HTTP/1.1", server_alpn="http/1.1"),
                       make_flow(4, "HTTP/1.1", "HTTP/1.1", client_alpn=None, server_alpn=None)])
    assert "protocol" in flows.columns
    assert flows["protocol"] == ["HTTP/2", "HTTP/1.1", "HTTP/2", "HTTP/1.1"]
    assert flows["client_alpn"] == ["h2", "http/1.1", "h2", None]
    assert flows["server_alpn"] == ["h2", "h2", "http/1.1", None]
    assert [f.id for f in flows.where(lambda f: f.request.http_version == "HTTP/2")] == [1, 3]
    assert [f.id for f in flows.where("~http2")] == [1, 3]
    assert flows.to_records(["id", "protocol"])[0] == {"id": 1, "protocol": "HTTP/2"}


def test_the_protocol_column_in_text_and_arrow() -> None:
    flows = FlowTable([make_flow(1), make_flow(2, "HTTP/1.1", "HTTP/1.1")]).select("id", "protocol", "server_alpn")
    text = repr(flows)
    assert "protocol" in text and "HTTP/2" in text and "HTTP/1.1" in text
    import pyarrow as pa  # the arrow extra is part of the test extra
    table = FlowTable([make_flow(1)]).to_arrow()
    assert table.schema.field("protocol").type == pa.string()
    assert table.column("protocol").to_pylist() == ["HTTP/2"]
    assert table.column("client_alpn").to_pylist() == ["h2"]
    assert table.schema.names.index("error") < table.schema.names.index("protocol")  # the schema grew at its end


# -- HAR -------------------------------------------------------------------------------------


def test_har_writes_http2_as_chrome_does_and_reads_it_back(tmp_path: Path) -> None:
    flows = FlowTable([make_flow(1), make_flow(2, "HTTP/1.1", "HTTP/1.1")])
    document = flows.to_har(tmp_path / "capture.har")
    entries = document["log"]["entries"]
    assert entries[0]["request"]["httpVersion"] == entries[0]["response"]["httpVersion"] == "http/2.0"
    assert entries[0]["response"]["headersSize"] == -1  # compressed heads: unknown, as browsers write it
    assert entries[1]["request"]["httpVersion"] == entries[1]["response"]["httpVersion"] == "HTTP/1.1"
    assert entries[1]["response"]["headersSize"] > 0
    loaded = FlowTable.from_har(tmp_path / "capture.har")
    assert [(f.request.http_version, f.response.http_version) for f in loaded] == [  # type: ignore[union-attr]
        ("HTTP/2", "HTTP/2"), ("HTTP/1.1", "HTTP/1.1")]
    assert loaded["protocol"] == ["HTTP/2", "HTTP/1.1"]


@pytest.mark.parametrize("written", ["h2", "http/2.0", "HTTP/2", "HTTP/2.0", "H2"])
def test_har_from_any_browser_reads_http2(written: str, tmp_path: Path) -> None:
    document = FlowTable([make_flow(1)]).to_har()
    entry = document["log"]["entries"][0]
    entry["request"]["httpVersion"] = entry["response"]["httpVersion"] = written
    path = tmp_path / "browser.har"
    path.write_text(json.dumps(document))
    loaded = FlowTable.from_har(path)[0]
    assert loaded.request.http_version == "HTTP/2" and loaded.response.http_version == "HTTP/2"  # type: ignore[union-attr]


def test_har_http_version_spellings() -> None:
    assert har_http_version("HTTP/2") == har_http_version("h2") == "http/2.0"
    assert har_http_version("HTTP/1.1") == "HTTP/1.1" and har_http_version("HTTP/1.0") == "HTTP/1.0"


# -- the CLI's line ---------------------------------------------------------------------------------


def test_the_log_line_shows_the_protocol_when_it_is_not_http1() -> None:
    flow = make_flow(1)
    assert FlowFormatter(1).format(flow) == "GET https://api.test/items?page=2 HTTP/2 200 9B 5ms"
    plain = make_flow(2, "HTTP/1.1", "HTTP/2")
    assert FlowFormatter(1).format(plain) == "GET https://api.test/items?page=2 200 9B 5ms"
    detailed = FlowFormatter(2).format(make_flow(3, "HTTP/2", "HTTP/1.1")).splitlines()
    assert detailed[1].strip() == "> GET /items?page=2 HTTP/2"
    assert any(line.strip() == "< HTTP/1.1 200 OK" for line in detailed)
    colored = FlowFormatter(1, color=True).format(flow)
    assert " HTTP/2 " in colored


# -- display ------------------------------------------------------------------------------------


def test_display_shows_the_alpn_of_each_side_next_to_tls() -> None:
    html = flow_html(make_flow(1, "HTTP/2", "HTTP/1.1", server_alpn="http/1.1"))
    assert "TLSv1.3" in html and "ALPN client h2, upstream http/1.1" in html
    assert "GET /items?page=2 HTTP/2" in html
    mocked = make_flow(2)
    mocked.server_tls = None
    assert "ALPN client h2" in flow_html(mocked) and "upstream" not in flow_html(mocked).split("ALPN")[1][:40]
    assert "ALPN" not in flow_html(make_flow(3, "HTTP/1.1", "HTTP/1.1", client_alpn=None, server_alpn=None))


def test_native_files_keep_each_sides_protocol_and_alpn(tmp_path: Path) -> None:
    flows = FlowTable([make_flow(1, "HTTP/2", "HTTP/1.1", server_alpn="http/1.1")])
    flows.save(tmp_path / "flows.jsonl")
    loaded = FlowTable.load(tmp_path / "flows.jsonl")[0]
    assert (loaded.request.http_version, loaded.response.http_version) == ("HTTP/2", "HTTP/1.1")  # type: ignore[union-attr]
    assert (loaded.client_tls.alpn, loaded.server_tls.alpn) == ("h2", "http/1.1")  # type: ignore[union-attr]
