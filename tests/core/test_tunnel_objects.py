"""The objects a connection's tunnel, WebSocket and parent-proxy CONNECT are made of (no sockets).

``Tunnel.sniff`` decides from a tunnel's first bytes what it carries;
``ParentTunnel`` reads a parent proxy's answer to our CONNECT;
``WebSocketSession`` carries both wsproto sides of one WebSocket. The
whole-connection behaviour is covered by the transcript tests; these pin what
each object answers on its own.
"""

from __future__ import annotations

import ssl

import pytest
from wsproto.events import CloseConnection, TextMessage
from wsproto.frame_protocol import Opcode

from interceptkit.flow import Flow, Request
from interceptkit.core.exchange import Exchange
from interceptkit.core.tunnel import SNIFF_LIMIT, Sniffed, Tunnel
from interceptkit.core.upstreamproxy import ParentAnswer, ParentTunnel, parse_upstream_proxy
from interceptkit.core.websocket import CLIENT, SERVER, WebSocketData
from interceptkit.core.wssession import WebSocketSession

PARENT = parse_upstream_proxy("http://ada:pw@10.0.0.1:3128")


def client_hello(hostname: str, alpn: list[str]) -> bytes:
    """A real ClientHello, as the ssl module's own client sends it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    sslobj = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=hostname)
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


def sniffed(*chunks: bytes) -> tuple[Sniffed, Tunnel]:
    tunnel = Tunnel()
    verdict = None
    for chunk in chunks:
        tunnel.add_early(chunk)
        verdict = tunnel.sniff()
    assert verdict is not None
    return verdict.kind, tunnel


# -- Tunnel.sniff ------------------------------------------------------------------


def test_a_whole_client_hello_is_tls_and_its_alpn_offer_is_kept() -> None:
    hello = client_hello("example.test", ["h2", "http/1.1"])
    tunnel = Tunnel()
    tunnel.add_early(hello)
    verdict = tunnel.sniff()
    assert verdict.kind is Sniffed.TLS
    assert verdict.hello is not None and verdict.hello.sni == "example.test"
    assert tunnel.client_offer == ("h2", "http/1.1")
    assert tunnel.take_early() == hello  # sniffing consumes nothing
    assert not tunnel.has_early


def test_a_client_hello_in_pieces_waits_until_it_is_whole() -> None:
    hello = client_hello("example.test", ["http/1.1"])
    kind, tunnel = sniffed(hello[:10])
    assert kind is Sniffed.WAIT and tunnel.client_offer == ()
    kind, _ = sniffed(hello[:10], hello[10:])
    assert kind is Sniffed.TLS


def test_a_request_line_is_http_and_other_bytes_are_raw() -> None:
    assert sniffed(b"GET / HTTP/1.1\r\n")[0] is Sniffed.HTTP
    assert sniffed(b"SSH-2.0-OpenSSH_9.6\r\n")[0] is Sniffed.RAW
    assert sniffed(b"")[0] is Sniffed.WAIT


def test_a_tls_record_that_never_completes_a_hello_is_raw_past_the_limit() -> None:
    # Well-formed handshake records of a ClientHello announced as 128 KiB long (TLS allows it).
    record = b"\x16\x03\x01\x40\x00"
    first = record + b"\x01\x02\x00\x00" + b"\x00" * (0x4000 - 4)
    more = (record + b"\x00" * 0x4000) * (SNIFF_LIMIT // 0x4000)
    assert sniffed(first)[0] is Sniffed.WAIT
    assert sniffed(first, more[: SNIFF_LIMIT - len(first)])[0] is Sniffed.WAIT
    assert sniffed(first, more)[0] is Sniffed.RAW


def test_the_tunnel_flow_and_the_answered_flag() -> None:
    tunnel = Tunnel()
    flow = Flow(id=1, request=Request(method="CONNECT", scheme="https", host="example.test", port=443, path=""))
    tunnel.open(flow)
    assert tunnel.flow is flow and not tunnel.answered
    tunnel.mark_answered()
    assert tunnel.answered
    assert tunnel.take_flow() is flow and tunnel.flow is None


def test_an_intercepted_tunnel_keeps_its_origin_and_server_name() -> None:
    tunnel = Tunnel()
    tunnel.name_server("example.test")
    tunnel.intercept("http", "example.test", 80)
    assert tunnel.origin == ("http", "example.test", 80) and tunnel.server_name == "example.test"
    tunnel.intercept("https", "10.0.0.5", 443, "api.example.test")
    assert tunnel.origin == ("https", "10.0.0.5", 443) and tunnel.server_name == "api.example.test"


# -- ParentTunnel ------------------------------------------------------------------


def test_the_connect_to_the_parent_carries_its_credentials() -> None:
    request = ParentTunnel(PARENT, "::1", 8443).request_bytes()
    assert request.startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n")
    assert b"Proxy-Authorization: Basic " in request


def test_a_2xx_opens_the_tunnel_with_the_bytes_after_it() -> None:
    reader = ParentTunnel(PARENT, "example.com", 443)
    verdict = reader.receive(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n\x16\x03\x03")
    assert verdict.kind is ParentAnswer.OPEN and verdict.trailing == b"\x16\x03\x03"


def test_an_answer_byte_by_byte_opens_the_tunnel_on_its_last_byte() -> None:
    reader = ParentTunnel(PARENT, "example.com", 443)
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Connection established\r\n\r\n"
    kinds = [reader.receive(answer[i:i + 1]).kind for i in range(len(answer))]
    assert kinds == [ParentAnswer.WAIT] * (len(answer) - 1) + [ParentAnswer.OPEN]


@pytest.mark.parametrize(("answer", "what"), [
    (b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
     "answered CONNECT with 407 Proxy Authentication Required"),
    (b"NOT HTTP AT ALL\r\n\r\n", "answered CONNECT with invalid HTTP"),
    (b"", "closed the connection without answering CONNECT"),
])
def test_anything_but_a_2xx_fails_saying_what_the_parent_did(answer: bytes, what: str) -> None:
    verdict = ParentTunnel(PARENT, "example.com", 443).receive(answer)
    assert verdict.kind is ParentAnswer.FAILED
    assert verdict.what.startswith(what)


# -- WebSocketSession --------------------------------------------------------------


def _session() -> WebSocketSession:
    flow = Flow(id=1, request=Request(method="GET", scheme="http", host="example.test", port=80, path="/ws"))
    flow.websocket = WebSocketData()
    return WebSocketSession(Exchange(1, flow, absolute_form=False))


def _masked_text(text: bytes, fin: bool = True) -> bytes:
    """A client's text frame (masked with a zero key, so the payload reads as is)."""
    return bytes([(0x80 if fin else 0) | Opcode.TEXT, 0x80 | len(text)]) + b"\x00" * 4 + text


def test_a_session_queues_each_sides_events_in_order() -> None:
    ws = _session()
    ws.receive(CLIENT, _masked_text(b"hi"))
    ws.receive(SERVER, bytes([0x81, 3]) + b"yo!")
    events = []
    while ws.has_pending:
        events.append(ws.next_event())
    assert [(side, type(e), e.data) for side, e in events] == [
        (CLIENT, TextMessage, "hi"), (SERVER, TextMessage, "yo!")]
    # Framed anew for each side: unmasked towards the client, masked towards the server.
    assert ws.send(CLIENT, TextMessage(data="hi")) == b"\x81\x02hi"
    assert ws.send(SERVER, TextMessage(data="hi"))[1] & 0x80


def test_fragments_and_streamed_counts_are_kept_per_side() -> None:
    ws = _session()
    assert ws.add_fragment(CLIENT, "ab") == 2
    assert ws.add_fragment(CLIENT, "cde") == 5
    assert ws.add_fragment(SERVER, b"x") == 1
    assert ws.take_fragments(CLIENT) == ["ab", "cde"] and ws.take_fragments(CLIENT) == []
    ws.add_streamed(SERVER, 10)
    ws.add_streamed(SERVER, 5)
    assert ws.take_streamed(SERVER) == 15 and ws.take_streamed(SERVER) == 0
    assert ws.take_fragments(SERVER) == [b"x"]


def test_a_session_is_finished_once_both_sides_closed() -> None:
    ws = _session()
    ws.receive(CLIENT, bytes([0x88, 0x82]) + b"\x00" * 4 + b"\x03\xe8")  # the client's close 1000
    side, event = ws.next_event()
    assert side == CLIENT and isinstance(event, CloseConnection) and event.code == 1000
    assert not ws.is_protocol_error(CLIENT, event)
    assert ws.close_frame(CLIENT, 1000)  # our answer to the client's close
    assert not ws.finished()
    assert ws.close_frame(SERVER, 1006)  # 1006 is reported, never sent: it goes out as 1000
    ws.receive(SERVER, bytes([0x88, 2]) + b"\x03\xe8")
    assert ws.finished()
    assert ws.flow.websocket is ws.data
