"""HAR 1.2 (HTTP Archive) in and out.

The format browsers' developer tools export and import
(http://www.softwareishard.com/blog/har-12-spec/). Out: one entry per
finished HTTP exchange, bodies as text or base64, timings in milliseconds,
Chromium's custom fields where they carry something (``_error``,
``_webSocketMessages``). In: files from Chromium, Firefox, other proxies and
this module, tolerant of what they leave out.

HAR keeps response bodies decoded (``content.text`` is after gzip), so an
imported flow's body is the decoded one and its ``Content-Encoding`` field is
moved to ``flow.metadata["har_content_encoding"]``; the flow stays
consistent with its own headers. For a lossless copy use
``FlowTable.save``/``load``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ._wire import DEFAULT_PORTS
from .columns import ordered
from .core.websocket import WebSocketData, WebSocketMessage
from .display import body_kind
from .flow import Flow, Headers, Message, Request, Response, Timings
from .redact import Redact
from .vocab import protocol_name

HAR_VERSION = "1.2"

# -- out --------------------------------------------------------------------------


def to_har(flows: list[Flow], *, creator: str = "interceptkit", redact: Redact | None = None) -> dict[str, Any]:
    """A HAR 1.2 document of the finished HTTP exchanges among ``flows``.

    ``redact`` says what to hide (default :class:`Redact()`: the credential
    headers); ``Redact(headers=())`` writes everything.
    """
    from . import __version__

    hide = redact if redact is not None else Redact()
    entries = [_entry(hide.flow(f)) for f in flows if f.state != "open" and f.request.method != "CONNECT"]
    return {"log": {"version": HAR_VERSION, "creator": {"name": creator, "version": __version__},
                    "pages": [], "entries": entries}}


def write(document: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a HAR document as UTF-8 JSON."""
    with Path(path).open("w", encoding="utf-8") as file:
        json.dump(document, file, indent=1, ensure_ascii=False)


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(a: float | None, b: float | None) -> float:
    return -1 if a is None or b is None else round(max(b - a, 0.0) * 1000, 3)


def har_timings(t: Timings) -> dict[str, float]:
    """The HAR ``timings`` of an exchange; time nobody measured counts as ``blocked``.

    ``connect`` includes ``ssl``, as the spec asks; send, wait and receive
    are never -1.
    """
    t = ordered(t)
    connected = t.tls_end or t.connect_end
    timings = {"blocked": _ms(t.start, t.connect_start), "dns": -1.0,
               "connect": _ms(t.connect_start, connected), "ssl": _ms(t.connect_end, t.tls_end),
               "send": max(_ms(connected or t.start, t.request_sent), 0),
               "wait": max(_ms(t.request_sent, t.response_start), 0),
               "receive": max(_ms(t.response_start, t.end), 0)}
    unaccounted = _ms(t.start, t.end) - _total(timings)
    if unaccounted > 0.001:  # hooks, mocks, failures: no phase of its own
        timings["blocked"] = round(max(timings["blocked"], 0) + unaccounted, 3)
    return timings


def _total(timings: dict[str, float]) -> float:
    # ssl is already inside connect (HAR 1.2), so it is not added again.
    return round(sum(v for k, v in timings.items() if k != "ssl" and v > 0), 3)


def _entry(flow: Flow) -> dict[str, Any]:
    timings = har_timings(flow.timings)
    entry: dict[str, Any] = {
        "startedDateTime": _iso(flow.timings.start), "time": _total(timings),
        "request": _request(flow.request), "response": _response(flow),
        "cache": {}, "timings": timings, "_id": flow.id,
    }
    if flow.server_address is not None:
        entry["serverIPAddress"] = flow.server_address[0]
    if flow.client_address is not None:
        entry["connection"] = str(flow.client_address[1])
    if flow.proxy_user is not None:
        entry["_proxyUser"] = flow.proxy_user  # HAR 1.2 has no field for it: a custom one (4.1)
    notes = [e for e in [flow.error, *flow.hook_errors] if e]
    if notes:
        entry["comment"] = "; ".join(notes)
    messages = _websocket_messages(flow)
    if messages:
        entry["_resourceType"] = "websocket"
        entry["_webSocketMessages"] = messages
    return entry


def _pairs(items: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": n, "value": v} for n, v in items]


def _request(request: Request) -> dict[str, Any]:
    data: dict[str, Any] = {
        "method": request.method, "url": request.url, "httpVersion": har_http_version(request.http_version),
        "cookies": _request_cookies(request.headers), "headers": _pairs(request.headers.items()),
        "queryString": _pairs(parse_qsl(request.path.partition("?")[2], keep_blank_values=True)),
        "headersSize": -1, "bodySize": request.body_size,
    }
    if request.content or request.body_size:
        data["postData"] = _post_data(request)
    return data


def _post_data(request: Request) -> dict[str, Any]:
    mime = request.headers.get("content-type") or ""
    text, encoding = _text_or_base64(request, request.content)
    post: dict[str, Any] = {"mimeType": mime, "text": text}
    if encoding:
        post["_encoding"] = encoding  # HAR 1.2 has no encoding for postData
    elif request.content_type == "application/x-www-form-urlencoded":
        post["params"] = _pairs(parse_qsl(text, keep_blank_values=True))
    return post


def _text_or_base64(message: Message, data: bytes) -> tuple[str, str | None]:
    """The body as text when it is text in its charset, else base64."""
    if body_kind(message.content_type, data) not in ("image", "binary"):
        try:
            return data.decode(message.charset), None
        except (UnicodeDecodeError, LookupError):
            pass
    return base64.b64encode(data).decode("ascii"), "base64"


def _response(flow: Flow) -> dict[str, Any]:
    response = flow.response
    if response is None:  # the shape Chromium gives a failed request
        return {"status": 0, "statusText": "", "httpVersion": "", "cookies": [], "headers": [],
                "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
                "headersSize": -1, "bodySize": -1, "_error": flow.error or "no response"}
    data: dict[str, Any] = {
        "status": response.status, "statusText": response.reason,
        "httpVersion": har_http_version(response.http_version),
        "cookies": _response_cookies(response.headers), "headers": _pairs(response.headers.items()),
        "content": _content(response), "redirectURL": response.headers.get("location") or "",
        "headersSize": _head_size(response), "bodySize": response.body_size,
    }
    if flow.error:
        data["_error"] = flow.error
    return data


def har_http_version(http_version: str) -> str:
    """``httpVersion`` as Chrome's DevTools write it: "http/2.0" for HTTP/2, "h3" for HTTP/3.

    (Firefox writes "HTTP/2"; both, "h2" and the rest are read back as
    "HTTP/2".) HTTP/1.x stays as the flow has it, e.g. "HTTP/1.1".
    """
    protocol = protocol_name(http_version)
    return {"HTTP/2": "http/2.0", "HTTP/3": "h3"}.get(protocol, http_version)


def _head_size(response: Response) -> int:
    """Bytes of the status line and header block, CRLFs included, as HTTP/1.1 carries them.

    -1 (unknown) for HTTP/2 and /3, as browsers write it: their heads are
    compressed, so an HTTP/1.1 size would be made up.
    """
    if protocol_name(response.http_version) in ("HTTP/2", "HTTP/3"):
        return -1
    first = f"{response.http_version} {response.status} {response.reason}\r\n"
    return len(first.encode("latin-1", "replace")) + sum(len(n) + len(v) + 4 for n, v in response.headers.fields) + 2


def _content(response: Response) -> dict[str, Any]:
    mime = response.headers.get("content-type") or "x-unknown"
    content: dict[str, Any] = {"size": response.body_size, "mimeType": mime}
    try:
        data = response.decoded_content()
    except Exception as exc:  # a truncated or unknown Content-Encoding: no text rather than a wrong one
        content["comment"] = f"body not included: could not undo Content-Encoding ({exc})"
        return content
    if not response.truncated:
        content["size"] = len(data)
        if response.body_size < len(data):
            content["compression"] = len(data) - response.body_size
    else:
        content["comment"] = (f"interceptkit kept the first {len(response.content)} "
                              f"of {response.body_size} bytes (body_capture_limit)")
    if data or not response.truncated:
        content["text"], encoding = _text_or_base64(response, data)
        if encoding:
            content["encoding"] = encoding
    return content


def _request_cookies(headers: Headers) -> list[dict[str, str]]:
    cookies = []
    for value in headers.get_all("cookie"):
        for part in value.split(";"):
            name, sep, val = part.strip().partition("=")
            if sep:
                cookies.append({"name": name, "value": val})
    return cookies


def _response_cookies(headers: Headers) -> list[dict[str, Any]]:
    return [c for c in (_set_cookie(v) for v in headers.get_all("set-cookie")) if c is not None]


def _set_cookie(value: str) -> dict[str, Any] | None:
    first, *attributes = value.split(";")
    name, sep, val = first.strip().partition("=")
    if not sep:
        return None
    cookie: dict[str, Any] = {"name": name, "value": val}
    for attribute in attributes:
        key, _, arg = attribute.strip().partition("=")
        key = key.lower()
        if key in ("path", "domain"):
            cookie[key] = arg
        elif key == "expires":
            try:
                cookie["expires"] = parsedate_to_datetime(arg).isoformat()
            except (TypeError, ValueError):
                pass
        elif key in ("httponly", "secure"):
            cookie["httpOnly" if key == "httponly" else "secure"] = True
        elif key == "samesite":
            cookie["sameSite"] = arg
    return cookie


def _websocket_messages(flow: Flow) -> list[dict[str, Any]]:
    """Chromium's ``_webSocketMessages`` for a WebSocket flow's data messages."""
    data = getattr(flow, "websocket", None)
    result = []
    for message in getattr(data, "messages", ()):
        if message.type not in ("text", "binary"):
            continue
        content = message.content
        text = content if isinstance(content, str) else base64.b64encode(content).decode("ascii")
        result.append({"type": "send" if message.direction == "client" else "receive",
                       "time": message.time, "opcode": 1 if message.type == "text" else 2, "data": text})
    return result


# -- in -----------------------------------------------------------------------------


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a HAR file (UTF-8, with or without a byte-order mark)."""
    with Path(path).open("r", encoding="utf-8-sig") as file:
        document = json.load(file)
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a HAR file (no log object)")
    return document


def from_har(document: dict[str, Any]) -> list[Flow]:
    """The flows of a HAR document; entries that are not HTTP(S) or WS(S) are skipped.

    Raises ValueError when ``document`` has no ``log.entries`` list.
    """
    entries = (document.get("log") or {}).get("entries")
    if not isinstance(entries, list):
        raise ValueError("not a HAR document: it has no log.entries list")
    flows = []
    for index, entry in enumerate(entries, 1):
        url = urlsplit(str(entry.get("request", {}).get("url", "")))
        if url.scheme in DEFAULT_PORTS and url.hostname:
            flows.append(_flow(entry, index))
    return flows


def _flow(entry: dict[str, Any], index: int) -> Flow:
    request = _import_request(entry["request"])
    response, error = _import_response(entry.get("response") or {})
    flow_id = entry.get("_id")
    flow = Flow(id=flow_id if isinstance(flow_id, int) else index, request=request, response=response,
                error=error, state="error" if error else "done",
                timings=_import_timings(entry))
    address = entry.get("serverIPAddress")
    if address:
        flow.server_address = (str(address).strip("[]"), request.port)
    flow.metadata["source"] = "har"
    if isinstance(entry.get("_proxyUser"), str):
        flow.proxy_user = entry["_proxyUser"]
    for key in ("pageref", "_resourceType", "comment"):
        if entry.get(key):
            flow.metadata[key.lstrip("_")] = entry[key]
    if response is not None and "content-encoding" in response.headers:
        # content.text is decoded (HAR 1.2): keep the flow consistent with its headers.
        flow.metadata["har_content_encoding"] = response.headers.pop("content-encoding")
    messages = entry.get("_webSocketMessages")
    if isinstance(messages, list):
        flow.websocket = _import_websocket(messages)
    return flow


#: Chromium's WebSocket opcodes (RFC 6455 5.2) and the message types we record.
_OPCODES = {1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


def _import_websocket(messages: list[Any]) -> WebSocketData:
    """Chromium's ``_webSocketMessages`` as recorded messages; malformed items are skipped."""
    websocket = WebSocketData()
    for item in messages:
        message = _import_ws_message(item) if isinstance(item, dict) else None
        if message is not None:
            websocket.record(message)
    return websocket


def _import_ws_message(item: dict[str, Any]) -> WebSocketMessage | None:
    kind = _OPCODES.get(item.get("opcode", 1) if isinstance(item.get("opcode", 1), int) else -1)
    data = item.get("data", "")
    if kind is None or not isinstance(data, str):
        return None
    content: str | bytes = data
    if kind != "text":
        try:  # Chromium writes binary payloads in base64
            content = base64.b64decode(data, validate=True)
        except ValueError:
            content = data.encode("utf-8")
    direction = "client" if item.get("type") == "send" else "server"
    size = len(content.encode("utf-8")) if isinstance(content, str) else len(content)
    return WebSocketMessage(direction, kind, content, _ws_time(item.get("time")), size)


def _ws_time(value: Any) -> float:
    # Chromium writes seconds since the epoch; accept an ISO date too.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return _parse_time(value)
    except (ValueError, TypeError):
        return 0.0


def _http_version(value: Any) -> str:
    """A HAR ``httpVersion`` as a flow's: "h2", "http/2.0", "HTTP/2" ... all read as "HTTP/2"."""
    text = str(value or "").strip()
    protocol = protocol_name(text)
    if protocol in ("HTTP/2", "HTTP/3"):
        return protocol
    if text.lower().startswith("http/"):
        return "HTTP/" + text[5:]
    return "HTTP/1.1"


def _import_headers(items: Any) -> Headers:
    # HTTP/2 and /3 pseudo-header fields (":authority") are not header fields.
    return Headers((str(h.get("name", "")), str(h.get("value", ""))) for h in items or ()
                   if not str(h.get("name", "")).startswith(":"))


def _import_request(data: dict[str, Any]) -> Request:
    url = urlsplit(str(data["url"]))
    scheme = url.scheme.lower()
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    request = Request(method=str(data.get("method", "GET")), scheme=scheme, host=url.hostname or "",
                      port=url.port or DEFAULT_PORTS[scheme], path=path,
                      http_version=_http_version(data.get("httpVersion")),
                      headers=_import_headers(data.get("headers")))
    post = data.get("postData")
    if isinstance(post, dict):
        request.content = _post_body(post, request)
    size = data.get("bodySize")
    request.body_size = int(size) if isinstance(size, (int, float)) and size >= 0 else len(request.content)
    request.truncated = len(request.content) < request.body_size
    return request


def _post_body(post: dict[str, Any], request: Request) -> bytes:
    if "text" in post and post["text"] is not None:
        encoding = post.get("encoding") or post.get("_encoding")
        return _decode_text(str(post["text"]), encoding, request.charset)
    params = post.get("params") or []
    return urlencode([(p.get("name", ""), p.get("value", "")) for p in params]).encode()


def _decode_text(text: str, encoding: str | None, charset: str) -> bytes:
    if encoding == "base64":
        return base64.b64decode(text)
    try:
        return text.encode(charset)
    except (UnicodeEncodeError, LookupError):
        return text.encode("utf-8")


def _import_response(data: dict[str, Any]) -> tuple[Response | None, str | None]:
    status = int(data.get("status") or 0)
    error = data.get("_error") or None
    if status <= 0:
        return None, str(error or "no response")
    response = Response(status=status, reason=str(data.get("statusText", "")),
                        http_version=_http_version(data.get("httpVersion")),
                        headers=_import_headers(data.get("headers")))
    content = data.get("content") or {}
    if content.get("text") is not None:
        response.content = _decode_text(str(content["text"]), content.get("encoding"), response.charset)
    size = data.get("bodySize")
    response.body_size = int(size) if isinstance(size, (int, float)) and size >= 0 else len(response.content)
    expected = content.get("size")
    expected = int(expected) if isinstance(expected, (int, float)) and expected >= 0 else response.body_size
    response.truncated = len(response.content) < expected
    return response, (str(error) if error else None)


_FRACTION = re.compile(r"\.(\d+)")


def _parse_time(value: Any) -> float:
    text = str(value).strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.10's fromisoformat wants exactly 3 or 6 digits of fraction.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _import_timings(entry: dict[str, Any]) -> Timings:
    """Points in time from HAR's durations, inverting :func:`har_timings`."""
    start = _parse_time(entry["startedDateTime"])
    raw = entry.get("timings") or {}

    def get(name: str) -> float | None:
        value = raw.get(name)
        return value / 1000 if isinstance(value, (int, float)) and value >= 0 else None

    t = Timings(start=start)
    cursor = start + (get("blocked") or 0) + (get("dns") or 0)
    connect, ssl = get("connect"), get("ssl")
    if connect is not None:
        t.connect_start = cursor
        t.connect_end = cursor + connect - (ssl or 0)
        t.tls_end = cursor + connect if ssl is not None else None
        cursor += connect
    t.request_sent = cursor + (get("send") or 0)
    t.response_start = t.request_sent + (get("wait") or 0)
    t.end = t.response_start + (get("receive") or 0)
    total = entry.get("time")
    if isinstance(total, (int, float)) and total > 0 and t.end < start + total / 1000 - 1e-6:
        t.end = start + total / 1000  # time spent in phases the file does not list
    return t
