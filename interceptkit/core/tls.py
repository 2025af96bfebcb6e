"""TLS for the sans-IO core: ClientHello parsing and a bytes-driven TLS endpoint.

Theory of operation
-------------------
A proxy that intercepts TLS has to look at the client's first flight before it
can answer: the ClientHello names the host (SNI, RFC 6066 section 3) and the
application protocols the client offers (ALPN, RFC 7301), and those pick the
certificate to forge and the upstream to open.  `parse_client_hello`
(client_hello.py, re-exported here) reads exactly that, without OpenSSL.

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

from .client_hello import ClientHello, TLSParseError, looks_like_tls, parse_client_hello

__all__ = [
    "ClientHello",
    "TLSEndpoint",
    "TLSError",
    "TLSParseError",
    "TLSReceived",
    "looks_like_tls",
    "parse_client_hello",
]

# Plaintext is read in large pieces: one SSLObject.read call per TLS record
# is the floor, but a big buffer lets OpenSSL hand over what it has at once.
_READ_SIZE = 262144


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
    """A TLSEndpoint's life; which call is legal in which state is the _ALLOWED table."""

    __hash__ = object.__hash__  # singletons: identity hashing, without Enum's Python-level __hash__ per check

    IDLE = "idle"  # created; start() not called yet
    HANDSHAKING = "handshaking"  # handshake under way
    OPEN = "open"  # handshake done; data flows (the peer may have closed)
    CLOSED = "closed"  # we sent close_notify or gave up before the handshake
    FAILED = "failed"  # a TLSError was raised; nothing more can happen


_OPEN = _State.OPEN  # a global for receive's common case (CPython 3.11 specialises no class attribute)

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
        # An open session's records need none of the handshake's steps (the states
        # allow them; four calls less, twice per forwarded request).
        records = self._state is _OPEN and bool(data) and self._hello is None and not self._eof_fed
        if records:
            self._incoming.write(data)
        else:
            self._require("receive")
            self._feed(data)
        try:
            done = False if records else self._advance_handshake()
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
        try:
            # Memory BIOs grow without bound, so OpenSSL writes everything;
            # loop anyway in case a write ever comes back short.
            written = self._sslobj.write(plaintext) if plaintext else 0
            if written < len(plaintext):
                view = memoryview(plaintext)[written:]
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
        sslobj, incoming = self._sslobj, self._incoming
        try:
            while chunk := sslobj.read(_READ_SIZE):
                chunks.append(chunk)
                if not (incoming.pending or sslobj.pending() or self._eof_fed):
                    # Every byte fed so far is read: asking again could only raise
                    # SSLWantReadError, which costs about 1 µs (twice per forwarded request).
                    break
            else:  # an empty read is close_notify, or EOF under OP_IGNORE_UNEXPECTED_EOF
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
