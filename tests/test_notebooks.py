"""The notebooks in notebooks/ run top to bottom in a real Jupyter kernel and show what they promise.

Each runs in a fresh kernel (nbclient + ipykernel) with a throw-away CA folder
and a temporary working directory; the notebooks contact only servers they
start on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Execute a notebook; return it with its outputs. Fails on the first cell that raises."""
    for variable in list(os.environ):
        if variable.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("INTERCEPTKIT_HOME", str(tmp_path / "interceptkit-home"))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return notebook


def outputs(notebook: Any, kind: str) -> list[str]:
    """Every output of one kind: "stream", "text/plain" or "text/html"."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            if kind == "stream" and output["output_type"] == "stream":
                found.append(output["text"])
            elif kind in output.get("data", {}):
                found.append(output["data"][kind])
    return found


def test_quickstart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = run("quickstart.ipynb", tmp_path, monkeypatch)
    printed = "".join(outputs(notebook, "stream"))
    for line in ["/ -> 200", "/api/items -> 200", "/logo.png -> 200", "/missing -> 404",
                 "X-Debug as the server saw it: from-the-notebook", "not found: ['/missing']",
                 "replay of flow", "stopped; the table outlives the proxy"]:
        assert line in printed
    html = outputs(notebook, "text/html")
    tables = [h for h in html if 'class="interceptkit-table"' in h and 'class="interceptkit-live"' not in h]
    assert len(tables) >= 3  # the live table, a selection, the table read back from HAR
    assert "/missing" in tables[0]
    live = [h for h in html if 'class="interceptkit-live"' in h]
    assert len(live) == 1 and "live · " in live[0]  # the live view's first picture
    assert any('class="interceptkit-proxy"' in h and "running" in h for h in html)  # the proxy's status
    flow = [h for h in html if 'class="interceptkit-flow"' in h]
    assert flow and "X-Debug" in flow[0] and "from-the-notebook" in flow[0] and "<svg" in flow[0]
    assert any(h.startswith("<div><svg") for h in html)  # the timeline
    har = json.loads((tmp_path / "quickstart.har").read_text(encoding="utf-8"))
    entries = har["log"]["entries"]
    assert har["log"]["version"] == "1.2" and len(entries) == 7  # 5 fetches, the hooked one, the replay
    assert {e["response"]["status"] for e in entries} == {200, 404}
    assert any(e["response"]["content"].get("encoding") == "base64" for e in entries)  # the PNG


def test_testing_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = run("testing-with-interceptkit.ipynb", tmp_path, monkeypatch)
    printed = "".join(outputs(notebook, "stream"))
    assert "{'status': 'paid'}" in printed
    assert "the payment request carried {'order': 42, 'amount': 75}" in printed
    assert "the client raised as it should: 503" in printed
    assert "'items': ['laces']" in printed
    assert "expected at least one request matching POST http://api.shop.test/payments" in printed
    assert 'json: {"amount": 75, "order": 42} vs {"amount": 80, "order": 42}' in printed
    assert "strict mode answered 599" in printed and "POST http://api.shop.test/refunds" in printed
    assert "nearest: mock POST http://api.shop.test/payments" in printed
    assert "recorded 1 exchange(s)" in printed
    assert "replayed with the service stopped: True plays: 1" in printed
    assert "token written to the file: False" in printed
    assert "the connection was reset:" in printed and "the fault acted on 1 flow(s)" in printed
    assert "gave up after 0.3 s: " in printed and "after 1.0 s" in printed  # the delay, on the core's timer
    assert "10485760 bytes streamed from an iterator" in printed
    assert "all assertions passed; 11 flows captured" in printed
    html = "".join(outputs(notebook, "text/html"))
    assert 'class="interceptkit-table"' in html and 'class="interceptkit-flow"' in html


def test_debugging_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = run("debugging-an-api.ipynb", tmp_path, monkeypatch)
    printed = "".join(outputs(notebook, "stream"))
    for line in ["/api/items -> 200", "/api/orders -> 201", "/api/missing -> 404",
                 "not assets: ['/api/items', '/api/orders', '/api/missing']",
                 "errors or 4xx: ['/api/missing']",
                 "unknown operator '~x'", "  ~m POST & ~x 1\n            ^",
                 "paused: POST /api/orders {'sku': 2, 'qty': 1}",
                 "the client got: (201, {'order': 2, 'qty': 3, 'total': 75})", "the server saw qty 3",
                 "curl got: {'order': 3, 'qty': 3, 'total': 75}",
                 "with the coupon: {'order': 4, 'qty': 1, 'total': 15}",
                 "doubled: {'order': 5, 'qty': 2, 'total': 50}",
                 "stopped; live view stopped too: True"]:
        assert line in printed, line
    assert "printf" in printed or "curl -X 'POST'" in printed
    html = "".join(outputs(notebook, "text/html"))
    assert 'class="interceptkit-live"' in html and 'class="interceptkit-table"' in html
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "capture.parquet")
    assert table.num_rows == 8 and "request_headers" in table.column_names
