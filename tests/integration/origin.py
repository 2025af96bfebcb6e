"""A real HTTP/1.1 origin server for the loopback tests.

Built on the standard library only (``http.server``), so it shares no code
with the proxy under test. It listens on 127.0.0.1 with port 0, runs on its
own thread, and records what it saw: every request (method, path, headers,
body) and, per TCP connection, how many requests that connection served, so
a test can observe keep-alive reuse from the origin's side.

Endpoints:

``/hello``            a small text body
``/echo``             the request body back; the request headers as JSON in
                      ``X-Echo-Headers``, its framing in ``X-Echo-Framing``
``/headers``          JSON of the received headers (list of [name, value])
``/bytes/N``          N bytes of :func:`pattern` data with Content-Length
``/chunked/N``        N bytes of :func:`pattern` data, chunked
``/slow``             sleeps ``SLOW_SECONDS`` (or ``?s=``) before answering
``/close-mid-body``   declares Content-Length 1000, sends 100 bytes, closes
``/status/N``         answers with status N

Also here: :class:`EchoServer` (raw TCP echo, for CONNECT tunnels) and the
small client-side helpers the tests share (curl runner, raw-socket reads,
bounded waits), so test modules never import from conftest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HELLO = b"hello, world\n"
SLOW_SECONDS = 5.0
_BLOCK = random.Random(1234).randbytes(64 * 1024 + 7)  # odd size: no 64 KiB alignment


def pattern(n: int, offset: int = 0) -> bytes:
    """``n`` deterministic bytes (starting at ``offset`` of the stream)."""
    out = bytearray()
    position = offset
    while len(out) < n:
        start = position % len(_BLOCK)
        piece = _BLOCK[start : start + (n - len(out))]
        out += piece
        position += len(piece)
    return bytes(out)


def pattern_sha256(n: int) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < n:
        piece = pattern(min(1 << 20, n - sent), sent)
        digest.update(piece)
        sent += len(piece)
    return digest.hexdigest()


@dataclass
class SeenRequest:
    connection: int
    method: str
    path: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked" or "none"

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class SeenConnection:
    id: int
    peer: tuple[str, int]
    requests: int = 0
    closed: bool = False


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[SeenRequest] = field(default_factory=list)
    connections: list[SeenConnection] = field(default_factory=list)
    sockets: set[socket.socket] = field(default_factory=set)
    #: Requests whose body was cut short or malformed: (method, path, why).
    incomplete: list[tuple[str, str, str]] = field(default_factory=list)
    #: Exceptions in handlers (a client going away mid-answer, say).
    errors: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)


class _Incomplete(Exception):
    """A request body that ended early or could not be parsed."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # No Nagle delays between our small writes on loopback.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        state = self.server.state
        with state.lock:
            self.seen = SeenConnection(id=len(state.connections) + 1, peer=self.client_address[:2])
            state.connections.append(self.seen)
            state.sockets.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            state = self.server.state
            with state.lock:
                self.seen.closed = True
                state.sockets.discard(self.connection)

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- request bodies ------------------------------------------------------

    def _read_body(self) -> tuple[bytes, str]:
        """The request body and its framing; raises _Incomplete if it is cut short or malformed."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            for _ in range(1_000_000):
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _Incomplete(f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    for _ in range(1000):
                        if self.rfile.readline(65537) in (b"\r\n", b"\n", b""):
                            break  # end of the trailers
                    break
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise _Incomplete("EOF inside a chunk")
                parts.append(chunk)
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(parts), "chunked"
        length = self.headers.get("Content-Length")
        if length is not None:
            body = self.rfile.read(int(length))
            if len(body) < int(length):
                raise _Incomplete(f"EOF after {len(body)} of {length} body bytes")
            return body, "length"
        return b"", "none"

    def _record(self, body: bytes, framing: str) -> None:
        state = self.server.state
        with state.lock:
            self.seen.requests += 1
            state.requests.append(SeenRequest(
                connection=self.seen.id, method=self.command, path=self.path,
                version=self.request_version, headers=list(self.headers.items()),
                body=body, framing=framing,
            ))

    # -- dispatch ------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        self._dispatch(head=False)

    def do_PUT(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def _dispatch(self, head: bool) -> None:
        try:
            body, framing = self._read_body()
        except _Incomplete as exc:
            state = self.server.state
            with state.lock:
                state.incomplete.append((self.command, self.path, str(exc)))
            self.close_connection = True
            return
        self._record(body, framing)
        url = urlsplit(self.path)
        path = url.path
        query = parse_qs(url.query)
        if path == "/hello":
            self._send(200, HELLO, "text/plain", head=head)
        elif path == "/echo":
            extra = {
                "X-Echo-Headers": json.dumps(list(self.headers.items())),
                "X-Echo-Framing": framing,
                "X-Echo-Method": self.command,
            }
            self._send(200, body, "application/octet-stream", head=head, extra=extra)
        elif path == "/headers":
            data = json.dumps(list(self.headers.items())).encode()
            self._send(200, data, "application/json", head=head)
        elif path.startswith("/bytes/"):
            self._send_bytes(int(path.split("/")[2]), head=head)
        elif path.startswith("/chunked/"):
            self._send_chunked(int(path.split("/")[2]), head=head)
        elif path == "/slow":
            delay = float(query.get("s", [SLOW_SECONDS])[0])
            self.server.state.stopping.wait(delay)
            self._send(200, b"finally\n", "text/plain", head=head)
        elif path == "/close-mid-body":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(pattern(100))
            self.wfile.flush()
            self.close_connection = True
        elif path.startswith("/status/"):
            status = int(path.split("/")[2])
            if status in (204, 304) or status < 200:
                self.send_response(status)
                self.end_headers()
            else:
                self._send(status, f"status {status}\n".encode(), "text/plain", head=head)
        else:
            self._send(404, b"not found\n", "text/plain", head=head)

    def _send(self, status: int, body: bytes, ctype: str, *, head: bool,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_bytes(self, n: int, *, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if head:
            return
        sent = 0
        while sent < n:
            piece = pattern(min(256 * 1024, n - sent), sent)
            self.wfile.write(piece)
            sent += len(piece)

    def _send_chunked(self, n: int, *, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        sent, size = 0, 1000
        while sent < n:
            piece = pattern(min(size, n - sent), sent)
            self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sent += len(piece)
            size = size * 3 % 70001 + 1  # varied chunk sizes
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    state: _State

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        exc = sys.exc_info()[1]
        with self.state.lock:
            self.state.errors.append(repr(exc))


class Origin:
    """The origin server: ``start()``, ``stop()``, and what it recorded."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="origin", daemon=True)

    def start(self) -> Origin:
        self._thread.start()
        return self

    def stop(self) -> None:
        state = self._server.state
        state.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with state.lock:
            sockets = list(state.sockets)
        for sock in sockets:  # idle keep-alive connections would block their threads
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def url(self, path: str, host: str = "origin.test") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def requests(self) -> list[SeenRequest]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def incomplete(self) -> list[tuple[str, str, str]]:
        with self._server.state.lock:
            return list(self._server.state.incomplete)

    @property
    def connections(self) -> list[SeenConnection]:
        with self._server.state.lock:
            return [c for c in self._server.state.connections]

    def served_counts(self) -> list[int]:
        """Requests served by each connection that served at least one."""
        return [c.requests for c in self.connections if c.requests]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[SeenRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.requests) < n:
            time.sleep(0.01)
        return self.requests


class EchoServer:
    """A raw TCP echo server (for CONNECT tunnels).

    Echoes every byte back. On receiving ``b"CLOSE!"`` it closes its side.
    Records how each connection ended (``"eof"`` when the peer closed).
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self.received = bytearray()
        self.endings: list[str] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept_loop, name="echo", daemon=True)

    def start(self) -> EchoServer:
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        ending = "stopped"
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    ending = "error"
                    break
                if not data:
                    ending = "eof"
                    break
                with self._lock:
                    self.received += data
                if b"CLOSE!" in data:
                    ending = "closed-by-server"
                    break
                conn.sendall(data)
        finally:
            with self._lock:
                self.endings.append(ending)
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


# -- client-side helpers shared by the tests ----------------------------------------

CURL = shutil.which("curl") or "/usr/bin/curl"
ORIGIN_HOST = "origin.test"
#: What every test proxy resolves; any other name fails (no DNS, ever).
RESOLVER_TABLE = {ORIGIN_HOST: "127.0.0.1"}
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")


def clean_env() -> dict[str, str]:
    """The environment without proxy settings (so nothing bypasses or chains)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_ENV}
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


def curl(*args: str, proxy: Any = None, timeout: float = 30.0,
         check: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run curl (bounded by ``timeout``) through ``proxy``; returns the result."""
    command = [CURL, "--silent", "--show-error", "--max-time", str(int(timeout) - 1)]
    if proxy is not None:
        command += ["--proxy", proxy if isinstance(proxy, str) else proxy.url]
    command += list(args)
    result = subprocess.run(command, capture_output=True, timeout=timeout, env=clean_env(), check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"curl failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return result


def opener(proxy: Any) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def wait_flows_done(proxy: Any, count: int, timeout: float = 5.0) -> list:
    """Wait until ``proxy.flows`` has ``count`` finished flows; return them all."""
    wait_until(lambda: sum(1 for f in proxy.flows if f.state != "open") >= count, timeout)
    return list(proxy.flows)


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a new connection and read until the peer closes (bounded)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    chunks = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_head(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bytes]:
    """Read one response head; return (head, bytes that followed it)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no response head within {timeout} s; got {buf[:200]!r}")
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a response head; got {buf[:200]!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    assert len(parts) >= 2 and parts[0].startswith(b"HTTP/"), f"not a response: {response[:200]!r}"
    return int(parts[1])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def header_of(response: bytes, name: str) -> str | None:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None
