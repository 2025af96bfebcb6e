"""FlowTable as a user meets it: list-like, DataFrame-like, bounded, live, on disk.

Loopback only: one local origin on 127.0.0.1, names pinned by static_resolver.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from interceptkit import Flow, FlowTable, Headers, Proxy, Request, Response, TLSInfo, static_resolver
from interceptkit.flow import Timings

REQUIRED_COLUMNS = {"time", "client", "method", "scheme", "host", "path", "status", "request_size",
                    "response_size", "content_type", "duration", "connect", "tls", "send", "wait",
                    "receive", "tls_version", "error", "state"}


# -- helpers ---------------------------------------------------------------------------


def make_flow(id: int, url: str = "http://shop.test/", *, method: str = "GET", status: int | None = 200,
              body: bytes = b"ok", duration: float | None = 0.01, error: str | None = None,
              ctype: str = "text/plain", start: float = 1_700_000_000.0) -> Flow:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    host, _, port = authority.partition(":")
    request = Request(method=method, scheme=scheme, host=host, path=slash + path,
                      port=int(port) if port else (443 if scheme == "https" else 80),
                      headers=Headers([("Host", authority)]))
    flow = Flow(id=id, request=request, client_address=("127.0.0.1", 50000 + id), error=error)
    if status is not None:
        flow.response = Response(status=status, reason="OK", headers=Headers([("Content-Type", ctype)]),
                                 content=body)
    flow.timings = Timings(start=start + id, connect_start=start + id, connect_end=start + id + 0.001,
                           request_sent=start + id + 0.002, response_start=start + id + 0.003,
                           end=None if duration is None else start + id + duration)
    flow.state = "open" if duration is None else ("error" if error else "done")
    return flow


@pytest.fixture
def table() -> FlowTable:
    return FlowTable([
        make_flow(1, "http://shop.test/", duration=0.05),
        make_flow(2, "https://api.shop.test/v1/items?page=2", method="POST", status=201,
                  ctype="application/json", body=b'{"id": 7}', duration=0.2),
        make_flow(3, "http://cdn.test/logo.png", status=404, duration=0.01),
        make_flow(4, "http://shop.test/slow", status=None, duration=None),
        make_flow(5, "http://api.shop.test/boom", status=502, error="upstream refused", duration=0.03),
    ])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path.startswith("/wait"):
            self.release.wait(5)
        body = (b"x" * 5000) if self.path.startswith("/big") else f"path={self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    _Handler.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ca")


def new_proxy(confdir: Path, **kwargs: object) -> Proxy:
    return Proxy(port=0, resolver=static_resolver({"shop.test": "127.0.0.1"}), confdir=confdir,
                 **kwargs)  # type: ignore[arg-type]


def get(proxy: Proxy, url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
    with opener.open(url, timeout=10) as response:
        return response.read()


def wait_until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# -- list-like -----------------------------------------------------------------------------


def test_len_index_slice_iterate(table: FlowTable) -> None:
    assert len(table) == 5
    assert table[-1].id == 5 and table[0].id == 1
    part = table[1:3]
    assert isinstance(part, FlowTable) and [f.id for f in part] == [2, 3]
    assert [f.id for f in table] == [1, 2, 3, 4, 5]
    assert table[2] in table and make_flow(9) not in table
    assert bool(table) and not FlowTable()


def test_column_names_and_one_column(table: FlowTable) -> None:
    assert REQUIRED_COLUMNS <= set(table.columns)
    assert table["status"] == [200, 201, 404, None, 502]
    assert table["method"][1] == "POST"
    with pytest.raises(KeyError, match="unknown column"):
        table["nope"]


def test_where_takes_the_same_filters_as_hooks(table: FlowTable) -> None:
    assert [f.id for f in table.where(host="*.shop.test")] == [2, 5]
    assert [f.id for f in table.where(method="post")] == [2]
    assert [f.id for f in table.where(status=range(400, 600))] == [3, 5]
    assert [f.id for f in table.where(status=(200, 299), host="api.*")] == [2]
    assert [f.id for f in table.where(content_type="json")] == [2]
    assert [f.id for f in table.where(path="/v1/*")] == [2]
    assert [f.id for f in table.where(lambda f: f.error is not None)] == [5]
    with pytest.raises(TypeError, match="unknown filter"):
        table.where(colour="red")


def test_filter_select_sort_head_tail(table: FlowTable) -> None:
    assert [f.id for f in table.filter(lambda f: f.request.scheme == "https")] == [2]
    chosen = table.select("method", "url", "status")
    assert chosen.columns == ["method", "url", "status"]
    assert chosen.to_records()[1] == {"method": "POST", "url": "https://api.shop.test/v1/items?page=2",
                                      "status": 201}
    assert [f.id for f in table.sort("duration", reverse=True)] == [2, 1, 5, 3, 4]  # in flight last
    assert [f.id for f in table.sort("status")] == [1, 2, 3, 5, 4]
    assert [f.id for f in table.sort(lambda f: -f.id)] == [5, 4, 3, 2, 1]
    assert [f.id for f in table.head(2)] == [1, 2] and [f.id for f in table.tail(2)] == [4, 5]
    assert [f.id for f in table.where(host="*shop*").select("id").sort("id", reverse=True).head(1)] == [5]
    with pytest.raises(KeyError):
        table.select("method", "colour")


def test_derived_tables_keep_still_while_the_source_grows(table: FlowTable) -> None:
    snapshot = table.where(method="GET")
    table._add(make_flow(6))
    assert len(table) == 6 and len(snapshot) == 4


def test_records_have_useful_types(table: FlowTable) -> None:
    record = table.to_records()[1]
    assert isinstance(record["time"], datetime) and record["time"].tzinfo is not None
    assert record["client"] == "127.0.0.1:50002"
    assert (record["scheme"], record["host"], record["path"]) == ("https", "api.shop.test", "/v1/items?page=2")
    assert record["request_size"] == 0 and record["response_size"] == 9
    assert record["content_type"] == "application/json"
    assert record["duration"] == pytest.approx(0.2)
    assert record["connect"] == pytest.approx(0.001, abs=1e-6) and record["wait"] == pytest.approx(0.001, abs=1e-6)
    in_flight = table.to_records()[3]
    assert in_flight["state"] == "open" and in_flight["status"] is None and in_flight["duration"] is None
    assert table.to_records()[4]["error"] == "upstream refused"


def test_tls_version_column() -> None:
    flow = make_flow(1, "https://shop.test/")
    flow.server_tls = TLSInfo(sni="shop.test", version="TLSv1.3")
    assert FlowTable([flow])["tls_version"] == ["TLSv1.3"]


def test_clear(table: FlowTable) -> None:
    table.clear()
    assert len(table) == 0 and table.dropped == 0


def test_bounded_keeps_the_newest_and_reports_the_dropped() -> None:
    table = FlowTable(max_flows=3)
    for i in range(1, 6):
        table._add(make_flow(i))
    assert [f.id for f in table] == [3, 4, 5]
    assert table.dropped == 2
    assert "2 older dropped" in repr(table) and "2 older dropped" in table._repr_html_()


def test_to_pandas(table: FlowTable) -> None:
    pd = pytest.importorskip("pandas")
    frame = table.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == table.columns and len(frame) == 5
    assert frame["status"].tolist()[:3] == [200, 201, 404]
    assert table.select("method", "status").to_pandas().shape == (5, 2)


def test_to_pandas_without_pandas_says_how_to_install(table: FlowTable,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'interceptkit\[pandas\]'"):
        table.to_pandas()


def test_importing_interceptkit_does_not_import_pandas_or_ipython() -> None:
    import subprocess

    code = "import interceptkit, sys; print('pandas' in sys.modules, 'IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- the native format ---------------------------------------------------------------------


def test_save_and_load_are_lossless(tmp_path: Path, table: FlowTable) -> None:
    odd = make_flow(7, "https://shop.test/bin", body=bytes(range(256)), ctype="application/octet-stream")
    odd.request.headers.fields.append((b"X-Latin", b"caf\xe9"))
    odd.request.content, odd.request.body_size, odd.request.truncated = b"\xff\x00abc", 10, True
    odd.client_tls = TLSInfo(sni="shop.test", version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256", alpn="http/1.1")
    odd.hook_errors.append("request hook f raised: boom")
    odd.metadata.update(mocked=True, note={"a": [1, 2]}, thing=object())
    table._add(odd)
    assert table.save(tmp_path / "flows.jsonl") == 6
    loaded = FlowTable.load(tmp_path / "flows.jsonl")
    assert [f.to_dict() for f in loaded][:5] == [f.to_dict() for f in table][:5]
    again = loaded[-1]
    assert again.request.headers.fields[-1] == (b"X-Latin", b"caf\xe9")
    assert again.response is not None and again.response.content == bytes(range(256))
    assert (again.request.content, again.request.body_size, again.request.truncated) == (b"\xff\x00abc", 10, True)
    assert again.client_tls == odd.client_tls and again.timings == odd.timings
    assert again.metadata["note"] == {"a": [1, 2]} and again.metadata["thing"].startswith("<object")


def test_load_skips_a_torn_last_line(tmp_path: Path, table: FlowTable) -> None:
    path = tmp_path / "flows.jsonl"
    table.save(path)
    with path.open("a") as file:
        file.write('{"v": 1, "id": 99, "requ')  # a crash mid-write
    assert [f.id for f in FlowTable.load(path)] == [1, 2, 3, 4, 5]


# -- live, through a proxy -----------------------------------------------------------------


def test_live_table_grows_and_shows_flows_in_flight(origin: int, confdir: Path) -> None:
    _Handler.release.clear()
    with new_proxy(confdir) as proxy:
        get(proxy, f"http://shop.test:{origin}/one")
        assert len(proxy.flows) == 1 and proxy.flows[-1].state == "done"
        waiter = threading.Thread(target=get, args=(proxy, f"http://shop.test:{origin}/wait"), daemon=True)
        waiter.start()
        assert wait_until(lambda: len(proxy.flows) == 2)
        assert proxy.flows[-1].state == "open" and proxy.flows["status"] == [200, None]
        assert "in flight" in repr(proxy.flows)
        _Handler.release.set()
        waiter.join(5)
        assert wait_until(lambda: proxy.flows[-1].state == "done")
        assert proxy.flows["status"] == [200, 200]


def test_proxy_table_is_bounded_and_counts_truncated_bodies(origin: int, confdir: Path) -> None:
    with new_proxy(confdir, max_flows=2, body_capture_limit=1000) as proxy:
        for i in range(4):
            get(proxy, f"http://shop.test:{origin}/big{i}")
        assert wait_until(lambda: all(f.state == "done" for f in proxy.flows))
        assert [f.request.path for f in proxy.flows] == ["/big2", "/big3"]
        assert proxy.flows.dropped == 2 and proxy.flows.truncated == 2
        assert proxy.flows[-1].response.body_size == 5000  # type: ignore[union-attr]
        assert "2 older dropped" in repr(proxy.flows) and "2 with a truncated body" in repr(proxy.flows)


def test_proxy_save_streams_each_finished_flow(origin: int, confdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    proxy = new_proxy(confdir, save=path).start()
    try:
        get(proxy, f"http://shop.test:{origin}/first")
        assert wait_until(lambda: path.exists() and path.read_text().count("\n") == 1)
        # Readable while the proxy still runs (and before it is stopped).
        assert [f.request.path for f in FlowTable.load(path)] == ["/first"]
        get(proxy, f"http://shop.test:{origin}/second")
        assert wait_until(lambda: path.read_text().count("\n") == 2)
    finally:
        proxy.stop()
    with new_proxy(confdir, save=path) as again:  # a new run appends
        get(again, f"http://shop.test:{origin}/third")
    loaded = FlowTable.load(path)
    assert [f.request.path for f in loaded] == ["/first", "/second", "/third"]
    assert loaded[0].response.content == b"path=/first"  # type: ignore[union-attr]
    assert all(json.loads(line)["v"] == 1 for line in path.read_text().splitlines())


def test_save_after_a_crash_keeps_the_torn_line_apart(origin: int, confdir: Path, tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    FlowTable([make_flow(1)]).save(path)
    with path.open("a") as file:
        file.write('{"v": 1, "id": 2, "req')  # the process died mid-line
    with new_proxy(confdir, save=path) as proxy:
        get(proxy, f"http://shop.test:{origin}/after")
    loaded = FlowTable.load(path)
    assert loaded[0].id == 1 and loaded[-1].request.path == "/after"


def test_blocking_calls_inside_a_running_event_loop(origin: int, confdir: Path, tmp_path: Path) -> None:
    """What a Jupyter cell does: the loop is running and the cell blocks on a request."""

    async def cell() -> list[int | None]:
        asyncio.get_running_loop()  # we are inside a running loop
        with new_proxy(confdir) as proxy:
            get(proxy, f"http://shop.test:{origin}/in-loop")  # blocks this loop: the proxy has its own
            proxy.flows.to_har(tmp_path / "loop.har")
            proxy.flows.save(tmp_path / "loop.jsonl")
            return proxy.flows.where(status=200)["status"]

    assert asyncio.run(cell()) == [200]
    assert FlowTable.from_har(tmp_path / "loop.har")[0].request.path == "/in-loop"


def test_websocket_messages_survive_save_and_load(tmp_path: Path) -> None:
    from interceptkit.core.websocket import WebSocketData, WebSocketMessage

    flow = make_flow(1, "http://shop.test/live", status=101)
    flow.kind = "upgrade"
    flow.websocket = WebSocketData()
    flow.websocket.record(WebSocketMessage("client", "text", "hello", 1.5, 5))
    flow.websocket.record(WebSocketMessage("server", "binary", b"\x00\xff", 1.6, 2, injected=True))
    flow.websocket.close_code, flow.websocket.closed_by = 1000, "client"
    FlowTable([flow]).save(tmp_path / "ws.jsonl")
    [again] = FlowTable.load(tmp_path / "ws.jsonl")
    assert list(again.websocket.messages) == list(flow.websocket.messages)
    assert (again.websocket.close_code, again.websocket.closed_by, again.websocket.message_count) == (1000, "client", 2)
    [entry] = FlowTable([flow]).to_har()["log"]["entries"]
    assert entry["_webSocketMessages"] == [
        {"type": "send", "time": 1.5, "opcode": 1, "data": "hello"},
        {"type": "receive", "time": 1.6, "opcode": 2, "data": "AP8="}]


# -- Arrow and Parquet ------------------------------------------------------------------------


def test_to_parquet_round_trip_with_the_documented_schema(table: FlowTable, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table[1].request.headers.add("X-Twice", "a")
    table[1].request.headers.add("X-Twice", "b")
    assert table.to_parquet(tmp_path / "flows.parquet") == len(table)
    back = pq.read_table(tmp_path / "flows.parquet")
    assert back.column_names == table.columns + ["request_headers", "response_headers", "request_body",
                                                 "response_body"]
    types = {f.name: f.type for f in back.schema}
    assert types["id"] == pa.int64() and types["status"] == pa.int32() and types["port"] == pa.int32()
    assert types["time"] == pa.timestamp("us", tz="UTC") and types["duration"] == pa.float64()
    assert types["request_body"] == pa.binary()
    assert types["request_headers"] == pa.list_(pa.struct([("name", pa.string()), ("value", pa.string())]))
    rows = back.to_pylist()
    second = rows[1]
    assert (second["method"], second["status"], second["host"]) == ("POST", 201, "api.shop.test")
    assert second["response_body"] == b'{"id": 7}'
    assert [h for h in second["request_headers"] if h["name"] == "X-Twice"] == [
        {"name": "X-Twice", "value": "a"}, {"name": "X-Twice", "value": "b"}]
    assert second["time"].timestamp() == table[1].timings.start
    open_flow = rows[3]
    assert open_flow["status"] is None and open_flow["response_headers"] is None and open_flow["duration"] is None


def test_to_arrow_follows_the_selected_columns_and_limits_bodies(table: FlowTable) -> None:
    arrow = table.select("method", "status").to_arrow(body_limit=3)
    assert arrow.column_names == ["method", "status", "request_headers", "response_headers", "request_body",
                                  "response_body"]
    assert arrow.column("response_body").to_pylist()[1] == b'{"i'
    assert FlowTable().to_arrow().num_rows == 0


def test_to_arrow_without_pyarrow_says_what_to_install(table: FlowTable, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "interceptkit.arrow", raising=False)
    import interceptkit

    monkeypatch.delattr(interceptkit, "arrow", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'interceptkit\[arrow\]'"):
        table.to_arrow()
    with pytest.raises(ImportError, match="arrow"):
        table.to_parquet("never-written.parquet")
