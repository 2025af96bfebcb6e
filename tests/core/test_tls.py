"""Tests for interceptkit.core.tls: ClientHello parsing and TLSEndpoint.

Everything runs in memory: two endpoints hand each other bytes, no sockets.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import ssl
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    from interceptkit.core import tls
except ImportError:  # the package files may not exist yet
    sys.path.insert(
        0, str(Path(__file__).resolve().parents[2] / "interceptkit" / "core")
    )
    import tls  # type: ignore[no-redef,import-not-found]

ClientHello = tls.ClientHello
TLSEndpoint = tls.TLSEndpoint
TLSError = tls.TLSError
TLSParseError = tls.TLSParseError
looks_like_tls = tls.looks_like_tls
parse_client_hello = tls.parse_client_hello


# -- certificates --------------------------------------------------------------


@dataclass(frozen=True)
class PKI:
    ca: Path
    leaf: Path
    key: Path
    other_ca: Path  # a CA that did not sign the leaf


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _make_ca("interceptkit test CA")
    leaf_key, leaf_cert = _make_leaf(ca_key, ca_cert)
    _, other_cert = _make_ca("someone else's CA")
    paths = PKI(
        folder / "ca.pem", folder / "leaf.pem", folder / "key.pem", folder / "other.pem"
    )
    paths.ca.write_bytes(_pem(ca_cert))
    paths.leaf.write_bytes(_pem(leaf_cert))
    paths.other_ca.write_bytes(_pem(other_cert))
    paths.key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def server_context(
    pki: PKI, maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.leaf, pki.key)
    context.set_alpn_protocols(["http/1.1"])
    context.maximum_version = maximum
    return context


def client_context(pki: PKI, ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca or pki.ca)
    context.set_alpn_protocols(["http/1.1"])
    return context


def client_hello_bytes(hostname: str | None, alpn: list[str] | None = None) -> bytes:
    """A real ClientHello, as the ssl module's own client sends it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if hostname is None or hostname[0].isdigit():
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    sslobj = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=hostname)
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


# -- looks_like_tls ------------------------------------------------------------


def test_looks_like_tls() -> None:
    hello = client_hello_bytes("example.test")
    assert looks_like_tls(hello) is True
    assert looks_like_tls(hello[:3]) is True
    assert looks_like_tls(b"GET / HTTP/1.1\r\n") is False
    assert looks_like_tls(b"G") is False
    assert looks_like_tls(b"\x16\x02\x01") is False
    assert looks_like_tls(b"") is None
    assert looks_like_tls(b"\x16") is None
    assert looks_like_tls(b"\x16\x03") is None


# -- parse_client_hello ----------------------------------------------------------


def test_real_client_hello() -> None:
    hello = client_hello_bytes("Example.Test", ["http/1.1"])
    parsed = parse_client_hello(hello)
    assert parsed == ClientHello(
        sni="example.test", alpn=("http/1.1",), legacy_version=0x0303, length=len(hello)
    )


def test_alpn_order_kept() -> None:
    parsed = parse_client_hello(client_hello_bytes("a.test", ["h2", "http/1.1"]))
    assert parsed is not None and parsed.alpn == ("h2", "http/1.1")


@pytest.mark.parametrize("hostname", ["127.0.0.1", "::1", None])
def test_no_sni_for_ip_or_none(hostname: str | None) -> None:
    parsed = parse_client_hello(client_hello_bytes(hostname))
    assert parsed is not None
    assert parsed.sni is None
    assert parsed.alpn == ()


def test_trailing_bytes_not_counted() -> None:
    hello = client_hello_bytes("example.test")
    parsed = parse_client_hello(hello + b"\x14\x03\x03\x00\x01\x01")
    assert parsed is not None and parsed.length == len(hello)


def test_one_byte_at_a_time() -> None:
    hello = client_hello_bytes("example.test", ["http/1.1"])
    for end in range(len(hello)):
        assert parse_client_hello(hello[:end]) is None, end
    assert parse_client_hello(hello) == parse_client_hello(bytes(hello))


def reframe(hello: bytes, cuts: list[int]) -> bytes:
    """Re-frame a one-record ClientHello as several records, cut at `cuts`."""
    message = hello[5:]
    edges = [0, *cuts, len(message)]
    return b"".join(
        hello[:3] + struct.pack("!H", end - start) + message[start:end]
        for start, end in itertools.pairwise(edges)
    )


@pytest.mark.parametrize("cuts", [[2], [100], [4, 5, 6]])
def test_hello_split_over_records(cuts: list[int]) -> None:
    hello = client_hello_bytes("example.test", ["http/1.1"])
    framed = reframe(hello, cuts)
    parsed = parse_client_hello(framed)
    assert parsed is not None
    assert (parsed.sni, parsed.alpn, parsed.length) == (
        "example.test",
        ("http/1.1",),
        len(framed),
    )
    for end in range(len(framed)):
        assert parse_client_hello(framed[:end]) is None


def _rebuild(extensions: bytes) -> bytes:
    """A minimal ClientHello with the given raw extension block."""
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + b"\x00\x02\x13\x01"
        + b"\x01\x00"
        + struct.pack("!H", len(extensions))
        + extensions
    )
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(message)) + message


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def _sni_ext(*names: tuple[int, bytes]) -> bytes:
    entries = b"".join(bytes([t]) + struct.pack("!H", len(n)) + n for t, n in names)
    return _ext(0, struct.pack("!H", len(entries)) + entries)


def test_minimal_hello_and_non_host_name_types() -> None:
    parsed = parse_client_hello(_rebuild(_sni_ext((1, b"ignored"), (0, b"HOST.test"))))
    assert parsed is not None and parsed.sni == "host.test"


def test_hello_without_extensions() -> None:
    # RFC 5246 7.4.1.2: the extension block may be absent altogether.
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    parsed = parse_client_hello(
        b"\x16\x03\x01" + struct.pack("!H", len(message)) + message
    )
    assert parsed == ClientHello(
        sni=None, alpn=(), legacy_version=0x0303, length=9 + len(body)
    )


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"\x16\x02\x01\x00\x05",  # not version major 3
        b"\x16\x03\x01\x00\x00",  # zero-length record
        b"\x16\x03\x01\x40\x01",  # record longer than 2^14
        b"\x16\x03\x01\x00\x04\x02\x00\x00\x00",  # ServerHello, not ClientHello
        b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",  # absurd handshake length
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03",  # body shorter than version
        b"\x16\x03\x01\x00\x02\x01\x00"
        + b"\x17\x03\x03\x00\x02\x00\x00",  # interleaved
        _rebuild(_ext(0, b"\x00") + b""),  # server_name list truncated
        _rebuild(_ext(0, b"")),  # empty server_name from a client
        _rebuild(_sni_ext((0, b"a.test"), (0, b"b.test"))),  # two host_names
        _rebuild(_sni_ext((0, "é.test".encode()))),  # not ASCII
        _rebuild(_ext(16, b"\x00\x04\x02h2")),  # ALPN list length past end
        _rebuild(_ext(16, b"\x00\x04\x02h2\x05")),  # protocol name past list end
        _rebuild(_ext(16, b"\x00\x01\x00")),  # empty protocol name
        _rebuild(_ext(16, b"\x00\x02\x00\x00")),  # zero-length protocol name
        _rebuild(_ext(5, b"") + _ext(5, b"")),  # duplicate extension
        _rebuild(b"\x00"),  # half an extension header
        _rebuild(b"\x00\x10\x00\x09\x00\x03\x02h2"),  # ext shorter than its length
        _rebuild(_ext(16, b"\x00\x03\x02h2\x00")),  # trailing byte after ALPN list
    ],
)
def test_garbage_raises_parse_error(data: bytes) -> None:
    with pytest.raises(TLSParseError):
        parse_client_hello(data)


def test_lengths_truncated_inside_a_real_hello() -> None:
    """Cut the body short but keep the outer lengths consistent: every inner
    length now runs past the end, except the one cut that leaves a valid
    extension-less hello."""
    hello = client_hello_bytes("example.test", ["http/1.1"])
    valid = []
    for cut in range(1, len(hello) - 9):
        body = hello[9 : len(hello) - cut]
        message = b"\x01" + len(body).to_bytes(3, "big") + body
        framed = hello[:3] + struct.pack("!H", len(message)) + message
        try:
            valid.append(parse_client_hello(framed))
        except TLSParseError:
            pass
    assert [(h.sni, h.alpn) for h in valid if h is not None] == [(None, ())]
    assert None not in valid


def _never_crashes(data: bytes) -> None:
    try:
        result = parse_client_hello(data)
    except TLSParseError:
        return
    assert result is None or isinstance(result, ClientHello)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _never_crashes(data)
    assert looks_like_tls(data) in (True, False, None)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=600), st.integers(0, 0xFFFFFF))
def test_random_handshake_bodies(body: bytes, claimed: int) -> None:
    message = b"\x01" + claimed.to_bytes(3, "big") + body
    _never_crashes(b"\x16\x03\x01" + struct.pack("!H", len(message)) + message)


_REAL_HELLO = client_hello_bytes("example.test", ["h2", "http/1.1"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_REAL_HELLO) - 1), st.integers(0, 255)), max_size=4
    )
)
def test_mutated_real_hello(mutations: list[tuple[int, int]]) -> None:
    data = bytearray(_REAL_HELLO)
    for index, value in mutations:
        data[index] = value
    _never_crashes(bytes(data))


# -- TLSEndpoint -------------------------------------------------------------------


Feed = Callable[["tls.TLSEndpoint", bytes], "tls.TLSReceived"]


def feed_whole(endpoint: tls.TLSEndpoint, data: bytes) -> tls.TLSReceived:
    return endpoint.receive(data)


def feed_bytewise(endpoint: tls.TLSEndpoint, data: bytes) -> tls.TLSReceived:
    """Feed one byte per call; merge the results as one call would report."""
    results = [endpoint.receive(data[i : i + 1]) for i in range(len(data))] or [
        endpoint.receive(b"")
    ]
    return tls.TLSReceived(
        plaintext=b"".join(r.plaintext for r in results),
        to_send=b"".join(r.to_send for r in results),
        handshake_done=any(r.handshake_done for r in results),
        closed=any(r.closed for r in results),
    )


@dataclass
class Pair:
    client: tls.TLSEndpoint
    server: tls.TLSEndpoint
    # Application data each side received during the handshake.
    client_got: bytes = b""
    server_got: bytes = b""


def make_pair(
    pki: PKI,
    *,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    hostname: str = "localhost",
) -> Pair:
    client = TLSEndpoint(
        client_context(pki), server_side=False, server_hostname=hostname
    )
    server = TLSEndpoint(server_context(pki, maximum), server_side=True)
    return Pair(client, server)


def handshake(pair: Pair, feed: Feed = feed_whole) -> None:
    """Pump bytes between the two ends until both have finished."""
    assert pair.server.start() == b""
    to_server, to_client = pair.client.start(), b""
    done = {"client": False, "server": False}
    for _ in range(10):
        if to_server:
            got = feed(pair.server, to_server)
            done["server"] |= got.handshake_done
            pair.server_got += got.plaintext
            to_server, to_client = b"", to_client + got.to_send
        if to_client:
            got = feed(pair.client, to_client)
            done["client"] |= got.handshake_done
            pair.client_got += got.plaintext
            to_client, to_server = b"", to_server + got.to_send
        if all(done.values()) and not to_server and not to_client:
            return
    raise AssertionError(f"handshake did not finish: {done}")


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED]


@pytest.mark.parametrize("maximum", VERSIONS, ids=["tls12", "tls13"])
@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise], ids=["whole", "bytewise"])
def test_handshake_and_data_both_ways(
    pki: PKI, maximum: ssl.TLSVersion, feed: Feed
) -> None:
    pair = make_pair(pki, maximum=maximum)
    handshake(pair, feed)
    expected = "TLSv1.2" if maximum is ssl.TLSVersion.TLSv1_2 else "TLSv1.3"
    for end in (pair.client, pair.server):
        assert end.version == expected
        assert end.cipher
        assert end.alpn == "http/1.1"
        assert end.sni == "localhost"
    assert pair.client.peer_certificate is not None
    assert x509.load_der_x509_certificate(
        pair.client.peer_certificate
    ).subject == _name("localhost")
    assert pair.server.peer_certificate is None

    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    got = feed(pair.server, pair.client.send(request))
    assert (got.plaintext, got.closed, got.handshake_done) == (request, False, False)
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    got = feed(pair.client, pair.server.send(response) + got.to_send)
    assert (got.plaintext, got.closed) == (response, False)


@pytest.mark.parametrize("maximum", VERSIONS, ids=["tls12", "tls13"])
def test_first_data_with_last_handshake_flight(
    pki: PKI, maximum: ssl.TLSVersion
) -> None:
    """The side that finishes first sends its Finished and data in one go."""
    pair = make_pair(pki, maximum=maximum)
    pair.server.start()
    first = pair.server.receive(pair.client.start())
    second = pair.client.receive(first.to_send)
    if second.handshake_done:  # TLS 1.3: the client finishes first
        sender, receiver, flight = pair.client, pair.server, second.to_send
    else:  # TLS 1.2: the server finishes on the client's Finished
        third = pair.server.receive(second.to_send)
        assert third.handshake_done
        sender, receiver, flight = pair.server, pair.client, third.to_send
    got = receiver.receive(flight + sender.send(b"first bytes"))
    assert got.handshake_done
    assert got.plaintext == b"first bytes"


def test_records_and_a_partial_one_in_one_read(pki: PKI) -> None:
    """Whole records are read at once; a record cut short waits for its rest (no read is left out)."""
    pair = make_pair(pki)
    handshake(pair)
    wire = b"".join(pair.client.send(piece) for piece in (b"one ", b"two ", b"three"))
    got = pair.server.receive(wire[:-3])
    assert (got.plaintext, got.closed) == (b"one two ", False)
    got = pair.server.receive(wire[-3:])
    assert (got.plaintext, got.closed) == (b"three", False)


def test_ip_hostname_sends_no_sni(pki: PKI) -> None:
    pair = make_pair(pki, hostname="127.0.0.1")
    handshake(pair)
    assert pair.client.sni is None and pair.server.sni is None
    assert pair.client.version is not None


@pytest.mark.parametrize("feed", [feed_whole, feed_bytewise], ids=["whole", "bytewise"])
def test_close_notify_seen_as_closed(pki: PKI, feed: Feed) -> None:
    pair = make_pair(pki)
    handshake(pair)
    goodbye = pair.client.send(b"last words") + pair.client.close()
    got = feed(pair.server, goodbye)
    assert got.plaintext == b"last words" and got.closed
    # Half-close: the server may still answer before it closes in turn.
    reply = pair.server.send(b"reply") + pair.server.close()
    got = pair.client.receive(reply)
    assert got.plaintext == b"reply" and got.closed
    assert pair.client.close() == b"" and pair.server.close() == b""


def test_transport_eof_seen_as_closed(pki: PKI) -> None:
    pair = make_pair(pki)
    handshake(pair)
    got = pair.server.receive(b"")
    assert got.closed and got.plaintext == b""
    assert pair.server.receive(b"").closed
    with pytest.raises(RuntimeError):
        pair.server.receive(b"more")


def test_eof_during_handshake_is_an_error(pki: PKI) -> None:
    pair = make_pair(pki)
    pair.server.start()
    pair.server.receive(pair.client.start())
    with pytest.raises(
        TLSError, match="closed the connection during the TLS handshake"
    ):
        pair.server.receive(b"")


def test_untrusted_ca(pki: PKI) -> None:
    client = TLSEndpoint(
        client_context(pki, pki.other_ca),
        server_side=False,
        server_hostname="localhost",
    )
    server = TLSEndpoint(server_context(pki), server_side=True)
    server.start()
    flight = server.receive(client.start()).to_send
    with pytest.raises(TLSError) as client_error:
        client.receive(flight)
    assert client_error.value.reason.startswith("certificate verify failed: ")
    assert client_error.value.alert is None
    assert client_error.value.to_send, "the client's alert must reach the server"
    with pytest.raises(TLSError) as server_error:
        server.receive(client_error.value.to_send)
    assert server_error.value.alert in {
        "unknown ca",
        "bad certificate",
        "certificate unknown",
    }
    assert server_error.value.reason == f"peer sent alert: {server_error.value.alert}"
    # A broken session: no more calls, but close() stays quiet.
    assert client.close() == b"" and server.close() == b""
    with pytest.raises(RuntimeError, match="FAILED"):
        server.receive(b"x")


def test_hostname_mismatch(pki: PKI) -> None:
    pair = make_pair(pki, hostname="wrong.test")
    pair.server.start()
    flight = pair.server.receive(pair.client.start()).to_send
    with pytest.raises(TLSError, match="certificate verify failed: Hostname mismatch"):
        pair.client.receive(flight)


def test_garbage_from_peer(pki: PKI) -> None:
    server = TLSEndpoint(server_context(pki), server_side=True)
    server.start()
    with pytest.raises(TLSError) as error:
        server.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert error.value.alert is None and error.value.reason


def test_misuse_is_a_runtime_error(pki: PKI) -> None:
    pair = make_pair(pki)
    with pytest.raises(RuntimeError, match="IDLE"):
        pair.client.receive(b"x")
    pair.client.start()
    with pytest.raises(RuntimeError, match=r"send\(\) in state HANDSHAKING"):
        pair.client.send(b"too early")
    with pytest.raises(RuntimeError, match="start"):
        pair.client.start()


def test_close_before_and_after(pki: PKI) -> None:
    pair = make_pair(pki)
    assert pair.client.close() == b""  # never started
    pair = make_pair(pki)
    handshake(pair)
    notify = pair.client.close()
    assert notify and pair.client.close() == b""
    with pytest.raises(RuntimeError, match="CLOSED"):
        pair.client.send(b"after close")
    assert pair.client.sni == "localhost"  # properties still answer


def test_eight_mib_intact(pki: PKI) -> None:
    pair = make_pair(pki)
    handshake(pair)
    payload = bytes(range(256)) * (8 * 4096)  # 8 MiB
    ciphertext = pair.client.send(payload)
    assert len(ciphertext) > len(payload)
    pieces = [
        pair.server.receive(ciphertext[i : i + 65521]).plaintext
        for i in range(0, len(ciphertext), 65521)
    ]
    assert b"".join(pieces) == payload
    echoed = pair.client.receive(pair.server.send(payload)).plaintext
    assert echoed == payload
