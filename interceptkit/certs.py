"""The certificate authority behind TLS interception: one CA on disk, leaves on demand.

Theory of operation
-------------------
A client that talks TLS through the proxy gets, instead of the origin's
certificate, a *leaf* certificate for the same host signed by interceptkit's
own CA. The client accepts it only if the user installed that CA, so the CA is
created once, kept in the config folder, and reused forever after; the files
are the contract with every client that trusts it:

    interceptkit-ca.pem        CA private key + certificate (PEM, mode 0600)
    interceptkit-ca-cert.pem   the certificate alone (PEM: Linux, macOS, Python)
    interceptkit-ca-cert.cer   the certificate alone (DER: Windows, Android)

For this reason a CA file we cannot use is an error, never a reason to make a
new CA: a silent new CA would turn into "unknown CA" errors in every client.

Leaves are cheap by design. One key pair per `CertStore` is shared by all of
its leaves (as mitmproxy does), so a new host costs one signature. Leaves and
the `ssl.SSLContext`s built from them live in bounded LRU caches. The standard
library loads certificates only from files, so the shared leaf key is written
once into a private temporary directory (0700) that `close()` or garbage
collection removes; each chain file lives there only while it is loaded.

Key type
--------
ECDSA P-256 is the default for the CA and the leaves. Issuing a leaf signs
with the CA key and every intercepted handshake signs with the leaf key, and a
P-256 signature costs tens of microseconds where RSA-2048 costs about a
millisecond; a P-256 key is generated in well under a millisecond, an RSA one
in tens to hundreds. P-256 with SHA-256 is mandatory to implement in TLS 1.3
(RFC 8446 section 9.1), has been in every TLS 1.2 client for a decade
(RFC 8422), and is allowed by the CA/Browser Forum Baseline Requirements
(6.1.5). Ed25519 would be faster still, but browsers do not accept Ed25519
certificates. ``key_type="rsa"`` (RSA-2048) remains for old or embedded clients
that lack ECDSA.
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
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Generic, Literal, TypeAlias, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT_DER_FILE",
    "CA_CERT_PEM_FILE",
    "CA_FILE",
    "CertStore",
    "CertStoreError",
    "KeyType",
    "Leaf",
    "default_confdir",
]

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


def default_confdir() -> Path:
    """Return the config folder: ``$INTERCEPTKIT_HOME`` if set, else ``~/.interceptkit``."""
    env = os.environ.get("INTERCEPTKIT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".interceptkit"


@dataclass(frozen=True)
class Leaf:
    """A leaf certificate issued by a `CertStore`.

    Attributes:
        host: the normalized host it was issued for (IDNA A-label, lower case,
            or an IP address), also its subject CN (up to 64 characters).
        names: all subjectAltName values, ``host`` first.
        cert: the certificate.
        cert_pem: the certificate, PEM.
        chain_pem: the certificate followed by the CA certificate, PEM: what a
            TLS server sends.
        key_pem: the private key (PKCS#8 PEM), shared by all leaves of a store.
    """

    host: str
    names: tuple[str, ...]
    cert: x509.Certificate
    cert_pem: bytes
    chain_pem: bytes
    key_pem: bytes = field(repr=False)


class CertStore:
    """A CA plus the leaf certificates and server `ssl.SSLContext`s it issues.

    Use `CertStore.load_or_create()`; the constructor does no I/O except that
    `server_context()` later writes the leaf key into a private temp directory.
    Thread-safe. Call `close()` (or use ``with``) to remove the temp directory
    early; it is removed at garbage collection or exit otherwise.
    """

    def __init__(
        self,
        confdir: str | os.PathLike[str],
        ca_key: PrivateKey,
        ca_cert: x509.Certificate,
        *,
        key_type: KeyType | None = None,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> None:
        """Wrap an already loaded CA.

        Args:
            confdir: the folder the CA files live in (used for the path properties).
            ca_key: the CA private key (EC or RSA).
            ca_cert: the CA certificate; must match ``ca_key`` and be a CA.
            key_type: the leaves' key type; None means the CA's.
            cache_size: how many leaves and how many contexts to keep (LRU).

        Raises:
            CertStoreError: the key does not match the certificate, or the
                certificate is not a valid CA.
            ValueError: a bad ``key_type`` or ``cache_size``.
        """
        _check_options(key_type, cache_size)
        problem = _ca_problem(ca_key, ca_cert)
        if problem is not None:
            raise CertStoreError(f"CA: {problem}")
        self._confdir = Path(confdir)
        self._ca_key = ca_key
        self._ca_cert = ca_cert
        self._ca_pem = ca_cert.public_bytes(_PEM)
        self._aki = _authority_key_id(ca_cert, ca_key)
        self._key_type: KeyType = key_type or _key_type_of(ca_key)
        self._lock = threading.Lock()
        self._leaves: _LRU[tuple[str, ...], Leaf] = _LRU(cache_size)
        self._contexts: _LRU[tuple[str, tuple[str, ...]], ssl.SSLContext] = _LRU(
            cache_size
        )
        self._leaf_key: tuple[PrivateKey, bytes] | None = None
        self._tmp: _PrivateDir | None = None

    @classmethod
    def load_or_create(
        cls,
        confdir: str | os.PathLike[str] | None = None,
        *,
        key_type: KeyType | None = None,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> CertStore:
        """Load the CA from ``confdir``, creating folder and CA on first use.

        Also (re)writes the certificate-only PEM and DER files when they are
        missing or do not match the CA.

        Args:
            confdir: the config folder; None means `default_confdir()`.
            key_type: "ec" (ECDSA P-256) or "rsa" (RSA-2048) for a new CA and
                for the leaves; None means "ec" for a new CA and the CA's type
                for leaves.
            cache_size: how many leaves and how many contexts to keep (LRU).

        Returns:
            The store.

        Raises:
            CertStoreError: a CA file is unreadable, corrupt, lacks the key or
                the certificate, has a key that does not match, or cannot be
                written. The message names the file.
            ValueError: a bad ``key_type`` or ``cache_size``.
        """
        _check_options(key_type, cache_size)
        folder = (
            Path(confdir).expanduser() if confdir is not None else default_confdir()
        )
        try:
            ca_key, ca_cert = _load_ca_file(folder / CA_FILE)
        except FileNotFoundError:
            ca_key, ca_cert = _create_ca_file(folder, key_type or "ec")
        _sync_exports(folder, ca_cert)
        return cls(folder, ca_key, ca_cert, key_type=key_type, cache_size=cache_size)

    # -- exports ---------------------------------------------------------

    @property
    def confdir(self) -> Path:
        """The config folder holding the CA files."""
        return self._confdir

    @property
    def ca_cert(self) -> x509.Certificate:
        """The CA certificate."""
        return self._ca_cert

    @property
    def ca_cert_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self._ca_pem

    @property
    def ca_cert_der(self) -> bytes:
        """The CA certificate, DER."""
        return self._ca_cert.public_bytes(_DER)

    @property
    def ca_cert_path(self) -> Path:
        """The certificate-only PEM file: give it to clients as their CA file."""
        return self._confdir / CA_CERT_PEM_FILE

    @property
    def ca_cert_der_path(self) -> Path:
        """The certificate-only DER file (``.cer``, for Windows and Android)."""
        return self._confdir / CA_CERT_DER_FILE

    @property
    def ca_key_path(self) -> Path:
        """The file holding the CA private key and certificate (keep it secret)."""
        return self._confdir / CA_FILE

    # -- leaves and contexts ---------------------------------------------

    def leaf_for(self, host: str, extra_names: Sequence[str] = ()) -> Leaf:
        """Return a leaf certificate for ``host`` (cached).

        Args:
            host: a DNS name (unicode is IDNA-encoded, ``*.`` wildcards are
                allowed, a trailing dot is dropped) or an IPv4/IPv6 address,
                with or without brackets.
            extra_names: more names or addresses for the subjectAltName.

        Returns:
            The leaf, signed by the CA, with the store's shared leaf key.

        Raises:
            ValueError: a name is not a valid host name or address.
        """
        sans = list(dict.fromkeys(_san_entry(n) for n in (host, *extra_names)))
        names = tuple(_san_text(s) for s in sans)
        return self._cached(self._leaves, names, lambda: self._issue_leaf(sans, names))

    def server_context(
        self, host: str, alpn: Sequence[str] = ("http/1.1",)
    ) -> ssl.SSLContext:
        """Return a server-side TLS context presenting a leaf for ``host`` (cached).

        Args:
            host: as for `leaf_for`, usually the client's SNI.
            alpn: the ALPN protocols to offer, in order of preference; empty
                means no ALPN.

        Returns:
            A `ssl.SSLContext` (TLS 1.2 or newer) whose chain is the leaf and the CA.

        Raises:
            ValueError: ``host`` is not a valid host name or address.
            OSError: the temporary key or chain file cannot be written.
        """
        protocols = (alpn,) if isinstance(alpn, str) else tuple(alpn)
        key = (host, protocols)
        return self._cached(
            self._contexts, key, lambda: self._new_context(host, protocols)
        )

    def close(self) -> None:
        """Remove the temporary key directory. Contexts already built keep working;
        the store stays usable and re-creates the directory if it needs it."""
        with self._lock:
            tmp, self._tmp = self._tmp, None
        if tmp is not None:
            tmp.close()

    def __enter__(self) -> CertStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        fingerprint = self._ca_cert.fingerprint(hashes.SHA256()).hex()
        return f"<CertStore {str(self._confdir)!r} CA sha256:{fingerprint[:16]}>"

    # -- internals -------------------------------------------------------

    def _cached(
        self, cache: _LRU[_K, _V], key: _K, build: Callable[[], tuple[_V, float]]
    ) -> _V:
        """Look ``key`` up; on a miss build outside the lock, so one slow host does
        not stall the others, and keep whichever entry got into the cache first."""
        with self._lock:
            value = cache.get(key, time.time())
        if value is not None:
            return value
        fresh, expires = build()
        with self._lock:
            return cache.setdefault(key, fresh, expires, time.time())

    def _issue_leaf(
        self, sans: list[x509.DNSName | x509.IPAddress], names: tuple[str, ...]
    ) -> tuple[Leaf, float]:
        key, key_pem = self._leaf_private_key()
        cert = self._sign_leaf(key, sans, names[0][:_CN_MAX])
        pem = cert.public_bytes(_PEM)
        leaf = Leaf(names[0], names, cert, pem, pem + self._ca_pem, key_pem)
        return leaf, _expiry(cert)

    def _sign_leaf(
        self, key: PrivateKey, sans: list[x509.DNSName | x509.IPAddress], cn: str
    ) -> x509.Certificate:
        now = _now()
        # Never outlive the CA: validators reject a chain once the CA expires anyway.
        not_after = min(now + _LEAF_LIFETIME, self._ca_cert.not_valid_after_utc)
        rsa_key = isinstance(key, rsa.RSAPrivateKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            # RFC 5280 4.1.2.2, CA/B BR 7.1: unique, at least 64 random bits.
            # Firefox rejects two certificates with the same issuer and serial.
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _LEAF_BACKDATE)
            .not_valid_after(not_after)
            .add_extension(
                x509.BasicConstraints(ca=False, path_length=None), critical=True
            )
            # RFC 5280 4.2.1.3; keyEncipherment only matters for RSA key
            # transport in TLS 1.2 (RFC 5246 7.4.2).
            .add_extension(
                _key_usage(digital_signature=True, key_encipherment=rsa_key),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            # RFC 5280 4.2.1.6: non-critical because the subject is not empty.
            # Clients match names against the SAN only (RFC 6125 6.4.4).
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                critical=False,
            )
            .add_extension(self._aki, critical=False)
        )
        return builder.sign(self._ca_key, hashes.SHA256())

    def _leaf_private_key(self) -> tuple[PrivateKey, bytes]:
        """The one leaf key pair of this store, generated on first use."""
        with self._lock:
            if self._leaf_key is None:
                key = _new_key(self._key_type)
                self._leaf_key = (key, _key_pem(key))
            return self._leaf_key

    def _new_context(
        self, host: str, protocols: tuple[str, ...]
    ) -> tuple[ssl.SSLContext, float]:
        leaf = self.leaf_for(host)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # RFC 8996 deprecates TLS 1.0 and 1.1.
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if protocols:
            ctx.set_alpn_protocols(list(protocols))
        self._private_dir().load_chain(ctx, leaf.chain_pem)
        return ctx, _expiry(leaf.cert)

    def _private_dir(self) -> _PrivateDir:
        _, key_pem = self._leaf_private_key()
        with self._lock:
            if self._tmp is None:
                self._tmp = _PrivateDir(key_pem)
            return self._tmp


class _LRU(Generic[_K, _V]):
    """A bounded least-recently-used map whose entries expire. Not locked itself."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._entries: OrderedDict[_K, tuple[_V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _K, now: float) -> _V | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= now:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def setdefault(self, key: _K, value: _V, expires: float, now: float) -> _V:
        """Return the live entry for ``key``, storing ``value`` if there is none."""
        current = self.get(key, now)
        if current is not None:
            return current
        self._entries[key] = (value, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self._maxsize:
            self._entries.popitem(last=False)
        return value


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
