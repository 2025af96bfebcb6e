"""A real HTTPS origin server on 127.0.0.1 for the interception tests.

Standard library only on the serving side (``http.server`` with each
accepted socket wrapped by ``ssl``), with a certificate from its *own* test
CA made here with ``cryptography``: not interceptkit's CA and not made by
interceptkit's code, so a client that sees this certificate knows it was not
intercepted. The leaf names ``localhost``, ``origin.test`` and the address
``127.0.0.1``.

It records what it saw: each TLS connection (with the SNI the client sent and
how many requests it served) and each request (method, path, headers, body).

Endpoints: ``/hello``, ``/echo`` (the body back, the request headers as JSON
in ``X-Echo-Headers``), ``/json``, ``/headers``, ``/bytes/N``, ``/chunked/N``,
``/status/N``; with ``TLSOrigin(pki, files=folder)`` also ``/files/...``: the
folder's files (a directory answers with its ``index.html``), e.g. a package
index for pip.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from origin import HELLO, pattern

NAMES = ("localhost", "origin.test")
ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class OriginPKI:
    """The origin's CA and its leaf, as files."""

    ca_path: Path  # the CA certificate (PEM): what a client must trust to talk to the origin directly
    chain_path: Path
    key_path: Path
    ca_cert: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tls_origin test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(folder: Path) -> OriginPKI:
    """Create the origin's CA and leaf in ``folder`` (ECDSA P-256, 30 days)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder().subject_name(_name("tls_origin test CA")).issuer_name(_name("tls_origin test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in NAMES]
    sans.append(x509.IPAddress(ipaddress.ip_address(ADDRESS)))
    leaf = (
        x509.CertificateBuilder().subject_name(_name(NAMES[0])).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    pki = OriginPKI(folder / "origin-ca.pem", folder / "origin-chain.pem", folder / "origin-key.pem", ca)
    pki.ca_path.write_bytes(ca.public_bytes(pem))
    pki.chain_path.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    pki.key_path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    pki.key_path.chmod(0o600)
    return pki


def h2_server_context(pki: OriginPKI) -> ssl.SSLContext:
    """A server context with the origin's leaf that offers only h2 (ALPN)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.chain_path, pki.key_path)
    context.set_alpn_protocols(["h2"])
    return context


def serve_connections(sock: socket.socket, serve: Callable[[socket.socket], None]) -> None:
    """Accept on ``sock`` until it is closed, each connection served by ``serve`` on a thread of its own."""

    def accept() -> None:
        while True:
            try:
                raw, _ = sock.accept()
            except OSError:
                return  # closed: the server is done
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


@dataclass
class TLSConnection:
    id: int
    sni: str | None = None
    requests: int = 0
    version: str | None = None


@dataclass
class TLSRequest:
    connection: int
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: list[TLSConnection] = field(default_factory=list)
    requests: list[TLSRequest] = field(default_factory=list)
    handshake_errors: list[str] = field(default_factory=list)
    sockets: set[socket.socket] = field(default_factory=set)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    disable_nagle_algorithm = True
    timeout = 10  # bounds every read, the handshake included

    def setup(self) -> None:
        state = self.server.state
        raw: socket.socket = self.request
        raw.settimeout(self.timeout)
        try:
            tls = self.server.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with state.lock:
                state.handshake_errors.append(repr(exc))
            raise
        self.request = tls
        with state.lock:
            self.seen = TLSConnection(id=len(state.connections) + 1, sni=getattr(tls, "_sni", None),
                                      version=tls.version())
            state.connections.append(self.seen)
            state.sockets.add(tls)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.state.lock:
                self.server.state.sockets.discard(self.request)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            for _ in range(100_000):
                size = int(self.rfile.readline(65537).split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline(65537)
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _dispatch(self) -> None:
        body = self._body()
        with self.server.state.lock:
            self.seen.requests += 1
            self.server.state.requests.append(TLSRequest(self.seen.id, self.command, self.path,
                                                         list(self.headers.items()), body))
        path = self.path.split("?", 1)[0]
        if path == "/hello":
            self._send(200, HELLO, "text/plain")
        elif path == "/echo":
            self._send(200, body, "application/octet-stream",
                       {"X-Echo-Headers": json.dumps(list(self.headers.items())), "X-Echo-Method": self.command})
        elif path == "/json":
            self._send(200, json.dumps({"origin": "tls", "path": self.path}).encode(), "application/json")
        elif path == "/headers":
            self._send(200, json.dumps(list(self.headers.items())).encode(), "application/json")
        elif path.startswith("/bytes/"):
            n = int(path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            sent = 0
            while sent < n:
                piece = pattern(min(256 * 1024, n - sent), sent)
                self.wfile.write(piece)
                sent += len(piece)
        elif path.startswith("/chunked/"):
            n = int(path.split("/")[2])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent, size = 0, 1000
            while sent < n:
                piece = pattern(min(size, n - sent), sent)
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sent += len(piece)
                size = size * 3 % 70001 + 1
            self.wfile.write(b"0\r\n\r\n")
        elif path.startswith("/status/"):
            status = int(path.split("/")[2])
            self._send(status, f"status {status}\n".encode(), "text/plain")
        elif path.startswith("/files/") and self.server.files is not None:
            self._send_file(self.server.files, path[len("/files/"):])
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send_file(self, root: Path, relative: str) -> None:
        target = (root / relative).resolve()
        if target.is_dir():
            target = target / "index.html"
        if root.resolve() not in target.parents or not target.is_file():
            self._send(404, b"not found\n", "text/plain")
            return
        ctype = "text/html" if target.suffix == ".html" else "application/octet-stream"
        self._send(200, target.read_bytes(), ctype)

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    state: _State
    context: ssl.SSLContext
    files: Path | None

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        with self.state.lock:
            self.state.handshake_errors.append(repr(sys.exc_info()[1]))


class TLSOrigin:
    """``TLSOrigin(pki).start()``; ``.port``, ``.url(path)``, ``.requests``, ``.connections``; ``.stop()``."""

    def __init__(self, pki: OriginPKI, files: Path | None = None) -> None:
        self.pki = pki
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.chain_path, pki.key_path)
        context.set_alpn_protocols(["http/1.1"])

        def note_sni(sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
            sslobj._sni = name  # type: ignore[union-attr]  # read back in the handler's setup

        context.sni_callback = note_sni  # type: ignore[assignment]
        self._server = _Server((ADDRESS, 0), _Handler)
        self._server.state = _State()
        self._server.context = context
        self._server.files = files
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="tls-origin", daemon=True)

    def start(self) -> TLSOrigin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._server.state.lock:
            sockets = list(self._server.state.sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def url(self, path: str, host: str = "origin.test") -> str:
        return f"https://{host}:{self.port}{path}"

    @property
    def requests(self) -> list[TLSRequest]:
        with self._server.state.lock:
            return list(self._server.state.requests)

    @property
    def connections(self) -> list[TLSConnection]:
        """TLS connections that completed a handshake."""
        with self._server.state.lock:
            return list(self._server.state.connections)

    @property
    def handshake_errors(self) -> list[str]:
        with self._server.state.lock:
            return list(self._server.state.handshake_errors)

    def served_counts(self) -> list[int]:
        return [c.requests for c in self.connections if c.requests]

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[TLSRequest]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.requests) < n:
            time.sleep(0.01)
        return self.requests
