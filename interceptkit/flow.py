"""The data everyone shares: one :class:`Flow` per exchange.

The core builds flows, hooks read and change them, the table shows them. The
objects are plain and cheap because the proxy builds one per request: header
fields stay as the raw ``(name, value)`` byte pairs they arrived as, and the
string views are computed only when someone asks.
"""

from __future__ import annotations

import json as _json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from . import export as _export
from ._wire import format_authority, parse_absolute_url
from .codings import decode_content
from .flow_owner import FlowOwner, ReplayError, lent_service, owner_of
from .headers import HeaderFields, Headers
from .vocab import FlowKind, FlowState

__all__ = ["Flow", "FlowOwner", "HeaderFields", "Headers", "Message", "ReplayError", "Request", "Response",
           "TLSInfo", "Timings"]


def _stream_from(response: Response, body: Any) -> None:
    """A streamed mock body; a Path's size (or a file's) frames it with Content-Length."""
    if isinstance(body, str):  # iterating it would give characters, not bytes
        raise TypeError("respond(body=...) takes bytes, an iterator of bytes, a binary file or a Path; use text=")
    response.source = body
    response.headers.pop("Content-Length")
    size = body.stat().st_size if isinstance(body, Path) else None
    if hasattr(body, "fileno") and hasattr(body, "tell"):
        size = os.fstat(body.fileno()).st_size - body.tell()
    if size is not None and "transfer-encoding" not in response.headers:
        response.headers["Content-Length"] = str(size)


class Message:
    """What requests and responses share: headers, body, version."""

    __slots__ = ("http_version", "headers", "_content", "_reload", "body_dropped", "body_size", "truncated",
                 "stream")
    _content: bytes
    #: Reads a dropped body back (from the save= file); None while the body is held here.
    _reload: Callable[[], bytes] | None

    def __init__(self, http_version: str, headers: Headers, content: bytes = b"") -> None:
        self.http_version = http_version
        self.headers = headers
        # (the content setter's fields, without the property call: two messages per request)
        self._content = content
        self._reload = None
        self.body_dropped = False
        #: Size of the whole body on the wire, after transfer decoding.
        self.body_size = len(content)
        self.truncated = False
        #: Set by a ``*_headers`` hook to pass this body through unbuffered.
        self.stream = False

    @property
    def content(self) -> bytes:
        """The body as captured: complete unless ``truncated`` (then a prefix).

        Empty when the capture budget dropped it (``body_dropped``), unless
        the proxy saves to a file (``save=``): then it is read back from there.
        """
        if self._reload is None:
            return self._content
        try:
            return self._reload()
        except (OSError, ValueError, KeyError):  # the file moved or was cut short
            return b""

    @content.setter
    def content(self, value: bytes) -> None:
        self._content = value
        self._reload = None
        #: Whether the capture budget (``max_capture_bytes``) dropped this body.
        self.body_dropped = False

    def capture_piece(self, data: bytes, limit: int) -> None:
        """Count ``data`` as body bytes on the wire and keep a prefix of at most ``limit`` bytes.

        The proxy calls this for each body piece as it passes; a hook sees
        ``content`` (cut short: ``truncated``) and ``body_size`` (all of it).
        """
        self.body_size += len(data)
        kept = self._content if self._reload is None else self.content  # (no property call per piece)
        if len(kept) < limit:
            self.content = kept + data[: limit - len(kept)] if kept else data[:limit]
        if self.body_size > limit:
            self.truncated = True

    def _drop_body(self, reload: Callable[[], bytes] | None) -> int:
        """Forget the captured body (the capture budget is spent); returns the bytes freed.

        ``reload`` reads it back (from the ``save=`` file) when someone asks.
        """
        freed = len(self._content)
        self._content = b""
        self._reload = reload
        self.body_dropped = True
        return freed

    def set_content(self, content: bytes) -> None:
        """Replace the body and keep Content-Length in step with it."""
        self.content = content
        self.body_size = len(content)
        self.truncated = False
        if "transfer-encoding" not in self.headers:
            self.headers["Content-Length"] = str(len(content))

    def _assign(self, other: Message) -> None:
        """Take every field of ``other`` (a breakpoint's timeout puts a message back as it was)."""
        for cls in type(self).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                setattr(self, slot, getattr(other, slot))

    def decoded_content(self) -> bytes:
        """The body with Content-Encoding (gzip, deflate; br, zstd if installed) undone."""
        encoding = self.headers.get("content-encoding")
        return decode_content(self.content, encoding) if encoding else self.content

    @property
    def charset(self) -> str:
        ctype = self.headers.get("content-type", "") or ""
        for part in ctype.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"').strip()
        return "utf-8"

    @property
    def text(self) -> str:
        """The decoded body as text, using the declared charset (UTF-8 if none)."""
        try:
            return self.decoded_content().decode(self.charset, errors="replace")
        except LookupError:
            return self.decoded_content().decode("utf-8", errors="replace")

    @text.setter
    def text(self, value: str) -> None:
        self.headers.pop("content-encoding")
        self.set_content(value.encode(self.charset if self.charset else "utf-8"))

    def json(self) -> Any:
        return _json.loads(self.decoded_content())

    @property
    def content_type(self) -> str:
        return (self.headers.get("content-type") or "").split(";")[0].strip().lower()


class Request(Message):
    """An HTTP request as the client sent it (and hooks may have changed it)."""

    __slots__ = ("method", "scheme", "host", "port", "path", "authority")

    def __init__(
        self,
        *,
        method: str,
        scheme: str,
        host: str,
        port: int,
        path: str,
        http_version: str = "HTTP/1.1",
        headers: Headers | None = None,
        content: bytes = b"",
        authority: str = "",
    ) -> None:
        super().__init__(http_version, headers if headers is not None else Headers(), content)
        self.method = method
        self.scheme = scheme
        self.host = host
        self.port = port
        #: The origin-form target: path plus query, e.g. ``/search?q=1``.
        self.path = path
        #: The authority as the client wrote it (for CONNECT: ``host:port``).
        self.authority = authority

    @property
    def url(self) -> str:
        netloc = format_authority(self.host, self.port, self.scheme)
        if self.method == "CONNECT":
            return f"{netloc}"
        return f"{self.scheme}://{netloc}{self.path}"

    @url.setter
    def url(self, value: str) -> None:
        scheme, host, port, path = parse_absolute_url(value.encode("latin-1"))
        self.scheme, self.host, self.port, self.path = scheme, host, port, path

    @property
    def query(self) -> dict[str, str]:
        """The query string parsed into a dict (the last value wins)."""
        _, _, qs = self.path.partition("?")
        return dict(parse_qsl(qs, keep_blank_values=True))

    @property
    def path_only(self) -> str:
        return self.path.partition("?")[0]

    def copy(self) -> Request:
        """An independent copy: editing it (headers, body, URL) leaves this one alone."""
        new = Request(method=self.method, scheme=self.scheme, host=self.host, port=self.port,
                      path=self.path, http_version=self.http_version, headers=self.headers.copy(),
                      content=self.content, authority=self.authority)
        new.body_size, new.truncated, new.stream = self.body_size, self.truncated, self.stream
        return new

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Response(Message):
    """An HTTP response as the upstream sent it (or a hook made it)."""

    __slots__ = ("status", "reason", "source")

    def __init__(
        self,
        *,
        status: int,
        reason: str = "",
        http_version: str = "HTTP/1.1",
        headers: Headers | None = None,
        content: bytes = b"",
    ) -> None:
        super().__init__(http_version, headers if headers is not None else Headers(), content)
        self.status = status
        self.reason = reason
        #: A mock's streamed body (``respond(body=...)``): an iterator of bytes, a binary file or a Path.
        self.source: Any = None

    def copy(self) -> Response:
        """An independent copy: editing it leaves this one alone."""
        new = Response(status=self.status, reason=self.reason, http_version=self.http_version,
                       headers=self.headers.copy(), content=self.content)
        new.body_size, new.truncated, new.stream = self.body_size, self.truncated, self.stream
        return new

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} {self.body_size}B>"


@dataclass(slots=True)
class Timings:
    """Points in time (seconds since the epoch) in the life of an exchange."""

    start: float = 0.0
    connect_start: float | None = None
    connect_end: float | None = None
    tls_end: float | None = None
    request_sent: float | None = None
    response_start: float | None = None
    end: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def phases(self) -> dict[str, float | None]:
        """Durations in seconds: connect, tls, send, wait, receive (None if not seen)."""

        def span(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else max(0.0, b - a)

        connected = self.tls_end or self.connect_end
        return {
            "connect": span(self.connect_start, self.connect_end),
            "tls": span(self.connect_end, self.tls_end),
            "send": span(connected or self.start, self.request_sent),
            "wait": span(self.request_sent, self.response_start),
            "receive": span(self.response_start, self.end),
        }


@dataclass(slots=True)
class TLSInfo:
    """What was negotiated on one TLS session."""

    sni: str | None = None
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None


@dataclass(slots=True, eq=False)
class Flow:
    """One exchange: a request, its response (or error), and what we know of it.

    Hooks change ``request`` and ``response`` in place, or call
    :meth:`respond` (answer without contacting the upstream) or :meth:`kill`.
    """

    id: int
    request: Request
    client_address: tuple[str, int] | None = None
    server_address: tuple[str, int] | None = None
    response: Response | None = None
    error: str | None = None
    timings: Timings = field(default_factory=Timings)
    client_tls: TLSInfo | None = None
    server_tls: TLSInfo | None = None
    #: The user the client authenticated as (``Proxy(proxy_auth=...)``), on
    #: every flow of that client connection; None without proxy authentication.
    proxy_user: str | None = None
    #: "http" (one exchange), "tunnel" (a CONNECT), "upgrade" (a 101 relayed
    #: as bytes) or "websocket" (a 101 parsed as messages): vocab.FlowKind.
    kind: FlowKind = "http"
    #: "new" (an intercepted CONNECT not yet shown), "open" while in flight,
    #: then "done" or "error": vocab.FlowState.
    state: FlowState = "open"
    killed: bool = False
    kill_reset: bool = False  # kill(reset=True): the connection ends with a TCP reset, not a close
    truncate_after: int | None = None  # set by a hook: that many response body bytes, then a close
    pace_body: tuple[int, float] | None = None  # set by a hook: (bytes, seconds): the body in pieces, paced
    pace_upload: tuple[int, float] | None = None  # the same for the request body, towards the upstream
    #: Set by :meth:`hold`: seconds the exchange waits after this hook (inf: until released).
    hold_for: float | None = None
    #: For a CONNECT: a ``tunnel`` hook may set False to relay it undecrypted.
    intercept: bool | None = None
    #: For a WebSocket flow: its messages and close (core.websocket.WebSocketData).
    websocket: Any = None
    hook_errors: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Whoever captured this flow (the Proxy sets itself when the flow starts);
    #: what replay() and resume() go through. None for a flow loaded from a file.
    _owner: FlowOwner | None = field(default=None, repr=False, compare=False)

    def respond(
        self,
        status: int = 200,
        *,
        content: bytes | None = None,
        text: str | None = None,
        json: Any = None,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
        reason: str = "",
        body: Any = None,
    ) -> Response:
        """Answer the client with this response instead of the upstream's.

        ``body``: a streamed body (an iterator of bytes, a binary file object
        or a ``Path``), sent piece by piece as the client reads it.
        """
        header_list = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        hdrs = Headers(header_list)
        body = content if content is not None else body
        if json is not None:
            body = _json.dumps(json).encode()
            if "content-type" not in hdrs:
                hdrs["Content-Type"] = "application/json"
        elif text is not None:
            body = text.encode("utf-8")
            if "content-type" not in hdrs:
                hdrs["Content-Type"] = "text/plain; charset=utf-8"
        response = Response(status=status, reason=reason, headers=hdrs)
        response.set_content(body if isinstance(body, bytes) else b"")
        if body is not None and not isinstance(body, bytes):
            _stream_from(response, body)
        self.response = response
        self.metadata["mocked"] = True
        self._release()
        return response

    def kill(self, reset: bool = False) -> None:
        """Close the client connection without an answer; ``reset=True``: with a TCP reset (RST)."""
        self.killed, self.kill_reset = True, reset
        self._release()

    def hold(self, seconds: float | None = None) -> None:
        """Hold the exchange when this hook returns: ``seconds``, or (None) until :meth:`release`
        or the client goes away. The core waits on its own timer; no thread or task sleeps."""
        self.hold_for = float("inf") if seconds is None else max(0.0, float(seconds))

    def release(self) -> None:
        """End a :meth:`hold` now (from any thread): the exchange moves on (after ``kill()``: closes)."""
        self.hold_for = None
        if self._owner is not None:
            self._owner.release_flow(self)

    def resume(self) -> None:
        """Let this flow, paused at a breakpoint, go on with its (edited) request or response.

        Raises RuntimeError when it is not paused.
        """
        if self._owner is None or not self._owner.resume_flow(self):
            raise RuntimeError(f"flow #{self.id} is not paused at a breakpoint")

    def _release(self) -> None:
        # kill() and respond() on a paused flow decide it: it goes on at once.
        if self._owner is not None and self.state == "open":
            self._owner.resume_flow(self)

    @property
    def duration(self) -> float | None:
        return self.timings.duration

    def __repr__(self) -> str:
        status = self.response.status if self.response else (self.error or self.state)
        return f"<Flow #{self.id} {self.request.method} {self.request.url} -> {status}>"

    # -- notebook experience: replay, rich display, native format --------------------

    def copy(self) -> Flow:
        """An editable, unsent copy of the request: nothing is sent until ``copy.replay()``.

        Edit ``copy.request`` (headers, body, URL, method), then call
        :meth:`replay` on it. The copy belongs to the same proxy.
        """
        new = Flow(id=self.id, request=self.request.copy(), client_address=self.client_address,
                   state="unsent", metadata={"copy_of": self.id})
        new._owner = self._owner
        return new

    def replay(self, *, proxy: FlowOwner | None = None, modify: Callable[[Request], Any] | None = None,
               timeout: float = 30.0) -> Flow:
        """Send this request again through the proxy (its hooks too); return the new flow.

        ``modify(request)`` edits a copy of the request in place before it is
        sent (this flow is left alone). ``proxy`` defaults to the one that
        recorded this flow; pass one to replay a flow loaded from a file.
        Raises :class:`ReplayError` (no running proxy, a truncated body, no answer).
        """
        return owner_of(self, proxy).replay_flow(self._replay_target(modify), timeout=timeout)

    async def replay_async(self, *, proxy: FlowOwner | None = None,
                           modify: Callable[[Request], Any] | None = None, timeout: float = 30.0) -> Flow:
        """:meth:`replay` for async code: ``new = await flow.replay_async()``."""
        owner = owner_of(self, proxy)
        return await owner.replay_flow_async(self._replay_target(modify), timeout=timeout)

    def _replay_target(self, modify: Callable[[Request], Any] | None) -> Flow:
        """This flow, or an edited copy of it when ``modify`` is given (the original stays as captured)."""
        if modify is None:
            return self
        target = self.copy()
        modify(target.request)
        return target

    # -- export: the request as something to run elsewhere (see interceptkit.export) -------

    def to_curl(self) -> str:
        """A curl command (POSIX sh) that sends this request again: method, URL, headers, body.

        Raises ValueError when the body was truncated (``body_capture_limit``).
        """
        return _export.to_curl(self.request)

    def to_httpie(self) -> str:
        """An HTTPie (``http``) command (POSIX sh) that sends this request again."""
        return _export.to_httpie(self.request)

    def to_python(self) -> str:
        """A Python snippet (``requests``) that sends this request again."""
        return _export.to_python(self.request)

    def to_raw(self) -> bytes:
        """The request as it went upstream, as bytes: origin-form request line, Host, headers, body."""
        return _export.to_raw(self.request)

    def _repr_html_(self) -> str:
        """Jupyter's rich display, drawn by the display module (it registers "html")."""
        return str(lent_service("html", "display")(self))

    def to_dict(self) -> dict[str, Any]:
        """Everything recorded about this flow as JSON-ready data (lossless)."""
        data: dict[str, Any] = lent_service("to_dict", "store")(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Flow:
        """Rebuild a flow from :meth:`to_dict`'s data."""
        flow: Flow = lent_service("from_dict", "store")(data)
        return flow
