#!/usr/bin/env python3
"""What does interceptkit cost? A loopback benchmark against a direct connection.

Starts, on 127.0.0.1 only, a local origin (bench/origin.py), the proxy
(``python -m interceptkit ... -q``), a second proxy in reverse mode, and bounded
load generators, then prints Markdown tables: keep-alive req/s and latency
(forward and reverse mode), WebSocket echo messages/s, 100 MB download MB/s
(absolute-form and CONNECT tunnel), and the proxy's memory, each next to the
direct connection measured in the same run.  See bench/README.md.

  python bench/run.py                      # about 45-60 s
  python bench/run.py --scenarios keepalive,websocket
  python bench/run.py --upload             # + 1 GiB up/downloads, memory must stay bounded
  python bench/run.py --tool wrk --json out.json
  python bench/run.py --scenarios http2    # HTTP/2 next to HTTP/1.1 (bench/h2load.py)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import procs
import report
import transfer
import wsloadgen

MB = 10**6
GIB = 1 << 30
# In the order they run; "upload" is also switched on by --upload.
#: "http2": 50 concurrent h2 streams of small GETs over one connection and a 100 MB h2
#: download, each next to the same load over HTTP/1.1 (bench/h2load.py, run after the rest).
SCENARIOS = ("keepalive", "reverse", "websocket", "bulk", "upload", "http2")
DEFAULT_SCENARIOS = "keepalive,reverse,websocket,bulk"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS, metavar="LIST",
                    help=f"comma-separated scenarios to run, from {','.join(SCENARIOS)} or 'all' "
                         f"(default {DEFAULT_SCENARIOS})")
    ap.add_argument("--duration", type=float, default=5.0,
                    help="measured seconds per keep-alive and WebSocket run (default 5)")
    ap.add_argument("--warmup", type=float, default=1.0,
                    help="untimed seconds before each keep-alive and WebSocket run (default 1)")
    ap.add_argument("-c", "--concurrency", type=int, default=50,
                    help="keep-alive connections, forward and reverse (default 50)")
    ap.add_argument("--max-requests", type=int, default=1_000_000,
                    help="upper bound on requests per keep-alive run, warm-up included (default 1000000)")
    ap.add_argument("--reps", type=int, default=1, help="repeat each measurement; tables show the median (default 1)")
    ap.add_argument("--tool", choices=["python", "wrk"], default="python",
                    help="keep-alive load generator: the bundled Python one, or wrk if it is on PATH")
    ap.add_argument("--ws-connections", type=int, default=10, help="WebSocket connections (default 10)")
    ap.add_argument("--ws-size", type=int, default=64, help="WebSocket message size in bytes (default 64)")
    ap.add_argument("--ws-max-messages", type=int, default=1_000_000,
                    help="upper bound on WebSocket messages per run, warm-up included (default 1000000)")
    ap.add_argument("--bulk-mb", type=int, default=100, help="download size in MB (10^6 bytes; default 100)")
    ap.add_argument("--bulk-reps", type=int, default=3,
                    help="downloads per path; the table shows the median (default 3)")
    ap.add_argument("--upload", action="store_true",
                    help="also move 1 GiB up and down through the proxy and report its peak RSS")
    ap.add_argument("--upload-bytes", type=int, default=GIB, help=argparse.SUPPRESS)
    ap.add_argument("--transfer-timeout", type=float, default=120.0,
                    help="seconds allowed for one bulk transfer before it counts as failed (default 120)")
    ap.add_argument("--rss-limit-mb", type=int, default=1024,
                    help="stop a transfer when the proxy's RSS passes this (protects the machine; default 1024)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers as JSON to PATH")
    args = ap.parse_args(argv)
    wanted = {w.strip() for w in args.scenarios.split(",") if w.strip()}
    if "all" in wanted:
        wanted = set(SCENARIOS)
    if wanted - set(SCENARIOS) or not wanted:
        ap.error(f"--scenarios: choose from {', '.join(SCENARIOS)} or all (got {args.scenarios!r})")
    if args.upload:
        wanted.add("upload")
    args.scenarios = [s for s in SCENARIOS if s in wanted]
    args.upload = "upload" in wanted
    if args.tool == "wrk" and not shutil.which("wrk"):
        ap.error("--tool wrk: wrk is not on PATH")
    if args.duration <= 0 or args.warmup < 0 or min(args.reps, args.bulk_reps, args.concurrency,
                                                     args.ws_connections, args.ws_max_messages) < 1:
        ap.error("--duration must be > 0, --warmup >= 0, --reps, --bulk-reps, --concurrency, "
                 "--ws-connections and --ws-max-messages >= 1")
    if not 16 <= args.ws_size <= 1 << 20:
        ap.error("--ws-size must be 16 .. 1048576 bytes")
    return args


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Bench:
    """One benchmark run: the processes it started and the numbers it measured."""

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.cpus = procs.plan_cpus(not args.no_pin)
        self.started: list[procs.Managed] = []
        self.origin: procs.Managed | None = None
        self.proxy: procs.Managed | None = None
        self.reverse: procs.Managed | None = None
        self.origin_port = 0
        self.proxy_port = 0
        self.reverse_port = 0
        self.failed = False  # a scenario failed (the others still ran)
        self.peak_hwm_kb = 0
        self.hwm_resettable = False
        self.results: dict[str, Any] = {"started": datetime.datetime.now().isoformat(timespec="seconds"),
                              "config": {k: v for k, v in vars(args).items() if k != "json"},
                              "env": environment(), "cpus": {k: sorted(v) if v else None
                                                             for k, v in self.cpus.items()},
                              "keepalive": {"direct": [], "proxy": []},
                              "reverse": {"direct": [], "proxy": []},
                              "websocket": {"direct": [], "proxy": []}, "bulk": [], "upload": [],
                              "memory": {}, "reverse_memory": {}, "notes": []}

    # ------------------------------------------------------------ processes
    def start(self, argv: list[str], name: str, cpus: set[int] | None, capture: bool = False) -> procs.Managed:
        m = procs.Managed(argv, name, os.path.join(self.workdir, f"{name}.log"), capture_stdout=capture)
        self.started.append(m)
        procs.pin(m.pid, cpus)
        return m

    def stop_all(self) -> None:
        # A second Ctrl-C must not cut the clean-up short.
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._stop_all()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _stop_all(self) -> None:
        for m in reversed(self.started):
            info = m.stop()
            if m is self.proxy:
                self.results["proxy_exit"] = info
            elif m is self.reverse:
                self.results["reverse_exit"] = info
        self.started.clear()

    def stop_one(self, m: procs.Managed) -> dict[str, object]:
        """Stop one started process by its PID now (and forget it)."""
        info = m.stop()  # if this is interrupted, m stays in self.started for stop_all()
        self.started.remove(m)
        return info

    def start_origin(self) -> None:
        self.origin = self.start([sys.executable, os.path.join(HERE, "origin.py"), "--port", "0"], "origin",
                                 self.cpus["origin"], capture=True)
        line = self.origin.readline(timeout=15)
        if not line or not line.startswith("PORT "):
            raise RuntimeError(f"origin did not start: {self.origin.log_tail()}")
        self.origin_port = int(line.split()[1])

    def start_proxy(self) -> None:
        self.proxy_port = procs.free_port()
        argv = [sys.executable, "-m", "interceptkit", "--listen-host", "127.0.0.1",
                "--listen-port", str(self.proxy_port), "-q"]
        self.proxy = self.start(argv, "proxy", self.cpus["proxy"])
        if not procs.wait_listening(self.proxy_port, 30, self.proxy):
            raise RuntimeError(f"proxy did not listen on 127.0.0.1:{self.proxy_port}: {self.proxy.log_tail()}")
        procs.pin(self.proxy.pid, self.cpus["proxy"])  # again, for threads started meanwhile
        time.sleep(1.0)  # let it settle before the idle reading
        self.results["memory"]["idle"] = self.mem_now()
        self.hwm_resettable = procs.reset_hwm(self.proxy.pid)
        for mode in ("absolute", "connect"):
            r = transfer.download(mode, self.origin_port, self.proxy_port, 1024, timeout=10)
            if not r["ok"]:
                raise RuntimeError(f"sanity check through the proxy ({mode}) failed: {r['error']}; "
                                   f"proxy log: {self.proxy.log_tail()}")

    # ------------------------------------------------------------ memory
    def mem_now(self) -> dict[str, Any]:
        assert self.proxy is not None
        rss = procs.status_kb(self.proxy.pid, "VmRSS")
        hwm = procs.status_kb(self.proxy.pid, "VmHWM")
        self.peak_hwm_kb = max(self.peak_hwm_kb, hwm or 0)
        return {"rss_mb": procs.mb(rss), "hwm_mb": procs.mb(hwm)}

    def phase_begin(self) -> None:
        """Checkpoint VmHWM, then reset it so the next reading is this phase's peak."""
        assert self.proxy is not None
        self.mem_now()
        if self.hwm_resettable:
            procs.reset_hwm(self.proxy.pid)

    # ------------------------------------------------------------ keep-alive
    def pids(self, proxy: procs.Managed | None) -> dict[str, int]:
        # The proxy is metered in the direct run too: it should be idle then, and the
        # per-CPU accounting must not mistake it for another process.
        return {name: m.pid for name, m in (("origin", self.origin), ("proxy", proxy)) if m is not None}

    def judge(self, r: dict[str, Any]) -> dict[str, Any]:
        r["limit"] = report.keepalive_limit(r, self.results["cpus"])
        r["interference"] = report.interference(r, self.results["cpus"])
        return r

    def keepalive(self, target: str, proxy: procs.Managed | None) -> dict[str, Any]:
        """target: "direct", "proxy" (absolute-form to the forward proxy) or "reverse"
        (origin-form to the reverse proxy); ``proxy`` is the proxy process to meter."""
        pids = self.pids(proxy)
        if self.args.tool == "wrk":
            r = self.keepalive_wrk(target, pids)
        else:
            r = self.keepalive_python(target, pids)
        return self.judge(r)

    def keepalive_python(self, target: str, pids: dict[str, int]) -> dict[str, Any]:
        a = self.args
        argv = [sys.executable, os.path.join(HERE, "loadgen.py"), "--origin-port", str(self.origin_port),
                "-c", str(a.concurrency), "--duration", str(a.duration), "--warmup", str(a.warmup),
                "--max-requests", str(a.max_requests)]
        if target == "proxy":
            argv += ["--proxy-port", str(self.proxy_port)]
        elif target == "reverse":
            argv += ["--reverse-port", str(self.reverse_port)]
        return self.run_client(argv, f"loadgen-{target}", pids)

    def run_client(self, argv: list[str], name: str, pids: dict[str, int]) -> dict[str, Any]:
        """Run a load client that prints WARM, then one JSON line; meter the CPUs in between."""
        a = self.args
        gen = self.start(argv, name, self.cpus["load"], capture=True)
        meter = procs.CpuMeter(pids)
        try:
            line = gen.readline(timeout=a.warmup + 30)
            meter.start()
            while line is not None and not line.startswith("{"):
                line = gen.readline(timeout=a.duration + 30)
            cpu = meter.stop()
            if line is None:
                raise RuntimeError(f"load generator ({name}) gave no result: {gen.log_tail()}")
            r: dict[str, Any] = json.loads(line)
        finally:
            gen.stop(grace=10)
            self.started.remove(gen)
        r.update(cpu)
        return r

    def keepalive_wrk(self, target: str, pids: dict[str, int]) -> dict[str, Any]:
        a = self.args
        script, url = report.wrk_script(self.workdir, target, self.origin_port,
                                        self.reverse_port if target == "reverse" else self.proxy_port)
        base = ["wrk", "-t1", f"-c{a.concurrency}", "--timeout", "10s", "-s", script, url]
        if a.warmup > 0:
            self.run_wrk(base, max(1, round(a.warmup)), None)
        meter = procs.CpuMeter(pids)
        r = self.run_wrk(base, max(1, round(a.duration)), meter)
        r["warmup_errors"] = None
        return r

    def run_wrk(self, base: list[str], seconds: int, meter: procs.CpuMeter | None) -> dict[str, Any]:
        argv = base[:1] + [f"-d{seconds}s"] + base[1:]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        if meter:
            meter.start()
        m = self.start(argv, "wrk", self.cpus["load"], capture=True)
        t0 = time.monotonic()
        try:
            out, _ = m.proc.communicate(timeout=seconds + 30)
        finally:
            m.stop()
            self.started.remove(m)
        wall = time.monotonic() - t0
        cpu = meter.stop() if meter else {}
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = report.parse_wrk(out.decode(errors="replace"))
        if r is None:
            raise RuntimeError(f"wrk gave no result: {out[-400:]!r} {m.log_tail()}")
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        r["loadgen_cpu_pct"] = round(100 * used / wall, 1)
        r.update(cpu)
        return r

    # ------------------------------------------------------------ reverse mode
    def start_reverse(self) -> None:
        self.reverse_port = procs.free_port()
        argv = [sys.executable, "-m", "interceptkit", "--listen-host", "127.0.0.1",
                "--listen-port", str(self.reverse_port), "--mode", "reverse",
                "--route", f"/=http://127.0.0.1:{self.origin_port}", "-q"]
        self.reverse = self.start(argv, "proxy-reverse", self.cpus["proxy"])
        if not procs.wait_listening(self.reverse_port, 30, self.reverse):
            raise RuntimeError(f"reverse proxy did not listen on 127.0.0.1:{self.reverse_port}: "
                               f"{self.reverse.log_tail()}")
        procs.pin(self.reverse.pid, self.cpus["proxy"])
        time.sleep(1.0)
        mem = self.results["reverse_memory"]
        mem["idle_rss_mb"] = procs.mb(procs.status_kb(self.reverse.pid, "VmRSS"))
        mem["hwm_reset"] = procs.reset_hwm(self.reverse.pid)
        # origin-form, Host naming the reverse proxy: transfer's "direct" mode does exactly that
        r = transfer.download("direct", self.reverse_port, None, 1024, timeout=10)
        if not r["ok"]:
            raise RuntimeError(f"sanity check through the reverse proxy failed: {r['error']}; "
                               f"log: {self.reverse.log_tail()}")

    def run_reverse(self) -> None:
        try:
            self.start_reverse()
            assert self.reverse is not None
            for _ in range(self.args.reps):
                for target, key in (("direct", "direct"), ("reverse", "proxy")):
                    r = self.keepalive(target, self.reverse)
                    self.results["reverse"][key].append(r)
                    log(f"reverse-mode keep-alive {target}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, "
                        f"p99 {r['p99_ms']} ms, errors {r['errors']}")
            mem = self.results["reverse_memory"]
            mem["after_rss_mb"] = procs.mb(procs.status_kb(self.reverse.pid, "VmRSS"))
            mem["hwm_mb"] = procs.mb(procs.status_kb(self.reverse.pid, "VmHWM"))
            if not self.reverse.running():
                self.results["notes"].append("the reverse proxy exited during the run")
        finally:
            if self.reverse is not None:
                self.results["reverse_exit"] = self.stop_one(self.reverse)
                self.reverse = None

    # ------------------------------------------------------------ WebSocket
    def websocket(self, target: str) -> dict[str, Any]:
        a = self.args
        argv = [sys.executable, os.path.join(HERE, "wsloadgen.py"), "--origin-port", str(self.origin_port),
                "-c", str(a.ws_connections), "--size", str(a.ws_size), "--duration", str(a.duration),
                "--warmup", str(a.warmup), "--max-messages", str(a.ws_max_messages)]
        if target == "proxy":
            argv += ["--proxy-port", str(self.proxy_port)]
            self.phase_begin()
            before = self.mem_now()
        r = self.run_client(argv, f"wsloadgen-{target}", self.pids(self.proxy))
        if target == "proxy":
            after = self.mem_now()
            r.update(proxy_rss_before_mb=before["rss_mb"], proxy_rss_after_mb=after["rss_mb"],
                     proxy_hwm_mb=after["hwm_mb"], hwm_is_phase_peak=self.hwm_resettable)
        return self.judge(r)

    def run_websocket(self) -> None:
        for target, port in (("direct", None), ("proxy", self.proxy_port)):
            problem = wsloadgen.echo_once(self.origin_port, port, timeout=10)
            if problem:
                raise RuntimeError(f"WebSocket sanity check ({target}) failed: {problem}"
                                   + (f"; proxy log: {self.proxy.log_tail()}" if port and self.proxy else ""))
        for _ in range(self.args.reps):
            for target in ("direct", "proxy"):
                r = self.websocket(target)
                self.results["websocket"][target].append(r)
                log(f"websocket {target}: {r['msgs_per_s']:.0f} msg/s, p50 {r['p50_ms']} ms, "
                    f"p99 {r['p99_ms']} ms, errors {r['errors']}")
        self.results["memory"]["after_websocket"] = self.mem_now()

    def scenario(self, name: str, fn: Any) -> None:
        """Run one of the added scenarios; a failure is reported and the others still run."""
        try:
            fn()
        except RuntimeError as exc:
            self.failed = True
            self.results["notes"].append(f"{name} scenario failed: {exc}")
            log(f"{name} scenario FAILED: {exc}")

    # ------------------------------------------------------------ bulk
    def bulk(self, direction: str, mode: str, nbytes: int) -> dict[str, Any]:
        fn = transfer.download if direction == "download" else transfer.upload
        through = mode != "direct"
        sampler = None
        meter = procs.CpuMeter({"proxy": self.proxy.pid} if (through and self.proxy) else {})
        if through and self.proxy:
            self.phase_begin()
            before = self.mem_now()
            sampler = procs.RssSampler(self.proxy.pid, interval=0.02, limit_kb=self.args.rss_limit_mb * 1024)
            sampler.start()
        meter.start()
        r = fn(mode, self.origin_port, self.proxy_port if through else None, nbytes,
               timeout=self.args.transfer_timeout,
               should_stop=(sampler.over_limit.is_set if sampler else (lambda: False)))
        r.update(meter.stop())
        if sampler is not None:
            r["proxy_rss_sampled"] = sampler.finish()
            r["proxy_rss_before_mb"] = before["rss_mb"]
            after = self.mem_now()
            r["proxy_rss_after_mb"] = after["rss_mb"]
            r["proxy_hwm_mb"] = after["hwm_mb"]
            r["hwm_is_phase_peak"] = self.hwm_resettable
            if sampler.over_limit.is_set():
                r["rss_guard"] = f"proxy RSS passed {self.args.rss_limit_mb} MB"
        return r

    # ------------------------------------------------------------ the run
    def run(self) -> None:
        a = self.args
        quiet = procs.CpuMeter({})
        quiet.start()
        time.sleep(0.5)
        busy = {k: v for k, v in quiet.stop().items() if k.endswith("_busy_pct")}
        self.results["preflight_busy_pct"] = busy
        if any(v >= 10 for v in busy.values()):
            self.results["notes"].append(
                "the machine was already busy before the benchmark started (" + ", ".join(
                    f"{k[:-9]} {v:.0f}%" for k, v in sorted(busy.items())) + "); expect noisy numbers")
        sc = a.scenarios
        self.start_origin()
        if not set(sc) & {"keepalive", "websocket", "bulk", "upload"}:
            self.scenario("reverse", self.run_reverse)
            return
        self.start_proxy()
        assert self.proxy is not None
        self.phase_begin()
        if "keepalive" in sc:
            for _ in range(a.reps):
                for target in ("direct", "proxy"):
                    r = self.keepalive(target, self.proxy)
                    self.results["keepalive"][target].append(r)
                    log(f"keep-alive {target}: {r['rps']:.0f} req/s, p50 {r['p50_ms']} ms, "
                        f"p99 {r['p99_ms']} ms, errors {r['errors']}")
            self.results["memory"]["after_keepalive"] = self.mem_now()
        if "reverse" in sc:
            self.scenario("reverse", self.run_reverse)
        if "websocket" in sc:
            self.scenario("websocket", self.run_websocket)
        if "bulk" in sc:
            for _ in range(a.bulk_reps):
                for mode in transfer.MODES:
                    self.results["bulk"].append(self.bulk("download", mode, a.bulk_mb * MB))
                    log(report.transfer_line(self.results["bulk"][-1]))
        if a.upload:
            for direction in ("upload", "download"):
                for mode in transfer.MODES:
                    self.results["upload"].append(self.bulk(direction, mode, a.upload_bytes))
                    log(report.transfer_line(self.results["upload"][-1]))
        self.results["memory"]["end"] = self.mem_now()
        self.results["memory"]["peak_hwm_mb"] = procs.mb(self.peak_hwm_kb)
        self.results["memory"]["hwm_reset_per_phase"] = self.hwm_resettable
        if not self.proxy.running():
            self.results["notes"].append("the proxy exited during the run")


def environment() -> dict[str, Any]:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        from importlib.metadata import version
        ik_version = version("interceptkit")
    except Exception:  # noqa: BLE001 - informational only
        ik_version = None
    commit = None
    if shutil.which("git"):
        r = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, timeout=10, check=False)
        commit = r.stdout.decode().strip() or None
    return {"python": platform.python_version(), "kernel": platform.release(), "cpu": cpu,
            "ncpu": os.cpu_count(), "interceptkit": ik_version, "commit": commit,
            "wrk": shutil.which("wrk")}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    t0 = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="interceptkit-bench-")
    bench = Bench(args, workdir)
    if bench.cpus["origin"]:
        procs.pin(os.getpid(), bench.cpus["origin"])  # this process runs the download client
    status = 0
    http2 = "http2" in args.scenarios
    args.scenarios = [s for s in args.scenarios if s != "http2"]
    try:
        if args.scenarios:
            bench.run()
    except KeyboardInterrupt:
        bench.results["notes"].append("interrupted")
        log("interrupted; stopping the processes started")
        status = 130
    except RuntimeError as exc:
        bench.results["notes"].append(f"aborted: {exc}")
        log(f"ABORTED: {exc}")
        status = 1
    finally:
        bench.stop_all()
    if status == 0 and bench.failed:
        status = 1
    bench.results["elapsed_s"] = round(time.monotonic() - t0, 1)
    if args.scenarios:
        print(report.render(bench.results))
    if http2 and status == 0:
        import h2load  # its own origins and proxy; prints its table (and issue 10's targets)
        status = h2load.main([])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.results, f, indent=1)
        log(f"wrote {args.json}")
    if status == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"process logs kept in {workdir}")
    return status


if __name__ == "__main__":
    sys.exit(main())
