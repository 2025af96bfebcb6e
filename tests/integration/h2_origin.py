"""HTTP/2 origins on 127.0.0.1 for the HTTP/2 tests: hypercorn and grpcio.

Neither shares code with interceptkit. Both use the *origin's own* test CA
from ``tls_origin.make_pki`` (so a client that sees their certificate knows
it was not intercepted).

:class:`H2Origin`: hypercorn serving a small ASGI app, with TLS (ALPN ``h2``
and ``http/1.1``) on ``tls_port`` and plain HTTP/1.1 or h2c (prior
knowledge) on ``plain_port``. The app reports what it saw:

``/proto``            JSON: ``http_version``, ``scheme``, ``method``, ``path``, ``query``, ``headers``
``/echo``             the request body back; ``x-echo-length`` its size
``/bytes/N``          N bytes of :func:`origin.pattern`, streamed in 256 KiB pieces
``/trailers``         a body and the trailers ``x-checksum``/``grpc-status``
                      (hypercorn sends trailers only to h2 requests with ``te: trailers``);
                      ``?sized=1``: the same with a ``content-length``
``/ws`` (WebSocket)   every message echoed back (hypercorn over HTTP/1.1 upgrade, or RFC 8441)
``/status/N``         an empty answer with status N
``/hello``            :data:`origin.HELLO`

:class:`GrpcOrigin`: a grpcio server over TLS with generic handlers (raw
bytes, no protoc): ``/test.Echo/Unary`` answers ``b"echo:" + request``,
``/test.Echo/Stream`` answers ``N`` messages (N = the request as ASCII),
both with the trailing metadata ``x-trailer: done``; a request ``b"fail"``
ends with status ``INVALID_ARGUMENT``.

:class:`WindowedOrigin`: a bare h2 server whose DATA goes only as far as the
peer's windows allow, counting what it wrote (for the back-pressure tests).

:func:`h2_request`: a minimal h2 client (``h2`` over ``ssl``) that returns
status, headers, body and trailers: what httpx does not show.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
from hypercorn.asyncio import serve
from hypercorn.config import Config
from origin import HELLO, pattern
from tls_origin import ADDRESS, OriginPKI, h2_server_context, serve_connections

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
PIECE = 256 * 1024


async def _body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    fields = [(b"content-length", b"%d" % len(body)), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


async def _download(send: Send, n: int) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % n), (b"content-type", b"application/octet-stream")]})
    sent = 0
    while sent < n:
        piece = pattern(min(PIECE, n - sent), sent)
        sent += len(piece)
        await send({"type": "http.response.body", "body": piece, "more_body": sent < n})
    if n == 0:
        await send({"type": "http.response.body", "body": b""})


async def _trailers(send: Send, sized: bool = False) -> None:
    length = [(b"content-length", b"14")] if sized else []
    await send({"type": "http.response.start", "status": 200, "trailers": True,
                "headers": [(b"content-type", b"text/plain"), *length]})
    await send({"type": "http.response.body", "body": b"with trailers\n"})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123"), (b"grpc-status", b"0")]})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app hypercorn serves (lifespan events are acknowledged and ignored)."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await _websocket_echo(receive, send)
        return
    path: str = scope["path"]
    query: str = scope["query_string"].decode()
    body = await _body(receive)
    if path == "/proto":
        seen = {"http_version": scope["http_version"], "scheme": scope["scheme"], "method": scope["method"],
                "path": path, "query": scope["query_string"].decode(), "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]]}
        await _answer(send, 200, json.dumps(seen).encode(), [(b"content-type", b"application/json")])
    elif path == "/echo":
        await _answer(send, 200, body, [(b"x-echo-length", b"%d" % len(body))])
    elif path.startswith("/bytes/"):
        await _download(send, int(path.split("/")[2]))
    elif path == "/trailers":
        await _trailers(send, sized=query == "sized=1")
    elif path.startswith("/status/"):
        await _answer(send, int(path.split("/")[2]), b"")
    elif path == "/hello":
        await _answer(send, 200, HELLO, [(b"content-type", b"text/plain")])
    else:
        await _answer(send, 404, b"not found\n")


async def _websocket_echo(receive: Receive, send: Send) -> None:
    while (message := await receive())["type"] != "websocket.disconnect":
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ADDRESS, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class H2Origin:
    """``H2Origin(pki).start()``; ``.tls_port``, ``.plain_port``, ``.url(path)``; ``.stop()``.

    ``alpn=("h2",)`` makes an origin whose TLS side selects only h2 (a client
    that offers http/1.1 alone gets no ALPN answer)."""

    def __init__(self, pki: OriginPKI, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> None:
        self.pki = pki
        tls, plain = _listener(), _listener()
        self.tls_port: int = tls.getsockname()[1]
        self.plain_port: int = plain.getsockname()[1]
        config = Config()
        # hypercorn takes the descriptors over (and closes them): detach ours
        config.bind = [f"fd://{tls.detach()}"]
        config.insecure_bind = [f"fd://{plain.detach()}"]
        config.certfile, config.keyfile = str(pki.chain_path), str(pki.key_path)
        config.alpn_protocols = list(alpn)
        config.accesslog = config.errorlog = None
        config.graceful_timeout = 1.0
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="h2-origin", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._loop.call_soon(self._started.set)
            await serve(app, self._config, shutdown_trigger=self._stopping.wait)  # type: ignore[arg-type]

        try:
            self._loop.run_until_complete(main())
            # connections hypercorn still serves end here, before the loop closes
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            self._loop.close()

    def start(self) -> H2Origin:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("hypercorn did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)

    def url(self, path: str, host: str = "localhost", tls: bool = True) -> str:
        port = self.tls_port if tls else self.plain_port
        return f"{'https' if tls else 'http'}://{host}:{port}{path}"


# -- gRPC --------------------------------------------------------------------

def _unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-trailer", "done"),))
    if request == b"fail":
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "asked to fail")
    return b"echo:" + request


def _stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    context.set_trailing_metadata((("x-trailer", "done"),))
    for i in range(int(request.decode() or "0")):
        yield b"message %d" % i


class GrpcOrigin:
    """``GrpcOrigin(pki).start()``; ``.port``, ``.target``; ``.stop()``."""

    def __init__(self, pki: OriginPKI) -> None:
        self.pki = pki
        handlers = grpc.method_handlers_generic_handler("test.Echo", {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        })
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handlers],
                                   options=[("grpc.so_reuseport", 0)])
        credentials = grpc.ssl_server_credentials([(pki.key_path.read_bytes(), pki.chain_path.read_bytes())])
        self.port: int = self._server.add_secure_port(f"{ADDRESS}:0", credentials)
        self.target = f"{ADDRESS}:{self.port}"

    def start(self) -> GrpcOrigin:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0).wait(5)

    def channel(self, *options: tuple[str, Any]) -> grpc.Channel:
        """A TLS channel straight to this server, trusting the origin CA only."""
        creds = grpc.ssl_channel_credentials(root_certificates=self.pki.ca_path.read_bytes())
        return grpc.secure_channel(self.target, creds, options=[("grpc.enable_http_proxy", 0), *options])


# -- an origin that writes only what the windows allow ----------------------------

class WindowedOrigin:
    """A bare h2 server over TLS (the origin's leaf, ALPN h2): ``GET /bytes/N`` answers N
    bytes, framing DATA only as far as the peer's flow-control windows allow, so
    ``.sent`` (bytes framed so far, all connections) is what a reader let it write.
    hypercorn cannot show this: its app's sends do not wait for the window (it
    buffers). One thread per connection; ``.stop()`` closes the listener."""

    _PIECE = bytes(1 << 20)

    def __init__(self, pki: OriginPKI) -> None:
        self._context = h2_server_context(pki)
        self._sock = socket.create_server((ADDRESS, 0))
        self.port: int = self._sock.getsockname()[1]
        self.sent = 0
        serve_connections(self._sock, self._serve)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        with raw, self._context.wrap_socket(raw, server_side=True) as tls:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
            conn.initiate_connection()
            tls.sendall(conn.data_to_send())
            left: dict[int, int] = {}
            while data := tls.recv(1 << 16):
                for event in conn.receive_data(data):
                    self._on(conn, event, left)
                self._pump(conn, left)
                tls.sendall(conn.data_to_send())

    @staticmethod
    def _on(conn: h2.connection.H2Connection, event: h2.events.Event, left: dict[int, int]) -> None:
        if isinstance(event, h2.events.RequestReceived):
            path = dict(event.headers)[b":path"].decode()
            n = int(path.split("/")[2]) if path.startswith("/bytes/") else 0
            conn.send_headers(event.stream_id, [(b":status", b"200"), (b"content-length", b"%d" % n)],
                              end_stream=n == 0)
            if n:
                left[event.stream_id] = n
        elif isinstance(event, h2.events.StreamReset):
            left.pop(event.stream_id, None)
        elif isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _pump(self, conn: h2.connection.H2Connection, left: dict[int, int]) -> None:
        for sid in list(left):
            while left[sid]:
                n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, left[sid])
                if n <= 0:
                    break
                left[sid] -= n
                self.sent += n
                conn.send_data(sid, self._PIECE[:n], end_stream=not left[sid])
            if not left[sid]:
                del left[sid]

    def stop(self) -> None:
        self._sock.close()


# -- a minimal h2 client -----------------------------------------------------

@dataclass
class H2Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    alpn: str | None = None


def h2_request(port: int, path: str, pki: OriginPKI, *, method: str = "GET", body: bytes = b"",
               headers: list[tuple[bytes, bytes]] | None = None, authority: str = "localhost",
               timeout: float = 10.0) -> H2Answer:
    """One request over a fresh TLS + h2 connection to 127.0.0.1:``port``."""
    context = ssl.create_default_context(cafile=str(pki.ca_path))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((ADDRESS, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        fields = [(b":method", method.encode()), (b":scheme", b"https"), (b":authority", authority.encode()),
                  (b":path", path.encode()), *(headers or [])]
        conn.send_headers(1, fields, end_stream=not body)
        for at in range(0, len(body), 16384):  # small bodies only (< 64 KiB): no flow control here
            conn.send_data(1, body[at:at + 16384], end_stream=at + 16384 >= len(body))
        tls.sendall(conn.data_to_send())
        answer = H2Answer(0, [], b"", alpn=tls.selected_alpn_protocol())
        _read_answer(conn, tls, answer)
        return answer


def _read_answer(conn: h2.connection.H2Connection, tls: ssl.SSLSocket, answer: H2Answer) -> None:
    body = bytearray()
    for _ in range(100_000):
        data = tls.recv(65536)
        if not data:
            raise ConnectionError("connection closed before the answer ended")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                answer.headers = [(bytes(k), bytes(v)) for k, v in event.headers]
                answer.status = int(dict(answer.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                answer.trailers = [(bytes(k), bytes(v)) for k, v in event.headers]
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                answer.body = bytes(body)
                return
        tls.sendall(conn.data_to_send())
    raise AssertionError("answer never ended")
