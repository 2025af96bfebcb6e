#!/usr/bin/env python3
"""HTTP/2 load scenarios, each beside the same load over HTTP/1.1 in the same run.

Starts, on 127.0.0.1 only, the hypercorn origin (bench/h2origin.py: one TLS
server, ALPN h2 and http/1.1) and, unless ``--direct-only``, the proxy
(``python -m interceptkit``, intercepting, trusting the origin's CA; once per
event loop in ``--loops``), then:

  small     50 concurrent streams of small GETs over ONE h2 connection,
            next to 50 HTTP/1.1 keep-alive connections (req/s, p50/p99);
            through the proxy also h2->h1: the same h2 load to a second
            origin that speaks HTTP/1.1 only (the proxy translates, and pools
            its upstream connections)
  download  a 100 MB download over h2, next to the same over HTTP/1.1 (MB/s,
            median of ``--bulk-reps``; the proxy's CPU s per 100 MB and peak
            RSS against idle). Between nginx (``listen ... ssl http2``) and
            ``curl --http2``/``--http1.1`` when the machine has them
            (bench/h2fast.py): hypercorn and the Python client below manage
            only ~160 MB/s and would hide a faster proxy; otherwise hypercorn
            and the Python client. The report says which ends were used.

Each load runs direct (client -> origin) and through the proxy (CONNECT,
then TLS with the proxy's CA); through the proxy the table adds the proxy's
CPU per request (or per MB) and its peak RSS. When the proxy does not
select h2 in ALPN, its h2 rows say so instead of silently measuring HTTP/1.1.
Every load is bounded in time and count.

  python bench/h2load.py                   # about 70 s (both loops)
  python bench/h2load.py --scenarios download --loops uvloop
  python bench/h2load.py --direct-only     # just the origins, e.g. before the proxy speaks h2
  python bench/h2load.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import h2fast
import procs

MB = 10**6
REQUEST_TIMEOUT = 10.0  # seconds one small GET may take


class Stop(Exception):
    pass


def percentile(xs: list[float], q: float) -> float | None:
    xs = sorted(xs)
    return round(1000 * xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None


# ------------------------------------------------------------------ connections

async def open_tls(port: int, proxy_port: int | None, cafile: str, alpn: list[str],
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str | None]:
    """TLS to the origin on ``port``, straight or through a CONNECT tunnel of the proxy."""
    context = ssl.create_default_context(cafile=cafile)
    context.set_alpn_protocols(alpn)
    sock = socket.create_connection(("127.0.0.1", proxy_port or port), timeout=10)
    if proxy_port:
        sock.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (port, port))
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            head += sock.recv(1)
        if b" 200" not in head.split(b"\r\n")[0]:
            raise Stop(f"CONNECT refused: {head[:80]!r}")
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, ssl=context, server_hostname="localhost")
    return reader, writer, writer.get_extra_info("ssl_object").selected_alpn_protocol()


class H2Client:
    """One h2 connection; ``get(path)`` may run many times concurrently (one stream each)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        # big windows, as browsers use: the client must not be what limits a download
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 << 20, h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(16 << 20)
        self.waiting: dict[int, asyncio.Future[int]] = {}
        self.received: dict[int, int] = {}
        self.slots = asyncio.Semaphore(100)
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        self.writer.write(self.conn.data_to_send())
        while data := await self.reader.read(1 << 18):
            for event in self.conn.receive_data(data):
                self._on(event)
            self.writer.write(self.conn.data_to_send())
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(Stop("connection closed"))

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self.received[event.stream_id] = self.received.get(event.stream_id, 0) + len(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            future = self.waiting.pop(event.stream_id, None)
            size = self.received.pop(event.stream_id, 0)
            if future is not None and not future.done():
                future.set_result(size) if isinstance(event, h2.events.StreamEnded) else future.set_exception(
                    Stop(f"stream reset {event.error_code}"))

    async def get(self, path: str) -> int:
        """GET ``path``; returns the body size."""
        async with self.slots:
            sid = self.conn.get_next_available_stream_id()
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self.waiting[sid] = future
            self.conn.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"),
                                         (b":authority", b"localhost"), (b":path", path.encode())], end_stream=True)
            self.writer.write(self.conn.data_to_send())
            return await future

    def close(self) -> None:
        self.task.cancel()
        self.writer.close()


async def h1_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, chunk: int = 1 << 20) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    left = length
    while left:
        piece = await reader.read(min(chunk, left))
        if not piece:
            raise Stop("closed mid-body")
        left -= len(piece)
    return length


# ------------------------------------------------------------------ loads

async def small_load(proto: str, port: int, proxy_port: int | None, cafile: str, concurrency: int,
                     duration: float, warmup: float, max_requests: int) -> dict[str, Any]:
    """``concurrency`` requests in flight for ``duration`` s: one h2 connection, or that many h1 ones."""
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    deadline = [time.monotonic() + warmup + duration]
    measuring = [False]

    async def worker(get: Any) -> None:
        nonlocal errors
        while time.monotonic() < deadline[0] and len(latencies) < max_requests:
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(get(), REQUEST_TIMEOUT)  # a stalled stream is an error, not a hang
            except (Stop, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, StopIteration) as exc:
                errors += 1
                first_error.append(repr(exc))
                return
            if measuring[0]:
                latencies.append(time.monotonic() - t0)

    clients: list[Any] = []
    if proto == "h2":
        reader, writer, alpn = await open_tls(port, proxy_port, cafile, ["h2"])
        if alpn != "h2":
            writer.close()
            return {"proto": proto, "skipped": f"ALPN selected {alpn!r}, not h2"}
        client = H2Client(reader, writer)
        clients.append(client)
        gets = [lambda: client.get("/small")] * concurrency
    else:
        gets = []
        for _ in range(concurrency):
            reader, writer, alpn = await open_tls(port, proxy_port, cafile, ["http/1.1"])
            clients.append(writer)
            gets.append(lambda r=reader, w=writer: h1_get(r, w, "/small"))
    tasks = [asyncio.ensure_future(worker(g)) for g in gets]
    await asyncio.sleep(warmup)
    measuring[0], started = True, time.monotonic()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - started
    for c in clients:
        c.close()
    return {"proto": proto, "requests": len(latencies), "rps": round(len(latencies) / wall, 1), "errors": errors,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99), "alpn": alpn,
            "first_error": first_error[0] if first_error else None}


async def download(proto: str, port: int, proxy_port: int | None, cafile: str, nbytes: int,
                   timeout: float, path: str) -> dict[str, Any]:
    reader, writer, alpn = await open_tls(port, proxy_port, cafile, ["h2"] if proto == "h2" else ["http/1.1"])
    if proto == "h2" and alpn != "h2":
        writer.close()
        return {"proto": proto, "skipped": f"ALPN selected {alpn!r}, not h2"}
    t0 = time.monotonic()
    if proto == "h2":
        client = H2Client(reader, writer)
        size = await asyncio.wait_for(client.get(path), timeout)
        client.close()
    else:
        size = await asyncio.wait_for(h1_get(reader, writer, path), timeout)
        writer.close()
    wall = time.monotonic() - t0
    return {"proto": proto, "bytes": size, "ok": size == nbytes, "mb_per_s": round(size / MB / wall, 1),
            "seconds": round(wall, 2), "alpn": alpn}


# ------------------------------------------------------------------ the run

def uvloop_available() -> bool:
    try:
        done = subprocess.run([sys.executable, "-c", "import uvloop"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else round((xs[mid - 1] + xs[mid]) / 2, 3)


class Run:
    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args, self.workdir = args, workdir
        self.started: list[procs.Managed] = []
        self.proxy: procs.Managed | None = None
        self.nginx: h2fast.Nginx | None = None
        self.loop = "direct"
        self.results: dict[str, Any] = {"small": [], "download": [], "notes": [], "proxy_idle_rss_mb": {}}

    def start(self) -> None:
        origin = procs.Managed([sys.executable, os.path.join(HERE, "h2origin.py"), "--dir", self.workdir],
                               "h2origin", os.path.join(self.workdir, "h2origin.log"), capture_stdout=True)
        self.started.append(origin)
        line = origin.readline(timeout=20)
        if not line or not line.startswith("PORT "):
            raise Stop(f"origin did not start: {origin.log_tail()}")
        self.origin_port = int(line.split()[1])
        self.origin_pid = origin.pid
        if "small" in self.args.scenarios and not self.args.direct_only:
            self.h1_origin_port = self.start_h1_origin()
        if "download" in self.args.scenarios:
            self.choose_download_ends()

    def choose_download_ends(self) -> None:
        """nginx and curl for the download when the machine has them (and they were not refused)."""
        a, res = self.args, self.results
        nginx = h2fast.nginx_binary() if a.download_origin in ("auto", "nginx") else None
        if nginx is None and a.download_origin == "nginx":
            raise Stop("--download-origin nginx: nginx not found")
        curl = h2fast.curl_with_http2() if a.download_client in ("auto", "curl") else None
        if curl is None and a.download_client == "curl":
            raise Stop("--download-client curl: no curl with HTTP2 found")
        self.curl = curl
        if nginx is not None:
            try:
                self.nginx = h2fast.Nginx(nginx, self.workdir, os.path.join(self.workdir, "chain.pem"),
                                          os.path.join(self.workdir, "key.pem"), a.bulk_mb * MB, a.nginx_chunk)
            except RuntimeError as exc:
                if a.download_origin == "nginx":
                    raise Stop(str(exc)) from None
                res["notes"].append(f"nginx did not start ({exc}); the download used hypercorn")
        if self.nginx is not None:
            self.started.append(self.nginx.proc)
            res["download_origin"] = f"nginx (http2_chunk_size {self.nginx.chunk})"
        else:
            res["download_origin"] = "hypercorn (bench/h2origin.py)"
        res["download_client"] = "curl" if curl else "Python h2 / asyncio client (h2load.py)"

    def start_h1_origin(self) -> int:
        """The HTTP/1.1-only origin of the h2->h1 rows (same CA, so the proxy trusts both)."""
        origin = procs.Managed([sys.executable, os.path.join(HERE, "h2origin.py"), "--dir", self.workdir,
                                "--http1-only"], "h1origin", os.path.join(self.workdir, "h1origin.log"),
                               capture_stdout=True)
        self.started.append(origin)
        line = origin.readline(timeout=20)
        if not line or not line.startswith("PORT "):
            raise Stop(f"HTTP/1.1 origin did not start: {origin.log_tail()}")
        return int(line.split()[1])

    def start_proxy(self, loop: str) -> None:
        self.proxy_port = procs.free_port()
        confdir = os.path.join(self.workdir, "proxy-home")
        argv = [sys.executable, "-m", "interceptkit", "--listen-host", "127.0.0.1", "--listen-port",
                str(self.proxy_port), "--confdir", confdir, "--upstream-ca", os.path.join(self.workdir, "ca.pem"),
                "--loop", loop, "-q"]
        self.proxy = procs.Managed(argv, f"proxy-{loop}", os.path.join(self.workdir, f"proxy-{loop}.log"))
        self.started.append(self.proxy)
        self.loop = loop
        if not procs.wait_listening(self.proxy_port, 30, self.proxy):
            raise Stop(f"proxy did not listen: {self.proxy.log_tail()}")
        time.sleep(0.5)
        self.proxy_ca = os.path.join(confdir, "interceptkit-ca-cert.pem")
        self.results["proxy_idle_rss_mb"][loop] = procs.mb(procs.status_kb(self.proxy.pid, "VmRSS"))

    def stop_proxy(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.started.remove(self.proxy)
            self.proxy = None
        self.loop = "direct"

    def measured(self, load: Callable[[], dict[str, Any]], per: str) -> dict[str, Any]:
        """Run one load; through the proxy, add its CPU per request/MB and its peak RSS."""
        proxy = self.proxy
        if proxy is not None:
            procs.reset_hwm(proxy.pid)
            cpu0 = procs.cpu_seconds(proxy.pid)
        r = load()
        r["path"], r["loop"] = ("direct", None) if proxy is None else ("proxy", self.loop)
        if proxy is not None and "skipped" not in r:
            cpu_s = procs.cpu_seconds(proxy.pid) - cpu0
            count = r.get("requests") or (r.get("bytes", 0) / MB)
            r["proxy_cpu_ms_per_" + per] = round(1000 * cpu_s / count, 3) if count else None
            r["proxy_peak_rss_mb"] = procs.mb(procs.status_kb(proxy.pid, "VmHWM"))
        return r

    def run(self) -> None:
        a = self.args
        self.start()
        self.loads(None, os.path.join(self.workdir, "ca.pem"))
        if a.direct_only:
            return
        for loop in a.loops:
            self.start_proxy(loop)
            try:
                self.loads(self.proxy_port, self.proxy_ca)
            finally:
                self.stop_proxy()

    def loads(self, proxy_port: int | None, cafile: str) -> None:
        a, where = self.args, "direct" if proxy_port is None else f"proxy ({self.loop})"
        if "small" in a.scenarios:
            for proto in ("http/1.1", "h2"):
                r = self.measured(lambda: asyncio.run(small_load(proto, self.origin_port, proxy_port, cafile,
                                                                 a.concurrency, a.duration, a.warmup,
                                                                 a.max_requests)), "request")
                self.results["small"].append(r)
                log(f"small {where} {proto}: {r.get('rps', r.get('skipped'))}")
            if proxy_port:
                # the client offers h2 only, the origin http/1.1 only: h2 to the client, HTTP/1.1 upstream
                r = self.measured(lambda: asyncio.run(small_load("h2", self.h1_origin_port, proxy_port, cafile,
                                                                 a.concurrency, a.duration, a.warmup,
                                                                 a.max_requests)), "request")
                r["proto"] = "h2->h1"
                self.results["small"].append(r)
                log(f"small {where} h2->h1: {r.get('rps', r.get('skipped'))}")
        if "download" in a.scenarios:
            for proto in ("http/1.1", "h2"):
                runs = [self.measured(lambda: self.one_download(proto, proxy_port, cafile), "mb")
                        for _ in range(a.bulk_reps)]
                r = summarise(runs)
                self.results["download"].append(r)
                log(f"download {where} {proto}: {r.get('mb_per_s', r.get('skipped'))} MB/s "
                    f"(runs {r.get('runs_mb_per_s')})")

    def one_download(self, proto: str, proxy_port: int | None, cafile: str) -> dict[str, Any]:
        a = self.args
        port = self.nginx.port if self.nginx is not None else self.origin_port
        path = self.nginx.path if self.nginx is not None else f"/bytes/{a.bulk_mb * MB}"
        if self.curl:
            r = h2fast.curl_download(self.curl, proto, port, path, proxy_port, cafile, a.transfer_timeout)
            if proto == "h2" and r.get("alpn") not in (None, "h2") and r.get("ok"):
                return {"proto": proto, "skipped": f"curl spoke {r['alpn']!r}, not h2"}
            if r.get("bytes") != a.bulk_mb * MB:
                r["ok"] = False
            return r
        return asyncio.run(download(proto, port, proxy_port, cafile, a.bulk_mb * MB, a.transfer_timeout, path))

    def stop(self) -> None:
        for m in reversed(self.started):
            m.stop()
        self.started.clear()
        if self.nginx is not None:
            self.nginx.stop()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several downloads as one row: median MB/s and CPU, the highest peak RSS, every run's MB/s."""
    skipped = next((r for r in runs if "skipped" in r), None)
    if skipped is not None:
        return skipped
    first = runs[0]
    out: dict[str, Any] = {k: first[k] for k in ("proto", "path", "loop", "alpn") if k in first}
    out["ok"] = all(r.get("ok") for r in runs)
    out["errors"] = [r["error"] for r in runs if r.get("error")] or None
    out["bytes"] = first.get("bytes")
    out["runs_mb_per_s"] = [r.get("mb_per_s") for r in runs]
    out["mb_per_s"] = median([r["mb_per_s"] for r in runs if r.get("mb_per_s") is not None])
    cpu = [r["proxy_cpu_ms_per_mb"] for r in runs if r.get("proxy_cpu_ms_per_mb") is not None]
    if cpu:
        out["proxy_cpu_ms_per_mb"] = median(cpu)
        out["proxy_cpu_s_per_100mb"] = round((median(cpu) or 0) / 10, 3)
        out["proxy_peak_rss_mb"] = max(r.get("proxy_peak_rss_mb") or 0 for r in runs)
    return out


def _where(r: dict[str, Any]) -> str:
    return r["path"] if r["path"] == "direct" else f"proxy ({r['loop']})"


def _table(head: list[str], rows: list[dict[str, Any]], start: Callable[[dict[str, Any]], str],
           cells: Callable[[dict[str, Any]], str], empty_cells: int) -> list[str]:
    """Markdown rows: ``start(r)`` then ``cells(r)``, or "skipped" and empty cells for a load that did not run."""
    lines = list(head)
    for r in rows:
        rest = f" | {r['proto']} | skipped: {r['skipped']} |" + " |" * empty_cells if "skipped" in r else cells(r)
        lines.append(start(r) + rest)
    return lines


def _small_cells(r: dict[str, Any]) -> str:
    cpu = r.get("proxy_cpu_ms_per_request")
    return (f" | {r['proto']} | {r['rps']} | {r.get('p50_ms', '')} | {r.get('p99_ms', '')} | {r.get('errors', 0)} | "
            f"{'' if cpu is None else f'{cpu} ms/request'} | {r.get('proxy_peak_rss_mb') or ''} |")


def _download_cells(r: dict[str, Any], idle: dict[str, Any]) -> str:
    cpu = r.get("proxy_cpu_s_per_100mb")
    rss = f"{r.get('proxy_peak_rss_mb')} ({idle.get(r['loop'])})" if cpu is not None else ""
    ok = "yes" if r.get("ok") else f"FAILED {r.get('errors') or ''}"
    return (f" | {r['proto']} | {r['mb_per_s']} | {' '.join(str(x) for x in r['runs_mb_per_s'])}"
            f" | {ok} | {'' if cpu is None else cpu} | {rss} |")


def render(res: dict[str, Any]) -> str:
    lines = ["## HTTP/2 vs HTTP/1.1 (bench/h2load.py)", ""]
    idle = res.get("proxy_idle_rss_mb") or {}
    if res["small"]:
        lines += _table(["| load | path | protocol | req/s | p50 ms | p99 ms | errors | proxy CPU | proxy peak RSS MB |",
                         "|---|---|---|---:|---:|---:|---:|---:|---:|"], res["small"],
                        lambda r: f"| 50 streams, small GETs | {_where(r)}", _small_cells, 5)
        lines.append("")
    if res["download"]:
        lines += [f"{res.get('bulk_mb')} MB download, origin: {res.get('download_origin')}, client: "
                  f"{res.get('download_client')}; MB/s is the median of {res.get('bulk_reps')} runs.", ""]
        lines += _table(["| path | protocol | MB/s | runs MB/s | ok | proxy CPU s / 100 MB | proxy peak RSS MB (idle) |",
                         "|---|---|---:|---|---|---:|---:|"], res["download"],
                        lambda r: f"| {_where(r)}", lambda r: _download_cells(r, idle), 4)
    if idle:
        lines += ["", "Proxy idle RSS: " + ", ".join(f"{mb} MB ({loop})" for loop, mb in idle.items()) + "."]
    lines += targets(res)
    return "\n".join(lines + [f"- {n}" for n in res["notes"]])


def targets(res: dict[str, Any]) -> list[str]:
    """Issue 10's targets next to what was measured (measured, not asserted)."""
    out = []
    idle = res.get("proxy_idle_rss_mb") or {}
    for loop in idle:
        def row(key: str, proto: str) -> dict[str, Any] | None:
            return next((r for r in res[key] if r["path"] == "proxy" and r["loop"] == loop and r["proto"] == proto
                         and "skipped" not in r), None)

        h1, h2 = row("small", "http/1.1"), row("small", "h2")
        if h1 and h2 and h1["rps"]:
            out.append(f"- {loop}: h2<->h2 small GETs through the proxy: {h2['rps'] / h1['rps']:.2f}x the HTTP/1.1 "
                       f"keep-alive req/s (target >= 0.5)")
        bulk = row("download", "h2")
        if bulk:
            out.append(f"- {loop}: {res.get('bulk_mb')} MB h2 download intercepted: {bulk['mb_per_s']} MB/s "
                       f"(target >= 200), peak RSS {bulk.get('proxy_peak_rss_mb')} MB (target: idle + 50 = "
                       f"{(idle.get(loop) or 0) + 50} MB)")
    return [""] + out if out else []


def log(msg: str) -> None:
    print(f"[h2load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--direct-only", action="store_true", help="measure the origin only (no proxy)")
    ap.add_argument("--scenarios", default="small,download", help="comma-separated: small, download (default both)")
    ap.add_argument("--loops", default=None,
                    help="proxy event loops to measure, comma-separated from auto, asyncio, uvloop "
                         "(default: asyncio,uvloop when uvloop is installed, else asyncio)")
    ap.add_argument("-c", "--concurrency", type=int, default=50, help="streams (h2) / connections (h1) (default 50)")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per small-GET run (default 5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="untimed seconds first (default 1)")
    ap.add_argument("--max-requests", type=int, default=500_000, help="upper bound per small-GET run")
    ap.add_argument("--bulk-mb", type=int, default=100, help="download size in MB (default 100)")
    ap.add_argument("--bulk-reps", type=int, default=3, help="downloads per row, the median is reported (default 3)")
    ap.add_argument("--download-origin", choices=("auto", "nginx", "hypercorn"), default="auto",
                    help="origin of the download: nginx when installed (auto), else hypercorn")
    ap.add_argument("--download-client", choices=("auto", "curl", "python"), default="auto",
                    help="client of the download: curl with HTTP2 when installed (auto), else h2load's Python client")
    ap.add_argument("--nginx-chunk", default="64k", help="nginx http2_chunk_size: its DATA frame size (default 64k)")
    ap.add_argument("--transfer-timeout", type=float, default=120.0, help="seconds allowed per download")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.concurrency <= 100 or args.duration <= 0 or args.warmup < 0 or not 1 <= args.bulk_reps <= 20:
        ap.error("--concurrency 1..100 (the origin's MAX_CONCURRENT_STREAMS), --duration > 0, --warmup >= 0, "
                 "--bulk-reps 1..20")
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not args.scenarios or set(args.scenarios) - {"small", "download"}:
        ap.error("--scenarios: small, download")
    args.loops = ([s.strip() for s in args.loops.split(",") if s.strip()] if args.loops
                  else ["asyncio", "uvloop"] if uvloop_available() else ["asyncio"])
    if not args.loops or set(args.loops) - {"auto", "asyncio", "uvloop"}:
        ap.error("--loops: auto, asyncio, uvloop")
    workdir = tempfile.mkdtemp(prefix="interceptkit-h2bench-")
    run = Run(args, workdir)
    run.results["bulk_mb"], run.results["bulk_reps"] = args.bulk_mb, args.bulk_reps
    status = 0
    try:
        run.run()
    except (Stop, OSError, asyncio.TimeoutError) as exc:
        run.results["notes"].append(f"aborted: {exc!r}")
        status = 1
    finally:
        run.stop()
    print(render(run.results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run.results, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
