"""The TLS ClientHello, read without OpenSSL: is it TLS, which host (SNI), which protocols (ALPN).

A proxy that intercepts TLS has to look at the client's first flight before
it can answer: the ClientHello names the host (SNI, RFC 6066 section 3) and
the application protocols the client offers (ALPN, RFC 7301), and those pick
the certificate to forge and the upstream to open. `parse_client_hello` reads
exactly that from bytes the caller has buffered; nothing here keeps state.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientHello", "TLSParseError", "looks_like_tls", "parse_client_hello"]

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
