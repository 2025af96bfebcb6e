"""Minimal RFC 6455 WebSocket framing for the benchmark (standard library only).

Just what the bench origin's echo endpoint and the WebSocket load client need:
the handshake's accept key, encoding one frame, and an incremental frame parser.
No extensions, no subprotocols.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_PAYLOAD = 16 << 20  # larger frames are a protocol error here (1009)


class FrameError(Exception):
    """A frame the peer should not have sent; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def accept_key(key: bytes | str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(sha1(key + GUID))."""
    if isinstance(key, str):
        key = key.encode()
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest()).decode()


def new_key() -> str:
    """A Sec-WebSocket-Key: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode()


def _xor(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    m = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")


def encode(opcode: int, payload: bytes, fin: bool = True, masked: bool = False) -> bytes:
    """One frame. Clients must send masked frames, servers unmasked ones."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if masked:
        mask = os.urandom(4)
        return head + mask + _xor(payload, mask)
    return head + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()[:120]


class Parser:
    """Incremental frame parser. ``feed(data)`` returns complete frames as
    (fin, opcode, payload) with the payload unmasked.  ``expect_masked`` is True on
    the server side (client frames must be masked) and False on the client side."""

    def __init__(self, expect_masked: bool) -> None:
        self.expect_masked = expect_masked
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bool, int, bytes]]:
        buf = self.buf
        buf += data
        frames = []
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b0 & 0x70:
                raise FrameError(1002, "reserved bits set (no extension negotiated)")
            fin, opcode, masked, n = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
            if masked != self.expect_masked:
                raise FrameError(1002, "masked frame from the server" if masked else "unmasked frame from a client")
            if opcode not in (CONT, TEXT, BINARY, CLOSE, PING, PONG):
                raise FrameError(1002, f"unknown opcode {opcode}")
            if opcode >= CLOSE and (not fin or n > 125):
                raise FrameError(1002, "fragmented or oversized control frame")
            i = pos + 2
            if n == 126:
                if len(buf) - i < 2:
                    break
                n = struct.unpack_from("!H", buf, i)[0]
                i += 2
            elif n == 127:
                if len(buf) - i < 8:
                    break
                n = struct.unpack_from("!Q", buf, i)[0]
                i += 8
            if n > MAX_PAYLOAD:
                raise FrameError(1009, f"frame of {n} bytes is too big")
            mask = b""
            if masked:
                if len(buf) - i < 4:
                    break
                mask = bytes(buf[i:i + 4])
                i += 4
            if len(buf) - i < n:
                break
            payload = bytes(buf[i:i + n])
            frames.append((fin, opcode, _xor(payload, mask) if masked else payload))
            pos = i + n
        if pos:
            del buf[:pos]
        return frames
