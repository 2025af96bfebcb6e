"""Hypothesis: whatever frames or bytes a peer sends, an HTTP/2 layer only
reports events (a protocol error is a GOAWAY and one LayerFailed): nothing
raises out of it. The layer is also driven as a proxy would (answers,
consumes, resets) while the garbage arrives, so its own calls are fuzzed too."""

from __future__ import annotations

import hpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from interceptkit.core.h2base import H2Layer
from interceptkit.core.layers import DataReceived, HeadReceived, LayerEvent, LayerFailed, PeerClosed, RequestHead, ResponseHead
from interceptkit.core.http2 import H2ClientLayer, H2UpstreamLayer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 2**31 - 1])
payload = st.binary(max_size=64)
flags = st.lists(st.sampled_from(["END_STREAM", "END_HEADERS", "PADDED", "PRIORITY", "ACK"]), max_size=3, unique=True)

REQUEST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"a.test"), (b":path", b"/")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"text/plain")]


def _block(headers: list[tuple[bytes, bytes]]) -> bytes:
    return bytes(hpack.Encoder().encode(headers))  # a fresh encoder: no table state shared


def _flagged(frame: Frame, chosen: list[str]) -> Frame:
    for flag in chosen:
        if flag in {f.name for f in frame.defined_flags}:
            frame.flags.add(flag)
    return frame


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    sid = draw(stream_ids)
    nonzero = sid or 1
    kind = draw(st.integers(0, 12))
    if kind == 0:
        frame: Frame = DataFrame(nonzero, data=draw(payload))
    elif kind == 1:
        block = draw(st.sampled_from([_block(REQUEST), _block(RESPONSE), b""]) | payload)
        frame = HeadersFrame(nonzero, data=block)
    elif kind == 2:
        frame = PriorityFrame(nonzero, depends_on=draw(stream_ids), stream_weight=draw(st.integers(0, 255)))
    elif kind == 3:
        frame = RstStreamFrame(nonzero, error_code=draw(st.integers(0, 20)))
    elif kind == 4:
        frame = SettingsFrame(0, settings=draw(st.dictionaries(st.integers(1, 9), st.integers(0, 2**32 - 1), max_size=3)))
    elif kind == 5:
        frame = PushPromiseFrame(nonzero, promised_stream_id=draw(stream_ids) or 2, data=draw(payload))
    elif kind == 6:
        frame = PingFrame(0, opaque_data=draw(st.binary(min_size=8, max_size=8)))
    elif kind == 7:
        frame = GoAwayFrame(0, last_stream_id=draw(stream_ids), error_code=draw(st.integers(0, 13)))
    elif kind == 8:
        frame = WindowUpdateFrame(sid, window_increment=draw(st.integers(1, 2**31 - 1)))
    elif kind == 9:
        frame = ContinuationFrame(nonzero, data=draw(payload))
    elif kind == 10:
        return draw(st.binary(max_size=40))  # raw garbage in the middle
    else:
        frame = ExtensionFrame(draw(st.integers(10, 255)), sid, draw(st.integers(0, 255)), draw(payload))
    return _flagged(frame, draw(flags)).serialize()


def drive(layer: H2Layer, chunks: list[bytes]) -> None:
    """Feed chunks, answering and consuming like the exchange logic would."""
    for chunk in filter(None, chunks):  # b"" is the peer's EOF: it comes last, below
        events = layer.receive_data(chunk)
        assert all(isinstance(e, LayerEvent) for e in events)
        for event in events:
            if isinstance(event, DataReceived):
                layer.pause(event.xid)
                layer.consumed(event.xid, len(event.data))
                layer.resume(event.xid)
            elif isinstance(event, HeadReceived) and isinstance(layer, H2ClientLayer):
                if event.xid % 4 == 3:
                    layer.reset(event.xid)  # a killed flow
                    continue
                layer.send_head(event.xid, ResponseHead(status=200))
                layer.send_data(event.xid, b"x" * 70000)
                layer.send_trailers(event.xid, [(b"x-t", b"1")])
        layer.bytes_to_send()
        assert all(isinstance(e, LayerEvent) for e in layer.pop_events())
    at_eof = layer.receive_data(b"")
    assert at_eof[-1] == PeerClosed()
    assert not [e for e in at_eof if isinstance(e, LayerFailed)]  # EOF reports streams, never a second failure


def client_layer() -> H2ClientLayer:
    layer = H2ClientLayer()
    layer.receive_data(PREFACE + SettingsFrame(0).serialize())
    return layer


def upstream_layer() -> H2UpstreamLayer:
    layer = H2UpstreamLayer()
    layer.receive_data(SettingsFrame(0).serialize())
    for xid in (1, 2):
        layer.send_head(xid, RequestHead(
            method=b"POST", scheme=b"https", authority=b"o.test", target=b"/"))
        layer.send_data(xid, b"y" * 100)
    return layer


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lead(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A valid head and some DATA on stream 1, so the garbage meets a live stream."""
    head = HeadersFrame(1, data=_block(headers), flags=["END_HEADERS"]).serialize()
    return head + DataFrame(1, data=b"d" * 50).serialize()


def _split(chunks: list[bytes], bytewise: bool) -> list[bytes]:
    data = b"".join(chunks)
    return [data[i:i + 1] for i in range(len(data))] if bytewise else chunks


@FUZZ
@given(st.booleans(), st.lists(frames(), max_size=12), st.booleans())
def test_client_layer_survives_arbitrary_frames(live: bool, chunks: list[bytes], bytewise: bool) -> None:
    drive(client_layer(), _split([lead(REQUEST)] * live + chunks, bytewise))


@FUZZ
@given(st.booleans(), st.lists(frames(), max_size=12), st.booleans())
def test_upstream_layer_survives_arbitrary_frames(live: bool, chunks: list[bytes], bytewise: bool) -> None:
    drive(upstream_layer(), _split([lead(RESPONSE)] * live + chunks, bytewise))


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_the_preface(data: bytes) -> None:
    drive(client_layer(), [data])
    drive(upstream_layer(), [data])


@FUZZ
@given(st.binary(max_size=100))
def test_arbitrary_bytes_instead_of_the_preface(data: bytes) -> None:
    layer = H2ClientLayer()
    events = layer.receive_data(data)
    if data:
        assert all(isinstance(e, LayerFailed) for e in events)
    else:
        assert events == [PeerClosed()]  # EOF before the preface
