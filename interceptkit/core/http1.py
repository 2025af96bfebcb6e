"""HTTP/1.x proxy semantics on top of h11: targets, hop-by-hop fields, framing.

h11 parses and frames messages; this module holds what a *proxy* must add:
turning request-targets into upstream addresses (RFC 9112 3.2), removing the
fields that belong to one connection only (RFC 9110 7.6.1), refusing message
shapes that two parsers could read differently (request smuggling), and
building the answers the proxy gives on its own behalf.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from http import HTTPStatus
from typing import TypeVar

import h11

from .. import _wire
from .._wire import DEFAULT_PORTS, parse_absolute_url, parse_authority
from .errors import RemoteProtocolError

__all__ = ["DEFAULT_PORTS", "parse_absolute_url", "parse_authority"]  # re-exported: one copy in _wire

Fields = list[tuple[bytes, bytes]]

# RFC 9110 7.6.1 names these as connection-specific; Proxy-Authenticate and
# Proxy-Authorization are addressed to this proxy (RFC 9110 11.7) and must not
# leak to the next hop.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

#: The largest body size a peer may declare (RFC 9110 8.6 leaves it open;
#: nginx, like most servers, stops at a signed 64-bit integer).
MAX_BODY_SIZE = 2**63 - 1
SUPPORTED_VERSIONS = (b"1.1", b"1.0")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

@lru_cache(maxsize=1024)  # the Host of every forwarded request: a client asks the same few hosts
def format_authority(host: str, port: int, scheme: str | None = None) -> bytes:
    """``host:port`` for a Host field; the port is left out when it is the default."""
    return _wire.format_authority(host, port, scheme).encode("ascii")


def connection_tokens(fields: Fields) -> set[bytes]:
    """The lower-cased option names listed in every Connection field (RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in fields:
        if name.lower() == b"connection":
            tokens |= listed_tokens(value)
    return tokens


def listed_tokens(value: bytes) -> set[bytes]:
    """The lower-cased tokens of a comma-separated field value, empty ones left out."""
    return {t for t in (part.strip().lower() for part in value.split(b",")) if t}


def check_request_framing(fields: Fields, http_version: bytes) -> tuple[int | None, bool]:
    """Refuse request shapes that a proxy must not forward (request smuggling).

    h11 already refuses conflicting Content-Length values, repeated or
    unknown Transfer-Encoding and bad chunk sizes; it does not refuse both
    framing fields at once, which RFC 9112 6.3 lets a server treat as an
    attack and which is the classic CL.TE desync. Returns the declared
    Content-Length (or None) and whether the body is chunked.
    """
    length: int | None = None
    has_chunked = False
    for name, value in fields:
        lower = name.lower()
        if lower == b"content-length":
            length = int(value)  # h11 checked that it is digits
            if length > MAX_BODY_SIZE:
                # A length nobody can send keeps the connection waiting
                # forever; nginx refuses it at once as well.
                raise RemoteProtocolError("Content-Length beyond 2^63-1")
        has_chunked = has_chunked or lower == b"transfer-encoding"
    if length is not None and has_chunked:
        raise RemoteProtocolError("both Content-Length and Transfer-Encoding sent")
    if has_chunked and http_version == b"1.0":
        # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
        raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
    return length, has_chunked


_NEVER_HOP_BY_HOP = frozenset({b"close", b"keep-alive", b"content-length", b"host"})
_ONLY_HOP = frozenset({b"close", b"keep-alive"})
#: What a Connection field's list leaves to drop beyond these: only other names.
_NOT_NAMED = _NEVER_HOP_BY_HOP | HOP_BY_HOP


def end_to_end_fields(fields: Fields, *, keep_upgrade: bool = False) -> tuple[Fields, bool]:
    """Drop hop-by-hop fields; return the rest and whether the body was chunked.

    With ``keep_upgrade`` the Upgrade field and ``Connection: upgrade`` pass,
    which is how a WebSocket handshake crosses the proxy.
    """
    chunked = False
    named: set[bytes] | None = None  # what Connection fields list: hop-by-hop too
    kept: Fields = []
    for name, value in fields:  # one pass: this runs for every message forwarded
        lower = name.lower()
        if lower not in HOP_BY_HOP:
            kept.append((name, value))
        elif lower == b"connection":
            if value.lower() not in _ONLY_HOP:  # "keep-alive" or "close" alone name nothing else
                named = (named or set()) | listed_tokens(value)
        elif lower == b"transfer-encoding":
            chunked = True
        elif keep_upgrade and lower == b"upgrade":
            kept.append((name, value))
    if named is not None:
        # A Connection field cannot make end-to-end framing or routing fields
        # hop-by-hop: "Connection: content-length" would desync the body.
        named -= _NOT_NAMED
        if keep_upgrade:
            named.discard(b"upgrade")
        if named:  # rare: most list only keep-alive, close or upgrade
            kept = [(n, v) for n, v in kept if n.lower() not in named]
    if keep_upgrade:
        kept.append((b"Connection", b"upgrade"))
    return kept, chunked


def first_value(fields: Fields, name: bytes) -> bytes | None:
    """The value of the first field called ``name`` (lower-case), if any."""
    for field_name, value in fields:  # a loop, not next(generator): it runs several times per request
        if field_name.lower() == name:
            return value
    return None


def asks_for_trailers(fields: Fields) -> bool:
    """``TE: trailers`` (gRPC): it goes on to an HTTP/2 origin (hop-by-hop otherwise)."""
    return any(n.lower() == b"te" and b"trailers" in v.lower() for n, v in fields)


def reframe(fields: Fields, chunked: bool) -> Fields:
    """Re-add framing for the next hop: h11 then writes chunks itself.

    A chunked message's Content-Length is dropped (RFC 9112 6.3.3: a
    recipient must not forward both).
    """
    if chunked:
        fields = [(n, v) for n, v in fields if n.lower() != b"content-length"]
        fields.append((b"Transfer-Encoding", b"chunked"))
    return fields


def replace_field(fields: Fields, name: bytes, value: bytes) -> Fields:
    """``fields`` with every ``name`` field replaced by one, put first."""
    lower = name.lower()
    rest = [(n, v) for n, v in fields if n.lower() != lower]
    return [(name, value), *rest]


SlotSetter = Callable[[object, object], None]


def _slot_setters(event: type[object], *names: str) -> tuple[SlotSetter, ...]:
    """How h11's own constructor sets the slots of its frozen, slotted event classes."""
    return tuple(getattr(event, name).__set__ for name in names)


#: h11's list of fields, as its public events carry it (the class lives in a private module).
_H11Headers = type(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"h")]).headers)
_REQUEST_SLOTS = _slot_setters(h11.Request, "method", "target", "headers", "http_version")
_RESPONSE_SLOTS = _slot_setters(h11.Response, "status_code", "reason", "headers", "http_version")


_Event = TypeVar("_Event", h11.Request, h11.Response)
#: Bound once: ``object.__new__`` is a full attribute lookup on every call (CPython 3.11).
_new_object = object.__new__


def _built(kind: type[_Event], setters: tuple[SlotSetter, ...], first: object, second: object, fields: Fields,
           version: bytes) -> _Event:
    """An h11 event of ``kind`` with its four slots set, h11's checks skipped (unrolled: twice per request)."""
    set_first, set_second, set_fields, set_version = setters
    event = _new_object(kind)
    set_first(event, first)
    set_second(event, second)
    set_fields(event, _H11Headers([(name, name.lower(), value) for name, value in fields]))
    set_version(event, version)
    return event


def h11_request(method: bytes, target: bytes, fields: Fields) -> h11.Request:
    """An h11 Request from fields that are already in h11's normal form, built without checking them again.

    The fields are what h11 parsed a moment ago (checked and normalised:
    one Host, one Content-Length, ``chunked`` in lower case), plus fields of
    our own in that form (Host, Via, framing). Fields h11 did not parse (a
    hook's, an HTTP/2 client's) go through :func:`h11_checked_fields` first
    (``h1layers.check_request_head``), which refuses what h11 would. h11's constructor would
    check all of that again, one regex and one scan per field, and scan for
    Host through its slow sequence protocol: the largest single cost of
    forwarding. So the event's slots are set directly, as h11's own
    constructor sets them. h11's Headers class and the slot names are
    h11 internals: pyproject pins h11 to one minor series and
    tests/core/test_h11_contract.py proves these events equal, byte for
    byte, the ones h11 itself builds.
    """
    return _built(h11.Request, _REQUEST_SLOTS, method, target, fields, b"1.1")


def h11_response(status: int, reason: bytes, fields: Fields) -> h11.Response:
    """An h11 Response from fields in h11's normal form (see :func:`h11_request`)."""
    return _built(h11.Response, _RESPONSE_SLOTS, status, reason, fields, b"1.1")


def h11_checked_fields(method: bytes, target: bytes, fields: Fields) -> Fields:
    """Request fields h11 did not parse (a hook's, an HTTP/2 client's), checked by h11 and put in its
    normal form; raises ``h11.LocalProtocolError``."""
    return h11.Request(method=method, target=target, headers=fields).headers.raw_items()


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def plain_answer(status: int, message: str, *, close: bool = True) -> tuple[h11.Response, bytes]:
    """A short text/plain answer from the proxy itself: headers and body."""
    body = f"{status} {status_phrase(status)}: {message}\n".encode("utf-8", "replace")
    fields: Fields = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Cache-Control", b"no-store"),
    ]
    if close:
        fields.append((b"Connection", b"close"))
    return h11.Response(status_code=status, headers=fields, reason=status_phrase(status)), body


INFO_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>interceptkit</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">
<h1>This is interceptkit</h1>
<p>You reached the interceptkit proxy itself, not a website. To send traffic
<em>through</em> it, configure it as your HTTP and HTTPS proxy (for example
<code>curl --proxy http://HOST:PORT https://example.com/</code>).</p>
<h2>Trust the interceptkit CA</h2>
<p>To see HTTPS traffic, the client must trust interceptkit's certificate
authority. Download it: <a href="/cert/pem">PEM</a> (Linux, macOS, Firefox,
Python, curl) or <a href="/cert/cer">DER</a> (Windows, Android).
On the proxy's machine, <code>interceptkit ca</code> prints its path and how to
install it.</p>
</body></html>
"""


def info_page_fields(body: bytes, content_type: bytes) -> Fields:
    return [
        (b"Content-Type", content_type),
        (b"Content-Length", str(len(body)).encode()),
        (b"Cache-Control", b"no-store"),
    ]


_METHOD_START = re.compile(rb"[A-Z]{3,10} ")


def looks_like_http(data: bytes) -> bool:
    """Whether the bytes start like an HTTP/1 request line (``GET /...``)."""
    return _METHOD_START.match(data[:11]) is not None


def sized(fields: Fields, length: int) -> Fields:
    """Frame a body we hold whole: one Content-Length, no Transfer-Encoding.

    A message that had no body and still has none gets no framing field
    (RFC 9110 8.6: a request without content should not send one).
    """
    framed = any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in fields)
    kept = [(n, v) for n, v in fields if n.lower() not in (b"content-length", b"transfer-encoding")]
    if length or framed:
        kept.append((b"Content-Length", str(length).encode("ascii")))
    return kept


def forwarded_fields(fields: Fields, client: str, *, https: bool) -> Fields:
    """Reverse mode: X-Forwarded-For/-Proto/-Host, appended to what earlier proxies said."""
    host = first_value(fields, b"host") or b""
    proto = b"https" if https else b"http"
    for name, value in ((b"X-Forwarded-For", client.encode("ascii")), (b"X-Forwarded-Proto", proto),
                        (b"X-Forwarded-Host", host)):
        if value:
            fields = append_to_field(fields, name, value)
    return fields


def append_to_field(fields: list[tuple[bytes, bytes]], name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    """Append to a comma-list field, or add it."""
    lower = name.lower()
    # The last line of a repeated field is the end of the list: append there,
    # or a client could put its own address last (RFC 9110 5.3).
    for index in range(len(fields) - 1, -1, -1):
        existing, old = fields[index]
        if existing.lower() == lower:
            fields[index] = (existing, old + b", " + value)
            return fields
    fields.append((name, value))
    return fields


def has_dot_segments(path: str) -> bool:
    """Whether the path has "." or ".." segments, percent-encoded or not (RFC 3986 5.2.4)."""
    segments = path.partition("?")[0].replace("%2e", ".").replace("%2E", ".").split("/")
    return any(segment in (".", "..") for segment in segments)


def head_size(target: bytes, fields: list[tuple[bytes, bytes]]) -> int:
    return len(target) + sum(len(n) + len(v) + 4 for n, v in fields)


def raw_response(response: h11.Response, body: bytes) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (response.status_code, response.reason)]
    lines += [name + b": " + value for name, value in response.headers.raw_items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class ChunkSizeGuard:
    """Follows the chunk boundaries of a chunked request body, fed the same bytes as h11.

    Owns only its position in the framing. h11 takes any chunk size, so a size
    no peer can send (over 2^63-1) would keep the connection waiting for bytes
    that never come; this refuses it the moment its line is complete. h11
    still validates the framing itself: the guard only reads sizes.
    """

    __slots__ = ("_remaining", "_line", "done")

    def __init__(self) -> None:
        self._remaining = 0  # data bytes, plus the CRLF after them, still to skip
        self._line = b""  # the start of a chunk-size line read so far
        self.done = False

    def feed(self, data: bytes) -> None:
        """Raises RemoteProtocolError for a chunk size beyond 2^63-1."""
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._remaining:
                step = min(self._remaining, end - pos)
                self._remaining -= step
                pos += step
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line = (self._line + data[pos:])[:64]  # only the digits matter
                return
            self._size_line(self._line + data[pos:newline])
            self._line, pos = b"", newline + 1

    def _size_line(self, line: bytes) -> None:
        digits = bytearray()
        for byte in line.lstrip(b"\r"):
            if byte not in _HEX_DIGITS:
                break
            digits.append(byte)
        if not digits:
            return  # a stray CRLF or a malformed line: h11 judges it
        size = int(digits, 16)
        if size > MAX_BODY_SIZE:
            raise RemoteProtocolError("chunk size beyond 2^63-1")
        if size == 0:
            self.done = True  # the trailer section follows; h11 reads it
        self._remaining = size + 2  # the data and its CRLF (h11 checks the CRLF)


_VERSIONED_LINE = re.compile(rb"[^ ]+ [^ ]+ HTTP/[0-9]\.[0-9]\r?")


def first_line_unversioned(buffered: bytes) -> bool:
    """Whether the first complete line of a request lacks ``HTTP/x.y`` at its end.

    That is an HTTP/0.9 simple request (``GET /``): its client waits for an
    answer h11 would never give, since h11 waits for a header block that is
    not coming. Leading empty lines are allowed (RFC 9112 2.2).
    """
    data = buffered.lstrip(b"\r\n")
    end = data.find(b"\n")
    return end >= 0 and _VERSIONED_LINE.fullmatch(data[:end]) is None
