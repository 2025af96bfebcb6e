"""Content codings (RFC 9110 8.4.1): what ``Message.decoded_content`` undoes. The data model's ring, below the core."""

from __future__ import annotations

import zlib


def decode_content(body: bytes, encoding: str) -> bytes:
    """``body`` with the content codings of a ``Content-Encoding`` value undone, last applied first.

    Raises ValueError for a coding we cannot undo (or whose extra is not installed: ImportError).
    """
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        body = _decode_one(body, coding)
    return body


def _decode_one(body: bytes, coding: str) -> bytes:
    if coding in ("identity", ""):
        return body
    if coding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        # RFC 9110 8.4.1.2 says zlib-wrapped; some servers send raw deflate.
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    if coding == "br":
        import brotli  # type: ignore[import-not-found]  # optional extra

        return bytes(brotli.decompress(body))
    if coding == "zstd":
        import zstandard  # type: ignore[import-not-found]  # optional extra

        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(body))
    raise ValueError(f"unsupported Content-Encoding: {coding}")
