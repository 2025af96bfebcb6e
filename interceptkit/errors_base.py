"""The one error model of interceptkit's protocol code: an error that carries its answer.

Below every other module (the wire helpers raise it), so the flow model, the
core and the rings above all share one type. The core maps h11, TLS and
wsproto errors to it at its boundary (``core/errors.py``).
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base of interceptkit's protocol errors.

    ``status`` is the answer the client should get (400, 431, 502, ...) and
    ``reason`` the one line that goes with it (also ``str(error)``).
    """

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status

    @property
    def reason(self) -> str:
        return str(self)


class RemoteProtocolError(ProxyError):
    """A peer sent something we refuse (a malformed or ambiguous message)."""


class UpstreamError(ProxyError):
    """The upstream failed us (refused, reset, spoke garbage, took too long): 502 or 504."""

    status = 502
