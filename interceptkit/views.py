"""Structured body views for the flow display: JSON trees, SSE events, form fields, WebSocket messages.

HTML only, no JavaScript: JSON folds with ``<details>``, which notebooks,
GitHub and nbviewer all render. Every value from the wire is escaped, and
each view is bounded (nodes, events, fields, messages) so one huge body
cannot produce megabytes of HTML.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

_esc = html.escape
_MONO = "font-family:SFMono-Regular,Menlo,Consolas,monospace;font-size:12px"
_CELL = "padding:1px 6px;text-align:left;vertical-align:top"
#: Bounds on what one view renders.
MAX_NODES = 2000
MAX_ROWS = 200
PREVIEW = 300


def _cut(text: str, limit: int = PREVIEW) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} chars)"


def _rows_table(header: tuple[str, ...], rows: Sequence[Sequence[str]], total: int) -> str:
    head = "".join(f'<th style="{_CELL}">{_esc(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL};{_MONO}">{_esc(c)}</td>' for c in row) + "</tr>"
                   for row in rows)
    more = f'<div style="color:#666;font-size:11px">… {total - len(rows):,} more</div>' if total > len(rows) else ""
    return (f'<table style="border-collapse:collapse;font-size:12px"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>{more}")


# -- JSON ---------------------------------------------------------------------------------


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_NODES


def json_html(value: Any) -> str:
    """A JSON value as a tree of ``<details>`` (the first two levels open)."""
    return f'<div style="{_MONO}">{_node(value, 0, _Budget())}</div>'


def _node(value: Any, depth: int, budget: _Budget) -> str:
    budget.left -= 1
    if budget.left < 0:
        return '<span style="color:#888">…</span>'
    if isinstance(value, dict):
        items = [(f'<span style="color:#881391">{_esc(json.dumps(k))}</span>: ', v) for k, v in value.items()]
        return _container("{", "}", _count(len(value), "key"), items, depth, budget)
    if isinstance(value, list):
        return _container("[", "]", _count(len(value), "item"), [("", v) for v in value], depth, budget)
    color = {str: "#c41a16", bool: "#0d22aa", type(None): "#808080"}.get(type(value), "#1c00cf")
    return f'<span style="color:{color}">{_esc(_cut(json.dumps(value, ensure_ascii=False)))}</span>'


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _container(open_: str, close: str, summary: str, items: list[tuple[str, Any]], depth: int,
               budget: _Budget) -> str:
    if not items:
        return open_ + close
    inner = "".join(f'<div style="margin-left:1.2em">{key}{_node(v, depth + 1, budget)}</div>'
                    for key, v in items if budget.left > 0)
    if budget.left <= 0 and len(items) > 0:
        inner += '<div style="margin-left:1.2em;color:#888">… (view truncated)</div>'
    state = " open" if depth < 2 else ""
    return (f'<details{state} style="display:inline-block;vertical-align:top"><summary>{open_} '
            f'<span style="color:#888">{summary}</span></summary>{inner}{close}</details>')


# -- server-sent events -----------------------------------------------------------------------


def sse_events(text: str) -> list[dict[str, str]]:
    """``text/event-stream`` reassembled into events (WHATWG HTML 9.2.6): event, data, id, retry."""
    events: list[dict[str, str]] = []
    current: dict[str, list[str]] = {}
    for line in re.split(r"\r\n|\r|\n", text):
        if line == "":
            if current:
                events.append({k: "\n".join(v) for k, v in current.items()})
            current = {}
            continue
        if line.startswith(":"):
            continue  # a comment
        name, _, value = line.partition(":")
        if name in ("event", "data", "id", "retry"):
            current.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
    if current:  # a stream cut off mid-event still shows what it had
        events.append({k: "\n".join(v) for k, v in current.items()})
    return events


def sse_html(text: str) -> str:
    events = sse_events(text)
    rows = [(str(i + 1), e.get("event", "message"), e.get("id", ""), _cut(e.get("data", "")))
            for i, e in enumerate(events[:MAX_ROWS])]
    return (f'<div style="color:#666;font-size:11px">{len(events):,} server-sent events</div>'
            + _rows_table(("#", "event", "id", "data"), rows, len(events)))


# -- forms ---------------------------------------------------------------------------------------


def form_html(text: str) -> str:
    """``application/x-www-form-urlencoded`` as name/value rows."""
    fields = parse_qsl(text, keep_blank_values=True)
    rows = [(n, _cut(v)) for n, v in fields[:MAX_ROWS]]
    return (f'<div style="color:#666;font-size:11px">form, {len(fields):,} fields</div>'
            + _rows_table(("name", "value"), rows, len(fields)))


def multipart_parts(data: bytes, content_type: str) -> list[dict[str, Any]] | None:
    """The parts of a ``multipart/form-data`` body (RFC 7578): name, filename, type, content.

    None when there is no boundary or it does not occur.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    if match is None:
        return None
    delimiter = b"--" + match.group(1).encode("latin-1")
    chunks = data.split(delimiter)
    if len(chunks) < 2:
        return None
    parts = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the close delimiter
        head, _, body = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        parts.append(_part(head.decode("latin-1"), body[:-2] if body.endswith(b"\r\n") else body))
    return parts


def _part(head: str, body: bytes) -> dict[str, Any]:
    disposition = re.search(r"^content-disposition:(.*)$", head, re.IGNORECASE | re.MULTILINE)
    kind = re.search(r"^content-type:\s*(.*)$", head, re.IGNORECASE | re.MULTILINE)
    params = dict(re.findall(r';\s*([\w*-]+)="?([^";]*)"?', disposition.group(1))) if disposition else {}
    return {"name": params.get("name", ""), "filename": params.get("filename"),
            "content_type": kind.group(1).strip() if kind else "text/plain", "content": body}


def multipart_html(parts: list[dict[str, Any]]) -> str:
    rows = [(p["name"], p["filename"] or "", p["content_type"], f"{len(p['content']):,} B", _preview(p["content"]))
            for p in parts[:MAX_ROWS]]
    return (f'<div style="color:#666;font-size:11px">multipart form, {len(parts):,} parts</div>'
            + _rows_table(("name", "filename", "type", "size", "content"), rows, len(parts)))


def _preview(data: bytes) -> str:
    try:
        text = data[:PREVIEW * 4].decode("utf-8")
    except UnicodeDecodeError:
        return "binary: " + data[:32].hex(" ") + (" …" if len(data) > 32 else "")
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return "binary: " + data[:32].hex(" ") + (" …" if len(data) > 32 else "")
    return _cut(text)


# -- WebSocket messages ----------------------------------------------------------------------------


def websocket_html(data: Any, start: float) -> str:
    """The recorded messages of a WebSocket (``core.websocket.WebSocketData``): direction, time,
    type, size, a text or binary preview; then how it closed."""
    messages = list(getattr(data, "messages", ()))
    shown = messages[-MAX_ROWS:]
    rows = [("→ to server" if m.direction == "client" else "← to client", _when(m.time, start), m.type,
             f"{m.size:,} B", _message_preview(m.content) + (" (dropped)" if m.dropped else "")
             + (" (injected)" if m.injected else "")) for m in shown]
    count = getattr(data, "message_count", len(messages))
    note = f"WebSocket, {count:,} messages"
    if len(shown) < count:
        note += f" (showing the newest {len(shown):,})"
    close = getattr(data, "close_code", None)
    if close is not None:
        note += f" · closed {close} {getattr(data, 'close_reason', '')} by {getattr(data, 'closed_by', '?')}"
    return (f'<div class="interceptkit-websocket" style="margin-top:6px"><div style="font-weight:700">'
            f'{_esc(note)}</div>{_rows_table(("direction", "time", "type", "size", "content"), rows, len(rows))}'
            "</div>")


def _when(moment: float, start: float) -> str:
    if not moment:
        return ""
    if start:
        return f"+{moment - start:.3f} s"
    return time.strftime("%H:%M:%S", time.localtime(moment))


def _message_preview(content: str | bytes) -> str:
    return _cut(content) if isinstance(content, str) else _preview(content)
