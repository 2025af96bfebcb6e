"""A loopback server that plays recorded answers back, streaming their bodies.

Why it exists: a mock (``flow.respond``) hands the core a whole ``bytes``
body, so a 50 MB recording would have to be loaded whole. Instead a replayed
request is sent "upstream" to this server on 127.0.0.1, which writes the
recorded status, headers and body in 64 KiB pieces from memory or from the
body's file; the proxy's usual back-pressure then bounds memory end to end.
(When the core learns to send a mocked body from an iterator, cassettes can
answer directly and this server goes away.)

Answers are registered with :meth:`PlaybackServer.serve`, which returns a
path of its own; the proxy rewrites the flow's target to it.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PIECE = 64 * 1024
#: Paths remembered (each names a recorded answer, shared, so this costs little).
KEPT_ANSWERS = 1024
#: Header fields the playback server writes itself (framing) or must not repeat.
_FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True)
class Answer:
    """One recorded answer: status, reason, header fields and a body (bytes or a file)."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    body_file: Path | None = None

    @property
    def size(self) -> int:
        return self.body_file.stat().st_size if self.body_file is not None else len(self.body)

    def pieces(self) -> Iterator[bytes]:
        if self.body_file is None:
            for start in range(0, len(self.body), PIECE):
                yield self.body[start:start + PIECE]
            return
        with self.body_file.open("rb") as file:
            while piece := file.read(PIECE):
                yield piece


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass  # the proxy's flows are the log

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # the request was matched already; keep the connection in step
        answer = self.server.take(self.path)
        if answer is None:
            self.send_error(404, "no recorded answer for this path")
            return
        self.send_response_only(answer.status, answer.reason or None)
        for name, value in answer.headers:
            if name.lower() not in _FRAMING:
                self.send_header(name, value)
        self.send_header("Content-Length", str(answer.size))
        self.end_headers()
        if self.command != "HEAD":
            for piece in answer.pieces():
                self.wfile.write(piece)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        # Kept, not popped: the proxy may resend a request whose pooled
        # connection closed under it, and the resend must get the same answer.
        self.answers: OrderedDict[str, Answer] = OrderedDict()
        self.lock = threading.Lock()

    def take(self, path: str) -> Answer | None:
        with self.lock:
            return self.answers.get(path)

    def add(self, path: str, answer: Answer) -> None:
        with self.lock:
            self.answers[path] = answer
            while len(self.answers) > KEPT_ANSWERS:
                self.answers.popitem(last=False)


class PlaybackServer:
    """The loopback answer server: started on first use, stopped with :meth:`close`."""

    def __init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._token = secrets.token_hex(8)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self._start().server_address[1]

    def serve(self, answer: Answer) -> str:
        """Register ``answer`` for one request; returns the path to send it to."""
        server = self._start()
        path = f"/__interceptkit_playback/{self._token}/{next(self._ids)}"
        server.add(path, answer)
        return path

    def _start(self) -> _Server:
        with self._lock:
            if self._server is None:
                self._server = _Server()
                self._thread = threading.Thread(target=self._server.serve_forever, name="interceptkit:playback",
                                                daemon=True)
                self._thread.start()
            return self._server

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
