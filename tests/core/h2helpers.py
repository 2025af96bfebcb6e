"""In-memory HTTP/2 peers for the layer tests: a real ``H2Connection`` on the
other side of each layer, bytes pumped both ways until both are quiet."""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

from interceptkit.core.h2base import H2Layer
from interceptkit.core.layers import LayerEvent


def peer(*, client_side: bool, max_streams: int | None = None, validate: bool = True) -> h2.connection.H2Connection:
    """A plain h2 endpoint with default settings (65,535-byte windows) that
    never acknowledges DATA by itself: the tests do that explicitly.
    ``validate=False`` lets it send malformed heads."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=client_side, header_encoding=None, validate_outbound_headers=validate))
    if max_streams is not None:
        conn.local_settings = h2.settings.Settings(client=client_side, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams})
    conn.initiate_connection()
    return conn


@dataclass
class Pair:
    layer: H2Layer
    peer: h2.connection.H2Connection
    bytewise: bool = False
    layer_events: list[LayerEvent] = field(default_factory=list)
    peer_events: list[h2.events.Event] = field(default_factory=list)

    def feed_layer(self, data: bytes) -> None:
        if self.bytewise:
            for i in range(len(data)):
                self.layer_events += self.layer.receive_data(data[i:i + 1])
        else:
            self.layer_events += self.layer.receive_data(data)

    def pump(self, extra_to_layer: bytes = b"") -> Pair:
        """Move bytes both ways until neither side has anything to send."""
        self.layer_events += self.layer.pop_events()
        pending = extra_to_layer
        for _ in range(1000):
            pending = self.peer.data_to_send() + pending
            if pending:
                self.feed_layer(pending)
            out = self.layer.bytes_to_send()
            if out:
                self.peer_events += self.peer.receive_data(out)
            pending = b""
            if not out and not self.peer.data_to_send():
                return self
        raise AssertionError("the two sides never went quiet")

    def take(self) -> tuple[list[LayerEvent], list[h2.events.Event]]:
        """Events seen since the last take(); the peer's housekeeping events left out."""
        ours, theirs = self.layer_events, self.peer_events
        self.layer_events, self.peer_events = [], []
        quiet = (h2.events.RemoteSettingsChanged, h2.events.SettingsAcknowledged, h2.events.WindowUpdated)
        return ours, [e for e in theirs if not isinstance(e, quiet)]


def data_of(events: list[h2.events.Event], stream_id: int | None = None) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)
                    and (stream_id is None or e.stream_id == stream_id))


def frames_in(data: bytes) -> list[object]:
    """The frames in ``data`` (no preface), parsed with hyperframe."""
    from hyperframe.frame import Frame

    frames, at = [], 0
    while at < len(data):
        frame, length = Frame.parse_frame_header(memoryview(data[at:at + 9]))
        frame.parse_body(memoryview(data[at + 9:at + 9 + length]))
        frames.append(frame)
        at += 9 + length
    return frames
