"""TLS for the sans-IO core: ClientHello parsing and a bytes-driven TLS endpoint.

Theory of operation
-------------------
A proxy that intercepts TLS has to look at the client's first flight before it
can answer: the ClientHello names the host (SNI, RFC 6066 section 3) and the
application protocols the client offers (ALPN, RFC 7301), and those pick the
certificate to forge and the upstream to open.  `parse_client_hello` reads
exactly that, without OpenSSL, from bytes the caller has buffered.

After that, each side of the interception is a `TLSEndpoint`: an
`ssl.SSLObject` over two `ssl.MemoryBIO`s.  Ciphertext from the peer goes in
with `receive`, which answers with the plaintext it decrypted and the
ciphertext to send back; plaintext goes out with `send`.  No sockets, no
clock: the caller moves every byte.
"""

from __future__ import annotations

import enum
import re
import ssl
from dataclasses import dataclass

__all__ = [
    "ClientHello",
    "TLSEndpoint",
    "TLSError",
    "TLSParseError",
    "TLSReceived",
    "looks_like_tls",
    "parse_client_hello",
]

# RFC 8446 5.1: record header is type(1) legacy_record_version(2) length(2).
_HANDSHAKE_RECORD = 0x16
_RECORD_HEADER = 5
# RFC 8446 5.1: a plaintext record fragment MUST NOT exceed 2^14 bytes.
_MAX_FRAGMENT = 2**14
# RFC 8446 4: handshake header is msg_type(1) length(3).
_HANDSHAKE_HEADER = 4
_CLIENT_HELLO = 1
# The largest body the ClientHello grammar allows (RFC 8446 4.1.2): version,
# random, session id, cipher suites, compression methods, extensions, each
# vector at its maximum.  Anything longer is not a ClientHello.
_MAX_CLIENT_HELLO = 2 + 32 + (1 + 32) + (2 + 65534) + (1 + 255) + (2 + 65535)
_EXT_SERVER_NAME = 0  # RFC 6066 3
_EXT_ALPN = 16  # RFC 7301 3.1
_HOST_NAME = 0  # RFC 6066 3: NameType host_name

# Plaintext is read in large pieces: one SSLObject.read call per TLS record
# is the floor, but a big buffer lets OpenSSL hand over what it has at once.
_READ_SIZE = 262144


class TLSParseError(ValueError):
    """The bytes are not a well-formed TLS ClientHello."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """What a proxy needs from a client's first TLS flight.

    Attributes:
        sni: the host_name from server_name (ASCII, lower-cased), or None.
        alpn: the protocols offered, in the client's order.  Decoded as
            latin-1 so that any opaque identifier round-trips with
            ``.encode("latin-1")``.
        legacy_version: ClientHello.legacy_version (0x0303 for TLS 1.2/1.3).
        length: bytes of TLS records consumed, from the start of ``data``.
    """

    sni: str | None
    alpn: tuple[str, ...]
    legacy_version: int
    length: int


def looks_like_tls(data: bytes) -> bool | None:
    """Tell whether ``data`` starts a TLS handshake record.

    Returns True for a handshake record header (content type 0x16, version
    major 3), False as soon as the bytes present rule that out, and None when
    fewer than 3 bytes are there and none of them rules it out.
    """
    if data[:1] not in (b"", b"\x16") or data[1:2] not in (b"", b"\x03"):
        return False
    return True if len(data) >= 3 else None


def parse_client_hello(data: bytes) -> ClientHello | None:
    """Parse the TLS ClientHello at the start of ``data``.

    The handshake message may span several records; they are reassembled.

    Returns:
        The ClientHello, or None when more bytes are needed.
    Raises:
        TLSParseError: the bytes cannot be the start of a ClientHello.
    """
    reassembled = _reassemble_handshake(data)
    if reassembled is None:
        return None
    body, consumed = reassembled
    return _parse_hello_body(body, consumed)


def _reassemble_handshake(data: bytes) -> tuple[bytes, int] | None:
    """Collect record fragments until one whole handshake message is there."""
    message = bytearray()
    offset = 0
    while True:
        fragment = _next_fragment(data, offset)
        if fragment is None:
            return None
        message += fragment
        offset += _RECORD_HEADER + len(fragment)
        body_length = _handshake_length(message)
        if body_length is not None and len(message) >= _HANDSHAKE_HEADER + body_length:
            end = _HANDSHAKE_HEADER + body_length
            return bytes(message[_HANDSHAKE_HEADER:end]), offset


def _next_fragment(data: bytes, offset: int) -> bytes | None:
    """Return the fragment of the handshake record at ``offset``, or None."""
    header = data[offset : offset + _RECORD_HEADER]
    # RFC 8446 5.1: handshake messages MUST NOT be interleaved with other
    # record types, so every record up to the end of the hello is 0x16.
    if looks_like_tls(header) is False:
        raise TLSParseError(f"not a TLS handshake record at offset {offset}")
    if len(header) < _RECORD_HEADER:
        return None
    length = int.from_bytes(header[3:5], "big")
    # RFC 8446 5.1: no zero-length handshake fragments, none above 2^14.
    if not 0 < length <= _MAX_FRAGMENT:
        raise TLSParseError(f"bad TLS record length {length}")
    start = offset + _RECORD_HEADER
    if len(data) < start + length:
        return None
    return data[start : start + length]


def _handshake_length(message: bytearray) -> int | None:
    """Check the handshake header; return its body length once known."""
    if message and message[0] != _CLIENT_HELLO:
        raise TLSParseError(f"handshake type {message[0]} is not ClientHello")
    if len(message) < _HANDSHAKE_HEADER:
        return None
    length = int.from_bytes(message[1:4], "big")
    if length > _MAX_CLIENT_HELLO:
        raise TLSParseError(f"ClientHello length {length} is too large")
    return length


class _Reader:
    """Bounds-checked cursor over TLS presentation-language data (RFC 8446 3)."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise TLSParseError("ClientHello field runs past its end")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def opaque(self, length_size: int, minimum: int, maximum: int) -> bytes:
        """Read a variable-length vector<minimum..maximum> (RFC 8446 3.4)."""
        length = self.uint(length_size)
        if not minimum <= length <= maximum:
            raise TLSParseError(f"vector length {length} outside {minimum}..{maximum}")
        return self.take(length)

    def vector(self, length_size: int, minimum: int, maximum: int) -> _Reader:
        return _Reader(self.opaque(length_size, minimum, maximum))

    @classmethod
    def only_vector(cls, data: bytes, length_size: int, minimum: int) -> _Reader:
        """Read extension data that is exactly one vector<minimum..2^16-1>."""
        reader = cls(data)
        inner = reader.vector(length_size, minimum, 65535)
        reader.expect_end("extension")
        return inner

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def expect_end(self, what: str) -> None:
        if not self.at_end():
            raise TLSParseError(f"trailing bytes after {what}")


def _parse_hello_body(body: bytes, consumed: int) -> ClientHello:
    """Parse a ClientHello body (RFC 8446 4.1.2)."""
    reader = _Reader(body)
    legacy_version = reader.uint(2)
    reader.take(32)  # random
    reader.vector(1, 0, 32)  # legacy_session_id
    if len(reader.opaque(2, 2, 65534)) % 2:  # cipher_suites
        raise TLSParseError("odd cipher_suites length")
    reader.vector(1, 1, 255)  # legacy_compression_methods
    # RFC 5246 7.4.1.2: a TLS 1.2 ClientHello may end without extensions.
    extensions = {} if reader.at_end() else _read_extensions(reader.vector(2, 0, 65535))
    reader.expect_end("ClientHello")
    return ClientHello(
        sni=_parse_sni(extensions.get(_EXT_SERVER_NAME)),
        alpn=_parse_alpn(extensions.get(_EXT_ALPN)),
        legacy_version=legacy_version,
        length=consumed,
    )


def _read_extensions(reader: _Reader) -> dict[int, bytes]:
    """Split the extension block into {type: data}."""
    extensions: dict[int, bytes] = {}
    while not reader.at_end():
        kind = reader.uint(2)
        data = reader.opaque(2, 0, 65535)
        # RFC 8446 4.2: no more than one extension of the same type.
        if kind in extensions:
            raise TLSParseError(f"duplicate extension {kind}")
        extensions[kind] = data
    return extensions


def _parse_sni(data: bytes | None) -> str | None:
    """Return the host_name of a server_name extension (RFC 6066 3)."""
    if data is None:
        return None
    names = _Reader.only_vector(data, 2, 1)
    host: str | None = None
    while not names.at_end():
        name_type = names.uint(1)
        name = names.opaque(2, 1, 65535)
        if name_type != _HOST_NAME:
            continue
        # RFC 6066 3: at most one name of each type.
        if host is not None:
            raise TLSParseError("more than one host_name in server_name")
        host = _decode_host(name)
    return host


def _decode_host(name: bytes) -> str:
    """RFC 6066 3: HostName is an ASCII DNS name, compared case-insensitively.

    Control characters, NUL and spaces are refused (as OpenSSL does for NUL):
    the name goes on into certificates and upstream addresses.
    """
    if not all(0x21 <= byte <= 0x7E for byte in name):
        raise TLSParseError(f"server_name host_name {name!r} is not a DNS name")
    return name.decode("ascii").lower()


def _parse_alpn(data: bytes | None) -> tuple[str, ...]:
    """Return the protocols of an ALPN extension (RFC 7301 3.1)."""
    if data is None:
        return ()
    names = _Reader.only_vector(data, 2, 2)
    protocols = []
    while not names.at_end():
        protocols.append(names.opaque(1, 1, 255).decode("latin-1"))
    return tuple(protocols)


# --------------------------------------------------------------------------
# TLSEndpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSReceived:
    """What one `TLSEndpoint.receive` call produced.

    Attributes:
        plaintext: application data decrypted from the peer.
        to_send: ciphertext to send to the peer (handshake messages, session
            tickets, key update answers); send it even when plaintext is empty.
        handshake_done: True only on the call in which the handshake finished.
        closed: the peer sent close_notify or its transport closed; stays
            True on later calls.
    """

    plaintext: bytes = b""
    to_send: bytes = b""
    handshake_done: bool = False
    closed: bool = False


class TLSError(Exception):
    """The TLS session failed; the endpoint cannot be used any more.

    Attributes:
        reason: a readable reason, e.g. "certificate verify failed:
            self-signed certificate" or "peer sent alert: unknown ca".
        alert: the alert the peer sent (RFC 8446 6, with spaces for
            underscores, e.g. "unknown ca", "bad certificate"), or None when
            the failure was detected locally.
        to_send: ciphertext still to deliver to the peer, typically the alert
            we raised; forward it so the peer learns why.
        error_status_hint: the HTTP status a proxy should answer with.
    """

    def __init__(
        self, reason: str, *, alert: str | None = None, to_send: bytes = b""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.alert = alert
        self.to_send = to_send
        self.error_status_hint = 502


# RFC 8446 6 and RFC 5246 7.2 alert descriptions, spelt as OpenSSL spells
# them in the reason of a received alert: "TLSV1_ALERT_UNKNOWN_CA",
# "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_UNRECOGNIZED_NAME".
_ALERTS = frozenset([
    "unexpected_message", "bad_record_mac", "decryption_failed", "record_overflow",
    "decompression_failure", "handshake_failure", "no_certificate", "bad_certificate",
    "unsupported_certificate", "certificate_revoked", "certificate_expired",
    "certificate_unknown", "illegal_parameter", "unknown_ca", "access_denied",
    "decode_error", "decrypt_error", "export_restriction", "protocol_version",
    "insufficient_security", "internal_error", "inappropriate_fallback",
    "user_cancelled", "no_renegotiation", "missing_extension", "unsupported_extension",
    "certificate_unobtainable", "unrecognized_name", "bad_certificate_status_response",
    "bad_certificate_hash_value", "unknown_psk_identity", "certificate_required",
    "no_application_protocol",
])  # fmt: skip
_ALERT_REASON = re.compile(r"(?:SSLV3|TLSV1|TLSV13)_(?:ALERT_)?([A-Z_]+)")


def _alert_of(exc: ssl.SSLError) -> str | None:
    """Return the peer's alert named by an OpenSSL reason, if it is one."""
    match = _ALERT_REASON.fullmatch(exc.reason or "")
    if match is None or match[1].lower() not in _ALERTS:
        return None
    return match[1].lower().replace("_", " ")


def _reason_of(exc: ssl.SSLError, alert: str | None) -> str:
    """A readable reason for an OpenSSL error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if alert is not None:
        return f"peer sent alert: {alert}"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "peer closed the connection during the TLS handshake"
    if exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc)


def _translate(exc: ssl.SSLError, to_send: bytes) -> TLSError:
    alert = _alert_of(exc)
    return TLSError(_reason_of(exc, alert), alert=alert, to_send=to_send)


class _State(enum.Enum):
    IDLE = "idle"  # created; start() not called yet
    HANDSHAKING = "handshaking"  # handshake under way
    OPEN = "open"  # handshake done; data flows (the peer may have closed)
    CLOSED = "closed"  # we sent close_notify or gave up before the handshake
    FAILED = "failed"  # a TLSError was raised; nothing more can happen


# Which public call is legal in which state; anything else is a caller bug.
_ALLOWED: dict[str, frozenset[_State]] = {
    "start": frozenset({_State.IDLE}),
    "receive": frozenset({_State.HANDSHAKING, _State.OPEN, _State.CLOSED}),
    "send": frozenset({_State.OPEN}),
}


class TLSEndpoint:
    """One side of a TLS session, driven with bytes.

    Wraps ``context.wrap_bio`` over two memory BIOs.  Call `start` once, then
    pass everything the peer sends to `receive` and send what it returns;
    after the handshake, encrypt with `send`; finish with `close`.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        """Wrap ``context``; ``server_hostname`` is the client's SNI and the
        name its certificate check uses (None or an IP address: no SNI)."""
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=server_hostname,
        )
        self._server_side = server_side
        self._state = _State.IDLE
        self._established = False
        self._eof_fed = False
        self._failure = ""
        # Until the ClientHello has been read (see `sni`), the bytes of it.
        self._hello: bytearray | None = bytearray()
        self._sni: str | None = None

    # -- public calls ------------------------------------------------------

    def start(self) -> bytes:
        """Begin the handshake.

        Returns:
            For a client, the ClientHello to send; for a server, b"".
        """
        self._require("start")
        self._state = _State.HANDSHAKING
        if self._server_side:
            return b""
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            raise self._fail(exc) from exc
        hello = self._outgoing.read()
        self._note_hello(hello)
        return hello

    def receive(self, data: bytes) -> TLSReceived:
        """Feed ciphertext from the peer; b"" means its transport closed.

        Returns:
            The decrypted plaintext, ciphertext to send back, and whether the
            handshake finished or the peer closed in this call.
        Raises:
            TLSError: the handshake or the session failed.
            RuntimeError: called before `start`, after a failure, or with
                data after b"".
        """
        self._require("receive")
        self._feed(data)
        try:
            done = self._advance_handshake()
            plaintext, closed = self._read_plaintext()
        except ssl.SSLError as exc:
            raise self._fail(exc) from exc
        return TLSReceived(
            plaintext=plaintext,
            to_send=self._outgoing.read(),
            handshake_done=done,
            closed=closed,
        )

    def send(self, plaintext: bytes) -> bytes:
        """Encrypt application data; return the ciphertext to send.

        Raises:
            RuntimeError: the handshake has not finished, or we closed.
            TLSError: the session failed.
        """
        self._require("send")
        view = memoryview(plaintext)
        try:
            # Memory BIOs grow without bound, so OpenSSL writes everything;
            # loop anyway in case a write ever comes back short.
            while view:
                view = view[self._sslobj.write(view) :]
        except ssl.SSLError as exc:
            raise self._fail(exc) from exc
        return self._outgoing.read()

    def close(self) -> bytes:
        """Send close_notify (RFC 8446 6.1); return the bytes to send.

        Idempotent, and never raises: a session that failed or never
        finished its handshake just returns b"".
        """
        was_open = self._state is _State.OPEN
        if self._state is not _State.FAILED:
            self._state = _State.CLOSED
        if not was_open:
            return b""
        try:
            self._sslobj.unwrap()
        except ssl.SSLError:
            # SSLWantReadError: the peer's close_notify is not here yet;
            # RFC 8446 6.1 does not require waiting for it.
            pass
        return self._outgoing.read()

    # -- properties --------------------------------------------------------

    @property
    def version(self) -> str | None:
        """The negotiated protocol, e.g. "TLSv1.3"; None before the handshake."""
        return self._sslobj.version() if self._established else None

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher suite's name; None before the handshake."""
        cipher = self._sslobj.cipher() if self._established else None
        return cipher[0] if cipher else None

    @property
    def alpn(self) -> str | None:
        """The protocol ALPN selected (RFC 7301), or None."""
        return self._sslobj.selected_alpn_protocol() if self._established else None

    @property
    def sni(self) -> str | None:
        """The server name in the ClientHello: for a server, what the client
        asked for; for a client, what it sent (None for an IP or no name)."""
        return self._sni

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER), or None if it sent none."""
        if not self._established:
            return None
        return self._sslobj.getpeercert(binary_form=True)

    # -- internals ---------------------------------------------------------

    def _require(self, call: str) -> None:
        if self._state not in _ALLOWED[call]:
            detail = f" ({self._failure})" if self._failure else ""
            raise RuntimeError(
                f"TLSEndpoint.{call}() in state {self._state.name}{detail}"
            )

    def _feed(self, data: bytes) -> None:
        if self._eof_fed:
            if data:
                raise RuntimeError("TLSEndpoint.receive() got data after EOF (b'')")
            return
        if data:
            self._incoming.write(data)
            if self._server_side:
                self._note_hello(data)
        else:
            self._eof_fed = True
            self._incoming.write_eof()

    def _advance_handshake(self) -> bool:
        """Run the handshake on; True if it finished just now."""
        if self._state is not _State.HANDSHAKING:
            return False
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self._state = _State.OPEN
        self._established = True
        return True

    def _read_plaintext(self) -> tuple[bytes, bool]:
        """Decrypt all buffered records; return (plaintext, peer closed)."""
        if not self._established:
            return b"", False
        chunks: list[bytes] = []
        closed = False
        try:
            while chunk := self._sslobj.read(_READ_SIZE):
                chunks.append(chunk)
            # An empty read is close_notify, or EOF under
            # OP_IGNORE_UNEXPECTED_EOF.
            closed = True
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            # ZeroReturn: close_notify after our own; EOF: transport closed
            # without close_notify (a truncation RFC 8446 6.1 warns about).
            closed = True
        return b"".join(chunks), closed

    def _note_hello(self, data: bytes) -> None:
        """Remember the SNI of the ClientHello passing through."""
        if self._hello is None:
            return
        self._hello += data
        try:
            hello = parse_client_hello(bytes(self._hello))
        except TLSParseError:
            hello = None  # OpenSSL will reject it; the SNI stays unknown
            self._hello = None
        if hello is not None:
            self._sni = hello.sni
            self._hello = None

    def _fail(self, exc: ssl.SSLError) -> TLSError:
        error = _translate(exc, self._outgoing.read())
        self._state = _State.FAILED
        self._failure = error.reason
        return error
