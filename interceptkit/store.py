"""Flows on disk, losslessly: one JSON object per line (JSON Lines).

Each line is a whole flow, so a file can be appended to while a proxy runs
(``Proxy(save=...)``) and read while it grows. A crash loses at most the line
being written; :func:`read_flows` skips such a torn line (and says so in the
log) instead of refusing the whole file.

Header fields are stored as latin-1 strings (every byte maps to one
character, so nothing is lost); bodies as text when they are UTF-8 and as
base64 otherwise.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from .flow import Flow, Headers, Message, Request, Response, Timings, TLSInfo, register_service

log = logging.getLogger("interceptkit")

#: Written on every line, so later versions can read older files.
FORMAT_VERSION = 1


# -- one flow <-> one dict -------------------------------------------------------------


def _body(content: bytes) -> dict[str, str]:
    try:
        return {"text": content.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(content).decode("ascii")}


def _message(message: Message) -> dict[str, Any]:
    return {
        "http_version": message.http_version,
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in message.headers.fields],
        "body": _body(message.content),
        "body_size": message.body_size,
        "truncated": message.truncated,
    }


def _json_safe(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata values that JSON can hold as they are; the others as their repr."""
    safe: dict[str, Any] = {}
    for key, value in metadata.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = repr(value)
        safe[str(key)] = value
    return safe


def flow_to_dict(flow: Flow) -> dict[str, Any]:
    """Everything recorded about ``flow`` as JSON-ready data (see :func:`flow_from_dict`)."""
    response = flow.response
    return {
        "v": FORMAT_VERSION, "id": flow.id, "kind": flow.kind, "state": flow.state,
        "error": flow.error, "killed": flow.killed, "intercept": flow.intercept,
        "client_address": flow.client_address, "server_address": flow.server_address,
        "proxy_user": flow.proxy_user,
        "timings": dataclasses.asdict(flow.timings),
        "client_tls": dataclasses.asdict(flow.client_tls) if flow.client_tls else None,
        "server_tls": dataclasses.asdict(flow.server_tls) if flow.server_tls else None,
        "request": {**_message(flow.request), "method": flow.request.method,
                    "scheme": flow.request.scheme, "host": flow.request.host,
                    "port": flow.request.port, "path": flow.request.path,
                    "authority": flow.request.authority},
        "response": None if response is None else {
            **_message(response), "status": response.status, "reason": response.reason},
        "hook_errors": list(flow.hook_errors),
        "metadata": _json_safe(flow.metadata),
        "websocket": _websocket(flow.websocket),
    }


_WS_FIELDS = ("message_count", "dropped_records", "close_code", "close_reason", "closed_by")


def _websocket(data: Any) -> dict[str, Any] | None:
    """A WebSocket's recorded messages and close (``core.websocket.WebSocketData``)."""
    if data is None:
        return None
    messages = [{"direction": m.direction, "type": m.type, "time": m.time, "size": m.size,
                 "dropped": m.dropped, "injected": m.injected,
                 "content": m.content if isinstance(m.content, str) else _body(m.content)}
                for m in data.messages]
    return {"messages": messages, **{name: getattr(data, name) for name in _WS_FIELDS}}


def _content(body: dict[str, str]) -> bytes:
    if "base64" in body:
        return base64.b64decode(body["base64"])
    return body.get("text", "").encode("utf-8")


def _fill(message: Message, data: dict[str, Any]) -> None:
    message.content = _content(data.get("body") or {})
    message.body_size = int(data.get("body_size", len(message.content)))
    message.truncated = bool(data.get("truncated", False))


def _headers(data: dict[str, Any]) -> Headers:
    return Headers((str(n), str(v)) for n, v in data.get("headers", ()))


def _request(data: dict[str, Any]) -> Request:
    request = Request(method=data["method"], scheme=data["scheme"], host=data["host"],
                      port=int(data["port"]), path=data["path"], http_version=data["http_version"],
                      headers=_headers(data), authority=data.get("authority", ""))
    _fill(request, data)
    return request


def _response(data: dict[str, Any] | None) -> Response | None:
    if data is None:
        return None
    response = Response(status=int(data["status"]), reason=data.get("reason", ""),
                        http_version=data["http_version"], headers=_headers(data))
    _fill(response, data)
    return response


def _address(value: Any) -> tuple[str, int] | None:
    return None if value is None else (str(value[0]), int(value[1]))


def _tls(value: dict[str, Any] | None) -> TLSInfo | None:
    return None if value is None else TLSInfo(**value)


def flow_from_dict(data: dict[str, Any]) -> Flow:
    """Rebuild a flow from :func:`flow_to_dict`'s data. Raises KeyError or ValueError."""
    if int(data.get("v", FORMAT_VERSION)) > FORMAT_VERSION:
        raise ValueError(f"flow format {data['v']} is newer than this interceptkit reads")
    return Flow(
        id=int(data["id"]), request=_request(data["request"]), response=_response(data.get("response")),
        client_address=_address(data.get("client_address")),
        server_address=_address(data.get("server_address")),
        proxy_user=data.get("proxy_user"),
        error=data.get("error"), timings=Timings(**data.get("timings", {})),
        client_tls=_tls(data.get("client_tls")), server_tls=_tls(data.get("server_tls")),
        kind=data.get("kind", "http"), state=data.get("state", "done"),
        killed=bool(data.get("killed", False)), intercept=data.get("intercept"),
        hook_errors=list(data.get("hook_errors", [])), metadata=dict(data.get("metadata", {})),
        websocket=_load_websocket(data.get("websocket")),
    )


def _load_websocket(data: dict[str, Any] | None) -> Any:
    if data is None:
        return None
    from .core.websocket import WebSocketData, WebSocketMessage

    websocket = WebSocketData()
    for m in data.get("messages", []):
        content = m["content"] if isinstance(m["content"], str) else _content(m["content"])
        websocket.messages.append(WebSocketMessage(m["direction"], m["type"], content, m["time"],
                                                   m.get("size", 0), m.get("dropped", False),
                                                   m.get("injected", False)))
    for name in _WS_FIELDS:
        if name in data:
            setattr(websocket, name, data[name])
    return websocket


def _line(flow: Flow) -> str:
    return json.dumps(flow_to_dict(flow), separators=(",", ":"), ensure_ascii=False) + "\n"


# -- files --------------------------------------------------------------------------------


def write_flows(flows: Iterable[Flow], path: str | os.PathLike[str]) -> int:
    """Replace ``path`` with ``flows``, one per line; returns how many were written."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    count = 0
    with partial.open("w", encoding="utf-8", newline="\n") as file:
        for flow in flows:
            file.write(_line(flow))
            count += 1
    os.replace(partial, target)
    return count


def read_flows(path: str | os.PathLike[str]) -> list[Flow]:
    """Every flow in a JSON-lines file; torn or unreadable lines are skipped and logged."""
    flows: list[Flow] = []
    skipped = 0
    with Path(path).open("r", encoding="utf-8") as file:
        for line in file:
            if not line.strip():
                continue
            try:
                flows.append(flow_from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                skipped += 1
    if skipped:
        log.warning("%s: skipped %d unreadable line(s)", path, skipped)
    return flows


def read_body(path: str | os.PathLike[str], offset: int, side: str) -> bytes:
    """The ``side`` ("request" or "response") body of the flow whose line starts at ``offset``.

    Raises OSError, ValueError or KeyError when the file no longer holds it.
    """
    with Path(path).open("rb") as file:
        file.seek(offset)
        data = json.loads(file.readline())
    message = data[side]
    if message is None:
        return b""
    return _content(message.get("body") or {})


class FlowRecorder:
    """Appends each finished flow to a JSON-lines file as it happens.

    Open it with :meth:`open`. Every line is flushed at once, so a crash of
    the process loses nothing that was already written. A write error is
    logged (once) and does not stop the proxy.
    """

    def __init__(self, path: Path, file: IO[str], redact: Any = None) -> None:
        self.path = path
        self._file = file
        #: A :class:`~interceptkit.Redact` applied to each flow before it is written (or None).
        self.redact = redact
        self._failed = False
        #: How many flows were written.
        self.written = 0

    @classmethod
    def open(cls, path: str | os.PathLike[str], redact: Any = None) -> FlowRecorder:
        """Open ``path`` for appending (created if missing). Raises OSError."""
        target = Path(path)
        file = target.open("a", encoding="utf-8", newline="\n")
        if file.tell() > 0 and not _ends_with_newline(target):
            file.write("\n")  # a torn last line from a crash stays on its own
        return cls(target, file, redact)

    def write(self, flow: Flow) -> int | None:
        """Append ``flow``; returns where its line starts (for :func:`read_body`), None if it failed."""
        try:
            offset = self._file.tell()  # a byte position: UTF-8 writes leave no encoder state
            self._file.write(_line(flow if self.redact is None else self.redact.flow(flow)))
            self._file.flush()
            self.written += 1
            return offset
        except (OSError, ValueError) as exc:
            if not self._failed:
                self._failed = True
                log.error("cannot save flows to %s: %s", self.path, exc)
            return None

    def close(self) -> None:
        self._file.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


register_service("to_dict", flow_to_dict)
register_service("from_dict", flow_from_dict)
