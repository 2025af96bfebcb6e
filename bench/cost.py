#!/usr/bin/env python3
"""What one forwarded request costs the proxy, counted instead of timed.

Wall-clock req/s on a shared machine moves by ±20 % from run to run; a count
does not. This starts the origin (bench/origin.py) and the proxy (the CLI of
``--python``, so two checkouts can be compared), sends ``--warmup`` requests,
then counts over ``--requests`` sequential keep-alive GETs of /1k through one
client connection, each with only a Host field, as wrk sends them in the
referee's S1. ``--origin PORT`` uses an origin already listening on
127.0.0.1 instead (the referee's nginx: its answer has nginx's fields):

  instructions  the proxy process's user-space instructions per request, from
                valgrind's callgrind (zeroed after the warm-up, dumped after
                the load); the same binary, inputs and code give the same count
  bytecodes     Python bytecodes executed per request, per function (a trace
                function in the proxy process), with ``--bytecodes``

Both are per request: (count over the load) / requests. 127.0.0.1 only; every
process is stopped by its PID.

  python bench/cost.py                          # instructions (needs valgrind)
  python bench/cost.py --bytecodes --top 30     # where the Python work goes
  python bench/cost.py --python ../old/venv/bin/python   # another checkout's proxy
  python bench/cost.py --origin 18080           # the referee's nginx, while it runs
  python bench/cost.py --origin 18080 --intercept 18443 --upstream-ca /tmp/benchwork/origin/origin.crt
                                                # intercepted HTTPS (the referee's S2 path)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import procs

# Run inside the proxy's interpreter: counts bytecodes per function between SIGUSR1 and SIGUSR2.
_TRACER = """
import collections, json, os, signal, sys
counts = collections.Counter()
def tracer(frame, event, arg):
    frame.f_trace_opcodes, frame.f_trace_lines = True, False
    code = frame.f_code
    key = f"{code.co_filename}:{code.co_firstlineno}:{code.co_name}"
    def local(frame, event, arg):
        if event == "opcode":
            counts[key] += 1
        return local
    return local
signal.signal(signal.SIGUSR1, lambda *a: sys.settrace(tracer))
def stop(*a):
    sys.settrace(None)
    with open(os.environ["COST_OUT"], "w") as f:
        json.dump(counts, f)
signal.signal(signal.SIGUSR2, stop)
from interceptkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Client:
    """Sequential keep-alive GETs of /1k through the proxy, each with only a Host field (wrk's shape).

    With ``tls_origin`` they go through a CONNECT to ``localhost:tls_origin`` that the
    proxy intercepts (the client trusts only the proxy's CA, so interception is proven).
    """

    def __init__(self, port: int, origin: int, tls_origin: int | None, ca: str) -> None:
        self.port, self.origin, self.tls_origin, self.ca = port, origin, tls_origin, ca
        self.sock: socket.socket | None = None

    def get(self, n: int) -> None:
        if self.sock is None:
            self.sock = self._connect()
        if self.tls_origin is None:
            request = f"GET http://127.0.0.1:{self.origin}/1k HTTP/1.1\r\nHost: 127.0.0.1:{self.origin}\r\n\r\n"
        else:
            request = f"GET /1k HTTP/1.1\r\nHost: localhost:{self.tls_origin}\r\n\r\n"
        reader = self.sock.makefile("rb")
        for _ in range(n):
            self.sock.sendall(request.encode())
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not status.startswith(b"HTTP/1.1 200") or len(reader.read(length)) != 1024:
                raise SystemExit(f"unexpected answer through the proxy: {status!r}")

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        if self.tls_origin is None:
            return sock
        sock.sendall(f"CONNECT localhost:{self.tls_origin} HTTP/1.1\r\nHost: localhost:{self.tls_origin}\r\n\r\n"
                     .encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"CONNECT refused: {answer[:80]!r}")
        context = ssl.create_default_context(cafile=self.ca)
        return context.wrap_socket(sock, server_hostname="localhost")


def run(args: argparse.Namespace, work: str, bytecodes: bool) -> float | dict[str, float]:
    port = procs.free_port()
    origin: procs.Managed | None = None
    origin_port = args.origin
    if origin_port is None:
        origin_port = procs.free_port()
        origin = procs.Managed([sys.executable, os.path.join(HERE, "origin.py"), "--port", str(origin_port)],
                               "origin")
    proxy_args = ["--listen-host", "127.0.0.1", "--listen-port", str(port), "--confdir", work, "-q"]
    if args.upstream_ca:
        proxy_args += ["--upstream-ca", args.upstream_ca]
    if args.loop:  # (a checkout from before --loop existed runs on asyncio)
        proxy_args += ["--loop", args.loop]
    out = os.path.join(work, "counts.json" if bytecodes else "callgrind.out")
    if bytecodes:
        script = os.path.join(work, "tracer.py")
        with open(script, "w") as f:
            f.write(_TRACER)
        argv = [args.python, script, *proxy_args]
    else:
        cli = os.path.join(os.path.dirname(args.python), "interceptkit")
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", args.python, cli, *proxy_args]
    os.environ["COST_OUT"] = out
    # String hashes are salted per process: dicts and sets then differ in
    # layout, and the count by about 0.5 %. One seed makes it repeat exactly.
    os.environ.setdefault("PYTHONHASHSEED", "0")
    proxy = procs.Managed(argv, "proxy")
    try:
        if not procs.wait_listening(origin_port, 10, origin or proxy) or not procs.wait_listening(port, 120, proxy):
            raise SystemExit("the origin or the proxy did not start")
        client = Client(port, origin_port, args.intercept, os.path.join(work, "interceptkit-ca-cert.pem"))
        client.get(args.warmup)
        if bytecodes:
            os.kill(proxy.pid, signal.SIGUSR1)
        else:
            procs_run(["callgrind_control", "-z", str(proxy.pid)])
        client.get(args.requests)
        if bytecodes:
            os.kill(proxy.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not os.path.exists(out) and time.monotonic() < deadline:
                time.sleep(0.1)
        else:
            procs_run(["callgrind_control", "-d", str(proxy.pid)])
    finally:
        proxy.stop(30)
        if origin is not None:
            origin.stop()
    if bytecodes:
        with open(out) as f:
            return {k: v / args.requests for k, v in json.load(f).items()}
    with open(out + ".1") as f:  # the dump after the load (the final one counts start-up too)
        total = re.search(r"^summary: (\d+)", f.read(), re.M)
    assert total is not None, "callgrind wrote no summary"
    return int(total.group(1)) / args.requests


def procs_run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def report_bytecodes(counts: dict[str, float], top: int) -> None:
    def where(key: str) -> str:
        path, line, name = key.rsplit(":", 2)
        short = path.split("site-packages/")[-1].split("interceptkit/")[-1] if "/" in path else path
        return f"{short}:{line} {name}"
    groups = {"interceptkit": 0.0, "h11": 0.0, "other": 0.0}
    for key, n in counts.items():
        groups["interceptkit" if "/interceptkit/" in key else "h11" if "/h11/" in key else "other"] += n
    print(f"bytecodes per request: {sum(counts.values()):,.0f} "
          f"(interceptkit {groups['interceptkit']:,.0f}, h11 {groups['h11']:,.0f}, other {groups['other']:,.0f})")
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n:8.1f}  {where(key)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose interceptkit to count")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "auto"), default=None,
                        help="the proxy's --loop (default: not passed, the CLI's own default)")
    parser.add_argument("--bytecodes", action="store_true", help="count Python bytecodes per function instead")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--intercept", type=int, default=None, metavar="TLS_PORT",
                        help="count intercepted HTTPS: GETs through a CONNECT to localhost:TLS_PORT (an origin already "
                             "listening with TLS, e.g. the referee's nginx on 18443; needs --upstream-ca)")
    parser.add_argument("--upstream-ca", default=None, metavar="FILE",
                        help="the CA the proxy trusts for the TLS origin (the referee's: /tmp/benchwork/origin/origin.crt)")
    parser.add_argument("--origin", type=int, default=None, metavar="PORT",
                        help="an origin already listening on 127.0.0.1:PORT that serves /1k (default: start origin.py)")
    args = parser.parse_args()
    if args.requests < 1 or args.requests > 100_000:
        parser.error("--requests: 1 to 100,000")
    if args.intercept is not None and not args.upstream_ca:
        parser.error("--intercept needs --upstream-ca (the proxy verifies the origin's certificate)")
    if not args.bytecodes and shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind), or use --bytecodes")
    with tempfile.TemporaryDirectory(prefix="ik-cost-") as work:
        result = run(args, work, args.bytecodes)
    if isinstance(result, dict):
        report_bytecodes(result, args.top)
    else:
        what = "intercepted HTTPS" if args.intercept is not None else "plain HTTP"
        print(f"instructions per request: {result / 1e6:.4f} M  ({args.requests} {what} requests, "
              f"loop {args.loop or 'the CLI default'})")


if __name__ == "__main__":
    main()
