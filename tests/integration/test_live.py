"""Live views: in a real Jupyter kernel the display updates from the proxy's thread reach the cell
that asked; outside a kernel one line is printed per flow; a Proxy shows live counts."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from origin import Origin, opener, wait_flows_done, wait_until

from interceptkit import Proxy
from interceptkit.live import MAX_RATE

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

SETUP = """
import threading, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from interceptkit import Proxy

class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"hi")
    def log_message(self, *args): pass

origin = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
threading.Thread(target=origin.serve_forever, daemon=True).start()
proxy = Proxy(port=0).start()
client = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
view = proxy.flows.live(rows=5, where="~u /hello")
"""
TRAFFIC = """
import time
for i in range(30):
    client.open(f"http://127.0.0.1:{origin.server_address[1]}/hello?n={i}", timeout=5).read()
client.open(f"http://127.0.0.1:{origin.server_address[1]}/other", timeout=5)
time.sleep(1.0)
"""
SHOW_PROXY = "proxy"
STOP = "proxy.stop()"


async def _run(kc: Any, code: str, timeout: float = 30.0) -> tuple[str, list[dict[str, Any]]]:
    """Execute ``code``; every iopub message until the kernel is idle for it (others included)."""
    msg_id = kc.execute(code)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
        seen.append(msg)
        if msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        if (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
                and msg["parent_header"].get("msg_id") == msg_id):
            return msg_id, seen
    raise AssertionError(f"the kernel did not finish {code!r}")


def _display_id(messages: list[dict[str, Any]], parent: str, kind: str = "display_data") -> str:
    [shown] = [m for m in messages if m["msg_type"] == kind and m["parent_header"].get("msg_id") == parent]
    return str(shown["content"]["transient"]["display_id"])


def _updates(messages: list[dict[str, Any]], display_id: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["msg_type"] == "update_display_data"
            and m["content"]["transient"]["display_id"] == display_id]


def test_live_view_and_proxy_status_update_their_cells_from_the_proxy_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERCEPTKIT_HOME", str(tmp_path / "home"))
    for variable in list(os.environ):
        if variable.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(variable)
    client = nbclient.NotebookClient(nbformat.v4.new_notebook(), timeout=60, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})

    async def scenario() -> None:
        async with client.async_setup_kernel():
            kc = client.kc
            live_cell, setup = await _run(kc, SETUP)
            live_id = _display_id(setup, live_cell)
            status_cell, shown = await _run(kc, SHOW_PROXY)
            status_id = _display_id(shown, status_cell)
            [status_shown] = [m for m in shown if m["msg_type"] == "display_data"]
            assert "running" in status_shown["content"]["data"]["text/plain"]
            started = time.monotonic()
            _, traffic = await _run(kc, TRAFFIC)
            elapsed = time.monotonic() - started
            updates = _updates(traffic, live_id)
            assert updates, "no update_display_data for the live view"
            # Each update carries the header of the cell that made the view, not the running cell's.
            assert {m["parent_header"]["msg_id"] for m in updates} == {live_cell}
            assert len(updates) <= elapsed * MAX_RATE + 2  # coalesced, not one per flow (31 flows)
            last = updates[-1]["content"]["data"]["text/html"]
            assert "/hello?n=29" in last and "/other" not in last and "/hello?n=10" not in last  # rows=5
            status = _updates(traffic, status_id)
            assert status and {m["parent_header"]["msg_id"] for m in status} == {status_cell}
            assert "31 flows" in status[-1]["content"]["data"]["text/plain"]
            _, stopped = await _run(kc, STOP)
            final = _updates(stopped, status_id)
            assert final and "stopped" in final[-1]["content"]["data"]["text/plain"]

    asyncio.run(scenario())


def test_outside_a_kernel_live_prints_one_line_per_flow(proxy: Proxy, origin: Origin,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    view = proxy.flows.live(where="~c 200")
    client = opener(proxy)
    client.open(origin.url("/hello"), timeout=5).read()
    with pytest.raises(Exception):
        client.open(origin.url("/status/404"), timeout=5)
    client.open(origin.url("/hello?again"), timeout=5).read()
    wait_flows_done(proxy, 3)
    assert wait_until(lambda: view.printed == 2)
    view.stop()
    client.open(origin.url("/hello?after-stop"), timeout=5).read()
    wait_flows_done(proxy, 4)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "/hello" in lines[0] and "200" in lines[0] and "/hello?again" in lines[1]


def test_live_stops_when_the_proxy_stops(new_proxy: Any, origin: Origin) -> None:
    proxy = new_proxy().start()
    view = proxy.flows.live(rows=3)
    proxy.stop()
    assert view.stopped


def test_live_refuses_bad_arguments(proxy: Proxy) -> None:
    with pytest.raises(KeyError):
        proxy.flows.live(columns=["nope"])
    with pytest.raises(ValueError, match=r"\^"):
        proxy.flows.live(where="~c")
    with pytest.raises(ValueError):
        proxy.flows.live(rows=0)
    assert not proxy.flows._watchers


def test_proxy_outside_a_kernel_prints_its_repr(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    proxy._ipython_display_()
    assert capsys.readouterr().out.strip() == repr(proxy)
    assert not proxy.flows._watchers
