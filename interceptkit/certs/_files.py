"""The certificate authority's files and X.509 helpers (used by :class:`CertStore`).

Reading, checking, creating and publishing the CA files with safe modes,
and the small builders for keys, names and extensions; see the package
docstring for the theory of operation.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
import shutil
import ssl
import tempfile
import weakref
from pathlib import Path
from typing import Literal, TypeAlias, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

CA_FILE = "interceptkit-ca.pem"
CA_CERT_PEM_FILE = "interceptkit-ca-cert.pem"
CA_CERT_DER_FILE = "interceptkit-ca-cert.cer"

KeyType: TypeAlias = Literal["ec", "rsa"]
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_CA_NAME = "interceptkit CA"
_CA_LIFETIME = dt.timedelta(days=3650)
# Backdating absorbs clients whose clocks run behind ours.
_CA_BACKDATE = dt.timedelta(days=1)
_LEAF_BACKDATE = dt.timedelta(days=2)
# CA/B Forum ballot SC-081 caps publicly trusted TLS certificates at 200 days
# from March 2026 (398 before). Browsers do not enforce it for user-installed
# CAs today, but staying inside it costs nothing: 2 + 190 = 192 days in total.
_LEAF_LIFETIME = dt.timedelta(days=190)
# A cached leaf is replaced this long before it expires.
_RENEW_MARGIN = 3600.0
# RFC 5280 Appendix A: ub-common-name INTEGER ::= 64.
_CN_MAX = 64
_DEFAULT_CACHE_SIZE = 1024

_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)
# One DNS label after IDNA encoding; underscores occur in real host names.
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?")

_K = TypeVar("_K")
_V = TypeVar("_V")


class CertStoreError(Exception):
    """The CA files cannot be used: unreadable, corrupt, mismatched or unwritable.

    The message names the file and the problem.
    """


class _PrivateDir:
    """A per-process temporary directory (0700) holding the shared leaf key.

    Removed by `close()`, or by `weakref.finalize` when garbage collected or at
    interpreter exit.
    """

    def __init__(self, key_pem: bytes) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="interceptkit-"))  # mode 0700
        self._finalizer = weakref.finalize(self, _remove_tree, self.path, os.getpid())
        self.key_path = self.path / "leaf-key.pem"
        _write_new(self.key_path, key_pem, 0o600)

    def load_chain(self, ctx: ssl.SSLContext, chain_pem: bytes) -> None:
        """Load a chain into ``ctx`` via a short-lived file: the context keeps its
        own copy, so no file per host accumulates."""
        path = self.path / f"chain-{secrets.token_hex(8)}.pem"
        _write_new(path, chain_pem, 0o600)
        try:
            ctx.load_cert_chain(path, self.key_path)
        finally:
            path.unlink()

    def close(self) -> None:
        self._finalizer()


def _remove_tree(path: Path, owner_pid: int) -> None:
    # A forked child inherits the finalizer; only the creator removes the directory.
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


# -- the CA on disk ----------------------------------------------------------

_FIX_HINT = (
    "Repair or remove it; interceptkit does not replace a CA on its own, since "
    "clients that trust the old one would reject every intercepted connection"
)


def _load_ca_file(path: Path) -> tuple[PrivateKey, x509.Certificate]:
    """Read and check the CA file. FileNotFoundError passes through (first run)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CertStoreError(f"{path}: cannot read the CA file ({e.strerror})") from e
    try:
        return _parse_ca(data)
    except ValueError as e:
        raise CertStoreError(f"{path}: {e}. {_FIX_HINT}.") from None


def _parse_ca(data: bytes) -> tuple[PrivateKey, x509.Certificate]:
    """Parse key + certificate, in any order; ValueError says what is wrong."""
    blocks = _pem_blocks(data)
    key_block = next(
        (b for label, b in blocks.items() if label.endswith("PRIVATE KEY")), None
    )
    if key_block is None:
        raise ValueError(
            "no private key in it (no '-----BEGIN PRIVATE KEY-----' block)"
        )
    if "CERTIFICATE" not in blocks:
        raise ValueError(
            "no certificate in it (no '-----BEGIN CERTIFICATE-----' block)"
        )
    key = _parse_key(key_block)
    try:
        cert = x509.load_pem_x509_certificate(blocks["CERTIFICATE"])
    except ValueError as e:
        raise ValueError(f"the certificate cannot be parsed ({e})") from None
    problem = _ca_problem(key, cert)
    if problem is not None:
        raise ValueError(problem)
    return key, cert


def _pem_blocks(data: bytes) -> dict[str, bytes]:
    """The first PEM block of each label, e.g. {"PRIVATE KEY": b"-----BEGIN ..."}."""
    blocks: dict[str, bytes] = {}
    for match in _PEM_BLOCK.finditer(data):
        blocks.setdefault(match.group(1).decode("ascii"), match.group(0))
    return blocks


def _parse_key(block: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except TypeError:
        raise ValueError(
            "the private key is password-protected; it must be unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ValueError(f"the private key cannot be parsed ({e})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(
            f"the private key is {type(key).__name__}; only EC and RSA are supported"
        )
    return key


def _ca_problem(key: PrivateKey, cert: x509.Certificate) -> str | None:
    """What makes this pair unusable as a CA, or None."""
    if _spki(key) != cert.public_key().public_bytes(_DER, _SPKI):
        return "the private key does not match the certificate"
    try:
        constraints = cert.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        return (
            "the certificate is not a CA certificate (basicConstraints CA is not true)"
        )
    if cert.not_valid_after_utc <= _now():
        return f"the CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def _create_ca_file(
    confdir: Path, key_type: KeyType
) -> tuple[PrivateKey, x509.Certificate]:
    """Create the folder and a new CA. If another process wins the race to
    create the CA file, load and use its CA instead: never two CAs."""
    path = confdir / CA_FILE
    key = _new_key(key_type)
    cert = _build_ca_cert(key)
    try:
        _make_private_dir(confdir)
        created = _publish(
            path, _key_pem(key) + cert.public_bytes(_PEM), 0o600, exclusive=True
        )
    except OSError as e:
        raise CertStoreError(f"{path}: cannot create the CA file ({e})") from e
    return (key, cert) if created else _load_ca_file(path)


def _build_ca_cert(key: PrivateKey) -> x509.Certificate:
    now = _now()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "interceptkit"),
            x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CA_BACKDATE)
        .not_valid_after(now + _CA_LIFETIME)
        # RFC 5280 4.2.1.9: critical in CA certificates. pathLen 0: the CA
        # signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # RFC 5280 4.2.1.3 and CA/B BR 7.1.2.1: keyCertSign + cRLSign, critical.
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
            critical=True,
        )
        # RFC 5280 4.2.1.2: conforming CAs MUST include the SKI.
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
    )
    return builder.sign(key, hashes.SHA256())


def _sync_exports(confdir: Path, cert: x509.Certificate) -> None:
    """Write the certificate-only files if missing or stale: a stale export
    would have users install a CA that signs nothing."""
    for name, encoding in ((CA_CERT_PEM_FILE, _PEM), (CA_CERT_DER_FILE, _DER)):
        path, data = confdir / name, cert.public_bytes(encoding)
        if _read_or_none(path) == data:
            continue
        try:
            _publish(path, data, 0o644, exclusive=False)
        except OSError as e:
            raise CertStoreError(
                f"{path}: cannot write the CA certificate ({e})"
            ) from e


# -- small helpers -----------------------------------------------------------


def _check_options(key_type: str | None, cache_size: int) -> None:
    if key_type not in (None, "ec", "rsa"):
        raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")
    if cache_size < 1:
        raise ValueError(f"cache_size must be at least 1, not {cache_size}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _expiry(cert: x509.Certificate) -> float:
    return cert.not_valid_after_utc.timestamp() - _RENEW_MARGIN


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _key_type_of(key: PrivateKey) -> KeyType:
    return "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(_DER, _SPKI)


def _authority_key_id(
    ca_cert: x509.Certificate, ca_key: PrivateKey
) -> x509.AuthorityKeyIdentifier:
    """RFC 5280 4.2.1.1: the AKI of a leaf is the SKI of its issuer; a CA made
    elsewhere may lack one, then derive it from the key as the SKI would be."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san_entry(host: str) -> x509.DNSName | x509.IPAddress:
    """A host as clients write it, as a subjectAltName entry (RFC 5280 4.2.1.6).

    Addresses become iPAddress entries: clients never match an address against
    a dNSName (RFC 6125 3.1.3.2 / RFC 9525 6.2.1).
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        # A zone ("fe80::1%eth0") is local to the client and not part of the address.
        return x509.IPAddress(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return x509.DNSName(_dns_name(text.rstrip(".")))


def _dns_name(name: str) -> str:
    """IDNA A-label form in lower case, keeping a leading ``*.`` wildcard.

    Python's codec implements IDNA 2003; names that differ under IDNA 2008
    (such as "ß") only matter for unicode input, since SNI arrives as A-labels.
    """
    wildcard = name.startswith("*.")
    base = name[2:] if wildcard else name
    try:
        ascii_name = base.encode("idna").decode("ascii").lower()
    except UnicodeError as e:
        raise ValueError(f"{name!r} is not a valid host name ({e})") from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{name!r} is not a valid host name")
    return "*." + ascii_name if wildcard else ascii_name


def _san_text(entry: x509.DNSName | x509.IPAddress) -> str:
    return entry.value if isinstance(entry, x509.DNSName) else str(entry.value)


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        return  # the user's folder: leave its mode alone
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write_new(path: Path, data: bytes, mode: int, *, sync: bool = False) -> None:
    """Create ``path`` with ``mode`` from the first moment; fail if it exists
    (O_EXCL also refuses to follow a planted symlink)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with os.fdopen(os.open(path, flags, mode), "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def _publish(path: Path, data: bytes, mode: int, *, exclusive: bool) -> bool:
    """Write ``path`` whole or not at all, via a temporary file beside it.

    Args:
        exclusive: keep an existing file and return False (a hard link does
            not replace); otherwise replace it.

    Returns:
        Whether ``path`` now holds ``data``.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _write_new(tmp, data, mode, sync=True)
    try:
        if not exclusive:
            os.replace(tmp, path)
            return True
        return _link_new(tmp, path, data, mode)
    finally:
        tmp.unlink(missing_ok=True)


def _link_new(tmp: Path, path: Path, data: bytes, mode: int) -> bool:
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError:  # no hard links (FAT, some network mounts): plain O_EXCL
        try:
            _write_new(path, data, mode, sync=True)
        except FileExistsError:
            return False
    return True
