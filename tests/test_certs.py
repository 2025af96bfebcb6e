"""CertStore: the CA on disk, leaf certificates, and TLS contexts that clients accept."""

from __future__ import annotations

import datetime as dt
import gc
import ipaddress
import os
import ssl

from tlspair import handshake
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from interceptkit.certs import (
    CA_CERT_DER_FILE,
    CA_CERT_PEM_FILE,
    CA_FILE,
    CertStore,
    CertStoreError,
    default_confdir,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    return tmp_path / "conf"


@pytest.fixture
def store(confdir: Path) -> Iterator[CertStore]:
    with CertStore.load_or_create(confdir) as s:
        yield s


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


E = TypeVar("E", bound=x509.ExtensionType)


def ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the CA on disk -----------------------------------------------------------


@posix_only
def test_first_run_creates_private_folder_and_files(confdir: Path) -> None:
    store = CertStore.load_or_create(confdir)
    assert mode(confdir) == 0o700
    assert mode(confdir / CA_FILE) == 0o600
    assert store.ca_key_path == confdir / CA_FILE
    assert store.ca_cert_path == confdir / CA_CERT_PEM_FILE
    assert store.ca_cert_der_path == confdir / CA_CERT_DER_FILE
    assert sorted(p.name for p in confdir.iterdir()) == sorted(
        [CA_FILE, CA_CERT_PEM_FILE, CA_CERT_DER_FILE]
    )


def test_exported_files_hold_the_ca_certificate(store: CertStore) -> None:
    assert store.ca_cert_path.read_bytes() == store.ca_cert_pem
    assert store.ca_cert_der_path.read_bytes() == store.ca_cert_der
    assert x509.load_der_x509_certificate(store.ca_cert_der) == store.ca_cert
    assert b"PRIVATE KEY" not in store.ca_cert_path.read_bytes()
    key_file = store.ca_key_path.read_bytes()
    assert b"-----BEGIN PRIVATE KEY-----" in key_file and store.ca_cert_pem in key_file


def test_second_load_returns_the_same_ca(confdir: Path) -> None:
    first = CertStore.load_or_create(confdir)
    before = confdir.joinpath(CA_FILE).read_bytes()
    second = CertStore.load_or_create(confdir)
    assert fingerprint(second.ca_cert) == fingerprint(first.ca_cert)
    assert confdir.joinpath(CA_FILE).read_bytes() == before


def test_confdir_explicit_beats_env_beats_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("INTERCEPTKIT_HOME", raising=False)
    assert default_confdir() == tmp_path / "home" / ".interceptkit"
    monkeypatch.setenv("INTERCEPTKIT_HOME", str(tmp_path / "env"))
    assert default_confdir() == tmp_path / "env"
    assert CertStore.load_or_create().confdir == tmp_path / "env"
    assert (tmp_path / "env" / CA_FILE).exists()
    explicit = CertStore.load_or_create(tmp_path / "explicit")
    assert explicit.confdir == tmp_path / "explicit"
    assert not (tmp_path / "home").exists()


def test_missing_exports_are_recreated_from_the_ca_file(confdir: Path) -> None:
    ca = CertStore.load_or_create(confdir).ca_cert
    (confdir / CA_CERT_PEM_FILE).unlink()
    (confdir / CA_CERT_DER_FILE).unlink()
    store = CertStore.load_or_create(confdir)
    assert store.ca_cert == ca
    assert x509.load_pem_x509_certificate(store.ca_cert_path.read_bytes()) == ca
    assert x509.load_der_x509_certificate(store.ca_cert_der_path.read_bytes()) == ca


def test_stale_export_is_rewritten(confdir: Path, tmp_path: Path) -> None:
    other = CertStore.load_or_create(tmp_path / "other")
    (confdir).mkdir()
    store = CertStore.load_or_create(confdir)
    (confdir / CA_CERT_PEM_FILE).write_bytes(other.ca_cert_pem)
    CertStore.load_or_create(confdir)
    assert (confdir / CA_CERT_PEM_FILE).read_bytes() == store.ca_cert_pem


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"this is not PEM\n",
        (
            b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
        ),
    ],
    ids=["empty", "text", "garbage-blocks"],
)
def test_corrupt_ca_file_is_an_error_naming_the_file(
    confdir: Path, content: bytes
) -> None:
    CertStore.load_or_create(confdir)
    (confdir / CA_FILE).write_bytes(content)
    with pytest.raises(CertStoreError, match=CA_FILE):
        CertStore.load_or_create(confdir)
    assert (confdir / CA_FILE).read_bytes() == content  # never silently replaced


def test_truncated_ca_file_is_an_error(confdir: Path) -> None:
    CertStore.load_or_create(confdir)
    path = confdir / CA_FILE
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CertStoreError, match=f"{CA_FILE}.*certificate"):
        CertStore.load_or_create(confdir)


def split_ca_file(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    cut = data.index(b"-----BEGIN CERTIFICATE-----")
    return data[:cut], data[cut:]


def test_ca_file_without_certificate_is_an_error(confdir: Path) -> None:
    CertStore.load_or_create(confdir)
    key, _ = split_ca_file(confdir / CA_FILE)
    (confdir / CA_FILE).write_bytes(key)
    with pytest.raises(CertStoreError, match=f"{CA_FILE}.*no certificate"):
        CertStore.load_or_create(confdir)


def test_ca_file_without_key_is_an_error(confdir: Path) -> None:
    CertStore.load_or_create(confdir)
    _, cert = split_ca_file(confdir / CA_FILE)
    (confdir / CA_FILE).write_bytes(cert)
    with pytest.raises(CertStoreError, match=f"{CA_FILE}.*no private key"):
        CertStore.load_or_create(confdir)


def test_certificate_before_key_is_accepted(confdir: Path) -> None:
    ca = CertStore.load_or_create(confdir).ca_cert
    key, cert = split_ca_file(confdir / CA_FILE)
    (confdir / CA_FILE).write_bytes(cert + key)
    assert CertStore.load_or_create(confdir).ca_cert == ca


def test_mismatched_key_and_certificate_is_an_error(
    confdir: Path, tmp_path: Path
) -> None:
    CertStore.load_or_create(confdir)
    CertStore.load_or_create(tmp_path / "other")
    key, _ = split_ca_file(confdir / CA_FILE)
    _, other_cert = split_ca_file(tmp_path / "other" / CA_FILE)
    (confdir / CA_FILE).write_bytes(key + other_cert)
    with pytest.raises(CertStoreError, match=f"{CA_FILE}.*does not match"):
        CertStore.load_or_create(confdir)


def test_unreadable_config_path_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(CertStoreError, match="a-file"):
        CertStore.load_or_create(tmp_path / "a-file" / "conf")


def test_constructor_rejects_mismatched_objects(
    store: CertStore, tmp_path: Path
) -> None:
    other_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CertStoreError, match="does not match"):
        CertStore(tmp_path, other_key, store.ca_cert)


def test_bad_options_are_rejected(confdir: Path) -> None:
    with pytest.raises(ValueError, match="key_type"):
        CertStore.load_or_create(confdir, key_type="dsa")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_size"):
        CertStore.load_or_create(confdir, cache_size=0)
    assert not confdir.exists()


# -- the CA certificate -------------------------------------------------------


def test_ca_certificate_fields(store: CertStore) -> None:
    ca = store.ca_cert
    assert ca.subject == ca.issuer
    assert (
        ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == "interceptkit CA"
    )
    assert (
        ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
        == "interceptkit"
    )
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    ca.verify_directly_issued_by(ca)  # self-signed


def test_ca_certificate_extensions(store: CertStore) -> None:
    ca = store.ca_cert
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext(ca, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert ku.value.digital_signature and not ku.value.key_encipherment
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.public_key())


def test_ca_validity_is_ten_years_starting_yesterday(store: CertStore) -> None:
    ca = store.ca_cert
    assert ca.not_valid_before_utc < NOW - dt.timedelta(hours=12)
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=3650) <= lifetime <= dt.timedelta(days=3653)
    assert ca.serial_number > 2**64


# -- leaves -------------------------------------------------------------------


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return ext(cert, x509.SubjectAlternativeName).value


def test_leaf_for_a_dns_name(store: CertStore) -> None:
    cert = store.leaf_for("Example.COM").cert
    assert sans(cert).get_values_for_type(x509.DNSName) == ["example.com"]
    assert sans(cert).get_values_for_type(x509.IPAddress) == []
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == "example.com"
    )
    assert cert.issuer == store.ca_cert.subject


@pytest.mark.parametrize(
    ("host", "dns"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("*.Example.com", "*.example.com"),
        ("*.bücher.example", "*.xn--bcher-kva.example"),
        ("example.com.", "example.com"),
        ("_acme.example.com", "_acme.example.com"),
    ],
)
def test_dns_names_are_idna_encoded_and_lower_case(
    store: CertStore, host: str, dns: str
) -> None:
    leaf = store.leaf_for(host)
    assert leaf.host == dns
    assert sans(leaf.cert).get_values_for_type(x509.DNSName) == [dns]


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
    ],
)
def test_addresses_become_ip_sans_not_dns(store: CertStore, host: str, ip: str) -> None:
    cert = store.leaf_for(host).cert
    assert sans(cert).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(ip)]
    assert sans(cert).get_values_for_type(x509.DNSName) == []


def test_extra_names_are_added_once(store: CertStore) -> None:
    leaf = store.leaf_for("example.com", ["www.example.com", "EXAMPLE.com", "10.0.0.1"])
    assert leaf.names == ("example.com", "www.example.com", "10.0.0.1")
    assert sans(leaf.cert).get_values_for_type(x509.DNSName) == [
        "example.com",
        "www.example.com",
    ]


@pytest.mark.parametrize(
    "host", ["", "a b.example", "host:443", "a..b", "*", "x" * 64 + ".com"]
)
def test_invalid_host_is_a_value_error(store: CertStore, host: str) -> None:
    with pytest.raises(ValueError, match="not a valid host name"):
        store.leaf_for(host)


def test_long_host_name_truncates_the_common_name_only(store: CertStore) -> None:
    host = ".".join(["a" * 60, "b" * 60, "example"])
    cert = store.leaf_for(host).cert
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == host[:64]
    )
    assert sans(cert).get_values_for_type(x509.DNSName) == [host]


def test_leaf_extensions(store: CertStore) -> None:
    cert = store.leaf_for("example.com").cert
    ca_ski = ext(store.ca_cert, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski.digest
    assert ext(
        cert, x509.SubjectKeyIdentifier
    ).value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert not ku.value.key_encipherment and not ku.value.key_cert_sign


def test_leaf_validity_is_backdated_and_short(store: CertStore) -> None:
    cert = store.leaf_for("example.com").cert
    assert cert.not_valid_before_utc < NOW - dt.timedelta(days=1)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc < dt.timedelta(days=200)
    assert cert.not_valid_after_utc > NOW + dt.timedelta(days=180)


def test_leaf_is_signed_by_the_ca(store: CertStore) -> None:
    cert = store.leaf_for("example.com").cert
    cert.verify_directly_issued_by(store.ca_cert)
    ca_key = store.ca_cert.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))


def test_leaves_share_one_key_but_not_serials(store: CertStore) -> None:
    a, b = store.leaf_for("a.example"), store.leaf_for("b.example")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert a.cert.public_key().public_bytes(
        der, spki
    ) == b.cert.public_key().public_bytes(der, spki)
    assert a.key_pem == b.key_pem
    assert a.cert.serial_number != b.cert.serial_number
    assert a.chain_pem == a.cert_pem + store.ca_cert_pem


def test_leaf_is_cached_per_normalized_name(store: CertStore) -> None:
    assert store.leaf_for("example.com") is store.leaf_for("EXAMPLE.com.")
    assert store.leaf_for("example.com") is not store.leaf_for(
        "example.com", ["www.example.com"]
    )


def test_leaf_repr_hides_the_key(store: CertStore) -> None:
    assert "PRIVATE" not in repr(store.leaf_for("example.com"))


# -- server contexts and handshakes -------------------------------------------


def client_trusting(cafile: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies chain and hostname
    # The strict checks Python 3.13 turns on by default (RFC 5280 conformance).
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if cafile is not None:
        ctx.load_verify_locations(cafile=cafile)
    return ctx


def test_handshake_succeeds_for_a_client_trusting_the_ca(store: CertStore) -> None:
    client_ctx = client_trusting(store.ca_cert_path)
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    assert client_ctx.check_hostname
    client, server = handshake(
        store.server_context("localhost"), client_ctx, "localhost"
    )
    assert (
        client.selected_alpn_protocol() == server.selected_alpn_protocol() == "http/1.1"
    )
    assert client.version() in ("TLSv1.2", "TLSv1.3")
    peer = client.getpeercert(binary_form=True)
    assert peer is not None
    assert x509.load_der_x509_certificate(peer) == store.leaf_for("localhost").cert


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_handshake_checks_ip_addresses(store: CertStore, host: str) -> None:
    handshake(store.server_context(host), client_trusting(store.ca_cert_path), host)


def test_handshake_fails_for_a_client_without_the_ca(
    store: CertStore, tmp_path: Path
) -> None:
    other = CertStore.load_or_create(tmp_path / "other")
    for cafile in (None, other.ca_cert_path):
        with pytest.raises(
            ssl.SSLCertVerificationError, match="certificate verify failed"
        ):
            handshake(
                store.server_context("localhost"), client_trusting(cafile), "localhost"
            )


def test_handshake_fails_for_another_host_name(store: CertStore) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname mismatch"):
        handshake(
            store.server_context("example.com"),
            client_trusting(store.ca_cert_path),
            "localhost",
        )


def test_server_context_settings(store: CertStore) -> None:
    ctx = store.server_context("localhost")
    assert ctx.protocol == ssl.PROTOCOL_TLS_SERVER
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_server_context_is_cached_per_host_and_alpn(store: CertStore) -> None:
    ctx = store.server_context("localhost")
    assert store.server_context("localhost") is ctx
    assert store.server_context("localhost", ["http/1.1"]) is ctx
    assert store.server_context("localhost", ("h2", "http/1.1")) is not ctx
    assert store.server_context("example.com") is not ctx


def test_caches_are_bounded(confdir: Path) -> None:
    store = CertStore.load_or_create(confdir, cache_size=2)
    first_ctx, first_leaf = (
        store.server_context("a.example"),
        store.leaf_for("a.example"),
    )
    store.server_context("b.example")
    store.server_context("c.example")
    assert store.server_context("a.example") is not first_ctx
    assert store.leaf_for("a.example") is not first_leaf


def test_concurrent_callers_get_one_context(store: CertStore) -> None:
    results: list[ssl.SSLContext] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(store.server_context("race.example"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r is results[0] for r in results)


# -- the private temporary directory ------------------------------------------


@pytest.fixture
def tmpdir_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_no_files_are_written_until_a_context_is_needed(
    store: CertStore, tmpdir_root: Path
) -> None:
    store.leaf_for("example.com")
    assert list(tmpdir_root.iterdir()) == []


@posix_only
def test_leaf_key_lives_in_a_private_temp_dir_until_close(
    store: CertStore, tmpdir_root: Path
) -> None:
    store.server_context("a.example")
    store.server_context("b.example")
    (private,) = tmpdir_root.iterdir()
    assert mode(private) == 0o700
    (key_file,) = private.iterdir()  # chain files do not linger
    assert mode(key_file) == 0o600
    store.close()
    assert not private.exists()
    store.close()  # idempotent


def test_temp_dir_is_removed_when_the_store_is_collected(
    confdir: Path, tmpdir_root: Path
) -> None:
    store = CertStore.load_or_create(confdir)
    store.server_context("example.com")
    assert len(list(tmpdir_root.iterdir())) == 1
    del store
    gc.collect()
    assert list(tmpdir_root.iterdir()) == []


# -- RSA ----------------------------------------------------------------------


def test_rsa_option(confdir: Path) -> None:
    store = CertStore.load_or_create(confdir, key_type="rsa")
    ca_key = store.ca_cert.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey) and ca_key.key_size == 2048
    leaf = store.leaf_for("localhost").cert
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey)
    assert ext(leaf, x509.KeyUsage).value.key_encipherment
    leaf.verify_directly_issued_by(store.ca_cert)
    handshake(
        store.server_context("localhost"),
        client_trusting(store.ca_cert_path),
        "localhost",
    )
    # A later run without key_type keeps the CA's type for the leaves.
    again = CertStore.load_or_create(confdir)
    assert again.ca_cert == store.ca_cert
    assert isinstance(again.leaf_for("localhost").cert.public_key(), rsa.RSAPublicKey)


def test_repr_names_folder_and_fingerprint(store: CertStore) -> None:
    assert str(store.confdir) in repr(store)
    assert fingerprint(store.ca_cert).hex()[:16] in repr(store)
