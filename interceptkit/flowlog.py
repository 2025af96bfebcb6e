"""The CLI's log of exchanges: one line per flow, optionally headers and body previews.

``--flow-detail`` picks how much: 0 nothing, 1 one line, 2 plus request and
response headers, 3 plus a preview of each body (decoded, up to 4 KiB; binary
as a hex summary). Colours only on a terminal, and never when ``NO_COLOR`` is
set (https://no-color.org).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TextIO

from .display import human_size
from .flow import Flow, Message
from .vocab import protocol_name

#: Bytes of a body shown at detail 3.
PREVIEW_LIMIT = 4096
#: Bytes shown in hex for a binary body.
HEX_BYTES = 16

# What the core answers the client when an exchange fails before any response
# reached it (core/conn_upstreams.py, conn_lifecycle.py, conn_responses.py).
# The flow keeps only the reason, so the line recovers the status from it.
# Timeouts first: "cannot connect ...: connect timed out" is a 504, not a 502.
_ANSWERED_BY_REASON: tuple[tuple[str, int], ...] = (
    ("connect timed out", 504),
    ("upstream did not answer within", 504),
    ("TLS handshake with the upstream took over", 504),
    ("cannot connect to ", 502),
    ("TLS handshake with the upstream failed", 502),
    ("TLS with the upstream failed", 502),
    ("upstream stalled", 502),
    ("upstream closed the connection before answering", 502),
    ("invalid response from upstream", 502),
    ("a hook made an invalid", 502),
    ("no TLS context for HTTPS upstreams", 502),
    ("the client stopped sending its request", 408),
)

_RESET = "\033[0m"
_STYLES = {"bold": "\033[1m", "dim": "\033[2m", "red": "\033[31m", "green": "\033[32m",
           "yellow": "\033[33m", "cyan": "\033[36m"}
#: Header values never printed: the proxy's own credentials.
_SECRET_HEADERS = frozenset({"proxy-authorization"})


def answered_status(flow: Flow) -> int | None:
    """The status the proxy itself answered a failed flow with, or None if it sent none.

    A kill or a client that went away leave nothing to show but the error.
    """
    error = flow.error
    if error is None or flow.response is not None:
        return None
    for needle, status in _ANSWERED_BY_REASON:
        if needle in error:
            return status
    return None


def use_color(stream: TextIO) -> bool:
    """Colours on a terminal, unless ``NO_COLOR`` is set to anything non-empty."""
    return bool(os.environ.get("NO_COLOR", "") == "" and stream.isatty())


class FlowFormatter:
    """Turns a finished flow into the text the CLI prints for it."""

    def __init__(self, detail: int = 1, color: bool = False) -> None:
        if detail not in (0, 1, 2, 3):
            raise ValueError(f"flow detail is 0, 1, 2 or 3, not {detail!r}")
        self.detail = detail
        self.color = color

    def _paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        return "".join(_STYLES[s] for s in styles) + text + _RESET

    def format(self, flow: Flow) -> str:
        """The lines for ``flow`` (no trailing newline); empty at detail 0."""
        if self.detail == 0:
            return ""
        lines = [self.line(flow)]
        if self.detail >= 2:
            lines += self._message_lines(flow.request, ">", self._request_head(flow))
            if flow.response is not None:
                response = flow.response
                head = f"{response.http_version} {response.status} {response.reason}".rstrip()
                lines += self._message_lines(response, "<", head)
        return "\n".join(lines)

    def line(self, flow: Flow) -> str:
        """One line: method, URL (and the client's protocol unless HTTP/1.1), status, response size,
        duration (and the error)."""
        request, response = flow.request, flow.response
        if response is not None:
            code: int | None = response.status
            size = human_size(response.body_size, sep="")
        else:
            code, size = answered_status(flow), "-"
        status, method = str(code) if code is not None else "ERR", request.method
        if self.color:  # (checked once here: this line is built for every exchange)
            status, method = self._paint(status, *_status_styles(code, flow)), self._paint(method, "bold")
        duration = f"{flow.duration * 1000:.0f}ms" if flow.duration is not None else "-"
        protocol = protocol_name(request.http_version)
        # HTTP/1.1 is the common case and goes unsaid; anything else is worth a word.
        url = request.url if protocol == "HTTP/1.1" else f"{request.url} {protocol}"
        line = f"{method} {url} {status} {size} {duration}"
        return f"{line} {self._paint(f'({flow.error})', 'red')}" if flow.error else line

    @staticmethod
    def _request_head(flow: Flow) -> str:
        request = flow.request
        target = request.authority if request.method == "CONNECT" else request.path
        return f"{request.method} {target} {request.http_version}"

    def _message_lines(self, message: Message, arrow: str, head: str) -> list[str]:
        mark = self._paint(arrow, "dim")
        lines = [f"    {mark} {self._paint(head, 'bold')}"]
        for name, value in message.headers.items():
            shown = "[redacted]" if name.lower() in _SECRET_HEADERS else value
            lines.append(f"    {mark} {self._paint(name + ':', 'cyan')} {shown}")
        if self.detail >= 3 and message.body_size:
            lines.append(f"    {mark}")
            lines += [f"    {mark} {text}" for text in body_preview(message).split("\n")]
        return lines


def _status_styles(code: int | None, flow: Flow) -> tuple[str, ...]:
    if code is None or code >= 500 or flow.error:
        return ("bold", "red")
    if code >= 400:
        return ("yellow",)
    if code >= 300:
        return ("cyan",)
    return ("green",)


def body_preview(message: Message) -> str:
    """Up to 4 KiB of the decoded body as text, or a hex summary of a binary one."""
    data, note = message.content, ""
    try:
        data = message.decoded_content()
    except Exception:  # a corrupt or unknown encoding: show the bytes as they came
        note = f" (could not undo Content-Encoding: {message.headers.get('content-encoding')})"
    if message.truncated:
        note += f" (captured {human_size(len(message.content), sep='')} of {human_size(message.body_size, sep='')})"
    text = _as_text(data[:PREVIEW_LIMIT], message.charset)
    if text is None:
        hex_part = data[:HEX_BYTES].hex(" ")
        more = " ..." if len(data) > HEX_BYTES else ""
        return f"<binary, {len(data):,} bytes: {hex_part}{more}>{note}"
    rest = len(data) - PREVIEW_LIMIT
    if rest > 0:
        note = f"\n... {rest:,} more bytes{note}"
    return text + note


def _as_text(data: bytes, charset: str) -> str | None:
    """``data`` decoded, or None when it looks binary (NUL or other control bytes)."""
    if b"\x00" in data:
        return None
    try:
        text = data.decode(charset)
    except (UnicodeDecodeError, LookupError):
        try:
            # A preview cut inside a multi-byte character is still text.
            text = data.decode("utf-8", errors="strict" if len(data) < PREVIEW_LIMIT else "ignore")
        except UnicodeDecodeError:
            return None
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\r\n")
    if controls > len(text) // 100:
        return None
    return text.replace("\r\n", "\n").rstrip("\n")


def printer(stream: TextIO, formatter: FlowFormatter,
            wanted: Callable[[Flow], bool] | None = None) -> Callable[[Flow], None]:
    """A flow listener writing ``formatter``'s text for the flows ``wanted`` lets through.

    Once the stream cannot be written (its reader went away: ``| head``, a
    closed pipe) it stops printing; the proxy goes on carrying traffic (the
    CLI's flusher says so on stderr).
    """
    tty = stream.isatty()
    gone = False

    def print_flow(flow: Flow) -> None:
        nonlocal gone
        if gone or (wanted is not None and not wanted(flow)):
            return
        text = formatter.format(flow)
        if text:
            try:
                stream.write(text + "\n")
                if tty:
                    stream.flush()
            except (OSError, ValueError):  # ValueError: the stream was closed
                gone = True

    return print_flow
