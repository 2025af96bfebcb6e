"""The columns of a flow table: each name and how to compute it from a flow.

Below ``display`` and ``table`` in the module order: both show these
columns, so they are defined once, here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ._wire import format_address
from .flow import Flow, Timings
from .vocab import protocol_name

_POINTS = ("start", "connect_start", "connect_end", "tls_end", "request_sent", "response_start", "end")


def ordered(timings: Timings) -> Timings:
    """The same points in time, each moved to no earlier than the one before it.

    The core stamps ``request_sent`` when the request is queued, which can
    be before the upstream connection is up; phases must not overlap.
    """
    values: dict[str, float | None] = {}
    floor = timings.start
    for name in _POINTS:
        value = getattr(timings, name)
        if value is not None:
            floor = value = max(value, floor)
        values[name] = value
    return Timings(**values)  # type: ignore[arg-type]




def _address(address: tuple[str, int] | None) -> str | None:
    if address is None:
        return None
    host, port = address[0], address[1]
    return format_address(host, port)


def _time(flow: Flow) -> datetime | None:
    start = flow.timings.start
    return datetime.fromtimestamp(start).astimezone() if start else None


def _tls_version(flow: Flow) -> str | None:
    for info in (flow.server_tls, flow.client_tls):
        if info is not None and info.version:
            return info.version
    return None


def _protocol(flow: Flow) -> str:
    """The protocol the client spoke: its request's version (the response it got is in the same one)."""
    return protocol_name(flow.request.http_version)


def _alpn(side: str) -> Callable[[Flow], str | None]:
    def get(flow: Flow) -> str | None:
        info = flow.client_tls if side == "client" else flow.server_tls
        return None if info is None else info.alpn

    return get


def _content_type(flow: Flow) -> str | None:
    response = flow.response
    return (response.content_type or None) if response is not None else None


def _response_attr(name: str) -> Callable[[Flow], Any]:
    def get(flow: Flow) -> Any:
        response = flow.response
        return None if response is None else getattr(response, name)

    return get


def _phase(name: str) -> Callable[[Flow], float | None]:
    return lambda flow: ordered(flow.timings).phases()[name]


#: Every column: its name and how to compute it from a flow. Durations are
#: in seconds (floats), sizes in bytes of body, times are aware datetimes.
COLUMNS: dict[str, Callable[[Flow], Any]] = {
    "id": lambda f: f.id,
    "time": _time,
    "state": lambda f: f.state,
    "client": lambda f: _address(f.client_address),
    "proxy_user": lambda f: f.proxy_user,
    "method": lambda f: f.request.method,
    "scheme": lambda f: f.request.scheme,
    "host": lambda f: f.request.host,
    "port": lambda f: f.request.port,
    "path": lambda f: f.request.path,
    "url": lambda f: f.request.url,
    "status": _response_attr("status"),
    "reason": _response_attr("reason"),
    "request_size": lambda f: f.request.body_size,
    "response_size": _response_attr("body_size"),
    "content_type": _content_type,
    "duration": lambda f: f.duration,
    "connect": _phase("connect"),
    "tls": _phase("tls"),
    "send": _phase("send"),
    "wait": _phase("wait"),
    "receive": _phase("receive"),
    "tls_version": _tls_version,
    "error": lambda f: f.error,
    # Added after "error": the Arrow schema only grows at its end.
    "protocol": _protocol,
    "client_alpn": _alpn("client"),
    "server_alpn": _alpn("server"),
}
_PHASES = ("connect", "tls", "send", "wait", "receive")
