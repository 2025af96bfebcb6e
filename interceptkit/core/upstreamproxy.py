"""An upstream (parent) proxy, the pure part: its URL parsed, and what the core sends it.

``http://[user:pass@]host:port``: plain HTTP requests go to it in
absolute-form with its ``Proxy-Authorization``; HTTPS (and anything the proxy
tunnels) goes through a ``CONNECT host:port`` to it, inside which TLS is
originated as it is without a parent (RFC 9110 9.3.6). The credentials are
the parent's, never the client's, and never appear in :attr:`address`, in
``repr`` or in error texts.

:class:`ParentTunnel` sends that CONNECT and reads the parent's answer with
its own h11 connection: besides ``core/h1layers.py`` (the HTTP/1 protocol
layers, with their helpers in ``http1.py`` and the error mapping in
``errors.py``), the one place of the core that uses h11.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import unquote, urlsplit

import h11

from .._wire import format_address
from .proxyauth import basic_value


@dataclass(frozen=True)
class UpstreamProxy:
    """Where the parent proxy listens, and how to authenticate to it."""

    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``http://host:port``, without credentials: for logs, errors and the 502 body."""
        return f"http://{format_address(self.host, self.port)}"

    @property
    def authorization(self) -> tuple[bytes, bytes] | None:
        """The ``Proxy-Authorization`` field for the parent, if it has credentials."""
        if self.user is None:
            return None
        return b"Proxy-Authorization", basic_value(self.user, self.password or "")

    def connect_request(self, host: str, port: int) -> bytes:
        """The ``CONNECT`` request that opens a tunnel to ``host:port`` through the parent."""
        authority = format_address(host, port)
        lines = [f"CONNECT {authority} HTTP/1.1".encode(), b"Host: " + authority.encode()]
        if self.authorization is not None:
            name, value = self.authorization
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def refused(self, what: str) -> str:
        """The reason for the client's 502 and ``flow.error`` when the parent fails."""
        return f"upstream proxy {self.address} {what}"


class ParentAnswer(Enum):
    """What the parent's answer to our CONNECT says so far."""

    WAIT = "wait"  # not a whole answer yet
    OPEN = "open"  # a 2xx: the tunnel through the parent is open
    FAILED = "failed"  # anything else: an error status, invalid HTTP, or a close


@dataclass(frozen=True, slots=True)
class ParentVerdict:
    """The reading of the parent's answer: its kind, the bytes after a 2xx, or what went wrong."""

    kind: ParentAnswer
    #: OPEN: the bytes that came after the answer (already the server's).
    trailing: bytes = b""
    #: FAILED: what the parent did, for :meth:`UpstreamProxy.refused`.
    what: str = ""


_WAIT = ParentVerdict(ParentAnswer.WAIT)
_NO_ANSWER = "closed the connection without answering CONNECT"


class ParentTunnel:
    """Our ``CONNECT host:port`` to the parent proxy, and the reader of its answer.

    Owns an h11 CLIENT connection that knows a CONNECT was sent, so the answer
    is read as one (informational responses skipped, the bytes after a 2xx
    kept as the tunnel's). Besides ``core/h1layers.py`` (and its helpers), the
    one user of h11 in the core; the connection parts never touch it.
    """

    __slots__ = ("_parent", "_host", "_port", "_reader")

    def __init__(self, parent: UpstreamProxy, host: str, port: int) -> None:
        self._parent = parent
        self._host, self._port = host, port
        self._reader = h11.Connection(h11.CLIENT)
        # h11 must know a CONNECT was sent to read the answer as one; the
        # bytes on the wire are request_bytes()'s (the same request).
        authority = format_address(host, port).encode()
        self._reader.send(h11.Request(method=b"CONNECT", target=authority, headers=[(b"Host", authority)]))

    def request_bytes(self) -> bytes:
        """The CONNECT request to send the parent (with its credentials, if it has any)."""
        return self._parent.connect_request(self._host, self._port)

    def receive(self, data: bytes) -> ParentVerdict:
        """Bytes from the parent (b"": it closed the connection); what its answer says so far."""
        reader = self._reader
        try:
            reader.receive_data(data)
            event = reader.next_event()
            while isinstance(event, h11.InformationalResponse):
                event = reader.next_event()
        except h11.RemoteProtocolError as exc:
            what = _NO_ANSWER if not data else f"answered CONNECT with invalid HTTP: {exc}"
            return ParentVerdict(ParentAnswer.FAILED, what=what)
        if event is h11.NEED_DATA:
            return _WAIT
        if isinstance(event, h11.ConnectionClosed):  # closed before a byte of an answer
            return ParentVerdict(ParentAnswer.FAILED, what=_NO_ANSWER)
        if not isinstance(event, h11.Response) or not 200 <= event.status_code < 300:
            what = (f"{event.status_code} {event.reason.decode('latin-1')}".strip()
                    if isinstance(event, h11.Response) else "unexpectedly")
            return ParentVerdict(ParentAnswer.FAILED, what=f"answered CONNECT with {what}")
        return ParentVerdict(ParentAnswer.OPEN, trailing=reader.trailing_data[0])


def parse_upstream_proxy(url: str) -> UpstreamProxy:
    """Parse ``http://[user:pass@]host:port``. Raises ValueError saying what is wrong.

    User and password may be percent-encoded (``p%40ss`` for ``p@ss``).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"upstream proxy {url!r}: {exc}") from None
    if parts.scheme.lower() != "http":
        raise ValueError(f"upstream proxy {url!r}: only http:// upstream proxies are supported "
                         f"(HTTPS through it uses CONNECT)")
    if not parts.hostname:
        raise ValueError(f"upstream proxy {url!r}: no host")
    if port is None:
        raise ValueError(f"upstream proxy {url!r}: give its port, e.g. http://{parts.hostname}:3128")
    if port == 0:
        raise ValueError(f"upstream proxy {url!r}: port 0")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"upstream proxy {url!r}: no path, query or fragment, just http://host:port")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if user is not None and password is None:
        raise ValueError(f"upstream proxy {url!r}: give user:password, not just a user")
    return UpstreamProxy(host=parts.hostname, port=port, user=user, password=password)
