"""Faults through an intercepted TLS tunnel: what a client sees is what it sees over plain HTTP.

The proxy decrypts, so everything a fault does to the body or the connection
is done by the core (a reset is a CloseClient the transport turns into RST).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from test_https import https
from origin import pattern
from tls_origin import TLSOrigin

from interceptkit import Proxy


def test_reset_through_tls_is_a_connection_reset(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    fault = proxy.fault("reset", path="/hello")
    result = https(proxy, tls_origin.url("/hello"))
    assert result.returncode == 56 and b"reset by peer" in result.stderr
    assert fault.calls == 1 and tls_origin.requests == []


def test_reset_in_the_body_through_tls_after_the_head(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    proxy.fault("reset", at="body")
    result = https(proxy, tls_origin.url("/bytes/100000"), "-i")
    assert result.returncode == 56 and b"reset by peer" in result.stderr
    assert b"HTTP/1.1 200" in result.stdout



def test_truncate_through_tls_is_a_short_read(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    proxy.fault("truncate", after=1000, path="/bytes/*")
    result = https(proxy, tls_origin.url("/bytes/100000"), "--http1.1")
    assert result.returncode == 18 and len(result.stdout) == 1000  # curl: partial file
    # HTTP/2: the stream is reset after the cut (the connection and its other streams go on).
    result = https(proxy, tls_origin.url("/bytes/100000"), "--http2")
    assert result.returncode == 92 and len(result.stdout) == 1000 and b"not closed cleanly" in result.stderr
    assert result.stdout == pattern(1000)


def test_dribble_and_throttle_through_tls(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    proxy.fault("dribble", chunk=100, interval=0.02, path="/bytes/1000")
    proxy.fault("throttle", bytes_per_second=400_000, path="/bytes/200000")
    started = time.monotonic()
    result = https(proxy, tls_origin.url("/bytes/1000"))
    assert result.returncode == 0 and result.stdout == pattern(1000)
    assert time.monotonic() - started >= 0.18  # ten pieces, 20 ms apart
    started = time.monotonic()
    result = https(proxy, tls_origin.url("/bytes/200000"))
    assert result.returncode == 0 and result.stdout == pattern(200_000)
    assert time.monotonic() - started >= 0.45
