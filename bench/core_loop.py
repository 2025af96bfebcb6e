#!/usr/bin/env python3
"""What the sans-IO core alone costs per forwarded request: no sockets, no event loop.

One ``ProxyConnection`` forwards ``--requests`` keep-alive GETs shaped as wrk
sends them in the referee's S1 (Host only), each answered as nginx answers
``/1k`` (its nine fields and 1 KiB). Three figures, per request:

  (default)   wall-clock µs, min and median of ``--rounds`` runs: what the
              referee's req/s follows, but noisy (pin it: ``taskset -c 1``)
  --count     user-space instructions under valgrind's callgrind, the
              count of (warm-up + N) minus the warm-up alone: repeats exactly
  --cache     with --count: also first-level data-cache misses (callgrind's
              cache simulation). The new core shape taught us that these move
              the wall clock more than the instruction count does.
  --cold      wall clock with 2 MiB written before each half of a request:
              a real proxy waits in the kernel between them, which evicts the
              caches, so this is closer to what the referee's req/s follows
  --count --cold
              the cold footprint, counted: callgrind simulates a 2 MiB
              second-level cache (this machine's L2) that 4 MiB evict before
              each half; its misses per request, for instructions and for data
              reads, are the lines a request brings back from memory. Repeats
              exactly, like the instruction count

``--python`` runs it with another interpreter, so another checkout's core is
measured in the same sitting (the core's event API is the same since 0.1.0):

  python bench/core_loop.py
  python bench/core_loop.py --count --cache
  python bench/core_loop.py --count --python ../old/venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REQUEST = b"GET http://127.0.0.1:18080/1k HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n"
ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 10:00:00 GMT\r\n"
          b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
          b"Last-Modified: Wed, 02 Dec 2026 09:00:00 GMT\r\nConnection: keep-alive\r\n"
          b"ETag: \"1-400\"\r\nAccept-Ranges: bytes\r\n\r\n" + b"x" * 1024)
WARMUP = 500


def forward(n: int, cold: bool = False, evict: int = 2 << 20) -> float:
    """``n`` requests through one connection; the upstream connects at once and answers whole.

    With ``cold``, ``evict`` bytes are written before each half of every request (as
    the kernel's work between them evicts the caches in a real proxy), and
    the seconds spent in the core alone are returned.
    """
    from interceptkit.core import commands as cmd
    from interceptkit.core import events as ev
    from interceptkit.core.config import ProxyConfig
    from interceptkit.core.connection import ProxyConnection

    client = ("127.0.0.1", 50000)
    conn = ProxyConnection(ProxyConfig(), client)
    conn.handle(ev.ClientConnected(time=0.0, address=client))
    upstream, spent = 0, 0.0
    junk, piece = bytearray(evict), b"x" * (evict // 64)
    clock = time.perf_counter
    for _ in range(n):
        if cold:
            junk[::64] = piece  # one write per cache line
        start = clock()
        for command in conn.handle(ev.ClientDataReceived(time=0.0, data=REQUEST)):
            if isinstance(command, cmd.OpenUpstream):
                upstream = command.upstream
                conn.handle(ev.UpstreamConnected(time=0.0, upstream=upstream, reused=False,
                                                 address=("127.0.0.1", 18080)))
        spent += clock() - start
        if cold:
            junk[::64] = piece
        start = clock()
        out = conn.handle(ev.UpstreamDataReceived(time=0.0, upstream=upstream, data=ANSWER))
        spent += clock() - start
        if not any(isinstance(command, cmd.SendToClient) for command in out):
            raise SystemExit(f"the answer did not reach the client: {out}")
    return spent


#: --count --cold: this machine's first-level caches, and its 2 MiB second level as callgrind's last level.
_SECOND_LEVEL = ["--cache-sim=yes", "--I1=65536,16,64", "--D1=49152,12,64", "--LL=2097152,16,64"]


def callgrind(python: str, n: int, cache: bool, cold: bool = False) -> dict[str, int]:
    """Event totals of one run of ``forward(n)`` under callgrind (``cold``: evicting 4 MiB, 2 MiB simulated L2)."""
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "callgrind.out")
        sim = _SECOND_LEVEL if cold else ["--cache-sim=yes"] if cache else []
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *sim,
                python, os.path.abspath(__file__), "--once", str(n), *(["--cold"] if cold else [])]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONHASHSEED": "0"}, timeout=1800)
        with open(out) as f:
            text = f.read()
    names = re.search(r"^events: (.+)$", text, re.M)
    totals = re.search(r"^summary: (.+)$", text, re.M)
    assert names and totals, "callgrind wrote no summary"
    return dict(zip(names.group(1).split(), map(int, totals.group(1).split())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose interceptkit to measure")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="wall clock: runs to take the min and median of")
    parser.add_argument("--count", action="store_true", help="instructions per request (needs valgrind)")
    parser.add_argument("--cache", action="store_true", help="with --count: D1 misses per request too")
    parser.add_argument("--cold", action="store_true",
                        help="wall clock with the caches evicted before each half of a request, as in a real proxy; "
                             "with --count: the misses of a simulated 2 MiB second-level cache")
    parser.add_argument("--once", type=int, default=None, help=argparse.SUPPRESS)  # one run, nothing printed
    args = parser.parse_args()
    if args.once is not None:
        forward(args.once, args.cold, 4 << 20)
        return
    n = args.requests
    if args.count:
        base = callgrind(args.python, WARMUP, args.cache, args.cold)
        full = callgrind(args.python, WARMUP + n, args.cache, args.cold)
        per = {name: (full[name] - base[name]) / n for name in full}
        line = f"instructions per request: {per['Ir'] / 1e6:.4f} M"
        if args.cold:  # (the eviction's own instructions and reads are the same for every checkout)
            line += (f" (with the eviction); 2 MiB second-level misses per request: instructions "
                     f"{per['ILmr']:,.0f}, data reads {per['DLmr']:,.0f}")
        elif args.cache:
            line += f"; D1 read misses per request: {per['D1mr']:,.0f}"
        print(f"{line}  ({n} requests, {args.python})")
        return
    # Run from bench/ (not the caller's folder, which may hold another checkout's package).
    code = ("import sys, core_loop as c; cold = sys.argv[2] == '1'; c.forward(500, cold); "
            "print(c.forward(int(sys.argv[1]), cold))")
    here = os.path.dirname(os.path.abspath(__file__))
    times = [float(subprocess.run([args.python, "-c", code, str(n), "1" if args.cold else "0"], check=True,
                                  capture_output=True, text=True, cwd=here,
                                  env={**os.environ, "PYTHONHASHSEED": "0"}).stdout) / n * 1e6
             for _ in range(args.rounds)]
    print(f"µs per request{' (cold caches)' if args.cold else ''}: min {min(times):.1f}, "
          f"median {statistics.median(times):.1f}  ({args.rounds} runs of {n} requests, {args.python})")


if __name__ == "__main__":
    main()
