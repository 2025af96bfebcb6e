"""The core's errors, each carrying the HTTP status to answer with (as h11 does)."""

from __future__ import annotations


class ProxyError(Exception):
    """Base of interceptkit's protocol errors.

    ``status`` is the answer the client should get (400, 431, 502, ...).
    """

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class RemoteProtocolError(ProxyError):
    """A peer sent something we refuse (a malformed or ambiguous message)."""

