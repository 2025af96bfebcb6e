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

import os
import re
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Generic

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._files import (  # noqa: F401  (re-exported: the package's public names)
    CA_CERT_DER_FILE,
    CA_CERT_PEM_FILE,
    CA_FILE,
    CertStoreError,
    KeyType,
    PrivateKey,
    _CN_MAX,
    _DEFAULT_CACHE_SIZE,
    _DER,
    _K,
    _LEAF_BACKDATE,
    _LEAF_LIFETIME,
    _PEM,
    _PrivateDir,
    _V,
    _authority_key_id,
    _ca_problem,
    _check_options,
    _create_ca_file,
    _expiry,
    _key_pem,
    _key_type_of,
    _key_usage,
    _load_ca_file,
    _new_key,
    _now,
    _san_entry,
    _san_text,
    _sync_exports,
)

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


