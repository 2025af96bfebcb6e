"""The HTTP/2 layers implement the exchange <-> layer seam of ``core/layers.py``."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from h2helpers import Pair, peer

from interceptkit.core.h1layers import H1ClientLayer
from interceptkit.core.http2 import H2ClientLayer, H2UpstreamLayer
from interceptkit.core.layers import (
    ClientLayer,
    HeadReceived,
    LayerEvent,
    MessageEnded,
    PeerClosed,
    ProtocolLayer,
    RequestHead,
    ResponseHead,
    StreamReset,
    UpstreamLayer,
)

CONFORMANCE = '''
from interceptkit.core.http2 import H2ClientLayer, H2UpstreamLayer
from interceptkit.core.layers import ClientLayer, UpstreamLayer

client: ClientLayer = H2ClientLayer()
upstream: UpstreamLayer = H2UpstreamLayer()
wrong: UpstreamLayer = H2ClientLayer()  # the one error expected
'''


def test_mypy_accepts_both_layers_as_the_seams_protocols_and_refuses_a_mixup(tmp_path: Path) -> None:
    from mypy import api  # a test-only tool; imported here to keep collection fast

    snippet = tmp_path / "conformance.py"
    snippet.write_text(CONFORMANCE)
    out, _, status = api.run(["--strict", "--no-error-summary", "--cache-dir", str(Path(__file__).parents[2] / ".mypy_cache"),
                              str(snippet)])
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert status == 1 and len(errors) == 1, out
    assert "conformance.py:7:" in errors[0] and '"UpstreamLayer"' in errors[0]


def test_the_layers_have_every_method_of_their_protocol_at_run_time() -> None:
    client, upstream = H2ClientLayer(), H2UpstreamLayer()
    assert isinstance(client, ClientLayer) and isinstance(upstream, UpstreamLayer)
    assert isinstance(client, ProtocolLayer) and not isinstance(client, UpstreamLayer)
    assert not isinstance(upstream, ClientLayer)  # it sends requests, it has no send_informational


def test_every_event_is_immutable_and_its_cheap_form_equals_its_keyword_form() -> None:
    for kind in typing.get_args(LayerEvent):
        values = {name: f"value of {name}" for name in kind._fields}
        event = kind(**values)
        assert tuple.__new__(kind, tuple(values.values())) == event  # what h1layers makes on the hot path
        for name in kind._fields:
            with pytest.raises(AttributeError):
                setattr(event, name, "changed")
        assert event == kind(**values)


def test_start_exchange_gives_fresh_xids_and_can_start_exchange_follows_the_stream_limit() -> None:
    layer = H2UpstreamLayer()
    up = Pair(layer, peer(client_side=False, max_streams=1)).pump()
    head = RequestHead(method=b"GET", target=b"/", scheme=b"https", authority=b"o.test", http_version=b"2")
    assert layer.can_start_exchange()
    first = layer.start_exchange()
    layer.send_head(first, head, end_stream=True)
    assert not layer.can_start_exchange()  # the origin allows one stream: the next would wait
    layer.send_head(40, head, end_stream=True)  # a caller-chosen xid: the queue takes it
    assert layer.queued == 1 and layer.start_exchange() == 41
    up.pump()
    up.peer.send_headers(1, [(b":status", b"204")], end_stream=True)
    up.pump()
    assert layer.queued == 0 and not layer.can_start_exchange()  # 40 now holds the one stream


def test_eof_between_messages_is_peer_closed_and_mid_message_a_reset() -> None:
    idle = Pair(H2ClientLayer(), peer(client_side=True)).pump()
    assert idle.layer.receive_data(b"") == [PeerClosed()]
    assert idle.layer.finished
    busy = Pair(H2ClientLayer(), peer(client_side=True)).pump()
    busy.peer.send_headers(1, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"a"),
                               (b":path", b"/")])
    busy.pump()
    assert busy.layer.receive_data(b"") == [StreamReset(xid=1, reason="connection closed"), PeerClosed()]


def test_an_http1_client_layer_frames_into_its_sink_in_order_and_has_nothing_left_to_take() -> None:
    """The connection hands the HTTP/1 client layer its own client buffer: an answer lands there as it is
    framed, after what was in it, and bytes_to_send() returns nothing (the bytes are out already)."""
    answer = (200, b"OK", [(b"Content-Length", b"2")])

    def serve(layer: H1ClientLayer) -> None:
        events = layer.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert [type(e) for e in events] == [HeadReceived, MessageEnded]
        status, reason, headers = answer
        layer.send_head(1, ResponseHead(status=status, reason=reason, headers=headers))
        layer.send_data(1, b"ok")
        layer.end(1)

    sink = [b"earlier bytes|"]
    with_sink = H1ClientLayer(65536, sink=sink)
    serve(with_sink)
    assert with_sink.bytes_to_send() == b""
    assert b"".join(sink) == b"earlier bytes|HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    own = H1ClientLayer(65536)  # without a sink: the bytes wait in the layer until taken
    serve(own)
    assert own.bytes_to_send() == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert own.bytes_to_send() == b""
