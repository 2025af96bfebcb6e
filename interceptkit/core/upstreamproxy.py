"""An upstream (parent) proxy, the pure part: its URL parsed, and what the core sends it.

``http://[user:pass@]host:port``: plain HTTP requests go to it in
absolute-form with its ``Proxy-Authorization``; HTTPS (and anything the proxy
tunnels) goes through a ``CONNECT host:port`` to it, inside which TLS is
originated as it is without a parent (RFC 9110 9.3.6). The credentials are
the parent's, never the client's, and never appear in :attr:`address`, in
``repr`` or in error texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def authorization(self) -> tuple[bytes, bytes] | None:
        """The ``Proxy-Authorization`` field for the parent, if it has credentials."""
        if self.user is None:
            return None
        return b"Proxy-Authorization", basic_value(self.user, self.password or "")

    def connect_request(self, host: str, port: int) -> bytes:
        """The ``CONNECT`` request that opens a tunnel to ``host:port`` through the parent."""
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {authority} HTTP/1.1".encode(), b"Host: " + authority.encode()]
        if self.authorization is not None:
            name, value = self.authorization
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def refused(self, what: str) -> str:
        """The reason for the client's 502 and ``flow.error`` when the parent fails."""
        return f"upstream proxy {self.address} {what}"


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
