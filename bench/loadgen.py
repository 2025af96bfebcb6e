"""Keep-alive HTTP/1.1 load generator (asyncio Protocols, standard library only).

N connections, each sending one GET at a time and reading exactly one response
(by Content-Length) before sending the next.  Through a proxy the request
uses absolute-form (``GET http://127.0.0.1:PORT/1k HTTP/1.1``); direct, and to
a reverse proxy (--reverse-port, Host naming the reverse proxy), origin-form.  Bounded by warm-up + duration and by --max-requests.
Latencies of requests started during the warm-up are not recorded.

It prints ``WARM`` when the warm-up ends (so the caller can start its own CPU
meters), then one JSON line with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

MAX_HEAD = 64 * 1024
MAX_ERRORS = 100_000


def percentile(sorted_xs: list[float], q: float) -> float | None:
    if not sorted_xs:
        return None
    rank = math.ceil(q / 100 * len(sorted_xs))  # nearest-rank percentile
    return sorted_xs[min(len(sorted_xs), max(1, rank)) - 1]


def ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 3)


class Window:
    """A bounded load run: a warm-up, a measured window, a cap on what is sent, error counts."""

    def __init__(self, warmup: float, duration: float, limit: int) -> None:
        self.limit = limit
        self.start = time.perf_counter()
        self.warm_end = self.start + warmup
        self.end = self.warm_end + duration
        self.sent = 0
        self.latencies = array("d")
        self.errors = 0            # during the measured window
        self.warmup_errors = 0
        self.error_kinds: dict[str, int] = {}
        self.stopped = asyncio.Event()
        self.clients: set[Any] = set()

    def may_send(self) -> bool:
        if self.sent >= self.limit or time.perf_counter() >= self.end:
            self.stopped.set()
            return False
        return not self.stopped.is_set()

    def error(self, kind: str, t0: float) -> None:
        if t0 >= self.warm_end:
            self.errors += 1
        else:
            self.warmup_errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if self.errors + self.warmup_errors >= MAX_ERRORS:
            self.stopped.set()


class Run(Window):
    """One keep-alive HTTP load run."""

    def __init__(self, request: bytes, expect_body: int, warmup: float, duration: float, max_requests: int):
        super().__init__(warmup, duration, max_requests)
        self.request = request
        self.expect_body = expect_body


class Client(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, run: Run, addr: tuple[str, int]) -> None:
        self.run = run
        self.addr = addr
        self.ok = False
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1          # total bytes of the current response (head + body), once known
        self.t0 = 0.0
        self.in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.run.clients.add(self)
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        if not self.run.may_send():
            self.transport.close()
            return
        self.run.sent += 1
        self.in_flight = True
        self.t0 = time.perf_counter()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.need < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.fail("header too large")
                return
            head = bytes(buf[:end]).lower()
            i = head.find(b"\r\ncontent-length:")
            if i < 0:
                self.fail("no content-length")
                return
            j = head.find(b"\r\n", i + 2)
            self.need = end + 4 + int(head[i + 17:j if j >= 0 else len(head)])
            self.ok = head[9:12] == b"200"
        if len(buf) < self.need:
            return
        t1 = time.perf_counter()
        extra = len(buf) != self.need
        del buf[:]
        self.need = -1
        self.in_flight = False
        run = self.run
        if not self.ok:
            run.error("status", self.t0)
        elif extra:
            run.error("unexpected bytes", self.t0)
        elif self.t0 >= run.warm_end:
            run.latencies.append(t1 - self.t0)
        self.send()

    def fail(self, kind: str) -> None:
        self.run.error(kind, self.t0)
        self.in_flight = False
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.clients.discard(self)
        if self.in_flight and not self.run.stopped.is_set():
            self.run.error("connection lost", self.t0)
            host, port = self.addr
            asyncio.get_running_loop().create_task(
                connect_loop(self.run, lambda: Client(self.run, (host, port)), host, port))


async def connect_loop(run: Window, factory: Callable[[], asyncio.Protocol], host: str, port: int) -> None:
    """Open one connection, retrying (bounded by the run's end) when connecting fails."""
    loop = asyncio.get_running_loop()
    while run.may_send():
        try:
            await asyncio.wait_for(loop.create_connection(factory, host, port), 5)
            return
        except (OSError, asyncio.TimeoutError):
            run.error("connect", time.perf_counter())
            await asyncio.sleep(0.05)


async def measure(run: Window) -> dict[str, Any]:
    """Wait out the run (saying WARM when the warm-up ends), stop it, and summarise what was measured."""

    async def announce_warm() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, run.warm_end - time.perf_counter()))
        sys.stdout.write("WARM\n")
        sys.stdout.flush()
        return time.perf_counter(), time.process_time()

    warm_task = asyncio.create_task(announce_warm())
    try:
        await asyncio.wait_for(run.stopped.wait(), timeout=max(0.0, run.end - time.perf_counter()) + 0.05)
    except asyncio.TimeoutError:
        pass
    run.stopped.set()
    t_stop, cpu_stop = time.perf_counter(), time.process_time()
    if not warm_task.done():
        warm_task.cancel()
        warm_at, cpu_warm = run.warm_end, cpu_stop
    else:
        warm_at, cpu_warm = warm_task.result()
    unfinished = sum(1 for c in list(run.clients) if c.in_flight)
    for c in list(run.clients):
        c.close()
    await asyncio.sleep(0.1)
    window = max(t_stop - max(run.warm_end, run.start), 1e-9)
    lat = sorted(run.latencies)
    return {
        "window_s": round(window, 3), "count": len(lat), "rate": round(len(lat) / window, 1),
        "errors": run.errors, "warmup_errors": run.warmup_errors, "error_kinds": run.error_kinds,
        "unfinished_at_stop": unfinished, "sent_total": run.sent,
        "p50_ms": ms(percentile(lat, 50)), "p90_ms": ms(percentile(lat, 90)), "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None), "mean_ms": ms(sum(lat) / len(lat) if lat else None),
        "loadgen_cpu_pct": round(100 * (cpu_stop - cpu_warm) / max(t_stop - warm_at, 1e-9), 1),
        "hit_limit": run.sent >= run.limit,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    target_host = f"127.0.0.1:{args.origin_port}"
    if args.proxy_port:
        line = f"GET http://{target_host}{args.path} HTTP/1.1"
        host, port = "127.0.0.1", args.proxy_port
    elif args.reverse_port:
        line = f"GET {args.path} HTTP/1.1"
        host, port = "127.0.0.1", args.reverse_port
        target_host = f"127.0.0.1:{args.reverse_port}"
    else:
        line = f"GET {args.path} HTTP/1.1"
        host, port = "127.0.0.1", args.origin_port
    request = f"{line}\r\nHost: {target_host}\r\nUser-Agent: interceptkit-bench\r\n\r\n".encode()
    run = Run(request, 1024, args.warmup, args.duration, args.max_requests)
    await asyncio.gather(*(connect_loop(run, lambda: Client(run, (host, port)), host, port)
                           for _ in range(args.concurrency)))
    stats = await measure(run)
    target = "proxy" if args.proxy_port else "reverse" if args.reverse_port else "direct"
    return {"tool": "python", "target": target, "concurrency": args.concurrency,
            "requests": stats.pop("count"), "rps": stats.pop("rate"),
            "hit_max_requests": stats.pop("hit_limit"), **stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--origin-port", type=int, required=True)
    ap.add_argument("--proxy-port", type=int, default=0, help="send absolute-form requests through this proxy")
    ap.add_argument("--reverse-port", type=int, default=0,
                    help="send origin-form requests to this reverse proxy instead of the origin")
    ap.add_argument("--path", default="/1k")
    ap.add_argument("-c", "--concurrency", type=int, default=50)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    args = ap.parse_args()
    if args.proxy_port and args.reverse_port:
        ap.error("--proxy-port and --reverse-port exclude each other")
    result = asyncio.run(main_async(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
