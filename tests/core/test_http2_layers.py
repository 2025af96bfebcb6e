"""The HTTP/2 layers driven against a real h2 peer in memory: transcripts of
what the peer sent, what the layer reported, and what the peer received."""

from __future__ import annotations

import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from h2helpers import Pair, data_of, frames_in, peer
from hypothesis import given, settings
from hypothesis import strategies as st
from hyperframe.frame import (
    DataFrame,
    ExtensionFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
)

from interceptkit.core.h2data import data_is_a_no_op
from interceptkit.core.h2settings import CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW
from interceptkit.core.layers import (
    ConnectionGoingAway,
    DataReceived,
    DataSent,
    HeadReceived,
    InformationalReceived,
    LayerFailed,
    MessageEnded,
    PeerClosed,
    RequestHead,
    ResponseHead,
    StreamReset,
    TrailersReceived,
)
from interceptkit.core.http2 import H2ClientLayer, H2UpstreamLayer, coalesced

REQ = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.test"), (b":path", b"/a?b=1"),
       (b"user-agent", b"t/1"), (b"Cookie".lower(), b"a=1"), (b"cookie", b"b=2")]


@pytest.fixture(params=[False, True], ids=["whole", "bytewise"])
def bytewise(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def client_pair(bytewise: bool = False) -> Pair:
    pair = Pair(H2ClientLayer(), peer(client_side=True), bytewise=bytewise).pump()
    pair.take()
    return pair


def upstream_pair(bytewise: bool = False, max_streams: int | None = None) -> Pair:
    pair = Pair(H2UpstreamLayer(), peer(client_side=False, max_streams=max_streams), bytewise=bytewise).pump()
    pair.take()
    return pair


def test_our_settings_are_what_a_proxy_needs() -> None:
    pair = Pair(H2ClientLayer(), peer(client_side=True)).pump()
    remote = pair.peer.remote_settings
    assert remote.enable_push == 0
    assert remote.initial_window_size == STREAM_WINDOW
    assert remote.max_frame_size == MAX_FRAME_SIZE
    assert remote.enable_connect_protocol == 0
    assert pair.peer.outbound_flow_control_window == CONNECTION_WINDOW


def test_settings_frame_on_the_wire_does_not_advertise_extended_connect() -> None:
    wire = H2UpstreamLayer().bytes_to_send()
    assert wire.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    frame, length = Frame.parse_frame_header(memoryview(wire[24:33]))
    frame.parse_body(memoryview(wire[33:33 + length]))
    assert isinstance(frame, SettingsFrame)
    assert h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL not in frame.settings
    assert frame.settings[h2.settings.SettingCodes.ENABLE_PUSH] == 0


def test_get_without_body_keeps_end_stream_on_headers(bytewise: bool) -> None:
    pair = client_pair(bytewise)
    pair.peer.send_headers(1, REQ, end_stream=True)
    ours, _ = pair.pump().take()
    head = RequestHead(method=b"GET", target=b"/a?b=1", scheme=b"https", authority=b"example.test", http_version=b"2",
                       headers=[(b"user-agent", b"t/1"), (b"cookie", b"a=1"), (b"cookie", b"b=2")])
    assert ours == [HeadReceived(xid=1, head=head, end_stream=True), MessageEnded(xid=1)]
    pair.layer.send_head(1, ResponseHead(status=204, headers=[(b"server", b"x")]), end_stream=True)
    _, theirs = pair.pump().take()
    assert [type(e) for e in theirs] == [h2.events.ResponseReceived, h2.events.StreamEnded]
    assert theirs[0].headers == [(b":status", b"204"), (b"server", b"x")]
    assert theirs[0].stream_ended is not None  # END_STREAM on HEADERS, no invented empty DATA
    assert pair.layer.active == 0


def test_post_with_body_and_response_with_trailers(bytewise: bool) -> None:
    pair = client_pair(bytewise)
    pair.peer.send_headers(1, [(b":method", b"POST"), *REQ[1:4], (b"te", b"trailers")])
    pair.peer.send_data(1, b"hello ")
    pair.peer.send_data(1, b"world")
    pair.peer.send_headers(1, [(b"x-checksum", b"abc")], end_stream=True)
    ours, _ = pair.pump().take()
    # two DATA frames read at once are one event (coalesced); read byte by byte, one event each
    data_events = [DataReceived] * (2 if bytewise else 1)
    assert [type(e) for e in ours] == [HeadReceived, *data_events, TrailersReceived, MessageEnded]
    assert b"".join(e.data for e in ours if isinstance(e, DataReceived)) == b"hello world"
    assert ours[-2] == TrailersReceived(xid=1, headers=[(b"x-checksum", b"abc")])
    pair.layer.send_head(1, ResponseHead(status=200, headers=[(b"content-type", b"application/grpc")]))
    assert pair.layer.send_data(1, b"payload") == 7
    pair.layer.send_trailers(1, [(b"grpc-status", b"0"), (b"grpc-message", b"")])
    _, theirs = pair.pump().take()
    assert [type(e) for e in theirs] == [h2.events.ResponseReceived, h2.events.DataReceived,
                                         h2.events.TrailersReceived, h2.events.StreamEnded]
    assert theirs[2].headers == [(b"grpc-status", b"0"), (b"grpc-message", b"")]
    assert data_of(theirs) == b"payload"


def test_peer_reset_reports_stream_reset_and_forgets_it() -> None:
    pair = client_pair()
    pair.peer.send_headers(1, REQ)
    pair.pump().take()
    pair.peer.reset_stream(1, ErrorCodes.CANCEL)
    ours, _ = pair.pump().take()
    assert ours == [StreamReset(xid=1, reason="peer reset the stream (CANCEL)", code=ErrorCodes.CANCEL)]
    assert pair.layer.active == 0
    pair.layer.send_head(1, ResponseHead(status=200))  # late answer for a reset stream: ignored
    assert pair.pump().take() == ([], [])


def test_our_reset_sends_rst_stream_cancel_and_leaves_other_streams() -> None:
    pair = client_pair()
    pair.peer.send_headers(1, REQ, end_stream=True)
    pair.peer.send_headers(3, REQ, end_stream=True)
    pair.pump().take()
    pair.layer.reset(1, "killed")
    pair.layer.send_head(3, ResponseHead(status=200), end_stream=True)
    _, theirs = pair.pump().take()
    assert isinstance(theirs[0], h2.events.StreamReset) and theirs[0].error_code == ErrorCodes.CANCEL
    assert theirs[0].stream_id == 1
    assert [(type(e), e.stream_id) for e in theirs[1:]] == [(h2.events.ResponseReceived, 3), (h2.events.StreamEnded, 3)]


def test_received_data_is_acknowledged_only_when_consumed() -> None:
    pair = client_pair()
    pair.peer.send_headers(1, [(b":method", b"POST"), *REQ[1:4]])
    pair.pump().take()
    window = pair.peer.local_flow_control_window(1)
    assert window == STREAM_WINDOW
    body = b"x" * 16384
    for _ in range(window // len(body)):
        pair.peer.send_data(1, body)
    ours, theirs = pair.pump().take()
    assert sum(len(e.data) for e in ours if isinstance(e, DataReceived)) == window
    assert pair.peer.local_flow_control_window(1) == 0  # nothing handed back: the writer is stopped
    assert pair.layer.unacknowledged(1) == window
    pair.layer.consumed(1, window)
    pair.pump()
    assert pair.peer.local_flow_control_window(1) == window
    assert pair.layer.unacknowledged(1) == 0


def test_pause_defers_acknowledgement_until_resume() -> None:
    pair = client_pair()
    pair.peer.send_headers(1, [(b":method", b"POST"), *REQ[1:4]])
    for _ in range(STREAM_WINDOW // 16384):
        pair.peer.send_data(1, b"y" * 16384)
    pair.pump().take()
    pair.layer.pause(1)
    pair.layer.consumed(1, STREAM_WINDOW)
    pair.pump()
    assert pair.peer.local_flow_control_window(1) == 0  # paused: consumed, not handed back
    pair.layer.resume(1)
    pair.pump()
    assert pair.peer.local_flow_control_window(1) == STREAM_WINDOW


def test_outbound_data_held_by_peer_window_is_released_on_window_update() -> None:
    pair = client_pair()
    pair.peer.send_headers(1, REQ, end_stream=True)
    pair.pump().take()
    pair.layer.send_head(1, ResponseHead(status=200))
    body = bytes(range(256)) * 800  # 204,800 bytes; the peer's window is 65,535
    assert pair.layer.send_data(1, body) == 65535
    pair.layer.end(1)
    _, theirs = pair.pump().take()
    assert pair.layer.pending(1) == len(body) - 65535 and not pair.layer.writable(1)
    assert pair.layer.pending_total == pair.layer.pending(1)
    assert h2.events.StreamEnded not in [type(e) for e in theirs]
    received = data_of(theirs)
    released = 0
    for _ in range(10):
        pair.peer.acknowledge_received_data(65535, 1)
        ours, theirs = pair.pump().take()
        released += sum(e.n for e in ours if isinstance(e, DataSent))
        received += data_of(theirs)
        if any(isinstance(e, h2.events.StreamEnded) for e in theirs):
            break
    assert received == body
    assert released == len(body) - 65535
    assert pair.layer.pending(1) == 0 and pair.layer.active == 0


def test_frames_up_to_our_larger_max_frame_size_are_accepted() -> None:
    pair = client_pair()
    assert pair.peer.max_outbound_frame_size == MAX_FRAME_SIZE
    pair.peer.send_headers(1, [(b":method", b"POST"), *REQ[1:4]])
    pair.peer.send_data(1, b"f" * MAX_FRAME_SIZE, end_stream=True)
    ours, _ = pair.pump().take()
    assert [type(e) for e in ours] == [HeadReceived, DataReceived, MessageEnded]
    assert len(ours[1].data) == MAX_FRAME_SIZE and not pair.layer.failed


def test_closed_streams_are_forgotten_no_map_grows() -> None:
    pair = client_pair()
    for n in range(300):
        sid = 2 * n + 1
        pair.peer.send_headers(sid, [(b":method", b"POST"), *REQ[1:4]])
        pair.peer.send_data(sid, b"abc", end_stream=True)
        pair.pump()
        pair.layer.consumed(sid, 3)
        pair.layer.send_head(sid, ResponseHead(status=200))
        pair.layer.send_data(sid, b"ok")
        pair.layer.end(sid)
        pair.pump()
        pair.take()
    assert pair.layer.active == 0
    assert pair.layer.tracked() == (0, 0)
    assert len(pair.peer.streams) <= 1


def test_informational_passes_both_ways() -> None:
    pair = client_pair()
    pair.peer.send_headers(1, REQ, end_stream=True)
    pair.pump().take()
    pair.layer.send_informational(1, ResponseHead(status=103, headers=[(b"link", b"</s.css>; rel=preload")]))
    _, theirs = pair.pump().take()
    assert isinstance(theirs[0], h2.events.InformationalResponseReceived)
    assert theirs[0].headers == [(b":status", b"103"), (b"link", b"</s.css>; rel=preload")]

    up = upstream_pair()
    up.layer.send_head(7, RequestHead(method=b"GET", scheme=b"https", authority=b"o.test", target=b"/"), end_stream=True)
    up.pump().take()
    up.peer.send_headers(1, [(b":status", b"100")])
    up.peer.send_headers(1, [(b":status", b"200")], end_stream=True)
    ours, _ = up.pump().take()
    assert ours == [InformationalReceived(xid=7, head=ResponseHead(status=100, http_version=b"2")),
                    HeadReceived(xid=7, head=ResponseHead(status=200, http_version=b"2"), end_stream=True), MessageEnded(xid=7)]


def test_ping_answered_priority_and_unknown_frames_ignored() -> None:
    pair = client_pair()
    frames = PingFrame(0, b"12345678").serialize() + PriorityFrame(3, depends_on=1).serialize()
    frames += ExtensionFrame(0xEE, 0, 0, b"zz").serialize()
    pair.feed_layer(frames)
    pair.peer_events += pair.peer.receive_data(pair.layer.bytes_to_send())
    ours, theirs = pair.take()
    assert ours == []
    assert [type(e) for e in theirs] == [h2.events.PingAckReceived]
    assert theirs[0].ping_data == b"12345678"
    assert not pair.layer.failed


def test_garbage_after_preface_becomes_goaway_and_layer_failed() -> None:
    pair = client_pair()
    pair.peer.send_headers(1, REQ, end_stream=True)
    pair.pump().take()
    events = pair.layer.receive_data(b"\x00\x00\x04\x09\x00\x00\x00\x00\x05garbage")  # CONTINUATION out of place
    assert len(events) == 1 and isinstance(events[0], LayerFailed)
    assert events[0].status_hint == 400 and events[0].xids == (1,)
    theirs = pair.peer.receive_data(pair.layer.bytes_to_send())
    goaway = [e for e in theirs if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway and goaway[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert pair.layer.receive_data(b"more") == []  # a failed layer stays quiet


def test_malformed_request_head_resets_only_that_stream() -> None:
    pair = Pair(H2ClientLayer(validate_inbound=False), peer(client_side=True, validate=False)).pump()
    pair.take()
    pair.peer.send_headers(1, [(b":method", b"GET"), (b":authority", b"x")], end_stream=True)  # no :path
    ours, theirs = pair.pump().take()
    assert ours == [StreamReset(xid=1, reason="malformed request head", code=ErrorCodes.PROTOCOL_ERROR)]
    assert isinstance(theirs[0], h2.events.StreamReset) and theirs[0].error_code == ErrorCodes.PROTOCOL_ERROR
    assert not pair.layer.failed


# -- upstream layer ----------------------------------------------------------

def get(path: bytes = b"/", headers: list[tuple[bytes, bytes]] | None = None) -> RequestHead:
    return RequestHead(method=b"GET", scheme=b"https", authority=b"o.test", target=path, headers=headers or [])


def test_upstream_request_with_te_trailers_and_body(bytewise: bool) -> None:
    up = upstream_pair(bytewise)
    head = RequestHead(method=b"POST", scheme=b"https", authority=b"o.test", target=b"/svc/M",
                       headers=[(b"content-type", b"application/grpc"), (b"te", b"trailers")])
    up.layer.send_head(41, head)
    up.layer.send_data(41, b"\x00\x00\x00\x00\x02hi")
    up.layer.end(41)
    _, theirs = up.pump().take()
    assert isinstance(theirs[0], h2.events.RequestReceived)
    assert theirs[0].headers == [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/svc/M"),
                                 (b":authority", b"o.test"), (b"content-type", b"application/grpc"),
                                 (b"te", b"trailers")]
    assert data_of(theirs) == b"\x00\x00\x00\x00\x02hi"
    up.peer.send_headers(1, [(b":status", b"200")])
    up.peer.send_data(1, b"resp")
    up.peer.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    ours, _ = up.pump().take()
    assert ours == [HeadReceived(xid=41, head=ResponseHead(status=200, http_version=b"2"), end_stream=False),
                    DataReceived(xid=41, data=b"resp"), TrailersReceived(xid=41, headers=[(b"grpc-status", b"0")]),
                    MessageEnded(xid=41)]
    up.layer.consumed(41, 4)
    assert up.layer.active == 0


def test_upstream_respects_max_concurrent_streams_with_a_fifo_queue() -> None:
    up = upstream_pair(max_streams=2)
    for xid in range(10, 15):
        up.layer.send_head(xid, get(b"/%d" % xid), end_stream=True)
    _, theirs = up.pump().take()
    opened = [e for e in theirs if isinstance(e, h2.events.RequestReceived)]
    assert [dict(e.headers)[b":path"] for e in opened] == [b"/10", b"/11"]
    assert up.layer.queued == 3
    served: list[int] = []
    for _ in range(5):
        sid = opened.pop(0).stream_id
        up.peer.send_headers(sid, [(b":status", b"200")], end_stream=True)
        ours, theirs = up.pump().take()
        served += [e.xid for e in ours if isinstance(e, HeadReceived)]
        opened += [e for e in theirs if isinstance(e, h2.events.RequestReceived)]
        assert len(up.peer.open_inbound_streams.__class__.__name__) and up.peer.open_inbound_streams <= 2
    assert served == [10, 11, 12, 13, 14]
    assert up.layer.queued == 0 and up.layer.active == 0


def test_upstream_goaway_finishes_covered_streams_and_fails_the_rest() -> None:
    up = upstream_pair()
    for xid in (100, 101, 102):
        up.layer.send_head(xid, get(), end_stream=True)
    up.pump().take()  # streams 1, 3, 5 at the origin
    goaway = GoAwayFrame(0, last_stream_id=3, error_code=0, additional_data=b"restart")
    ours, _ = up.pump(extra_to_layer=goaway.serialize()).take()
    assert ConnectionGoingAway(code=0, reason="peer sent GOAWAY (NO_ERROR): restart") in ours
    assert StreamReset(xid=102, reason="not processed: peer sent GOAWAY (NO_ERROR): restart",
                       code=ErrorCodes.REFUSED_STREAM, retryable=True) in ours
    assert not up.layer.accepts_new
    up.layer.send_head(103, get(), end_stream=True)
    assert up.layer.pop_events() == [StreamReset(xid=103, reason="connection is going away", retryable=True)]
    for sid in (1, 3):
        up.peer.send_headers(sid, [(b":status", b"200")])
        up.peer.send_data(sid, b"done", end_stream=True)
    ours, _ = up.pump().take()
    assert [(type(e), e.xid) for e in ours if isinstance(e, (HeadReceived, MessageEnded))] == [
        (HeadReceived, 100), (MessageEnded, 100), (HeadReceived, 101), (MessageEnded, 101)]
    assert not up.layer.finished  # their bodies are not consumed yet
    up.layer.consumed(100, 4)
    up.layer.consumed(101, 4)
    assert up.layer.finished


def test_upstream_peer_reset_refused_is_retryable() -> None:
    up = upstream_pair()
    up.layer.send_head(5, get(), end_stream=True)
    up.pump().take()
    up.peer.reset_stream(1, ErrorCodes.REFUSED_STREAM)
    ours, _ = up.pump().take()
    assert ours == [StreamReset(xid=5, reason="peer reset the stream (REFUSED_STREAM)",
                                code=ErrorCodes.REFUSED_STREAM, retryable=True)]


def test_upstream_push_promise_is_a_protocol_error() -> None:
    up = upstream_pair()
    up.layer.send_head(5, get(), end_stream=True)
    up.pump().take()
    # Push is disabled in our SETTINGS; a server pushing anyway breaks the protocol.
    from hyperframe.frame import PushPromiseFrame
    push = PushPromiseFrame(1, promised_stream_id=2, data=b"\x82\x87\x84", flags=["END_HEADERS"])
    events = up.layer.receive_data(push.serialize())
    assert len(events) == 1 and isinstance(events[0], LayerFailed) and events[0].status_hint == 502


def test_end_to_end_slow_reader_bounds_memory() -> None:
    """Origin -> upstream layer -> relay -> client layer -> a client that reads
    nothing: the origin is stopped after about one window, not 10 MiB."""
    client = client_pair()
    origin = upstream_pair()
    client.peer.send_headers(1, REQ, end_stream=True)
    client.pump().take()
    origin.layer.send_head(1, get(), end_stream=True)
    origin.pump().take()
    origin.peer.send_headers(1, [(b":status", b"200")])
    client.layer.send_head(1, ResponseHead(status=200))
    origin_sent = 0
    for _ in range(200):  # the origin offers 10 MiB as fast as its window allows
        room = min(origin.peer.local_flow_control_window(1), 16384)
        if room and origin_sent < 10 << 20:
            origin.peer.send_data(1, b"z" * room)
            origin_sent += room
        ours, _ = origin.pump().take()
        for event in ours:
            if isinstance(event, DataReceived):  # the relay: ack upstream only what left downstream
                origin.layer.consumed(1, client.layer.send_data(1, event.data))
        client.pump()
    assert origin_sent <= STREAM_WINDOW + 65535 * 2
    assert client.layer.pending(1) <= STREAM_WINDOW
    assert origin.layer.unacknowledged(1) == client.layer.pending(1)


def test_queued_request_keeps_its_body_and_end_until_a_slot_opens() -> None:
    up = upstream_pair(max_streams=1)
    up.layer.send_head(1, get(b"/first"), end_stream=True)
    post = RequestHead(method=b"POST", scheme=b"https", authority=b"o.test", target=b"/second")
    up.layer.send_head(2, post)
    assert up.layer.send_data(2, b"queued body") == 0 and up.layer.pending(2) == len(b"queued body")
    up.layer.end(2)
    _, theirs = up.pump().take()
    assert [dict(e.headers)[b":path"] for e in theirs if isinstance(e, h2.events.RequestReceived)] == [b"/first"]
    up.peer.send_headers(1, [(b":status", b"200")], end_stream=True)
    _, theirs = up.pump().take()
    assert [type(e) for e in theirs] == [h2.events.RequestReceived, h2.events.DataReceived, h2.events.StreamEnded]
    assert data_of(theirs) == b"queued body" and up.layer.pending(2) == 0


def test_connection_lost_ends_every_open_exchange() -> None:
    up = upstream_pair(max_streams=1)
    up.layer.send_head(1, get(), end_stream=True)
    up.layer.send_head(2, get(), end_stream=True)
    up.pump().take()
    assert up.layer.receive_data(b"") == [StreamReset(xid=1, reason="connection closed"),
                                          StreamReset(xid=2, reason="connection closed", retryable=True),
                                          PeerClosed()]
    assert up.layer.active == 0


def test_our_graceful_shutdown_lets_open_streams_finish() -> None:
    pair = client_pair()
    pair.peer.send_headers(1, REQ, end_stream=True)
    pair.pump().take()
    pair.layer.shutdown()
    [goaway] = frames_in(pair.layer.bytes_to_send())
    assert isinstance(goaway, GoAwayFrame) and goaway.last_stream_id == 1 and goaway.error_code == 0
    pair.peer.send_headers(3, REQ, end_stream=True)  # crosses our GOAWAY on the wire
    assert pair.layer.receive_data(pair.peer.data_to_send()) == []  # not an exchange
    [refused] = frames_in(pair.layer.bytes_to_send())
    assert isinstance(refused, RstStreamFrame) and refused.stream_id == 3
    assert refused.error_code == ErrorCodes.REFUSED_STREAM  # the client may retry it elsewhere
    pair.layer.send_head(1, ResponseHead(status=200), end_stream=True)
    answer = frames_in(pair.layer.bytes_to_send())  # the answer still goes out after our GOAWAY
    assert [(type(f), f.stream_id, "END_STREAM" in f.flags) for f in answer] == [(HeadersFrame, 1, True)]
    assert pair.layer.active == 0 and pair.layer.finished


def test_reset_streams_give_their_unconsumed_bytes_back_to_the_connection_window() -> None:
    """Bytes a reset stream never forwarded must not shrink the connection
    window for ever: after 10 such streams of 1 MiB the peer can send again."""
    pair = client_pair()
    for n in range(10):
        sid = 2 * n + 1
        pair.peer.send_headers(sid, [(b":method", b"POST"), *REQ[1:4]])
        for _ in range(STREAM_WINDOW // 16384):
            pair.peer.send_data(sid, bytes(16384))
        pair.pump()
        assert pair.layer.unacknowledged(sid) == STREAM_WINDOW
        pair.layer.reset(sid)
        pair.pump().take()
    assert pair.peer.outbound_flow_control_window >= CONNECTION_WINDOW - 2 * STREAM_WINDOW
    assert pair.layer.active == 0


def test_prior_knowledge_preface_sniffing() -> None:
    from interceptkit.core.http2 import PREFACE, starts_with_h2_preface

    assert starts_with_h2_preface(PREFACE + b"\x00\x00") is True
    assert starts_with_h2_preface(b"") is None and starts_with_h2_preface(b"PRI * HT") is None
    assert starts_with_h2_preface(b"GET / HTTP/1.1\r\n") is False
    assert starts_with_h2_preface(b"PRI * HTTP/1.1") is False
    sniffed = peer(client_side=True).data_to_send()  # a real client's first bytes
    assert starts_with_h2_preface(sniffed) is True
    events = H2ClientLayer().receive_data(sniffed)
    assert not any(isinstance(e, LayerFailed) for e in events)


# -- DATA framing: h2 frames the first (and an END_STREAM) frame of a run, the layer the frames between ---------


def _big_window_client(window: int = 1 << 20) -> Pair:
    """A client layer whose peer allows ``window`` bytes (stream and connection) in 16 KiB frames."""
    pair = Pair(H2ClientLayer(), peer(client_side=True)).pump()
    pair.peer.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    pair.peer.increment_flow_control_window(window)
    pair.pump().take()
    return pair


@pytest.mark.parametrize("size,end", [(16384, False), (16385, True), (100_000, False), (100_000, True),
                                      (3 * 16384, True), (3 * 16384, False), (1, True)])
def test_a_run_of_data_frames_is_byte_for_byte_what_h2_would_send(size: int, end: bool) -> None:
    pair = _big_window_client()
    pair.peer.send_headers(1, REQ, end_stream=True)
    pair.pump().take()
    pair.layer.send_head(1, ResponseHead(status=200))
    pair.peer.receive_data(pair.layer.bytes_to_send())
    window = pair.layer._conn.local_flow_control_window(1)
    connection_window = pair.layer._conn.outbound_flow_control_window
    body = bytes(range(256)) * (size // 256 + 1)
    body = body[:size]
    pair.layer.send_data(1, body)
    assert pair.layer._conn.local_flow_control_window(1) == window - size
    assert pair.layer._conn.outbound_flow_control_window == connection_window - size
    if end:
        pair.layer.end(1)
    wire = pair.layer.bytes_to_send()
    frames = frames_in(wire)
    # what h2 itself makes: one DataFrame per 16 KiB; the end, given after the DATA went, an empty END_STREAM frame
    expected = b"".join(DataFrame(1, body[at:at + 16384]).serialize() for at in range(0, size, 16384))
    if end:
        expected += DataFrame(1, b"", flags=["END_STREAM"]).serialize()
    assert wire == expected, [(type(f).__name__, len(getattr(f, "data", b""))) for f in frames]
    pair.peer_events += pair.peer.receive_data(wire)  # the peer's h2 accepts them (its windows, its states)
    _, theirs = pair.take()
    assert data_of(theirs) == body
    assert any(isinstance(e, h2.events.StreamEnded) for e in theirs) is end


@given(pieces=st.lists(st.integers(1, 70_000), min_size=1, max_size=6),
       acks=st.lists(st.integers(0, 90_000), min_size=1, max_size=12),
       trailers=st.booleans())
@settings(max_examples=60, deadline=None)
def test_random_bodies_and_windows_arrive_whole_and_in_order(pieces: list[int], acks: list[int],
                                                             trailers: bool) -> None:
    """Pieces of any size against windows that open by any amount: the peer's h2
    accepts every frame (no window overrun, frames within its MAX_FRAME_SIZE)
    and receives the body whole, in order, then the end."""
    pair = client_pair()  # the peer's default 65,535-byte windows
    pair.peer.send_headers(1, REQ, end_stream=True)
    pair.pump().take()
    pair.layer.send_head(1, ResponseHead(status=200))
    body = b"".join(bytes([i % 251]) * n for i, n in enumerate(pieces))
    at = 0
    for n in pieces:
        pair.layer.send_data(1, body[at:at + n])
        at += n
    if trailers:
        pair.layer.send_trailers(1, [(b"grpc-status", b"0")])
    else:
        pair.layer.end(1)
    received = b""
    ended = False
    for ack in [*acks, *([65535] * 200)]:
        _, theirs = pair.pump().take()
        received += data_of(theirs)
        ended = ended or any(isinstance(e, h2.events.StreamEnded) for e in theirs)
        if ended:
            break
        if ack:  # the peer opens both windows by ``ack`` (it never acknowledges on its own)
            pair.peer.increment_flow_control_window(ack, stream_id=1)
            pair.peer.increment_flow_control_window(ack)
    assert received == body and ended
    assert pair.layer.pending(1) == 0 and not pair.layer.failed


@pytest.mark.parametrize("trailers", [False, True])
def test_held_data_released_with_its_end_rides_on_the_last_frame(trailers: bool) -> None:
    pair = _big_window_client(window=20_000)
    pair.peer.increment_flow_control_window(1 << 20)
    pair.peer.send_headers(1, REQ, end_stream=True)
    pair.pump().take()
    pair.layer.send_head(1, ResponseHead(status=200))
    pair.peer.receive_data(pair.layer.bytes_to_send())
    body = bytes(range(256)) * 400  # 102,400 bytes
    assert pair.layer.send_data(1, body) == 20_000
    if trailers:
        pair.layer.send_trailers(1, [(b"grpc-status", b"0")])
    else:
        pair.layer.end(1)
    first = pair.layer.bytes_to_send()
    assert first == DataFrame(1, body[:16384]).serialize() + DataFrame(1, body[16384:20_000]).serialize()
    pair.peer.receive_data(first)
    pair.peer.increment_flow_control_window(200_000, stream_id=1)
    pair.layer.receive_data(pair.peer.data_to_send())
    wire = pair.layer.bytes_to_send()
    rest = body[20_000:]
    frames = [DataFrame(1, rest[at:at + 16384]) for at in range(0, len(rest), 16384)]
    if not trailers:
        frames[-1].flags.add("END_STREAM")
    assert wire.startswith(b"".join(f.serialize() for f in frames))
    assert [type(f) for f in frames_in(wire)] == [DataFrame] * len(frames) + ([HeadersFrame] if trailers else [])
    _, theirs = Pair(pair.layer, pair.peer, peer_events=pair.peer.receive_data(wire)).take()
    assert data_of(theirs) == rest and any(isinstance(e, h2.events.StreamEnded) for e in theirs)
    assert pair.layer.active == 0


def test_coalesced_merges_only_neighbouring_data_of_one_stream() -> None:
    events = [DataReceived(xid=1, data=b"a"), DataReceived(xid=1, data=b"b"), DataReceived(xid=3, data=b"c"),
              DataReceived(xid=3, data=b"d"), DataReceived(xid=3, data=b"e"), MessageEnded(xid=3),
              DataReceived(xid=1, data=b"f"), TrailersReceived(xid=1, headers=[]), DataReceived(xid=5, data=b"g")]
    assert coalesced(events) == [DataReceived(xid=1, data=b"ab"), DataReceived(xid=3, data=b"cde"),
                                 MessageEnded(xid=3), DataReceived(xid=1, data=b"f"),
                                 TrailersReceived(xid=1, headers=[]), DataReceived(xid=5, data=b"g")]
    assert coalesced([]) == [] and coalesced(events[:1]) == events[:1]


def test_many_data_frames_in_one_read_are_one_event_and_flow_control_counts_them_all() -> None:
    pair = upstream_pair()
    pair.layer.send_head(1, get(), end_stream=True)
    pair.pump().take()
    pair.peer.send_headers(1, [(b":status", b"200")])
    body = b"".join(bytes([i]) * 16384 for i in range(40)) + b"z" * 100  # 40 frames, over half the stream window
    for at in range(0, len(body), 16384):
        pair.peer.send_data(1, body[at:at + 16384])
    window = pair.peer.local_flow_control_window(1)
    ours, _ = pair.pump().take()
    assert [type(e) for e in ours] == [HeadReceived, DataReceived] and ours[1].data == body
    assert pair.layer.unacknowledged(1) == len(body)
    pair.layer.consumed(1, len(body))
    pair.pump()
    assert pair.layer.unacknowledged(1) == 0
    assert pair.peer.local_flow_control_window(1) == window + len(body)  # one WINDOW_UPDATE for all of it
    pair.peer.send_data(1, b"", end_stream=True)
    ours, _ = pair.pump().take()
    assert [type(e) for e in ours] == [MessageEnded] and pair.layer.active == 0


def test_data_is_framed_without_h2_only_where_h2_would_change_no_state() -> None:
    pair = _big_window_client()
    pair.peer.send_headers(1, REQ, end_stream=True)  # stream 1: half-closed (remote) for the layer
    pair.peer.send_headers(3, [(b":method", b"POST"), *REQ[1:4]])  # stream 3: open
    pair.pump().take()
    layer = pair.layer
    assert data_is_a_no_op(layer._conn, 1) and data_is_a_no_op(layer._conn, 3)
    assert not data_is_a_no_op(layer._conn, 5)  # no such stream: h2 frames it (and raises)
    layer.send_head(1, ResponseHead(status=200))
    layer.send_data(1, b"x" * 40_000)
    layer.end(1)
    assert 1 not in layer._conn.streams or not data_is_a_no_op(layer._conn, 1)  # closed: never framed by hand
    layer._conn.state_machine.state = h2.connection.ConnectionState.CLOSED
    assert not data_is_a_no_op(layer._conn, 3)
    layer._conn.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
    _, theirs = pair.pump().take()
    assert data_of(theirs, 1) == b"x" * 40_000
