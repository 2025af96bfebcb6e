"""HTTPS interception driven entirely in memory: no sockets, TLS included.

The test plays both ends. The client is an ``ssl.SSLObject`` over memory BIOs
that trusts the proxy's CA (a :class:`CertStore` in a temporary folder); the
upstream server is a server-side ``SSLObject`` whose certificate comes from a
separate test CA made here with ``cryptography``. Bytes are moved by hand
between them and the :class:`ProxyConnection` (through the shared
:class:`Driver`), so every step of CONNECT -> sniff -> client handshake ->
request in clear -> upstream handshake -> response can be asserted on.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import Driver, Split, body_of, finished, opened, status_of

from interceptkit.certs import CertStore
from interceptkit.core import commands as cmd
from interceptkit.core.config import ProxyConfig
from interceptkit.core.state import Phase
from interceptkit.flow import Flow

HOST = "origin.test"
CONNECT = b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n"


# -- a test PKI for the upstream server ------------------------------------------------


@dataclass(frozen=True)
class UpstreamPKI:
    ca_pem: Path
    chain_pem: Path
    key_pem: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_upstream_pki(folder: Path) -> UpstreamPKI:
    """A CA (not interceptkit's) and a leaf for origin.test / 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("upstream test CA")).issuer_name(_name("upstream test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(_name(HOST)).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(HOST), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pki = UpstreamPKI(folder / "ca.pem", folder / "chain.pem", folder / "key.pem")
    pki.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.chain_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + pki.ca_pem.read_bytes())
    pki.key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return pki


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CertStore:
    with CertStore.load_or_create(tmp_path_factory.mktemp("proxy-ca")) as s:
        yield s


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> UpstreamPKI:
    return make_upstream_pki(tmp_path_factory.mktemp("upstream-pki"))


def client_context(store: CertStore | None) -> ssl.SSLContext:
    """What a client that trusts the interceptkit CA (or nothing, with None) uses."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if store is not None:
        ctx.load_verify_locations(cadata=store.ca_cert_pem.decode())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def upstream_client_context(pki: UpstreamPKI | None) -> ssl.SSLContext:
    """The proxy's context towards upstreams: trusts the test upstream CA (or nothing)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pki is not None:
        ctx.load_verify_locations(cafile=str(pki.ca_pem))
    return ctx


def upstream_server_context(pki: UpstreamPKI, seen_sni: list[str | None]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.chain_pem, pki.key_pem)

    def note(sslobj: object, name: str | None, context: object) -> None:
        seen_sni.append(name)

    ctx.sni_callback = note  # type: ignore[assignment]
    return ctx


def make_config(store: CertStore, pki: UpstreamPKI | None, **extra: object) -> ProxyConfig:
    return ProxyConfig(intercept=True, server_context=store.server_context,
                       upstream_context=upstream_client_context(pki), **extra)  # type: ignore[arg-type]


# -- the two ends the test plays -----------------------------------------------------


class TLSPeer:
    """One end of a TLS session over memory BIOs, as a real client or server would run it."""

    def __init__(self, ctx: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=server_hostname)
        self.established = False
        self.closed = False
        self.error: ssl.SSLError | None = None
        self.plaintext = bytearray()

    def step(self) -> bytes:
        """Run the handshake on and read what is readable; return ciphertext to send."""
        if self.error is None and not self.closed:
            try:
                if not self.established:
                    self.obj.do_handshake()
                    self.established = True
                for _ in range(10_000):
                    chunk = self.obj.read(65536)
                    if not chunk:
                        self.closed = True
                        break
                    self.plaintext += chunk
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.closed = True
            except ssl.SSLError as exc:
                self.error = exc
        return self.outgoing.read()

    def write(self, data: bytes) -> None:
        self.obj.write(data)

    def take(self) -> bytes:
        data, self.plaintext = bytes(self.plaintext), bytearray()
        return data


class MemOrigin:
    """An upstream HTTP/1.1 server in memory (h11), behind TLS or not.

    Answers every complete request with ``200`` and a body naming the request;
    ``echo=True`` makes it a raw byte echo instead (a non-HTTP protocol).
    """

    def __init__(self, ctx: ssl.SSLContext | None, *, echo: bool = False) -> None:
        self.tls = TLSPeer(ctx, server_side=True) if ctx is not None else None
        self.echo = echo
        self.conn = h11.Connection(h11.SERVER)
        self.requests: list[tuple[h11.Request, bytes]] = []
        self.received = bytearray()
        self._current: tuple[h11.Request, bytearray] | None = None
        self._out = bytearray()

    def receive(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.incoming.write(data)
        else:
            self._plain(data)

    def step(self) -> bytes:
        out = b""
        if self.tls is not None:
            out = self.tls.step()
            self._plain(self.tls.take())
            if self._out and self.tls.established:
                self.tls.write(bytes(self._out))
                self._out.clear()
                out += self.tls.outgoing.read()
            return out
        out, self._out = bytes(self._out), bytearray()
        return out

    def _plain(self, data: bytes) -> None:
        if not data:
            return
        self.received += data
        if self.echo:
            self._out += data
            return
        self.conn.receive_data(data)
        for _ in range(1000):
            event = self.conn.next_event()
            if isinstance(event, h11.Request):
                self._current = (event, bytearray())
            elif isinstance(event, h11.Data) and self._current is not None:
                self._current[1].extend(event.data)
            elif isinstance(event, h11.EndOfMessage) and self._current is not None:
                request, body = self._current
                self._current = None
                self.requests.append((request, bytes(body)))
                answer = b"answer to %s %s" % (request.method, request.target)
                self._out += self.conn.send(h11.Response(status_code=200, headers=[
                    (b"Content-Length", str(len(answer)).encode()), (b"Content-Type", b"text/plain")]))
                self._out += self.conn.send(h11.Data(data=answer))
                self._out += self.conn.send(h11.EndOfMessage())
                self.conn.start_next_cycle()
            else:  # NEED_DATA, PAUSED, ConnectionClosed
                break


class Rig:
    """A client, the ProxyConnection and the upstream servers, wired in memory."""

    def __init__(self, config: ProxyConfig, client_ctx: ssl.SSLContext | None, *,
                 origin: Callable[[cmd.OpenUpstream], MemOrigin], split: Split = None,
                 server_hostname: str | None = HOST) -> None:
        self.d = Driver(config, split=split)
        self.client = (TLSPeer(client_ctx, server_side=False, server_hostname=server_hostname)
                       if client_ctx is not None else None)
        self.make_origin = origin
        self.head = b""  # the plain answer to the CONNECT
        self.tunnel_open = False
        self.client_plain = bytearray()  # what the client got inside a non-TLS tunnel
        self.servers: dict[int, MemOrigin] = {}
        self.pending: list[cmd.OpenUpstream] = []
        self.opens: list[cmd.OpenUpstream] = []
        self.closed_upstreams: set[int] = set()
        self.client_closed = False

    # -- dispatch of the core's commands ------------------------------------------

    def run(self, commands: list[cmd.Command]) -> list[cmd.Command]:
        for c in commands:
            if isinstance(c, cmd.SendToClient):
                self._deliver_to_client(c.data)
            elif isinstance(c, cmd.SendToUpstream):
                assert c.upstream not in self.closed_upstreams, "bytes for a closed upstream"
                self.servers[c.upstream].receive(c.data)
            elif isinstance(c, cmd.OpenUpstream):
                self.opens.append(c)
                self.pending.append(c)
            elif isinstance(c, cmd.CloseUpstream):
                self.closed_upstreams.add(c.upstream)
            elif isinstance(c, cmd.CloseClient):
                self.client_closed = True
        return commands

    def _deliver_to_client(self, data: bytes) -> None:
        if not self.tunnel_open:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            self.head, _, data = self.head.partition(b"\r\n\r\n")
            self.head += b"\r\n\r\n"
            self.tunnel_open = True
        if self.client is not None:
            self.client.incoming.write(data)
        else:
            self.client_plain += data

    # -- moving bytes -------------------------------------------------------------

    def connect(self, early: bytes = b"", *, with_hello: bool = False) -> None:
        """Send the CONNECT, with the client's ClientHello in the same packet if asked."""
        if with_hello:
            assert self.client is not None
            early = self.client.step() + early
        self.run(self.d.client(CONNECT + early))

    def send(self, plaintext: bytes) -> None:
        """Plaintext from the client application: encrypted if the client speaks TLS."""
        if self.client is None:
            self.run(self.d.client(plaintext))
        else:
            self.client.write(plaintext)

    def pump(self, rounds: int = 200) -> None:
        """Move bytes between all parties until nothing moves (bounded)."""
        for _ in range(rounds):
            moved = False
            while self.pending:
                c = self.pending.pop(0)
                self.servers[c.upstream] = self.make_origin(c)
                self.run(self.d.connected(c.upstream, address=("127.0.0.1", c.port)))
                moved = True
            if self.client is not None and self.tunnel_open and not self.client_closed:
                data = self.client.step()
                if data:
                    self.run(self.d.client(data))
                    moved = True
            for uid, server in list(self.servers.items()):
                if uid in self.closed_upstreams:
                    continue
                data = server.step()
                if data:
                    self.run(self.d.upstream(data, upstream=uid))
                    moved = True
            if not moved:
                if self.client is not None and self.tunnel_open:
                    self.client.step()  # read what arrived last
                return
        raise AssertionError("the exchange did not settle")

    def answer(self) -> bytes:
        """What the client application has read so far (decrypted), consumed."""
        if self.client is None:
            data, self.client_plain = bytes(self.client_plain), bytearray()
            return data
        return self.client.take()

    def flows(self) -> list[Flow]:
        return finished(self.d.transcript)

    def logs(self, level: str | None = None) -> list[str]:
        return [c.message for c in self.d.transcript
                if isinstance(c, cmd.Log) and (level is None or c.level == level)]


def tls_origins(pki: UpstreamPKI, seen_sni: list[str | None]) -> Callable[[cmd.OpenUpstream], MemOrigin]:
    def make(c: cmd.OpenUpstream) -> MemOrigin:
        return MemOrigin(upstream_server_context(pki, seen_sni) if c.tls else None)

    return make


def request(path: str = "/hello", *, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: origin.test\r\n%s\r\n" % (path.encode(), extra)


# -- the complete exchange ---------------------------------------------------------------


@pytest.mark.parametrize("split", [None, 1], ids=["whole", "byte-by-byte"])
def test_intercepted_exchange_in_memory(store: CertStore, pki: UpstreamPKI, split: Split) -> None:
    sni: list[str | None] = []
    rig = Rig(make_config(store, pki), client_context(store), origin=tls_origins(pki, sni), split=split)

    rig.connect()
    assert status_of(rig.head) == 200, rig.head
    assert rig.d.conn.phase() is Phase.SNIFF
    rig.pump()
    assert rig.client is not None and rig.client.established, rig.client.error
    # The client trusted a leaf for origin.test issued by the interceptkit CA.
    leaf = x509.load_der_x509_certificate(rig.client.obj.getpeercert(binary_form=True))
    assert leaf.issuer == store.ca_cert.subject
    assert HOST in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    # No upstream yet: the proxy connects only once it knows what the client wants.
    assert opened(rig.d.transcript) == []

    rig.send(request("/first?x=1", extra=b"X-Secret: in the clear\r\n"))
    rig.pump()
    [open_cmd] = rig.opens
    assert (open_cmd.host, open_cmd.port, open_cmd.tls) == (HOST, 443, True)
    assert sni == [HOST], "the client's SNI is forwarded upstream"
    answer = rig.answer()
    assert status_of(answer) == 200 and body_of(answer) == b"answer to GET /first?x=1"

    [flow] = rig.flows()
    assert flow.error is None and flow.state == "done"
    assert (flow.request.scheme, flow.request.host, flow.request.port) == ("https", HOST, 443)
    assert flow.request.path == "/first?x=1"
    assert flow.request.headers["X-Secret"] == "in the clear"
    assert flow.request.url == "https://origin.test/first?x=1"
    assert flow.response is not None and flow.response.content == b"answer to GET /first?x=1"
    assert flow.client_tls is not None and flow.client_tls.sni == HOST
    assert flow.client_tls.version is not None and flow.client_tls.version.startswith("TLS")
    assert flow.server_tls is not None and flow.server_tls.sni == HOST and flow.server_tls.version
    server = rig.servers[open_cmd.upstream]
    [(seen, _)] = server.requests
    assert seen.target == b"/first?x=1"  # origin-form upstream, not absolute-form

    # Keep-alive inside the tunnel: the second request rides the same upstream.
    rig.send(request("/second"))
    rig.pump()
    answer = rig.answer()
    assert status_of(answer) == 200 and body_of(answer) == b"answer to GET /second"
    assert len(rig.opens) == 1 and len(server.requests) == 2
    assert [f.request.path for f in rig.flows()] == ["/first?x=1", "/second"]
    assert not rig.client_closed
    assert [f for f in rig.flows() if f.request.method == "CONNECT"] == []


def test_bytes_sent_with_the_connect_are_not_lost(store: CertStore, pki: UpstreamPKI) -> None:
    # The ClientHello arrives in the same read as the CONNECT (a client that
    # does not wait for the 200): start_tls()-style switching would drop it.
    sni: list[str | None] = []
    rig = Rig(make_config(store, pki), client_context(store), origin=tls_origins(pki, sni))
    rig.connect(with_hello=True)
    assert status_of(rig.head) == 200
    rig.pump()
    assert rig.client is not None and rig.client.established, rig.client.error
    rig.send(request("/early"))
    rig.pump()
    assert body_of(rig.answer()) == b"answer to GET /early"
    assert [f.request.path for f in rig.flows()] == ["/early"]


def test_request_in_the_same_flight_as_the_finished_handshake(store: CertStore, pki: UpstreamPKI) -> None:
    # TLS 1.2-style false start / TLS 1.3 client Finished + first request in one packet.
    sni: list[str | None] = []
    rig = Rig(make_config(store, pki), client_context(store), origin=tls_origins(pki, sni))
    rig.connect(with_hello=True)
    assert rig.client is not None
    for _ in range(20):  # run the client handshake without letting the proxy read its Finished
        flight = rig.client.step()
        if rig.client.established:
            rig.client.write(request("/together"))
            rig.run(rig.d.client(flight + rig.client.outgoing.read()))
            break
        rig.run(rig.d.client(flight))
    rig.pump()
    assert body_of(rig.answer()) == b"answer to GET /together"


class CloseDelimitedOrigin(MemOrigin):
    """Answers without Content-Length and marks the end of the body by closing."""

    def _plain(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and not self.requests:
            self.requests.append((h11.Request(method="GET", target="/", headers=[("Host", "x")]), b""))
            self._out += b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until close"


def test_close_delimited_upstream_body_inside_the_tunnel(store: CertStore, pki: UpstreamPKI) -> None:
    sni: list[str | None] = []
    rig = Rig(make_config(store, pki), client_context(store),
              origin=lambda c: CloseDelimitedOrigin(upstream_server_context(pki, sni)))
    rig.connect()
    rig.pump()
    rig.send(request("/x"))
    rig.pump()
    server = rig.servers[1]
    assert server.tls is not None
    with pytest.raises(ssl.SSLWantReadError):
        server.tls.obj.unwrap()  # our close_notify; we do not wait for the proxy's
    rig.run(rig.d.upstream(server.tls.outgoing.read(), upstream=1))
    rig.run(rig.d.upstream_closed(1))
    rig.pump()
    answer = rig.answer()
    # Re-framed for the client, whose connection stays usable.
    assert status_of(answer) == 200 and b"Transfer-Encoding: chunked" in answer
    assert body_of(answer) == b"10\r\nbody until close\r\n0\r\n\r\n"
    [flow] = rig.flows()
    assert flow.error is None and not rig.client_closed


def test_upstream_closed_between_requests_reconnects_with_tls(store: CertStore, pki: UpstreamPKI) -> None:
    sni: list[str | None] = []
    rig = Rig(make_config(store, pki), client_context(store), origin=tls_origins(pki, sni))
    rig.connect()
    rig.pump()
    rig.send(request("/one"))
    rig.pump()
    assert body_of(rig.answer()) == b"answer to GET /one"
    rig.run(rig.d.upstream_closed(1))  # the server ended its keep-alive
    rig.send(request("/two"))
    rig.pump()
    assert body_of(rig.answer()) == b"answer to GET /two"
    assert [(o.upstream, o.tls) for o in rig.opens] == [(1, True), (2, True)]
    assert sni == [HOST, HOST]
    assert not rig.client_closed


def test_ip_address_connect_gets_a_leaf_with_an_ip_san(store: CertStore, pki: UpstreamPKI) -> None:
    # No SNI (clients send none for an address): the CONNECT host names the leaf.
    sni: list[str | None] = []
    rig = Rig(make_config(store, pki), client_context(store), origin=tls_origins(pki, sni),
              server_hostname="127.0.0.1")
    rig.run(rig.d.client(b"CONNECT 127.0.0.1:8443 HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n"))
    rig.pump()
    assert rig.client is not None and rig.client.established, rig.client.error
    leaf = x509.load_der_x509_certificate(rig.client.obj.getpeercert(binary_form=True))
    ips = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in ips
    rig.send(b"GET /ip HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n")
    rig.pump()
    assert body_of(rig.answer()) == b"answer to GET /ip"
    assert sni == [None]  # no SNI upstream either
    [flow] = rig.flows()
    assert flow.request.url == "https://127.0.0.1:8443/ip" and flow.client_tls is not None
    assert flow.client_tls.sni is None


# -- failures -------------------------------------------------------------------------------


def test_upstream_certificate_failure_is_a_502_inside_the_tunnel(store: CertStore, pki: UpstreamPKI) -> None:
    sni: list[str | None] = []
    config = make_config(store, None)  # the proxy trusts nothing for upstreams
    rig = Rig(config, client_context(store), origin=tls_origins(pki, sni))
    rig.connect()
    rig.pump()
    rig.send(request("/x"))
    rig.pump()
    assert rig.client is not None and rig.client.error is None
    answer = rig.answer()  # decrypted by the client: the 502 came through its TLS session
    assert status_of(answer) == 502, answer
    assert b"certificate verify failed" in body_of(answer)
    [flow] = rig.flows()
    assert flow.error is not None and "certificate verify failed" in flow.error
    assert rig.client_closed
    [up] = rig.opens
    assert up.upstream in rig.closed_upstreams
    assert rig.servers[up.upstream].requests == []  # nothing was sent to an unverified server


def test_upstream_hostname_mismatch_is_a_502(store: CertStore, pki: UpstreamPKI) -> None:
    sni: list[str | None] = []
    rig = Rig(make_config(store, pki), client_context(store), origin=tls_origins(pki, sni),
              server_hostname="other.test")
    rig.run(rig.d.client(b"CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n"))
    rig.pump()
    rig.send(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
    rig.pump()
    answer = rig.answer()
    assert status_of(answer) == 502
    assert b"certificate verify failed" in body_of(answer) and b"other.test" in body_of(answer)


def test_client_that_rejects_our_certificate(store: CertStore, pki: UpstreamPKI) -> None:
    config = make_config(store, pki)
    logs: list[str] = []
    for attempt in range(2):  # two connections, one warning
        sni: list[str | None] = []
        rig = Rig(config, client_context(None), origin=tls_origins(pki, sni))
        rig.connect()
        rig.pump()
        assert rig.client is not None and isinstance(rig.client.error, ssl.SSLCertVerificationError)
        [flow] = rig.flows()
        assert flow.request.method == "CONNECT" and flow.state == "error"
        assert flow.error is not None and "interceptkit CA" in flow.error and HOST in flow.error
        assert "unknown ca" in flow.error
        assert rig.client_closed
        assert rig.opens == []  # never contacted the upstream
        logs += rig.logs("warning")
    [warning] = logs
    assert "interceptkit CA" in warning and HOST in warning and "interceptkit ca" in warning


def test_client_that_hangs_up_during_the_handshake(store: CertStore, pki: UpstreamPKI) -> None:
    sni: list[str | None] = []
    config = make_config(store, pki)
    rig = Rig(config, client_context(store), origin=tls_origins(pki, sni))
    rig.connect(with_hello=True)
    rig.run(rig.d.client_closed())
    [flow] = rig.flows()
    assert flow.error is not None and "origin.test" in flow.error
    assert rig.client_closed


# -- what is not TLS ------------------------------------------------------------------------


def test_plain_http_inside_a_tunnel_is_handled_as_http(store: CertStore, pki: UpstreamPKI) -> None:
    sni: list[str | None] = []
    rig = Rig(make_config(store, pki), None, origin=tls_origins(pki, sni))
    rig.run(rig.d.client(b"CONNECT origin.test:8080 HTTP/1.1\r\nHost: origin.test:8080\r\n\r\n"))
    assert status_of(rig.head) == 200
    rig.send(b"GET /plain HTTP/1.1\r\nHost: origin.test:8080\r\n\r\n")
    rig.pump()
    [up] = rig.opens
    assert (up.host, up.port, up.tls) == (HOST, 8080, False)
    answer = rig.answer()
    assert status_of(answer) == 200 and body_of(answer) == b"answer to GET /plain"
    [flow] = rig.flows()
    assert flow.request.url == "http://origin.test:8080/plain" and flow.client_tls is None
    rig.send(b"GET /again HTTP/1.1\r\nHost: origin.test:8080\r\n\r\n")
    rig.pump()
    assert body_of(rig.answer()) == b"answer to GET /again" and len(rig.opens) == 1


def test_non_tls_non_http_bytes_are_relayed_raw(store: CertStore, pki: UpstreamPKI) -> None:
    rig = Rig(make_config(store, pki), None, origin=lambda c: MemOrigin(None, echo=True))
    rig.run(rig.d.client(b"CONNECT origin.test:5222 HTTP/1.1\r\nHost: origin.test:5222\r\n\r\n\x00\x01binary"))
    assert status_of(rig.head) == 200
    rig.pump()
    [up] = rig.opens
    assert (up.host, up.port, up.tls) == (HOST, 5222, False)
    assert rig.d.conn.phase() is Phase.TUNNEL
    assert rig.answer() == b"\x00\x01binary"
    rig.send(b"\xff more \r\n\r\n")
    rig.pump()
    assert rig.answer() == b"\xff more \r\n\r\n"
    assert bytes(rig.servers[up.upstream].received) == b"\x00\x01binary\xff more \r\n\r\n"


def test_server_speaks_first_protocol_is_relayed_after_the_sniff_timeout(store: CertStore,
                                                                        pki: UpstreamPKI) -> None:
    rig = Rig(make_config(store, pki), None, origin=lambda c: MemOrigin(None, echo=True))
    rig.run(rig.d.client(b"CONNECT origin.test:25 HTTP/1.1\r\nHost: origin.test:25\r\n\r\n"))
    assert rig.opens == [] and "sniff" in rig.d.timers
    rig.run(rig.d.fire("sniff"))
    rig.pump()
    [up] = rig.opens
    assert up.tls is False and rig.d.conn.phase() is Phase.TUNNEL


def test_ignored_host_is_relayed_without_decrypting(store: CertStore, pki: UpstreamPKI) -> None:
    config = make_config(store, pki, ignore_host=lambda host, port: host == HOST)
    rig = Rig(config, None, origin=lambda c: MemOrigin(None, echo=True))
    rig.run(rig.d.client(CONNECT))
    assert rig.head == b""  # not answered before the upstream is there
    [up] = rig.opens
    assert up.tls is False
    rig.pump()
    assert status_of(rig.head) == 200 and rig.d.conn.phase() is Phase.TUNNEL


def test_interception_off_without_a_server_context(pki: UpstreamPKI) -> None:
    config = ProxyConfig(intercept=True, server_context=None, upstream_context=upstream_client_context(pki))
    rig = Rig(config, None, origin=lambda c: MemOrigin(None, echo=True))
    rig.run(rig.d.client(CONNECT))
    [up] = rig.opens
    assert up.tls is False and rig.head == b""
