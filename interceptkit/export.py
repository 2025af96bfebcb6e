"""A captured request as something to run elsewhere: curl, HTTPie, requests, raw bytes.

Only the request's data is needed, so this module imports nothing of
interceptkit at run time (the flow model imports it).

Shell quoting, for POSIX ``sh`` (what ``subprocess.run(..., shell=True)`` and
a notebook's ``!`` run; no bash-only ``$'...'``): a word of printable ASCII
goes in single quotes, where nothing is special but the quote itself; a word
with other bytes becomes ``"$(printf '\\ooo...')"``, a constant ``printf``
format of octal escapes, so no byte of it reaches the shell as syntax. A
body that cannot stand in an argument (NUL, binary, a leading ``@`` that
curl would read as a file name) goes in through stdin:
``printf '\\ooo...' | curl --data-binary @- ...``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .flow import Request

#: Fields a client sends for its own connection (RFC 9110 7.6.1) or framing,
#: which the tool recomputes for the body it sends.
_CONNECTION_FIELDS = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"content-length", b"proxy-authorization", b"proxy-authenticate",
})
#: Fields curl adds unless told otherwise: removed when the capture has none.
_CURL_DEFAULTS = (b"user-agent", b"accept")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
#: Bytes a printf format may hold as themselves (no %, no backslash, no quote).
_PRINTF_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ,.:/_-=+")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: Linux refuses one argument over 128 KiB (MAX_ARG_STRLEN): longer bodies
#: go through stdin, written by several printf calls.
_MAX_ARGUMENT_BODY = 32 * 1024
_PRINTF_CHUNK = 16 * 1024


# -- shell words -------------------------------------------------------------------


def sh_quote(data: bytes) -> str:
    """One ``sh`` word that stands for exactly ``data`` (which may not hold NUL or a newline).

    Raises ValueError for NUL or LF: no shell argument can carry a NUL, and
    a command substitution drops a trailing newline.
    """
    if _PRINTABLE.fullmatch(data):
        return "'" + data.decode("ascii").replace("'", "'\\''") + "'"
    if b"\x00" in data or b"\n" in data:
        raise ValueError(f"cannot put {data[:40]!r} in a shell argument (NUL or newline)")
    return f"\"$(printf '{printf_format(data)}')\""


def printf_format(data: bytes) -> str:
    """A ``printf`` format that prints ``data`` byte for byte (octal escapes)."""
    text = "".join(chr(b) if b in _PRINTF_PLAIN else f"\\{b:03o}" for b in data)
    # A format starting with "-" would be read as an option of printf.
    return "\\055" + text[1:] if text.startswith("-") else text


def printf_pipe(data: bytes) -> str:
    """A command that writes ``data`` to stdout: ``printf '...'``, several for a long one."""
    parts = [f"printf '{printf_format(data[i:i + _PRINTF_CHUNK])}'" for i in range(0, len(data), _PRINTF_CHUNK)]
    return parts[0] if len(parts) == 1 else "{ " + "; ".join(parts) + "; }"


def _body_fits_argument(body: bytes) -> bool:
    return len(body) <= _MAX_ARGUMENT_BODY and bool(_PRINTABLE.fullmatch(body)) and not body.startswith(b"@")


# -- what is sent ---------------------------------------------------------------------


def _check_complete(request: Request) -> None:
    if request.body_dropped and request.body_size and not request.content:
        raise ValueError("the request body was dropped to keep the capture within max_capture_bytes "
                         "(start the proxy with save= to keep bodies on disk)")
    if request.truncated:
        raise ValueError(f"only {len(request.content)} of the request body's {request.body_size} bytes "
                         "were kept (body_capture_limit), so it cannot be sent again")


def _end_to_end(request: Request, keep_length: bool = False) -> list[tuple[bytes, bytes]]:
    """The end-to-end fields; with ``keep_length`` a Content-Length stays in its place,
    set to the body's length (curl then sends it there instead of adding its own)."""
    named = {t.strip().lower().encode("latin-1") for n, v in request.headers.fields
             if n.lower() == b"connection" for t in v.decode("latin-1").split(",")}
    length = str(len(request.content)).encode("ascii")
    return [(n, length) if n.lower() == b"content-length" else (n, v) for n, v in request.headers.fields
            if (keep_length and n.lower() == b"content-length")
            or (n.lower() not in _CONNECTION_FIELDS and n.lower() not in named)]


def _authority(request: Request) -> str:
    host = f"[{request.host}]" if ":" in request.host else request.host
    default = _DEFAULT_PORTS.get(request.scheme)
    return host if request.port == default else f"{host}:{request.port}"


def _has(fields: list[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(n.lower() == name for n, _ in fields)


# -- curl -------------------------------------------------------------------------------


def to_curl(request: Request) -> str:
    """A curl command that sends this request: method, URL, headers and body exactly.

    Raises ValueError for a truncated body or a header no shell can carry.
    """
    _check_complete(request)
    fields = _end_to_end(request, keep_length=True)
    words = ["curl", *_curl_options(request)]
    for name, value in fields:
        if name.startswith(b"@"):
            raise ValueError(f"header name {name!r} would make curl read a file")
        words += ["-H", sh_quote(name + b": " + value if value else name + b";")]
    for default in _CURL_DEFAULTS:
        if not _has(fields, default):
            words += ["-H", sh_quote(default.title() + b":")]  # "Name:" removes curl's own
    body = request.content
    if body or request.method in ("POST", "PUT", "PATCH"):
        words += _curl_body_headers(fields)
        if _body_fits_argument(body):
            words += ["--data-binary", sh_quote(body)]
        else:
            words += ["--data-binary", "@-"]
    words.append(sh_quote(request.url.encode("latin-1")))
    command = " ".join(words)
    if body and not _body_fits_argument(body):
        command = f"{printf_pipe(body)} | {command}"
    return command


def _curl_options(request: Request) -> list[str]:
    options: list[str] = []
    if request.method == "HEAD":
        options.append("--head")  # -X HEAD would wait for a body that never comes
    elif request.method != "GET" or request.content:
        options += ["-X", sh_quote(request.method.encode("latin-1"))]
    version = request.http_version.upper()
    options.append({"HTTP/1.0": "--http1.0", "HTTP/2": "--http2", "HTTP/2.0": "--http2"}.get(version, "--http1.1"))
    if re.search(r"[\[\]{}]", request.url):
        options.append("--globoff")  # curl reads [] and {} in a URL as ranges
    if re.search(r"(^|/)\.\.?(/|$|\?)", request.path):
        options.append("--path-as-is")  # curl would squash /../ and /./
    return options


def _curl_body_headers(fields: list[tuple[bytes, bytes]]) -> list[str]:
    # curl adds a form Content-Type and, for big bodies, Expect: remove what the capture lacks.
    extra: list[str] = []
    for name in (b"Content-Type", b"Expect"):
        if not _has(fields, name.lower()):
            extra += ["-H", sh_quote(name + b":")]
    return extra


# -- HTTPie -------------------------------------------------------------------------------


def to_httpie(request: Request) -> str:
    """An HTTPie (``http``) command that sends this request. Raises ValueError as :func:`to_curl`."""
    _check_complete(request)
    words = ["http", "--ignore-stdin" if not request.content else "", request.method,
             sh_quote(request.url.encode("latin-1"))]
    for name, value in _end_to_end(request):
        # "Name:value" sets a header, "Name;" an empty one; a backslash escapes separators.
        item = name + b":" + value if value else name + b";"
        words.append(sh_quote(item.replace(b"\\", b"\\\\")))
    command = " ".join(w for w in words if w)
    if request.content:
        command = f"{printf_pipe(request.content)} | {command}"
    return command


# -- Python (requests) ---------------------------------------------------------------------


def to_python(request: Request) -> str:
    """A ``requests`` snippet that sends this request (Python literals: nothing is evaluated)."""
    _check_complete(request)
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in _end_to_end(request)]
    lines = [
        "import requests",
        "",
        "response = requests.request(",
        f"    {request.method!r},",
        f"    {request.url!r},",
        "    headers={",
        *[f"        {name!r}: {value!r}," for name, value in headers],
        "    },",
    ]
    if request.content:
        lines.append(f"    data={request.content!r},")
    lines += [")", "print(response.status_code, response.reason)", "print(response.text)", ""]
    return "\n".join(lines)


# -- raw bytes --------------------------------------------------------------------------------


def to_raw(request: Request) -> bytes:
    """The request as bytes the way it goes upstream: origin-form request line, Host first.

    Hop-by-hop fields are left out and Content-Length is set for the body.
    """
    fields = [(n, v) for n, v in _end_to_end(request) if n.lower() != b"host"]
    host = next((v for n, v in request.headers.fields if n.lower() == b"host"), None)
    head = [f"{request.method} {request.path or '/'} HTTP/1.1".encode("latin-1"),
            b"Host: " + (host if host is not None else _authority(request).encode("latin-1"))]
    head += [n + b": " + v for n, v in fields]
    if request.content or request.method in ("POST", "PUT", "PATCH"):
        head.append(b"Content-Length: " + str(len(request.content)).encode("ascii"))
    return b"\r\n".join(head) + b"\r\n\r\n" + request.content
