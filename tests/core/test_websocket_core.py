"""WebSocket relaying in the core: a ProxyConnection driven through an Upgrade
request and a ``101``, then fed frames built by wsproto (and by hand, for the
broken ones) from both sides, whole and byte by byte. No sockets.

Two wsproto connections play the peers: ``client`` (a CLIENT connection: what
a browser would send, masked) and ``server`` (a SERVER connection: what the
origin would send). Whatever the proxy writes to one side is parsed by the
peer on that side, so every assertion is about frames as a real peer sees them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from helpers import (
    Driver,
    Split,
    closes_client,
    field_names,
    field_values,
    finished,
    of_type,
    started,
    status_of,
    to_client,
    to_upstream,
)
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from interceptkit.core import commands as cmd
from interceptkit.core import events as ev
from interceptkit.core.config import ProxyConfig
from interceptkit.core.state import Phase
from interceptkit.core.websocket import WebSocketData, WebSocketMessage
from interceptkit.flow import Flow
from interceptkit.policy import parse_routes

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

UPGRADE = (b"GET http://example.com/chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
           b"Sec-WebSocket-Protocol: chat\r\n\r\n")
SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n")

SPLITS = [pytest.param(None, id="whole"), pytest.param(1, id="byte-by-byte"), pytest.param(7, id="7-byte-pieces")]


def frame(opcode: int, payload: bytes, *, mask: bool, fin: bool = True, rsv: int = 0) -> bytes:
    """One raw frame, built by hand so that it can break the rules."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    if length < 126:
        head = bytes([first, (0x80 if mask else 0) | length])
    elif length < 65536:
        head = bytes([first, (0x80 if mask else 0) | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, (0x80 if mask else 0) | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_code_of(data: bytes) -> int | None:
    """The close code in the first close frame of ``data`` as a peer reads it (server frames)."""
    peer = Connection(ConnectionType.CLIENT)
    peer.receive_data(data)
    for event in peer.events():
        if isinstance(event, CloseConnection):
            return event.code
    return None


class Session:
    """A proxied WebSocket in memory: the driver plus a wsproto peer on each side."""

    def __init__(self, driver: Driver, flow: Flow) -> None:
        self.d = driver
        self.flow = flow
        self.client = Connection(ConnectionType.CLIENT)  # the browser, talking to the proxy
        self.server = Connection(ConnectionType.SERVER)  # the origin, talking to the proxy
        self.at_client: list[Event] = []
        self.at_server: list[Event] = []
        #: How hooks answer: fn(flow, payload) -> result; None answers with the payload.
        self.hook: Callable[[Flow, Any], Any] | None = None
        self.hook_calls: list[WebSocketMessage] = []

    @property
    def data(self) -> WebSocketData:
        assert isinstance(self.flow.websocket, WebSocketData)
        return self.flow.websocket

    def take(self, out: list[cmd.Command]) -> list[cmd.Command]:
        """Deliver the proxy's output to the peers, answering hooks as they come (bounded)."""
        everything = list(out)
        for _ in range(1000):
            hooks = of_type(out, cmd.RunHook)
            self._deliver(out)
            if not hooks:
                break
            out = []
            for run in hooks:
                message = run.payload
                self.hook_calls.append(message)
                result = self.hook(run.flow, message) if self.hook is not None else None
                out += self.d.feed(ev.HookReturned, call=run.call,
                                   result=message if result is None else result)
            everything += out
        else:  # pragma: no cover
            raise AssertionError("hooks never stopped being asked for")
        return everything

    def _deliver(self, out: list[cmd.Command]) -> None:
        to_c, to_s = to_client(out), to_upstream(out)
        if to_c and self.client.state is not ConnectionState.CLOSED:
            self.client.receive_data(to_c)
            self.at_client += list(self.client.events())
        if to_s and self.server.state is not ConnectionState.CLOSED:
            self.server.receive_data(to_s)
            self.at_server += list(self.server.events())

    def from_client(self, *events: Event, split: Split | str = "default") -> list[cmd.Command]:
        return self.client_bytes(b"".join(self.client.send(e) for e in events), split)

    def from_server(self, *events: Event, split: Split | str = "default") -> list[cmd.Command]:
        return self.server_bytes(b"".join(self.server.send(e) for e in events), split)

    def client_bytes(self, data: bytes, split: Split | str = "default") -> list[cmd.Command]:
        return self.take(self.d.client(data, split))

    def server_bytes(self, data: bytes, split: Split | str = "default") -> list[cmd.Command]:
        return self.take(self.d.upstream(data, split=split))


def open_session(split: Split = None, *, hooks: Iterable[str] = (), config: ProxyConfig | None = None,
                 request: bytes = UPGRADE, switch: bytes = SWITCH,
                 hook: Callable[[Flow, Any], Any] | None = None) -> Session:
    """A driver taken through the Upgrade request and the 101."""
    config = config or ProxyConfig(hooks=frozenset(hooks))
    d = Driver(config, split=split)
    d.client(request)
    d.connected()
    d.upstream(switch)
    flows = started(d.transcript)
    assert len(flows) == 1
    session = Session(d, flows[0])
    session.hook = hook
    assert d.conn.phase() is Phase.WEBSOCKET
    return session


def texts(events: Iterable[Event]) -> list[str | bytes]:
    """The data of the whole messages among ``events``, fragments joined."""
    out: list[str | bytes] = []
    parts: list[str | bytes] = []
    for event in events:
        if isinstance(event, (TextMessage, BytesMessage)):
            parts.append(event.data if isinstance(event.data, str) else bytes(event.data))
            if event.message_finished:
                out.append("".join(parts) if isinstance(parts[0], str) else b"".join(parts))  # type: ignore[arg-type]
                parts = []
    return out


def controls(events: Iterable[Event]) -> list[tuple[type, bytes]]:
    """The pings and pongs among ``events``, with their payloads."""
    return [(type(e), bytes(e.payload)) for e in events if isinstance(e, (Ping, Pong))]


# -- the handshake ---------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_handshake_is_relayed_and_recorded(split: Split) -> None:
    d = Driver(ProxyConfig(), split=split)
    d.client(UPGRADE)
    out = d.connected()
    sent = to_upstream(d.transcript)
    start, _ = sent.split(b"\r\n", 1)
    assert start == b"GET /chat HTTP/1.1"
    names = field_names(sent)
    assert {b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version",
            b"sec-websocket-protocol"} <= names
    # Frames are parsed on both sides: only permessage-deflate offers go on.
    assert field_values(sent, b"Sec-WebSocket-Extensions") == [b"permessage-deflate; client_max_window_bits"]
    assert field_values(sent, b"Sec-WebSocket-Key") == [KEY]
    assert [v.lower() for v in field_values(sent, b"Upgrade")] == [b"websocket"]
    assert b"upgrade" in b",".join(field_values(sent, b"Connection")).lower()
    assert not closes_client(out)

    out = d.upstream(SWITCH)
    answer = to_client(out)
    assert status_of(answer) == 101
    assert field_values(answer, b"Sec-WebSocket-Accept") == [ACCEPT]
    assert field_values(answer, b"Sec-WebSocket-Protocol") == [b"chat"]
    assert [v.lower() for v in field_values(answer, b"Upgrade")] == [b"websocket"]
    assert not closes_client(d.transcript)
    assert d.conn.phase() is Phase.WEBSOCKET
    flow = started(d.transcript)[0]
    assert flow.kind == "websocket"
    assert flow.state == "open"
    assert flow.response is not None and flow.response.status == 101
    assert flow.request.headers["Sec-WebSocket-Key"] == KEY.decode()
    assert isinstance(flow.websocket, WebSocketData)
    assert finished(d.transcript) == []


def test_upgrade_refused_by_the_server_is_a_plain_exchange() -> None:
    d = Driver(ProxyConfig())
    d.client(UPGRADE)
    d.connected()
    out = d.upstream(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno")
    assert status_of(to_client(out)) == 403
    assert to_client(out).endswith(b"no")
    assert d.conn.phase() is not Phase.WEBSOCKET
    [flow] = finished(d.transcript)
    assert flow.kind == "http" and flow.websocket is None and flow.error is None


def test_frames_that_came_with_the_101_are_delivered() -> None:
    server = Connection(ConnectionType.SERVER)
    first = server.send(TextMessage(data="welcome"))
    s = open_session(switch=SWITCH + first)
    after_head = to_client(s.d.transcript).split(b"\r\n\r\n", 1)[1]
    s.client.receive_data(after_head)
    assert texts(s.client.events()) == ["welcome"]
    assert [m.content for m in s.data.messages] == ["welcome"]


def test_frames_the_client_sent_before_the_101_are_delivered_after_it() -> None:
    d = Driver(ProxyConfig())
    client = Connection(ConnectionType.CLIENT)
    early = client.send(TextMessage(data="eager"))
    d.client(UPGRADE + early)
    d.connected()
    before_switch = to_upstream(d.transcript)
    assert before_switch.endswith(b"\r\n\r\n")  # held back: it is not HTTP
    d.upstream(SWITCH)
    assert d.conn.phase() is Phase.WEBSOCKET
    server = Connection(ConnectionType.SERVER)
    server.receive_data(to_upstream(d.transcript)[len(before_switch):])
    assert texts(server.events()) == ["eager"]


def test_reverse_mode_upgrade_is_routed_with_forwarded_fields() -> None:
    config = ProxyConfig(mode="reverse", routes=parse_routes({"/ws": {"url": "http://backend.test:9000",
                                                                      "strip": True}}))
    request = (b"GET /ws/chat?room=1 HTTP/1.1\r\nHost: public.example\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    d = Driver(config)
    out = d.client(request)
    [opened_cmd] = of_type(out, cmd.OpenUpstream)
    assert (opened_cmd.host, opened_cmd.port, opened_cmd.tls) == ("backend.test", 9000, False)
    d.connected()
    sent = to_upstream(d.transcript)
    assert sent.startswith(b"GET /chat?room=1 HTTP/1.1\r\n")
    assert field_values(sent, b"Host") == [b"backend.test:9000"]
    assert field_values(sent, b"X-Forwarded-Host") == [b"public.example"]
    assert field_values(sent, b"X-Forwarded-Proto") == [b"http"]
    assert field_values(sent, b"X-Forwarded-For") == [b"192.0.2.10"]
    d.upstream(SWITCH)
    assert d.conn.phase() is Phase.WEBSOCKET
    s = Session(d, started(d.transcript)[0])
    s.from_client(TextMessage(data="hi"))
    assert texts(s.at_server) == ["hi"]


def test_upgrade_other_than_websocket_becomes_a_raw_relay() -> None:
    request = (b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nUpgrade: foo/2\r\n"
               b"Connection: Upgrade\r\n\r\n")
    d = Driver(ProxyConfig())
    d.client(request)
    d.connected()
    out = d.upstream(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo/2\r\nConnection: Upgrade\r\n\r\nhello")
    assert to_client(out).endswith(b"\r\n\r\nhello")
    assert d.conn.phase() is Phase.TUNNEL
    out = d.client(b"\x00\xff raw bytes")
    assert to_upstream(out) == b"\x00\xff raw bytes"
    assert started(d.transcript)[0].kind == "upgrade"


# -- messages and control frames both ways -----------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_text_and_binary_pass_both_ways(split: Split) -> None:
    s = open_session(split)
    s.from_client(TextMessage(data="héllo ✓"), BytesMessage(data=b"\x00\x01\xfe\xff"))
    s.from_server(TextMessage(data="wörld"), BytesMessage(data=bytes(range(256))))
    assert texts(s.at_server) == ["héllo ✓", b"\x00\x01\xfe\xff"]
    assert texts(s.at_client) == ["wörld", bytes(range(256))]
    assert not closes_client(s.d.transcript)


@pytest.mark.parametrize("split", SPLITS)
def test_ping_and_pong_pass_both_ways_with_their_payload(split: Split) -> None:
    s = open_session(split)
    s.from_client(Ping(payload=b"c-ping"))
    assert controls(s.at_server) == [(Ping, b"c-ping")]
    s.from_server(Pong(payload=b"c-ping"))
    assert controls(s.at_client) == [(Pong, b"c-ping")]
    s.from_server(Ping(payload=b"s-ping"))
    s.from_client(Pong(payload=b"s-ping"))
    assert controls(s.at_client)[1:] == [(Ping, b"s-ping")]
    assert controls(s.at_server)[1:] == [(Pong, b"s-ping")]
    records = [(m.direction, m.type, m.content) for m in s.data.messages]
    assert records == [("client", "ping", b"c-ping"), ("server", "pong", b"c-ping"),
                       ("server", "ping", b"s-ping"), ("client", "pong", b"s-ping")]


@pytest.mark.parametrize("split", SPLITS)
def test_close_from_the_client_carries_code_and_reason_and_ends_the_flow(split: Split) -> None:
    s = open_session(split)
    s.from_client(CloseConnection(code=4000, reason="client bye"))
    closes = [e for e in s.at_server if isinstance(e, CloseConnection)]
    assert [(c.code, c.reason) for c in closes] == [(4000, "client bye")]
    assert finished(s.d.transcript) == []  # the handshake is not over yet
    s.from_server(closes[0].response())
    [reply] = [e for e in s.at_client if isinstance(e, CloseConnection)]
    assert reply.code == 4000
    assert s.client.state is ConnectionState.CLOSED
    [flow] = finished(s.d.transcript)
    assert flow is s.flow and flow.error is None and flow.state == "done"
    assert (s.data.close_code, s.data.close_reason, s.data.closed_by) == (4000, "client bye", "client")
    assert closes_client(s.d.transcript)
    assert of_type(s.d.transcript, cmd.CloseUpstream)


@pytest.mark.parametrize("split", SPLITS)
def test_close_from_the_server_carries_code_and_reason_and_ends_the_flow(split: Split) -> None:
    s = open_session(split)
    s.from_server(TextMessage(data="last words"), CloseConnection(code=4001, reason="server bye ✓"))
    assert texts(s.at_client) == ["last words"]
    [close] = [e for e in s.at_client if isinstance(e, CloseConnection)]
    assert (close.code, close.reason) == (4001, "server bye ✓")
    s.from_client(close.response())
    [reply] = [e for e in s.at_server if isinstance(e, CloseConnection)]
    assert reply.code == 4001
    [flow] = finished(s.d.transcript)
    assert flow.error is None
    assert (s.data.close_code, s.data.close_reason, s.data.closed_by) == (4001, "server bye ✓", "server")
    assert closes_client(s.d.transcript)
    assert [m.type for m in s.data.messages] == ["text", "close", "close"]


def test_close_without_a_code_is_passed_as_such() -> None:
    s = open_session()
    s.client_bytes(frame(0x8, b"", mask=True))
    [close] = [e for e in s.at_server if isinstance(e, CloseConnection)]
    assert close.code in (1000, 1005)  # no status on the wire; never 1005 itself (RFC 6455 7.4.1)
    assert not closes_client(s.d.transcript)


@pytest.mark.parametrize("side", ["client", "server"])
def test_a_peer_that_vanishes_gets_the_other_side_a_close_frame(side: str) -> None:
    s = open_session()
    s.from_client(TextMessage(data="x"))
    out = s.take(s.d.client_closed(aborted=True) if side == "client" else s.d.upstream_closed(aborted=True))
    survivor = s.at_server if side == "client" else s.at_client
    closes = [e for e in survivor if isinstance(e, CloseConnection)]
    assert len(closes) == 1 and closes[0].code == 1001
    [flow] = finished(s.d.transcript)
    assert flow.state in ("done", "error")
    assert s.data.closed_by == side and s.data.close_code == 1006
    assert closes_client(out)


@pytest.mark.parametrize("side", ["client", "server"])
def test_close_frame_then_tcp_close_keeps_the_recorded_code(side: str) -> None:
    s = open_session()
    if side == "server":
        s.from_server(CloseConnection(code=4001, reason="bye"))
        s.take(s.d.upstream_closed())
        assert [e.code for e in s.at_client if isinstance(e, CloseConnection)] == [4001]
    else:
        s.from_client(CloseConnection(code=4001, reason="bye"))
        s.take(s.d.client_closed())
        assert [e.code for e in s.at_server if isinstance(e, CloseConnection)] == [4001]
    assert finished(s.d.transcript) == [s.flow]
    assert (s.data.close_code, s.data.close_reason, s.data.closed_by) == (4001, "bye", side)


# -- fragmentation and large messages --------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_fragmented_message_is_reassembled_for_the_hook(split: Split) -> None:
    s = open_session(split, hooks={"websocket_message"})
    s.from_client(TextMessage(data="frag", message_finished=False), TextMessage(data="men", message_finished=False),
                  TextMessage(data="ted ✓", message_finished=True))
    s.from_server(BytesMessage(data=b"\x01\x02", message_finished=False), BytesMessage(data=b"\x03"))
    whole = [(m.direction, m.type, m.content) for m in s.hook_calls]
    assert whole == [("client", "text", "fragmented ✓"), ("server", "binary", b"\x01\x02\x03")]
    assert texts(s.at_server) == ["fragmented ✓"]
    assert texts(s.at_client) == [b"\x01\x02\x03"]
    assert [(m.type, m.size) for m in s.data.messages] == [("text", len("fragmented ✓".encode())),
                                                            ("binary", 3)]


def test_control_frame_inside_a_fragmented_message_passes_at_once() -> None:
    s = open_session(hooks={"websocket_message"})
    s.from_client(TextMessage(data="a", message_finished=False))
    s.from_client(Ping(payload=b"mid"))
    assert [type(e) for e in s.at_server] == [Ping]
    s.from_client(TextMessage(data="b", message_finished=True))
    assert texts(s.at_server) == ["ab"]
    assert [m.content for m in s.hook_calls] == ["ab"]


def test_fragments_stream_through_when_no_hook_listens() -> None:
    s = open_session()
    s.from_client(BytesMessage(data=b"part1-", message_finished=False))
    # Nobody needs the whole message: the first part is on its way already.
    assert b"".join(bytes(e.data) for e in s.at_server if isinstance(e, BytesMessage)) == b"part1-"
    s.from_client(BytesMessage(data=b"part2", message_finished=True))
    assert texts(s.at_server) == [b"part1-part2"]
    [record] = s.data.messages
    assert (record.direction, record.type, record.size) == ("client", "binary", 11)


@pytest.mark.parametrize("split", [None, 4096])
def test_large_message_streams_past_a_hook_over_the_limit(split: Split) -> None:
    config = ProxyConfig(hooks=frozenset({"websocket_message"}), hook_body_limit=10_000)
    s = open_session(split, config=config)
    big = os.urandom(100_000)
    parts = [big[i: i + 8000] for i in range(0, len(big), 8000)]
    events = [BytesMessage(data=p, message_finished=i == len(parts) - 1) for i, p in enumerate(parts)]
    s.from_client(*events[:4])
    streamed = b"".join(bytes(e.data) for e in s.at_server if isinstance(e, BytesMessage))
    assert len(streamed) >= 10_000  # not held back until the end
    s.from_client(*events[4:])
    assert texts(s.at_server) == [big]
    [record] = s.data.messages
    assert record.size == len(big)
    assert len(record.content) <= s.data.max_content
    s.from_client(TextMessage(data="small"))  # the next message is whole again for the hook
    assert [m.content for m in s.hook_calls] == ["small"]


def test_large_single_frame_arriving_in_pieces_streams_without_a_hook() -> None:
    s = open_session()
    big = os.urandom(300_000)
    data = s.server.send(BytesMessage(data=big))
    s.server_bytes(data[: len(data) // 2], split=None)
    got = b"".join(bytes(e.data) for e in s.at_client if isinstance(e, BytesMessage))
    assert len(got) > 100_000  # forwarded before the frame was complete
    s.server_bytes(data[len(data) // 2:], split=None)
    assert texts(s.at_client) == [big]
    assert s.data.messages[-1].size == len(big)


# -- hooks ------------------------------------------------------------------------------


def test_hook_sees_each_message_with_its_direction() -> None:
    s = open_session(hooks={"websocket_message"})
    s.from_client(TextMessage(data="c1"))
    s.from_server(BytesMessage(data=b"s1"))
    s.from_client(BytesMessage(data=b"c2"))
    assert [(m.direction, m.type, m.content, m.from_client) for m in s.hook_calls] == [
        ("client", "text", "c1", True), ("server", "binary", b"s1", False), ("client", "binary", b"c2", True)]
    assert texts(s.at_server) == ["c1", b"c2"]
    assert texts(s.at_client) == [b"s1"]


@pytest.mark.parametrize("split", SPLITS)
def test_hook_replaces_content(split: Split) -> None:
    def hook(flow: Flow, message: WebSocketMessage) -> Any:
        if message.content == "secret":
            return "redacted"
        if message.content == b"\x00bin":
            return b"\xffBIN"
        if message.content == "mutate":
            message.content = "mutated in place"
        return None

    s = open_session(split, hooks={"websocket_message"}, hook=hook)
    s.from_client(TextMessage(data="secret"))
    s.from_client(TextMessage(data="mutate"))
    s.from_server(BytesMessage(data=b"\x00bin"))
    assert texts(s.at_server) == ["redacted", "mutated in place"]
    assert texts(s.at_client) == [b"\xffBIN"]
    assert [m.content for m in s.data.messages] == ["redacted", "mutated in place", b"\xffBIN"]


def test_hook_drops_a_message() -> None:
    def hook(flow: Flow, message: WebSocketMessage) -> None:
        if message.content == "drop me":
            message.drop()

    s = open_session(hooks={"websocket_message"}, hook=hook)
    s.from_client(TextMessage(data="drop me"))
    s.from_client(TextMessage(data="keep me"))
    s.from_server(TextMessage(data="drop me"))
    assert texts(s.at_server) == ["keep me"]
    assert texts(s.at_client) == []
    assert [(m.content, m.dropped) for m in s.data.messages] == [("drop me", True), ("keep me", False),
                                                                  ("drop me", True)]


def test_hook_injects_messages_to_either_side() -> None:
    def hook(flow: Flow, message: WebSocketMessage) -> None:
        if message.content == "trigger":
            flow.websocket.inject("to the client", to="client")
            flow.websocket.inject(b"to the server", to="server")
            flow.websocket.inject("also to the server")  # the default side

    s = open_session(hooks={"websocket_message"}, hook=hook)
    s.from_client(TextMessage(data="trigger"))
    assert texts(s.at_server) == ["trigger", b"to the server", "also to the server"]
    assert texts(s.at_client) == ["to the client"]
    injected = [(m.direction, m.type, m.content) for m in s.data.messages if m.injected]
    assert injected == [("server", "text", "to the client"), ("client", "binary", b"to the server"),
                        ("client", "text", "also to the server")]
    assert s.data.outbox == []
    with pytest.raises(ValueError):
        s.data.inject("x", to="nobody")


def test_drop_and_inject_together_replace_a_message() -> None:
    def hook(flow: Flow, message: WebSocketMessage) -> None:
        if message.direction == "server":
            message.drop()
            flow.websocket.inject("instead", to="client")

    s = open_session(hooks={"websocket_message"}, hook=hook)
    s.from_server(TextMessage(data="original"))
    assert texts(s.at_client) == ["instead"]


def test_messages_queued_behind_a_hook_are_not_stalled() -> None:
    s = open_session(hooks={"websocket_message"})
    s.from_client(TextMessage(data="one"), TextMessage(data="two"))  # one read, two messages
    assert [m.content for m in s.hook_calls] == ["one", "two"]
    assert texts(s.at_server) == ["one", "two"]


def test_close_queued_behind_a_hook_is_relayed() -> None:
    s = open_session(hooks={"websocket_message"})
    s.from_client(TextMessage(data="bye"), CloseConnection(code=1000, reason="done"))
    assert [type(e) for e in s.at_server] == [TextMessage, CloseConnection]


def test_both_sides_are_held_while_a_hook_decides() -> None:
    s = open_session(hooks={"websocket_message"})
    out = s.d.client(s.client.send(TextMessage(data="first")))
    [run] = of_type(out, cmd.RunHook)
    assert to_upstream(out) == b""  # held for the hook
    out = s.d.client(s.client.send(TextMessage(data="second")))
    out += s.d.upstream(s.server.send(TextMessage(data="from the server")))
    assert of_type(out, cmd.PauseClient) and of_type(out, cmd.PauseUpstream)
    assert not of_type(out, cmd.RunHook) and to_upstream(out) == b"" and to_client(out) == b""
    out = s.d.feed(ev.HookReturned, call=run.call, result=run.payload)
    assert of_type(out, cmd.ResumeClient) and of_type(out, cmd.ResumeUpstream)
    s.take(out)
    assert texts(s.at_server) == ["first", "second"]
    assert texts(s.at_client) == ["from the server"]
    assert [m.content for m in s.hook_calls] == ["second", "from the server"]


def test_hook_error_leaves_the_message_unchanged() -> None:
    s = open_session(hooks={"websocket_message"})
    out = s.d.client(s.client.send(TextMessage(data="hello")))
    [run] = of_type(out, cmd.RunHook)
    out = s.d.feed(ev.HookReturned, call=run.call, error="websocket_message hook failed", result=run.payload)
    s.take(out)
    assert texts(s.at_server) == ["hello"]


# -- what the flow records --------------------------------------------------------------------


def test_flow_records_each_message_with_direction_type_size_time_and_bounded_content() -> None:
    s = open_session()
    s.d.advance(1.5)
    big = "x" * 10_000
    s.from_client(TextMessage(data=big))
    s.d.advance(2.0)
    s.from_server(BytesMessage(data=b"\x00" * 5000))
    s.from_client(Ping(payload=b"p"))
    rec = list(s.data.messages)
    assert [(m.direction, m.type, m.size) for m in rec] == [
        ("client", "text", 10_000), ("server", "binary", 5000), ("client", "ping", 1)]
    assert rec[0].time == 1001.5 and rec[1].time == 1003.5
    assert rec[0].content == big[: s.data.max_content]
    assert len(rec[1].content) == s.data.max_content
    assert s.data.message_count == 3


def test_flow_keeps_a_bounded_number_of_records() -> None:
    s = open_session()
    s.data.max_messages = 3
    for i in range(7):
        s.from_client(TextMessage(data=f"m{i}"))
    assert [m.content for m in s.data.messages] == ["m4", "m5", "m6"]
    assert s.data.message_count == 7 and s.data.dropped_records == 4
    assert texts(s.at_server) == [f"m{i}" for i in range(7)]


# -- peers that break the protocol ----------------------------------------------------------

CLIENT_VIOLATIONS = [
    pytest.param(frame(0x1, b"unmasked", mask=False), id="unmasked-client-frame"),
    pytest.param(frame(0x3, b"x", mask=True), id="reserved-opcode"),
    pytest.param(frame(0x1, b"x", mask=True, rsv=0b100), id="rsv1-without-extension"),
    pytest.param(frame(0x9, b"p" * 126, mask=True), id="oversized-ping"),
    pytest.param(frame(0x9, b"p", mask=True, fin=False), id="fragmented-ping"),
    pytest.param(frame(0x0, b"x", mask=True), id="continuation-without-start"),
]
SERVER_VIOLATIONS = [
    pytest.param(frame(0x1, b"masked", mask=True), id="masked-server-frame"),
    pytest.param(frame(0xB, b"x", mask=False), id="reserved-opcode"),
    pytest.param(frame(0x2, b"x", mask=False, rsv=0b010), id="rsv2"),
]


@pytest.mark.parametrize("split", [None, 1])
@pytest.mark.parametrize("bad", CLIENT_VIOLATIONS)
def test_client_breaking_the_protocol_gets_1002_and_the_server_is_closed(bad: bytes, split: Split) -> None:
    s = open_session()
    s.from_client(TextMessage(data="fine"))
    out = s.d.client(bad, split)
    assert close_code_of(to_client(out)) == 1002
    s._deliver(out)
    server_closes = [e for e in s.at_server if isinstance(e, CloseConnection)]
    assert [c.code for c in server_closes] == [1002]
    assert texts(s.at_server) == ["fine"]
    assert closes_client(out)
    assert of_type(out, cmd.CloseUpstream)
    [flow] = finished(s.d.transcript)
    assert flow.error is not None and "protocol" in flow.error
    assert s.data.closed_by == "client"
    # Nothing more goes anywhere once it is closed.
    later = s.d.client(s.client.send(TextMessage(data="late")) if s.client.state is ConnectionState.OPEN
                       else frame(0x1, b"late", mask=True))
    assert to_client(later) == b"" and to_upstream(later) == b""


@pytest.mark.parametrize("split", [None, 1])
@pytest.mark.parametrize("bad", SERVER_VIOLATIONS)
def test_server_breaking_the_protocol_gets_1002_and_the_client_is_closed(bad: bytes, split: Split) -> None:
    s = open_session()
    out = s.d.upstream(bad, split=split)
    s._deliver(out)
    peer = Connection(ConnectionType.SERVER)  # reads what went to the server (masked client frames)
    peer.receive_data(to_upstream(out))
    assert [e.code for e in peer.events() if isinstance(e, CloseConnection)] == [1002]
    assert [c.code for c in s.at_client if isinstance(c, CloseConnection)] == [1002]
    assert closes_client(out) and of_type(out, cmd.CloseUpstream)
    [flow] = finished(s.d.transcript)
    assert flow.error is not None and "server" in flow.error


def test_invalid_utf8_text_fails_the_connection_on_both_sides() -> None:
    s = open_session()
    out = s.d.client(frame(0x1, b"\xff\xfe not utf-8", mask=True))
    assert close_code_of(to_client(out)) in (1002, 1007)
    s._deliver(out)
    assert [e.code for e in s.at_server if isinstance(e, CloseConnection)] in ([1002], [1007])
    assert texts(s.at_server) == []
    assert closes_client(out) and of_type(out, cmd.CloseUpstream)


# -- timers ------------------------------------------------------------------------------------


def test_websocket_with_server_traffic_is_not_idle() -> None:
    s = open_session(config=ProxyConfig(idle_timeout=10.0))
    for _ in range(5):
        s.d.advance(4.0)
        s.from_server(TextMessage(data="tick"))
        for name, due in list(s.d.timers.items()):
            if due <= s.d.now:
                s.take(s.d.fire(name))
    assert not closes_client(s.d.transcript)
    assert texts(s.at_client) == ["tick"] * 5


def test_idle_websocket_closed_by_the_timer_finishes_its_flow() -> None:
    s = open_session(config=ProxyConfig(idle_timeout=10.0))
    s.d.advance(11.0)
    for _ in range(5):
        if "idle" not in s.d.timers or closes_client(s.d.transcript):
            break
        s.take(s.d.fire("idle"))
    assert closes_client(s.d.transcript)
    assert finished(s.d.transcript) == [s.flow]
    assert s.flow.state != "open"
    # Both peers are told, with a proper close frame.
    assert [(e.code, e.reason) for e in s.at_client if isinstance(e, CloseConnection)] == [(1001, "idle timeout")]
    assert [e.code for e in s.at_server if isinstance(e, CloseConnection)] == [1001]
    assert s.data.close_code == 1001 and of_type(s.d.transcript, cmd.CloseUpstream)


def test_read_timer_after_the_switch_does_not_end_the_websocket() -> None:
    s = open_session(config=ProxyConfig(read_timeout=5.0, idle_timeout=1000.0))
    s.d.advance(30.0)
    if "read" in s.d.timers:
        s.take(s.d.fire("read"))
    assert not closes_client(s.d.transcript)
    s.from_client(TextMessage(data="still here"))
    assert texts(s.at_server) == ["still here"]


@pytest.mark.parametrize("split", [None, 1])
def test_invalid_utf8_text_gets_1007_not_1002(split: Split) -> None:
    # RFC 6455 7.4.1: 1007 is for data inconsistent with the message type.
    s = open_session()
    out = s.d.client(frame(0x1, b"ok \xff\xfe", mask=True), split)
    assert close_code_of(to_client(out)) == 1007
    s._deliver(out)
    assert [c.code for c in s.at_server if isinstance(c, CloseConnection)] == [1002]
    assert closes_client(out)


def test_record_limits_come_from_the_config() -> None:
    s = open_session(config=ProxyConfig(websocket_max_messages=2, websocket_max_content=3))
    for text in ("one", "two", "three"):
        s.from_client(TextMessage(data=text))
    assert [m.content for m in s.data.messages] == ["two", "thr"]
    assert s.data.message_count == 3 and s.data.dropped_records == 1


def test_only_permessage_deflate_offers_are_forwarded() -> None:
    offer = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    d = Driver(ProxyConfig())
    d.client(UPGRADE.replace(offer, b"Sec-WebSocket-Extensions: x-webkit-deflate-frame, permessage-deflate\r\n"))
    d.connected()
    sent = to_upstream(d.transcript)
    assert field_values(sent, b"Sec-WebSocket-Extensions") == [b"permessage-deflate"]


def test_an_unknown_extension_the_server_agreed_to_is_relayed_unparsed() -> None:
    d = Driver(ProxyConfig())
    d.client(UPGRADE)
    d.connected()
    d.upstream(SWITCH.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: x-unknown\r\n\r\n", 1))
    assert d.conn.phase is not Phase.WEBSOCKET
    assert started(d.transcript)[0].kind == "upgrade"
