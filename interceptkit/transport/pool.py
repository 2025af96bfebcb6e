"""A bounded keep-alive pool of idle upstream connections."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import UpstreamProtocol

Key = tuple[str, int, bool]


class UpstreamPool:
    """Idle connections per ``(host, port, tls)``; at most ``size`` in all.

    The oldest idle connection is closed when the pool is full, and any that
    sat idle longer than ``idle_timeout`` is closed instead of handed out:
    servers close idle connections too, and a stale one costs a retry.
    """

    def __init__(self, size: int, idle_timeout: float) -> None:
        self.size = size
        self.idle_timeout = idle_timeout
        self._idle: OrderedDict[UpstreamProtocol, tuple[Key, float]] = OrderedDict()

    def put(self, upstream: UpstreamProtocol) -> None:
        if self.size <= 0:
            upstream.close()
            return
        upstream.pool = self
        self._idle[upstream] = (upstream.key, time.monotonic())
        while len(self._idle) > self.size:
            oldest, _ = self._idle.popitem(last=False)
            oldest.pool = None
            oldest.close()

    def take(self, key: Key) -> UpstreamProtocol | None:
        now = time.monotonic()
        for upstream, (upstream_key, since) in reversed(self._idle.items()):
            if upstream_key != key:
                continue
            del self._idle[upstream]
            upstream.pool = None
            if upstream.closed or now - since > self.idle_timeout:
                upstream.close()
                return self.take(key)
            return upstream
        return None

    def discard(self, upstream: UpstreamProtocol) -> None:
        self._idle.pop(upstream, None)
        upstream.pool = None

    def close_all(self) -> None:
        for upstream in list(self._idle):
            upstream.pool = None
            upstream.close()
        self._idle.clear()

    def __len__(self) -> int:
        return len(self._idle)
