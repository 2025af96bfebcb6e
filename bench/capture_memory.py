"""Capture memory: N requests of 64 KiB through a notebook-style Proxy() stay within idle + budget + 50 MB.

Run: ``python bench/capture_memory.py --requests 100000`` (``--seconds`` bounds the
run; ``--budget`` sets max_capture_bytes in MiB, ``--budget none`` for no limit).
Everything is on 127.0.0.1: the origin is bench/origin.py in a subprocess, the
proxy runs in this process with its defaults (max_flows=10,000,
body_capture_limit=64 KiB), and the client threads use keep-alive
connections through it. Memory is this process's resident set (VmRSS, VmHWM).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from interceptkit import Proxy  # noqa: E402

BODY = 64 * 1024
MB = 1e6


def rss(field: str = "VmRSS") -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def start_origin() -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "origin.py"), "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, int(line.split()[1])


def client(proxy_port: int, origin_port: int, count: list[int], total: int, deadline: float,
           lock: threading.Lock) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=30)
    target = f"http://127.0.0.1:{origin_port}/bytes/{BODY}"
    while time.monotonic() < deadline:
        with lock:
            if count[0] >= total:
                return
            count[0] += 1
        connection.request("GET", target)
        response = connection.getresponse()
        if len(response.read()) != BODY:
            raise RuntimeError("short body")
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--budget", default="256", help="max_capture_bytes in MiB, or 'none'")
    args = parser.parse_args()
    budget = None if args.budget == "none" else int(float(args.budget) * 2**20)
    os.environ["INTERCEPTKIT_HOME"] = tempfile.mkdtemp(prefix="capture-memory-")
    origin, origin_port = start_origin()
    try:
        proxy = Proxy(port=0, max_capture_bytes=budget).start()
        gc.collect()
        idle = rss()
        count, lock = [0], threading.Lock()
        started = time.monotonic()
        deadline = started + args.seconds
        threads = [threading.Thread(target=client, args=(proxy.port, origin_port, count, args.requests,
                                                          deadline, lock)) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # the last flows finish
        gc.collect()
        final, peak = rss(), rss("VmHWM")
        table = proxy.flows
        print(f"requests       {count[0]:,} of {BODY // 1024} KiB in {elapsed:.1f} s ({count[0] / elapsed:,.0f}/s)")
        print(f"flows kept     {len(table):,} (max_flows={table.max_flows:,}, {table.dropped:,} dropped)")
        held = sum(len(f.request.content) + len(f.response.content if f.response else b"") for f in table
                   if not f.request.body_dropped and not (f.response is not None and f.response.body_dropped))
        print(f"budget         {'none' if budget is None else f'{budget / MB:.1f} MB'}; bodies held "
              f"{held / MB:.1f} MB; {table.bodies_dropped:,} flows' bodies dropped")
        print(f"rss idle       {idle / MB:.1f} MB (proxy started, no traffic)")
        print(f"rss after      {final / MB:.1f} MB  (+{(final - idle) / MB:.1f} MB)")
        print(f"rss peak       {peak / MB:.1f} MB  (+{(peak - idle) / MB:.1f} MB)")
        if budget is not None:
            bound = idle + budget + 50 * MB
            print(f"bound          idle + budget + 50 MB = {bound / MB:.1f} MB: "
                  f"{'within' if peak <= bound else 'EXCEEDED'} (peak)")
        proxy.stop()
    finally:
        origin.terminate()
        origin.wait(10)


if __name__ == "__main__":
    main()
