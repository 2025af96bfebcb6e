"""Any order of events, from either peer, the transport or the hook runner,
leaves the core consistent: no exception, no internal error, and every flow
finished at most once and only after it started."""

from __future__ import annotations

import functools
import os
import ssl
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interceptkit.core import (
    ClientBackpressure,
    ClientConnected,
    ClientDataReceived,
    ConnectionClosed,
    FlowFinished,
    FlowStarted,
    HookReturned,
    Log,
    ProxyConfig,
    ProxyConnection,
    TimerFired,
    UpstreamConnected,
    UpstreamConnectFailed,
    UpstreamDataReceived,
)

CLIENT_BYTES = [
    b"GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
    b"POST http://a.test/p HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhel",
    b"lo",
    b"PUT http://b.test/c HTTP/1.1\r\nHost: b.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n",
    b"GET http://a.test/ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",  # a masked "Hello" frame
    b"\x16\x03\x01\x00\x05hello",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
]
UPSTREAM_BYTES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    b"\x81\x05Hello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
    b"HTTP/1.0 200 OK\r\n\r\nuntil close",
]

@functools.lru_cache(maxsize=1)
def _server_context() -> Any:
    from interceptkit.certs import CertStore

    store = CertStore.load_or_create(tempfile.mkdtemp(prefix="ik-seq-"))
    return store.server_context


def _hello() -> bytes:
    """A real ClientHello for b.test, as a client would send it into the tunnel."""
    context = ssl.create_default_context()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="b.test")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


CLIENT_BYTES.append(_hello())

upstream_ids = st.integers(min_value=1, max_value=3)
payload = st.one_of(st.binary(max_size=40), st.sampled_from(CLIENT_BYTES))
events = st.one_of(
    st.builds(lambda d: ("client", d), payload),
    st.builds(lambda i, d: ("up", i, d), upstream_ids, st.one_of(st.binary(max_size=40), st.sampled_from(UPSTREAM_BYTES))),
    st.builds(lambda i, r: ("connected", i, r), upstream_ids, st.booleans()),
    st.builds(lambda i, t: ("failed", i, t), upstream_ids, st.booleans()),
    st.builds(lambda i, a: ("closed", i, a), st.one_of(st.none(), upstream_ids), st.booleans()),
    st.builds(lambda t: ("timer", t), st.sampled_from(["read", "idle", "sniff", "other"])),
    st.builds(lambda c, r: ("hook", c, r), st.integers(min_value=1, max_value=4),
              st.one_of(st.none(), st.binary(max_size=8), st.text(max_size=8))),
    st.builds(lambda b: ("backpressure", b), st.booleans()),
)


def _event(spec: tuple[Any, ...], now: float) -> Any:
    kind = spec[0]
    if kind == "client":
        return ClientDataReceived(time=now, data=spec[1])
    if kind == "up":
        return UpstreamDataReceived(time=now, upstream=spec[1], data=spec[2])
    if kind == "connected":
        return UpstreamConnected(time=now, upstream=spec[1], reused=spec[2], address=("127.0.0.1", 1))
    if kind == "failed":
        return UpstreamConnectFailed(time=now, upstream=spec[1], reason="refused", timeout=spec[2])
    if kind == "closed":
        return ConnectionClosed(time=now, upstream=spec[1], aborted=spec[2])
    if kind == "timer":
        return TimerFired(time=now, timer=spec[1])
    if kind == "hook":
        return HookReturned(time=now, call=spec[1], result=spec[2])
    return ClientBackpressure(time=now, blocked=spec[1])


#: INTERCEPTKIT_FUZZ_EXAMPLES=10000 for a long run (the suite uses 400).
@settings(max_examples=int(os.environ.get("INTERCEPTKIT_FUZZ_EXAMPLES", "400")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, max_size=25), st.booleans(), st.booleans())
def test_any_event_sequence_keeps_the_core_consistent(sequence: list[tuple[Any, ...]], hooked: bool,
                                                       intercept: bool) -> None:
    hooks = frozenset({"request_headers", "request", "response_headers", "response_chunk", "response",
                       "tunnel", "websocket_message"}) if hooked else frozenset()
    config = ProxyConfig(hooks=hooks, read_timeout=5, idle_timeout=10, intercept=intercept,
                         server_context=_server_context() if intercept else None,
                         upstream_context=ssl.create_default_context())
    conn = ProxyConnection(config, ("127.0.0.1", 9))
    started: set[int] = set()
    finished: set[int] = set()
    now = 1000.0
    for spec in [("start",), *sequence]:
        now += 3.0
        event = ClientConnected(time=now, address=("127.0.0.1", 9)) if spec[0] == "start" else _event(spec, now)
        for command in conn.handle(event):
            assert not (isinstance(command, Log) and command.level == "error"), command.message
            # Flow ids, not id(): a finished flow may be freed and its address reused.
            if isinstance(command, FlowStarted):
                assert command.flow.id not in started
                started.add(command.flow.id)
            elif isinstance(command, FlowFinished):
                assert command.flow.id in started, "finished a flow that never started"
                assert command.flow.id not in finished, "finished a flow twice"
                finished.add(command.flow.id)


def test_bytes_after_a_client_eof_are_ignored_not_an_internal_error() -> None:
    conn = ProxyConnection(ProxyConfig(), ("127.0.0.1", 9))
    conn.handle(ClientConnected(time=1.0, address=("127.0.0.1", 9)))
    conn.handle(ClientDataReceived(time=1.0, data=CLIENT_BYTES[0]))
    conn.handle(ConnectionClosed(time=2.0))
    out = conn.handle(ClientDataReceived(time=3.0, data=b"\x00"))
    assert not any(isinstance(c, Log) and c.level == "error" for c in out)


def test_a_reset_after_a_half_close_still_ends_the_exchange() -> None:
    conn = ProxyConnection(ProxyConfig(), ("127.0.0.1", 9))
    conn.handle(ClientConnected(time=1.0, address=("127.0.0.1", 9)))
    conn.handle(ClientDataReceived(time=1.0, data=CLIENT_BYTES[0]))
    conn.handle(UpstreamConnected(time=1.0, upstream=1))
    assert not any(isinstance(c, FlowFinished) for c in conn.handle(ConnectionClosed(time=2.0)))
    out = conn.handle(ConnectionClosed(time=3.0, aborted=True))
    [done] = [c for c in out if isinstance(c, FlowFinished)]
    assert done.flow.error == "client disconnected"


def test_a_head_over_the_limit_in_two_reads_under_it_gets_431() -> None:
    # Each read stays under the limit, so neither h11 nor a per-read check sees it.
    conn = ProxyConnection(ProxyConfig(max_header_size=1000), ("127.0.0.1", 9))
    conn.handle(ClientConnected(time=1.0, address=("127.0.0.1", 9)))
    head = b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nX-Big: " + b"a" * 1200 + b"\r\n\r\n"
    conn.handle(ClientDataReceived(time=1.0, data=head[:700]))
    out = conn.handle(ClientDataReceived(time=1.0, data=head[700:]))
    sent = b"".join(getattr(c, "data", b"") for c in out if type(c).__name__ == "SendToClient")
    assert sent.startswith(b"HTTP/1.1 431 ")
