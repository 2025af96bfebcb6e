"""Clients for the HTTP/2-through-the-proxy tests (no interceptkit code on the client side).

:class:`H2Tunnel`: a blocking h2 client (python-hyper ``h2`` over ``ssl``)
that reaches an origin through the proxy's CONNECT (or straight to a TLS
listener) and shows what httpx hides: the ALPN it got, the peer's SETTINGS,
several streams at once, trailers, RST_STREAM codes, and a slow reader that
acknowledges DATA only at a chosen rate.

Also: :func:`trust` (an ``ssl`` context trusting one CA only),
:func:`curl_h2` (curl through the proxy, returning the HTTP version curl
reports), :func:`intercepted` (the decrypted flows of a proxy).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
from origin import curl, wait_until

Fields = list[tuple[bytes, bytes]]


def trust(cafile: Path | str, alpn: Iterable[str] = ()) -> ssl.SSLContext:
    """A client context that trusts ``cafile`` and nothing else, offering ``alpn``."""
    context = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def connect_through(proxy_port: int, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP socket to the proxy with a CONNECT to ``host:port`` answered 200."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.sendall(b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port, host.encode(), port))
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        if not data or len(head) > 65536:
            sock.close()
            raise ConnectionError(f"CONNECT not answered: {head[:200]!r}")
        head += data
    if b" 200" not in head.split(b"\r\n", 1)[0]:
        sock.close()
        raise ConnectionError(f"CONNECT refused: {head[:200]!r}")
    return sock


@dataclass
class StreamResult:
    """What one stream got back."""

    status: int | None = None
    headers: Fields = field(default_factory=list)
    informational: list[int] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: Fields = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # the RST_STREAM error code, when the peer reset the stream
    size: int = 0  # DATA bytes received (also when the body is not kept)

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    def summary(self) -> str:
        """A short description (no body) for failure messages."""
        return (f"status={self.status} received={self.size} ended={self.ended} reset={self.reset} "
                f"trailers={self.trailers}")

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class H2Tunnel:
    """One h2 connection over TLS; ``request`` opens a stream, ``wait`` runs the socket.

    ``window``: our initial stream window (h2's default 65,535 when None);
    the connection window is raised to match when it is larger.
    """

    def __init__(self, tls: ssl.SSLSocket, authority: str, *, window: int | None = None,
                 keep_bodies: bool = True) -> None:
        self.tls, self.authority, self.keep_bodies = tls, authority, keep_bodies
        self.alpn = tls.selected_alpn_protocol()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if window is not None:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window, h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.conn.initiate_connection()
        if window is not None and window > 65535:
            self.conn.increment_flow_control_window(window - 65535)
        self.streams: dict[int, StreamResult] = {}
        self.remote_settings_seen = False
        self.goaway: int | None = None
        self.acked = 0  # DATA bytes acknowledged so far (slow reader)
        # Not h2: send nothing (an h2 preface would be garbage to an HTTP/1.1 peer), fail on first use.
        self.closed = self.alpn != "h2"
        if not self.closed:
            self._flush()

    @classmethod
    def through(cls, proxy: Any, host: str, port: int, cafile: Path | str, *, alpn: Iterable[str] = ("h2",),
                window: int | None = None, keep_bodies: bool = True, timeout: float = 10.0) -> H2Tunnel:
        """CONNECT ``host:port`` through ``proxy``, then TLS (trusting ``cafile``) offering ``alpn``."""
        raw = connect_through(proxy.port, host, port, timeout)
        tls = trust(cafile, alpn).wrap_socket(raw, server_hostname=host)
        return cls(tls, f"{host}:{port}", window=window, keep_bodies=keep_bodies)

    @classmethod
    def direct(cls, port: int, host: str, cafile: Path | str, *, alpn: Iterable[str] = ("h2",),
               timeout: float = 10.0) -> H2Tunnel:
        """TLS straight to 127.0.0.1:``port`` (a TLS listener), server name ``host``."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        tls = trust(cafile, alpn).wrap_socket(raw, server_hostname=host)
        return cls(tls, f"{host}:{port}")

    def _flush(self) -> None:
        if self.alpn != "h2":
            raise AssertionError(f"ALPN selected {self.alpn!r}, not h2: no HTTP/2 on this connection")
        data = self.conn.data_to_send()
        if data and not self.closed:
            self.tls.sendall(data)

    def request(self, path: str, *, method: str = "GET", headers: Fields | None = None, body: bytes = b"",
                authority: str | None = None) -> int:
        """Open a stream (small bodies only: sent at once, within the initial windows)."""
        sid = self.conn.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"https"),
                  (b":authority", (authority or self.authority).encode()), (b":path", path.encode()),
                  *(headers or [])]
        self.conn.send_headers(sid, fields, end_stream=not body)
        for at in range(0, len(body), 16384):
            self.conn.send_data(sid, body[at:at + 16384], end_stream=at + 16384 >= len(body))
        self.streams[sid] = StreamResult()
        self._flush()
        return sid

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def _on(self, event: h2.events.Event, ack: bool) -> None:
        result = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code
        elif result is None:
            return
        elif isinstance(event, h2.events.InformationalResponseReceived):
            result.informational.append(int(dict(event.headers)[b":status"]))
        elif isinstance(event, h2.events.ResponseReceived):
            result.headers = [(bytes(k), bytes(v)) for k, v in event.headers]
            result.status = int(dict(result.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived):
            result.size += len(event.data)
            if self.keep_bodies:
                result.body += event.data
            if ack:
                self.ack(event.stream_id, event.flow_controlled_length)
        elif isinstance(event, h2.events.TrailersReceived):
            result.trailers = [(bytes(k), bytes(v)) for k, v in event.headers]
        elif isinstance(event, h2.events.StreamEnded):
            result.ended = True
        elif isinstance(event, h2.events.StreamReset):
            result.reset = int(event.error_code)

    def ack(self, sid: int, n: int) -> None:
        if n:
            self.conn.acknowledge_received_data(n, sid)
            self.acked += n

    def _read_once(self, ack: bool = True) -> list[h2.events.Event]:
        try:
            data = self.tls.recv(1 << 16)
        except (TimeoutError, socket.timeout):
            return []
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            self._on(event, ack)
        self._flush()
        return events

    def wait(self, sids: Iterable[int] | None = None, timeout: float = 10.0) -> dict[int, StreamResult]:
        """Read until the streams (default: all opened) ended or were reset, or the peer closed."""
        wanted = list(self.streams) if sids is None else list(sids)
        deadline = time.monotonic() + timeout
        while not all(self.streams[s].done for s in wanted):
            if self.closed or time.monotonic() > deadline:
                why = "the peer closed the connection" if self.closed else f"not done within {timeout} s"
                raise AssertionError(f"streams {why} (GOAWAY code {self.goaway}): "
                                     f"{ {s: self.streams[s].summary() for s in wanted if not self.streams[s].done} }")
            self.tls.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            self._read_once()
        return {s: self.streams[s] for s in wanted}

    def handshake(self, timeout: float = 5.0) -> None:
        """Read until the peer's SETTINGS arrived."""
        deadline = time.monotonic() + timeout
        while not self.remote_settings_seen and not self.closed and time.monotonic() < deadline:
            self.tls.settimeout(0.2)
            self._read_once()

    def read_slowly(self, sid: int, rate: int, seconds: float) -> None:
        """Take DATA off the socket for ``seconds``, acknowledging at most ``rate`` bytes/s,
        so the sender can only send what our window lets it."""
        start = time.monotonic()
        owed = 0
        while time.monotonic() - start < seconds and not self.closed:
            self.tls.settimeout(0.05)
            for event in self._read_once(ack=False):
                if isinstance(event, h2.events.DataReceived):
                    owed += event.flow_controlled_length
            allowed = int(rate * (time.monotonic() - start)) - self.acked
            if allowed > 0 and owed:
                n = min(allowed, owed)
                self.ack(sid, n)
                owed -= n
                self._flush()

    def close(self) -> None:
        try:
            if not self.closed and self.alpn == "h2":
                self.conn.close_connection()
                self._flush()
        except OSError:
            pass
        self.closed = True
        self.tls.close()

    def __enter__(self) -> H2Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def curl_h2(proxy: Any, url: str, *args: str, version: str = "--http2",
            cafile: Path | None = None) -> tuple[str, bytes]:
    """curl through ``proxy`` trusting its CA (or ``cafile``) only; returns (HTTP version curl used, body)."""
    ca = cafile if cafile is not None else proxy.ca_cert_path
    result = curl(version, "--cacert", str(ca), "--capath", "/nonexistent", "-w", "\n%{http_version}",
                  *args, url, proxy=proxy, timeout=20)
    assert result.returncode == 0, result.stderr
    body, _, used = result.stdout.rpartition(b"\n")
    return used.decode(), body


def intercepted(proxy: Any, count: int, timeout: float = 10.0) -> list[Any]:
    """The finished flows of decrypted exchanges (CONNECT tunnels left out), once ``count`` of them ended."""
    def done() -> list[Any]:
        return [f for f in proxy.flows if f.kind != "tunnel" and f.state != "open"]

    wait_until(lambda: len(done()) >= count, timeout)
    return done()
