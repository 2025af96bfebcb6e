"""Why an upstream connection failed: the exception the transport raises, and its typed cause.

The core answers differently by cause (RFC 1928's reply codes for a SOCKS5
client), so the cause is read here once from the exception that was caught,
not guessed later from the words of its message.
"""

from __future__ import annotations

import errno
import socket

from ..vocab import ConnectCause
from .resolver import ResolveError

#: OS errors whose errno says what went wrong on the way.
_BY_ERRNO: dict[int, ConnectCause] = {
    errno.ECONNREFUSED: "refused",
    errno.EHOSTUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable",
    errno.ENETUNREACH: "network_unreachable",
    errno.ENETDOWN: "network_unreachable",
    errno.ETIMEDOUT: "timeout",
}


class UpstreamConnectError(Exception):
    """No connection to the upstream: ``timeout`` for a 504 rather than a 502, ``cause`` for code."""

    def __init__(self, message: str, *, timeout: bool = False, cause: ConnectCause = "other") -> None:
        super().__init__(message)
        self.timeout = timeout
        self.cause: ConnectCause = "timeout" if timeout else cause


def connect_cause(exc: BaseException | None) -> ConnectCause:
    """The cause of one failed attempt: a resolver failure, a timeout, or an OS error's errno."""
    if isinstance(exc, (ResolveError, socket.gaierror)):  # before errno: gaierror's are EAI_* codes
        return "resolve"
    if isinstance(exc, TimeoutError):  # also asyncio.TimeoutError and socket.timeout
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno is not None:
        return _BY_ERRNO.get(exc.errno, "other")
    return "other"
