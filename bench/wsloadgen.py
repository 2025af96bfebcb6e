"""WebSocket echo load client (asyncio Protocols, standard library only).

N connections to the bench origin's ``/ws`` echo endpoint, directly (origin-form
``GET /ws``) or through a forward proxy (absolute-form
``GET http://127.0.0.1:ORIGIN/ws``).  After the RFC 6455 handshake (the
Sec-WebSocket-Accept is checked) each connection sends one masked text message
of --size bytes, waits for its echo (checked byte for byte) and sends the next.
Bounded by warm-up + duration and by --max-messages; echoes of messages sent
during the warm-up are not counted.

It prints ``WARM`` when the warm-up ends, then one JSON line with the results.
``echo_once()`` is a blocking one-message check for the caller's sanity test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsframe
from loadgen import Window, connect_loop, measure, ms, percentile

MAX_HEAD = 64 * 1024
MAX_ERRORS = 100_000


def handshake_request(origin_port: int, via_proxy: bool, key: str) -> bytes:
    origin = f"127.0.0.1:{origin_port}"
    target = f"http://{origin}/ws" if via_proxy else "/ws"
    return (f"GET {target} HTTP/1.1\r\nHost: {origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"User-Agent: interceptkit-bench\r\n\r\n").encode()


def check_handshake(head: bytes, key: str) -> str | None:
    """None if ``head`` (without the blank line) is a valid 101 for ``key``, else what is wrong."""
    lines = head.split(b"\r\n")
    if lines[0][9:12] != b"101":
        return f"handshake answered {lines[0][:60]!r}"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"sec-websocket-accept", b"").decode(errors="replace") != wsframe.accept_key(key):
        return "wrong Sec-WebSocket-Accept"
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        return "no Upgrade: websocket in the 101"
    return None


def message(conn: int, seq: int, size: int) -> bytes:
    """A text payload of ``size`` bytes that is unique per connection and message."""
    tag = f"{conn}:{seq}:".encode()
    return (tag + b"x" * max(0, size - len(tag)))[:max(size, len(tag))]


class Run(Window):
    """One WebSocket echo load run."""

    def __init__(self, size: int, warmup: float, duration: float, max_messages: int, origin_port: int,
                 via_proxy: bool) -> None:
        super().__init__(warmup, duration, max_messages)
        self.size = size
        self.origin_port = origin_port
        self.via_proxy = via_proxy
        self.handshakes = 0
        self.handshake_times = array("d")


class Client(asyncio.Protocol):
    """One WebSocket connection with at most one message in flight."""

    def __init__(self, run: Run, cid: int, addr: tuple[str, int]) -> None:
        self.run = run
        self.cid = cid
        self.addr = addr
        self.transport: asyncio.Transport | None = None
        self.key = wsframe.new_key()
        self.head = bytearray()
        self.parser: wsframe.Parser | None = None  # set after the 101
        self.seq = 0
        self.expect = b""
        self.t0 = 0.0
        self.in_flight = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.run.clients.add(self)
        self.t0 = time.perf_counter()
        self.in_flight = True
        transport.write(handshake_request(self.run.origin_port, self.run.via_proxy, self.key))

    def send(self) -> None:
        assert self.transport is not None
        if not self.run.may_send():
            self.close()
            return
        self.run.sent += 1
        self.seq += 1
        self.expect = message(self.cid, self.seq, self.run.size)
        self.in_flight = True
        self.t0 = time.perf_counter()
        self.transport.write(wsframe.encode(wsframe.TEXT, self.expect, masked=True))

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.in_flight = False
            self.transport.write(wsframe.encode(wsframe.CLOSE, wsframe.close_payload(1000), masked=True))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.parser is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self.fail("handshake head too large")
                return
            problem = check_handshake(bytes(self.head[:end]), self.key)
            if problem:
                self.fail(problem)
                return
            self.run.handshakes += 1
            self.run.handshake_times.append(time.perf_counter() - self.t0)
            data = bytes(self.head[end + 4:])
            self.head.clear()
            self.parser = wsframe.Parser(expect_masked=False)
            self.in_flight = False
            self.send()
            if not data:
                return
        try:
            frames = self.parser.feed(data)
        except wsframe.FrameError as exc:
            self.fail(f"bad frame: {exc}")
            return
        for fin, opcode, payload in frames:
            if opcode == wsframe.PING:
                assert self.transport is not None
                self.transport.write(wsframe.encode(wsframe.PONG, payload, masked=True))
                continue
            if opcode == wsframe.PONG:
                continue
            if opcode == wsframe.CLOSE:
                self.fail("closed by the server")
                return
            t1 = time.perf_counter()
            if not self.in_flight:
                self.fail("unexpected message")
                return
            self.in_flight = False
            run = self.run
            if not fin or opcode != wsframe.TEXT:
                run.error("fragmented or non-text echo", self.t0)
            elif payload != self.expect:
                run.error("echo differs", self.t0)
            elif self.t0 >= run.warm_end:
                run.latencies.append(t1 - self.t0)
            self.send()
            if self.closing:
                return

    def fail(self, kind: str) -> None:
        self.run.error(kind, self.t0)
        self.in_flight = False
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.clients.discard(self)
        if not self.run.stopped.is_set() and (self.in_flight or not self.closing):
            if self.in_flight:
                self.run.error("connection lost", self.t0)
            host, port = self.addr
            asyncio.get_running_loop().create_task(
                connect_loop(self.run, _factory(self.run, self.cid, host, port), host, port))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    via_proxy = bool(args.proxy_port)
    port = args.proxy_port or args.origin_port
    run = Run(args.size, args.warmup, args.duration, args.max_messages, args.origin_port, via_proxy)
    await asyncio.gather(*(connect_loop(run, _factory(run, i, "127.0.0.1", port), "127.0.0.1", port)
                           for i in range(args.connections)))
    stats = await measure(run)
    hs = sorted(run.handshake_times)
    return {"tool": "python", "target": "proxy" if via_proxy else "direct", "connections": args.connections,
            "size": args.size, "messages": stats.pop("count"), "msgs_per_s": stats.pop("rate"),
            "handshakes": run.handshakes, "handshake_p50_ms": ms(percentile(hs, 50)),
            "hit_max_messages": stats.pop("hit_limit"), **stats}


def _factory(run: Run, cid: int, host: str, port: int) -> Callable[[], asyncio.Protocol]:
    return lambda: Client(run, cid, (host, port))


def echo_once(origin_port: int, proxy_port: int | None, timeout: float = 10.0) -> str | None:
    """Handshake and one echoed message over blocking sockets; None if fine, else what failed."""
    key = wsframe.new_key()
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", proxy_port or origin_port), timeout=timeout) as s:
            s.sendall(handshake_request(origin_port, proxy_port is not None, key))
            data = b""
            while b"\r\n\r\n" not in data and len(data) < MAX_HEAD and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    return f"connection closed during the handshake ({data[:80]!r})"
                data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if not sep:
                return "no handshake answer"
            problem = check_handshake(head, key)
            if problem:
                return problem
            parser = wsframe.Parser(expect_masked=False)
            payload = message(0, 1, 64)
            s.sendall(wsframe.encode(wsframe.TEXT, payload, masked=True))
            frames = parser.feed(rest)
            while not frames and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    return "connection closed before the echo"
                frames = parser.feed(chunk)
            if not frames or frames[0] != (True, wsframe.TEXT, payload):
                return f"bad echo {frames[:1]!r}"
            s.sendall(wsframe.encode(wsframe.CLOSE, wsframe.close_payload(1000), masked=True))
    except (OSError, wsframe.FrameError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--origin-port", type=int, required=True)
    ap.add_argument("--proxy-port", type=int, default=0, help="connect through this forward proxy (absolute-form)")
    ap.add_argument("-c", "--connections", type=int, default=10)
    ap.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--max-messages", type=int, default=1_000_000)
    args = ap.parse_args()
    if args.size < 16 or args.size > wsframe.MAX_PAYLOAD or args.connections < 1:
        ap.error("--size must be 16 .. 16 MiB and --connections >= 1")
    result = asyncio.run(main_async(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
