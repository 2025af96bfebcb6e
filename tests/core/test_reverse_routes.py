"""Reverse-mode routing in the core: what reaches which upstream, and what is refused."""

from __future__ import annotations

import pytest

from interceptkit.core import ClientConnected, ClientDataReceived, OpenUpstream, ProxyConfig, ProxyConnection, SendToClient
from interceptkit.core.config import Route


def _config() -> ProxyConfig:
    routes = (
        Route(prefix="/api", scheme="http", host="127.0.0.1", port=9000, path="/v1", strip=True),
        Route(prefix="/", scheme="http", host="127.0.0.1", port=9100),
    )
    return ProxyConfig(mode="reverse", routes=routes)


def _send(request: bytes) -> list[object]:
    conn = ProxyConnection(_config(), ("127.0.0.1", 50000))
    conn.handle(ClientConnected(time=0.0, address=("127.0.0.1", 50000)))
    return conn.handle(ClientDataReceived(time=0.0, data=request))


def test_longest_prefix_with_strip_picks_the_api_upstream() -> None:
    commands = _send(b"GET /api/users HTTP/1.1\r\nHost: site\r\n\r\n")
    opens = [c for c in commands if isinstance(c, OpenUpstream)]
    assert [(o.host, o.port) for o in opens] == [("127.0.0.1", 9000)]


@pytest.mark.parametrize("path", [b"/api/../admin", b"/api/%2e%2e/admin", b"/./api", b"/api/.."])
def test_dot_segments_are_refused_not_routed(path: bytes) -> None:
    commands = _send(b"GET " + path + b" HTTP/1.1\r\nHost: site\r\n\r\n")
    assert not any(isinstance(c, OpenUpstream) for c in commands)
    answer = b"".join(c.data for c in commands if isinstance(c, SendToClient))
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"dot segments" in answer
