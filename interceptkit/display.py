"""How flows look: HTML for Jupyter (``_repr_html_``), plain text for terminals.

Everything here is a pure function of the flows, so the views need no
IPython and no plotting library: HTML with inline styles (they survive
notebook sanitizers and GitHub's renderer) and hand-written SVG for the
waterfalls. Every value that came off the wire is escaped.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import views
from .columns import COLUMNS, ordered
from .flow import Flow, Message, Timings
from .flow_owner import register_service

if TYPE_CHECKING:
    from .table import FlowTable

#: The columns a table shows unless ``select`` chose others.
DEFAULT_COLUMNS = ("id", "time", "method", "url", "status", "content_type", "response_size", "duration")
#: Rows shown in HTML and in text; the newest are kept.
HTML_ROWS = 200
TEXT_ROWS = 20
PREVIEW_CHARS = 5000
HEX_BYTES = 512
PHASE_COLORS = {
    "blocked": "#b0b0b0", "connect": "#f0a030", "tls": "#a050d0",
    "send": "#40a0e0", "wait": "#3cba54", "receive": "#2f6fd6", "open": "#d0d0d0",
}
_SIZES = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3))
_SIZE_COLUMNS = {"request_size", "response_size"}
_DURATION_COLUMNS = {"duration", "connect", "tls", "send", "wait", "receive"}
_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/svg+xml",
           "image/x-icon", "image/vnd.microsoft.icon", "image/avif"}
_TEXT_TYPES = ("xml", "javascript", "x-www-form-urlencoded", "html", "css", "csv", "yaml", "graphql")
_CELL = "padding:1px 8px;text-align:left;white-space:nowrap"
_NUMBER = "padding:1px 8px;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums"
_MONO = "font-family:SFMono-Regular,Menlo,Consolas,monospace;font-size:12px"
_esc = html.escape


# -- human-readable values ------------------------------------------------------


def human_size(n: int | None, sep: str = " ") -> str:
    """``1234`` -> ``"1.2 kB"`` (decimal units, as browser tools show them; the CLI too)."""
    if n is None:
        return ""
    for unit, scale in _SIZES:
        if n >= scale:
            return f"{n / scale:.1f}{sep}{unit}"
    return f"{n}{sep}B"


def human_duration(seconds: float | None) -> str:
    """``0.0123`` -> ``"12.3 ms"``; µs below a millisecond, s from a second."""
    if seconds is None:
        return ""
    if seconds >= 0.9995:  # (what would round to 1000 ms reads better as seconds)
        return f"{seconds:.2f} s"
    if seconds >= 0.000_9995:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def shorten(text: str, width: int = 60) -> str:
    """Cut the middle out of long text: ``"http://host/very…/end"``."""
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep - keep // 3] + "…" + text[len(text) - keep // 3:]


def status_color(flow: Flow) -> str:
    status = flow.response.status if flow.response is not None else None
    if flow.error and (status is None or status < 400):
        return "#c62828"
    if status is None:
        return "#888888"
    return {1: "#777777", 2: "#2e7d32", 3: "#1565c0", 4: "#e65100", 5: "#c62828"}.get(status // 100, "#000")


def status_text(flow: Flow) -> str:
    if flow.response is not None:
        return str(flow.response.status)
    return "error" if flow.error else ("…" if flow.state == "open" else flow.state)


def format_value(column: str, value: Any) -> str:
    """A cell as text: sizes and durations human-readable, times to the millisecond."""
    if value is None:
        return ""
    if column in _SIZE_COLUMNS:
        return human_size(value)
    if column in _DURATION_COLUMNS:
        return human_duration(value)
    if isinstance(value, datetime):
        return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    return str(value)


# -- the table ----------------------------------------------------------------------


def _summary(table: FlowTable, flows: Sequence[Flow]) -> str:
    parts = [f"{len(flows):,} flow{'s' if len(flows) != 1 else ''}"]
    open_count = sum(1 for f in flows if f.state == "open")
    if open_count:
        parts.append(f"{open_count} in flight")
    if table.dropped:
        parts.append(f"{table.dropped:,} older dropped (max_flows={table.max_flows:,})")
    truncated = table.truncated
    if truncated:
        parts.append(f"{truncated:,} with a truncated body")
    budget = table.max_capture_bytes
    if budget is not None:
        parts.append(f"bodies {human_size(table.capture_bytes) or '0 B'} of {human_size(budget)} "
                     "(max_capture_bytes)")
    if table.bodies_dropped:
        parts.append(f"{table.bodies_dropped:,} older bodies dropped")
    return " · ".join(parts)


def _html_cell(column: str, flow: Flow) -> str:
    if column == "status":
        title = flow.error or (flow.response.reason if flow.response is not None else flow.state)
        mark = " ⚠" if flow.error and flow.response is not None else ""
        return (f'<td style="{_NUMBER};color:{status_color(flow)};font-weight:600" title="{_esc(title)}">'
                f"{_esc(status_text(flow))}{mark}</td>")
    value = COLUMNS[column](flow)
    if column in ("url", "path") and value:
        return f'<td style="{_CELL};{_MONO}" title="{_esc(value)}">{_esc(shorten(value))}</td>'
    style = _NUMBER if column in _SIZE_COLUMNS | _DURATION_COLUMNS | {"id", "port"} else _CELL
    return f'<td style="{style}">{_esc(format_value(column, value))}</td>'


def table_html(table: FlowTable) -> str:
    """The table as compact HTML: the newest :data:`HTML_ROWS` rows, status colored."""
    flows = list(table)
    columns = table.display_columns
    shown = flows[-HTML_ROWS:]
    head = "".join(f'<th style="{_CELL}">{_esc(c)}</th>' for c in columns)
    rows = "".join("<tr>" + "".join(_html_cell(c, f) for c in columns) + "</tr>" for f in shown)
    note = _summary(table, flows)
    if len(shown) < len(flows):
        note += f" · showing the newest {len(shown)} (use .tail(n), .where(...))"
    return (f'<div class="interceptkit-table"><table style="border-collapse:collapse;font-size:12px">'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            f'<div style="color:#666;font-size:11px;margin-top:2px">{_esc(note)}</div></div>')


def table_text(table: FlowTable) -> str:
    """The table for a terminal: aligned columns, the newest :data:`TEXT_ROWS` rows."""
    flows = list(table)
    columns = table.display_columns
    shown = flows[-TEXT_ROWS:]
    rows = [[status_text(f) if c == "status" else shorten(format_value(c, COLUMNS[c](f)), 60)
             for c in columns] for f in shown]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    lines = [f"<FlowTable: {_summary(table, flows)}>"]
    if len(shown) < len(flows):
        lines.append(f"  … {len(flows) - len(shown):,} earlier flows not shown")
    if rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
        lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


# -- one flow -------------------------------------------------------------------------


def segments(timings: Timings, now: float | None = None) -> list[tuple[str, float, float]]:
    """The phases of an exchange as ``(name, start, end)``; ``open`` runs until ``now``."""
    t = ordered(timings)
    connected = t.tls_end or t.connect_end
    points = [
        ("blocked", t.start, t.connect_start), ("connect", t.connect_start, t.connect_end),
        ("tls", t.connect_end, t.tls_end), ("send", connected or t.start, t.request_sent),
        ("wait", t.request_sent, t.response_start), ("receive", t.response_start, t.end),
    ]
    result = [(name, a, b) for name, a, b in points if a is not None and b is not None and b >= a]
    if t.end is None and now is not None:
        last = max([b for _, _, b in result] + [t.start])
        result.append(("open", last, max(now, last)))
    return result


def _svg_bars(parts: list[tuple[str, float, float]], origin: float, scale: float, x0: float,
              y: float, height: float) -> str:
    bars = []
    for name, a, b in parts:
        width = max((b - a) * scale, 1.0)
        bars.append(f'<rect x="{x0 + (a - origin) * scale:.1f}" y="{y:.1f}" width="{width:.1f}" '
                    f'height="{height}" fill="{PHASE_COLORS[name]}"><title>{name} '
                    f"{_esc(human_duration(b - a))}</title></rect>")
    return "".join(bars)


def flow_waterfall(flow: Flow, width: int = 420) -> str:
    """The phases of one flow as a small SVG bar with a legend."""
    parts = segments(flow.timings, now=time.time() if flow.state == "open" else None)
    if not parts:
        return ""
    origin, end = parts[0][1], max(b for _, _, b in parts)
    scale = (width - 2) / max(end - origin, 1e-6)
    svg = (f'<svg width="{width}" height="14" xmlns="http://www.w3.org/2000/svg">'
           f"{_svg_bars(parts, origin, scale, 1, 1, 12)}</svg>")
    legend = " ".join(
        f'<span style="white-space:nowrap"><span style="display:inline-block;width:9px;height:9px;'
        f'background:{PHASE_COLORS[n]}"></span> {n} {_esc(human_duration(b - a))}</span>'
        for n, a, b in parts)
    return f'<div style="margin-top:6px">{svg}<div style="font-size:11px;color:#444">{legend}</div></div>'


def _headers_html(message: Message) -> str:
    rows = "".join(f'<tr><td style="{_CELL};font-weight:600;vertical-align:top">{_esc(n)}</td>'
                   f'<td style="padding:1px 8px;text-align:left;word-break:break-all">{_esc(v)}</td></tr>'
                   for n, v in message.headers.items())
    return f'<table style="border-collapse:collapse;font-size:12px">{rows}</table>' if rows else ""


def hexdump(data: bytes, limit: int = HEX_BYTES) -> str:
    """Offset, hex bytes and printable characters, 16 bytes a line."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset: offset + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {binascii.hexlify(chunk, ' ').decode():<47}  |{text}|")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit:,} more bytes")
    return "\n".join(lines)


def body_kind(content_type: str, data: bytes) -> str:
    """How to preview a body: ``"image"``, ``"json"``, ``"text"`` or ``"binary"``."""
    if content_type in _IMAGES:
        return "image"
    if "json" in content_type:
        return "json"
    if content_type.startswith("text/") or any(t in content_type for t in _TEXT_TYPES):
        return "text"
    try:
        text = data[:PREVIEW_CHARS].decode("utf-8")
    except UnicodeDecodeError:
        return "binary"  # (a cut inside a multi-byte character counts too: rare, harmless)
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return "binary"
    return "json" if text.lstrip()[:1] in ("{", "[") else "text"


def _pretty_json(data: bytes, charset: str) -> str | None:
    try:
        return json.dumps(json.loads(data.decode(charset, errors="replace")), indent=2, ensure_ascii=False)
    except (ValueError, LookupError):
        return None


def _decoded(message: Message) -> tuple[bytes, list[str]]:
    notes = []
    try:
        data = message.decoded_content()
    except Exception as exc:  # truncated gzip, an unknown or uninstalled coding
        data = message.content
        notes.append(f"shown as sent: could not undo Content-Encoding ({exc})")
    if message.body_dropped:
        notes.append("body dropped to stay within max_capture_bytes; "
                     + ("read back from the save= file" if data else "not saved to a file, so it is gone"))
    elif message.truncated:
        notes.append(f"only the first {human_size(len(message.content))} of "
                     f"{human_size(message.body_size)} were kept (body_capture_limit)")
    return data, notes


def body_preview(message: Message) -> tuple[str, str, list[str]]:
    """``(kind, text, notes)``: what :func:`body_html` shows, as plain text."""
    data, notes = _decoded(message)
    kind = body_kind(message.content_type, data)
    if kind == "image":
        return kind, f"{message.content_type}, {human_size(len(data))}", notes
    if kind == "json":
        pretty = _pretty_json(data, message.charset)
        if pretty is not None:
            return kind, _cut(pretty), notes
        kind = "text"
    if kind == "text":
        try:
            return kind, _cut(data.decode(message.charset, errors="replace")), notes
        except LookupError:
            return kind, _cut(data.decode("utf-8", errors="replace")), notes
    return kind, hexdump(data), notes


def _cut(text: str) -> str:
    if len(text) <= PREVIEW_CHARS:
        return text
    return text[:PREVIEW_CHARS] + f"\n… {len(text) - PREVIEW_CHARS:,} more characters"


def _structured_html(message: Message) -> str | None:
    """JSON as a folding tree, SSE as events, forms as fields; None for other bodies."""
    ctype = message.content_type
    if not any(k in ctype for k in ("json", "event-stream", "form-urlencoded", "multipart/form-data")):
        return None
    data, _ = _decoded(message)
    text = data.decode(message.charset if message.charset else "utf-8", errors="replace") \
        if "multipart" not in ctype else ""
    if "json" in ctype:
        try:
            return views.json_html(json.loads(text))
        except ValueError:
            return None
    if "event-stream" in ctype:
        return views.sse_html(text)
    if "form-urlencoded" in ctype:
        return views.form_html(text)
    parts = views.multipart_parts(data, message.headers.get("content-type") or "")
    return views.multipart_html(parts) if parts is not None else None


def body_html(message: Message) -> str:
    """A preview: JSON as a tree, SSE events, form fields, text, an image shown, anything else as hex."""
    if not message.content and not message.body_size:
        return '<div style="color:#888;font-size:12px"><i>no body</i></div>'
    kind, text, notes = body_preview(message)
    note = "".join(f'<div style="color:#a15c00;font-size:11px">{_esc(n)}</div>' for n in notes)
    try:
        structured = _structured_html(message)
    except LookupError:  # an unknown charset: the plain preview below copes
        structured = None
    if structured is not None:
        return f"{structured}{note}"
    if kind == "image" and not message.truncated:
        data, _ = _decoded(message)
        source = f"data:{message.content_type};base64,{base64.b64encode(data).decode('ascii')}"
        return (f'<img src="{_esc(source)}" alt="{_esc(text)}" style="max-width:100%;max-height:240px">'
                f'<div style="color:#666;font-size:11px">{_esc(text)}</div>{note}')
    if kind == "image":
        kind, text = "binary", hexdump(message.content)
    return (f'<div style="color:#666;font-size:11px">{kind}</div><pre style="{_MONO};max-height:320px;'
            f'overflow:auto;white-space:pre-wrap;margin:2px 0">{_esc(text)}</pre>{note}')


def _side(title: str, first_line: str, message: Message | None, missing: str) -> str:
    if message is None:
        body = f'<div style="color:#888"><i>{_esc(missing)}</i></div>'
    else:
        body = (f'<div style="{_MONO};margin:2px 0 4px">{_esc(first_line)}</div>'
                f"{_headers_html(message)}{body_html(message)}")
    return (f'<td style="vertical-align:top;text-align:left;width:50%;padding:4px 8px">'
            f'<div style="font-weight:700">{title}</div>{body}</td>')


def _flow_facts(flow: Flow) -> list[str]:
    facts = [human_duration(flow.duration)]
    if flow.response is not None:
        facts.append(human_size(flow.response.body_size))
    tls = flow.server_tls or flow.client_tls
    if tls is not None and tls.version:
        facts.append(tls.version)
    facts.append(_alpn_fact(flow))
    if flow.client_address:
        facts.append(f"client {flow.client_address[0]}:{flow.client_address[1]}")
    return [f for f in facts if f]


def _alpn_fact(flow: Flow) -> str:
    """What ALPN selected on each TLS side ("ALPN client h2, upstream http/1.1"); "" without any."""
    sides = [(name, info.alpn) for name, info in (("client", flow.client_tls), ("upstream", flow.server_tls))
             if info is not None and info.alpn]
    return f"ALPN {', '.join(f'{name} {alpn}' for name, alpn in sides)}" if sides else ""


def flow_html(flow: Flow) -> str:
    """One flow: request and response side by side, bodies previewed, and its waterfall."""
    request, response = flow.request, flow.response
    status = f"{status_text(flow)} {response.reason if response is not None else ''}".strip()
    head = (f'<div><b>#{flow.id}</b> <span style="{_MONO}">{_esc(request.method)} '
            f'{_esc(request.url)}</span> → <b style="color:{status_color(flow)}">{_esc(status)}</b>'
            f' <span style="color:#666">{_esc(" · ".join(_flow_facts(flow)))}</span></div>')
    problems = ([flow.error] if flow.error else []) + list(flow.hook_errors)
    errors = "".join(f'<div style="color:#c62828">{_esc(p)}</div>' for p in problems)
    request_line = f"{request.method} {request.path or request.authority} {request.http_version}"
    response_line = "" if response is None else f"{response.http_version} {response.status} {response.reason}"
    missing = "in flight" if flow.state == "open" else "no response"
    sides = (_side("Request", request_line, request, "") + _side("Response", response_line, response, missing))
    websocket = views.websocket_html(flow.websocket, flow.timings.start) if flow.websocket is not None else ""
    return (f'<div class="interceptkit-flow" style="font-size:12px">{head}{errors}'
            f'<table style="width:100%;table-layout:fixed;border-collapse:collapse"><tr>{sides}</tr></table>'
            f"{websocket}{flow_waterfall(flow)}</div>")


# -- a table's waterfall -----------------------------------------------------------------


class Timeline:
    """A waterfall of many flows: SVG in Jupyter, text bars in a terminal.

    What :meth:`FlowTable.timeline` returns. ``to_svg()`` gives the SVG
    markup, e.g. to write it to a file.
    """

    LABEL = 260
    BARS = 560
    ROW = 16

    def __init__(self, flows: Sequence[Flow]) -> None:
        self.flows = list(flows)
        self._now = time.time()
        self._parts = [segments(f.timings, now=self._now) for f in self.flows]
        starts = [p[0][1] for p in self._parts if p]
        ends = [max(b for _, _, b in p) for p in self._parts if p]
        self.start = min(starts) if starts else 0.0
        self.span = max(max(ends) - self.start, 1e-6) if ends else 1e-6

    def _label(self, flow: Flow, width: int) -> str:
        target = f"{flow.request.host}{flow.request.path}" if flow.request.method != "CONNECT" \
            else flow.request.authority
        return shorten(f"#{flow.id} {flow.request.method} {target}", width)

    def _row_svg(self, index: int, flow: Flow, parts: list[tuple[str, float, float]]) -> str:
        y = 22 + index * self.ROW
        scale = self.BARS / self.span
        title = f"{flow.request.method} {flow.request.url} → {status_text(flow)}"
        return (f"<g><title>{_esc(title)}</title>"
                f'<text x="4" y="{y + 11}" font-size="11" fill="{status_color(flow)}">'
                f"{_esc(self._label(flow, 40))}</text>"
                f"{_svg_bars(parts, self.start, scale, self.LABEL, y + 2, self.ROW - 4)}"
                f'<text x="{self.LABEL + self.BARS + 6}" y="{y + 11}" font-size="11" fill="#444">'
                f"{_esc(human_duration(flow.duration))}</text></g>")

    def _axis(self) -> str:
        ticks = []
        for i in range(5):
            x = self.LABEL + self.BARS * i / 4
            ticks.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{22 + len(self.flows) * self.ROW}" '
                         f'stroke="#e4e4e4"/><text x="{x:.1f}" y="11" font-size="10" fill="#666" '
                         f'text-anchor="middle">{_esc(human_duration(self.span * i / 4) or "0")}</text>')
        return "".join(ticks)

    def to_svg(self) -> str:
        """The waterfall as a standalone SVG document."""
        width = self.LABEL + self.BARS + 70
        height = 26 + len(self.flows) * self.ROW
        rows = "".join(self._row_svg(i, f, p) for i, (f, p) in enumerate(zip(self.flows, self._parts)))
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'font-family="sans-serif">{self._axis()}{rows}</svg>')

    def _repr_html_(self) -> str:
        if not self.flows:
            return "<i>no flows</i>"
        legend = " ".join(f'<span style="color:{c}">■</span> {n}' for n, c in PHASE_COLORS.items())
        return f'<div>{self.to_svg()}<div style="font-size:11px;color:#444">{legend}</div></div>'

    def __repr__(self) -> str:
        width = 50
        lines = [f"<Timeline: {len(self.flows)} flows over {human_duration(self.span)}>"]
        for flow, parts in zip(self.flows, self._parts):
            cells = [" "] * width
            for name, a, b in parts:
                first = int((a - self.start) / self.span * (width - 1))
                last = max(first, int((b - self.start) / self.span * (width - 1)))
                for i in range(first, last + 1):
                    cells[i] = "░" if name in ("blocked", "open") else "█" if name == "receive" else "▓"
            lines.append(f"{self._label(flow, 34):<34} |{''.join(cells)}| {human_duration(flow.duration)}")
        return "\n".join(lines)


register_service("html", flow_html)
