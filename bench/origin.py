"""Benchmark origin: a small, fast HTTP/1.1 server for 127.0.0.1 (standard library only).

It parses just enough HTTP/1.1 for the benchmark, with keep-alive:

- ``GET /1k``       200 with a 1024-byte body (one prebuilt write).
- ``GET /bytes/N``  200 with N bytes, streamed in 1 MiB writes with back-pressure
  (pause_writing/resume_writing), so N may be far larger than memory.
- ``POST /upload``  reads and discards a Content-Length body; answers with the
  number of bytes received as the body.
- ``GET /ws``       with ``Upgrade: websocket``: RFC 6455 handshake
  (Sec-WebSocket-Accept = base64(sha1(key + GUID))), then a WebSocket echo:
  every data frame comes back as it came (same opcode and FIN bit, unmasked),
  pings get pongs, a close frame is answered with a close frame.

Run: ``python bench/origin.py --port 0``; it prints ``PORT <n>`` once it listens,
and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsframe

SMALL_BODY = (b"0123456789abcdef" * 64)[:1024]
CHUNK = 1 << 20
MAX_HEAD = 64 * 1024
MAX_BYTES = 1 << 40


def _head(status: bytes, length: int) -> bytes:
    return (b"HTTP/1.1 %s\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: %d\r\n\r\n" % (status, length))


SMALL_RESPONSE = _head(b"200 OK", len(SMALL_BODY)) + SMALL_BODY
STREAM_DATA = memoryview(bytes(range(256)) * (CHUNK // 256))


class OriginProtocol(asyncio.Protocol):
    """One client connection; one request at a time (pipelined ones wait in ``buf``)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.body_left = 0          # request-body bytes still to discard
        self.body_total = 0
        self.on_body_done = None    # reply to send once the body is consumed
        self.streaming = False
        self.close_after = False
        self.closed = False
        self.can_write: asyncio.Future[None] | None = None
        self.ws: wsframe.Parser | None = None  # set once the connection is a WebSocket

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=4 * CHUNK, low=CHUNK)

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self._ws_received(data)
            return
        if self.body_left:
            data = self._consume_body(data)
        if data:
            self.buf += data
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def pause_writing(self) -> None:
        if self.can_write is None or self.can_write.done():
            self.can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake()

    # -- request handling
    def _wake(self) -> None:
        if self.can_write is not None and not self.can_write.done():
            self.can_write.set_result(None)

    def _consume_body(self, data: bytes) -> bytes:
        n = min(len(data), self.body_left)
        self.body_left -= n
        if self.body_left == 0 and self.on_body_done is not None:
            reply, self.on_body_done = self.on_body_done, None
            reply()
        return data[n:]

    def _process(self) -> None:
        while not self.streaming and not self.body_left and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._reply(b"431 Request Header Fields Too Large", b"", close=True)
                return
            head = bytes(self.buf[:end])
            del self.buf[:end + 4]
            self._handle(head)
            if self.ws is not None:
                rest = bytes(self.buf)
                self.buf.clear()
                if rest:
                    self._ws_received(rest)
                return

    def _handle(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._reply(b"400 Bad Request", b"", close=True)
            return
        method, target = parts[0], parts[1]
        if target.startswith(b"http://"):  # tolerate absolute-form
            slash = target.find(b"/", 7)
            target = target[slash:] if slash >= 0 else b"/"
        length = 0
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            headers[name] = value.strip()
            if name == b"content-length":
                length = int(value.strip() or 0)
            elif name == b"connection" and value.strip().lower() == b"close":
                self.close_after = True
        if method == b"GET" and target == b"/ws":
            self._ws_handshake(headers)
            return
        action = self._route(method, target)
        if length:
            self.body_left = self.body_total = length
            self.on_body_done = action
            rest = bytes(self.buf)
            self.buf.clear()
            leftover = self._consume_body(rest)
            self.buf += leftover
        else:
            self.body_total = 0
            action()

    def _route(self, method: bytes, target: bytes):  # type: ignore[no-untyped-def]
        if method in (b"GET", b"HEAD") and target == b"/1k":
            return lambda: self._write(SMALL_RESPONSE if method == b"GET" else SMALL_RESPONSE[:-1024])
        if method == b"GET" and target.startswith(b"/bytes/"):
            try:
                n = int(target[7:])
            except ValueError:
                n = -1
            if 0 <= n <= MAX_BYTES:
                return lambda: self._start_stream(n)
        if method in (b"POST", b"PUT") and target == b"/upload":
            return lambda: self._reply(b"200 OK", str(self.body_total).encode())
        return lambda: self._reply(b"404 Not Found", b"not found\n")

    def _reply(self, status: bytes, body: bytes, close: bool = False) -> None:
        self._write(_head(status, len(body)) + body)
        if close:
            self.close_after = True
            self._finish_close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)
        if self.close_after:
            self._finish_close()

    def _finish_close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    # -- WebSocket echo (GET /ws)
    def _ws_handshake(self, headers: dict[bytes, bytes]) -> None:
        key = headers.get(b"sec-websocket-key", b"")
        upgrade = headers.get(b"upgrade", b"").lower() == b"websocket"
        conn = b"upgrade" in [t.strip() for t in headers.get(b"connection", b"").lower().split(b",")]
        if not (upgrade and conn and key and headers.get(b"sec-websocket-version") == b"13"):
            self._reply(b"400 Bad Request", b"WebSocket handshake expected\n", close=True)
            return
        self.close_after = False
        self.ws = wsframe.Parser(expect_masked=True)
        self._write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: %s\r\n\r\n" % wsframe.accept_key(key).encode())

    def _ws_received(self, data: bytes) -> None:
        assert self.ws is not None
        if self.closed:
            return
        try:
            frames = self.ws.feed(data)
        except wsframe.FrameError as exc:
            self._write(wsframe.encode(wsframe.CLOSE, wsframe.close_payload(exc.code, str(exc))))
            self._finish_close()
            return
        out = []
        for fin, opcode, payload in frames:
            if opcode == wsframe.PING:
                out.append(wsframe.encode(wsframe.PONG, payload))
            elif opcode == wsframe.PONG:
                continue
            elif opcode == wsframe.CLOSE:
                out.append(wsframe.encode(wsframe.CLOSE, payload[:2]))
                self._write(b"".join(out))
                self._finish_close()
                return
            else:  # text, binary, continuation: echo the frame as it came
                out.append(wsframe.encode(opcode, payload, fin=fin))
        if out:
            self._write(b"".join(out))

    def _start_stream(self, n: int) -> None:
        self.streaming = True
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._stream(n))

    async def _stream(self, n: int) -> None:
        assert self.transport is not None
        self.transport.write(_head(b"200 OK", n))
        left = n
        while left > 0 and not self.closed:
            k = min(left, CHUNK)
            self.transport.write(STREAM_DATA[:k])
            left -= k
            if self.can_write is not None and not self.can_write.done():
                await self.can_write  # back-pressure: wait until the kernel took the data
        self.streaming = False
        if self.closed:
            return
        if self.close_after:
            self._finish_close()
            return
        self.transport.resume_reading()
        self._process()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(OriginProtocol, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed as 'PORT n')")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("the benchmark origin listens on loopback only")
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
