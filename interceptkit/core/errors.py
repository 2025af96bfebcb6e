"""The core's errors: the one error model (``errors_base``) and the mapping to it at the boundary.

h11, TLS and wsproto raise their own exceptions; :func:`map_exceptions`
turns them into a :class:`ProxyError` carrying the status to answer with
(httpcore's ``map_exceptions`` pattern), so the parts of the core deal with
one type only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import h11

from ..errors_base import ProxyError, RemoteProtocolError, UpstreamError

__all__ = ["ProxyError", "RemoteProtocolError", "UpstreamError", "map_exceptions"]


@contextmanager
def map_exceptions(status: int | None = None, *, ours: str = "invalid message") -> Iterator[None]:
    """Re-raise h11's errors as the one error model, at the layer boundary.

    A peer's bad bytes (``h11.RemoteProtocolError``) become
    ``RemoteProtocolError`` with h11's status hint (``status`` overrides it:
    an upstream's bad answer is our 502, not its 400). A message we were
    asked to send and h11 refuses (``h11.LocalProtocolError``: only a hook's
    change can make one) becomes a ``ProxyError`` 502 whose reason starts
    with ``ours``.
    """
    try:
        yield
    except h11.RemoteProtocolError as exc:
        raise RemoteProtocolError(str(exc), status or exc.error_status_hint) from exc
    except (h11.LocalProtocolError, ValueError) as exc:
        raise ProxyError(f"{ours}: {exc}", 502) from exc
