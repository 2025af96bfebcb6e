"""A bare h2 <-> h2 relay built from the two layers, for tests only.

It is the recipe the exchange logic follows, without hooks or flows: one
H2ClientLayer towards the client, one H2UpstreamLayer towards the origin,
events of one side turned into calls on the other, and body bytes
acknowledged (``consumed``) only once the other layer has framed them.
TLS on both sides with the origin's test PKI; one thread per client.
"""

from __future__ import annotations

import select
import socket
import ssl

from tls_origin import ADDRESS, OriginPKI, h2_server_context, serve_connections

from interceptkit.core.http2 import H2ClientLayer, H2UpstreamLayer
from interceptkit.core.layers import (
    ClientLayer,
    DataReceived,
    DataSent,
    HeadReceived,
    InformationalReceived,
    LayerEvent,
    LayerFailed,
    MessageEnded,
    PeerClosed,
    ProtocolLayer,
    RequestHead,
    ResponseHead,
    StreamReset,
    TrailersReceived,
    UpstreamLayer,
)


class Bridge:
    """Events of one layer as calls on the other, written against the seam's
    Protocols only. Upstream xids come from ``start_exchange()``; the two
    maps pair them with the client's stream ids."""

    def __init__(self, down: ClientLayer, up: UpstreamLayer) -> None:
        self.down, self.up = down, up
        self.up_of: dict[int, int] = {}  # client xid -> upstream xid
        self.down_of: dict[int, int] = {}

    def from_down(self, event: LayerEvent) -> bool:
        """A client-side event; False when the connection is over."""
        if isinstance(event, HeadReceived) and isinstance(event.head, RequestHead):
            xid = self.up.start_exchange()
            self.up_of[event.xid], self.down_of[xid] = xid, event.xid
            self.up.send_head(xid, event.head, end_stream=event.end_stream)
            return True
        return self._common(event, self.down, self.up, self.up_of)

    def from_up(self, event: LayerEvent) -> bool:
        """An upstream event; False when the connection is over."""
        if isinstance(event, HeadReceived) and isinstance(event.head, ResponseHead):
            self.down.send_head(self.down_of[event.xid], event.head, end_stream=event.end_stream)
        elif isinstance(event, InformationalReceived):
            self.down.send_informational(self.down_of[event.xid], event.head)
        else:
            return self._common(event, self.up, self.down, self.down_of)
        return True

    @staticmethod
    def _common(event: LayerEvent, src: ProtocolLayer, dst: ProtocolLayer, other: dict[int, int]) -> bool:
        if isinstance(event, (LayerFailed, PeerClosed)):
            return False
        xid = getattr(event, "xid", None)
        if xid not in other:
            return True  # ConnectionGoingAway, or an exchange already over
        if isinstance(event, DataReceived):
            src.consumed(event.xid, dst.send_data(other[xid], event.data))
        elif isinstance(event, DataSent):
            dst.consumed(other[xid], event.n)  # held bytes of dst's peer direction left: ack their source
        elif isinstance(event, TrailersReceived):
            dst.send_trailers(other[xid], event.headers)
        elif isinstance(event, MessageEnded):
            dst.end(other[xid])
        elif isinstance(event, StreamReset):
            dst.reset(other[xid], event.reason)
        return True


class H2Relay:
    """``H2Relay(pki, origin_port)``: listens on 127.0.0.1 ``.port``; ``.close()``."""

    def __init__(self, pki: OriginPKI, origin_port: int) -> None:
        self.server_ctx = h2_server_context(pki)
        self.client_ctx = ssl.create_default_context(cafile=str(pki.ca_path))
        self.client_ctx.set_alpn_protocols(["h2"])
        self.origin_port = origin_port
        self.sock = socket.create_server((ADDRESS, 0))
        self.port: int = self.sock.getsockname()[1]
        self.errors: list[str] = []
        serve_connections(self.sock, self._serve)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            with self.server_ctx.wrap_socket(raw, server_side=True) as down_sock, \
                    self.client_ctx.wrap_socket(socket.create_connection((ADDRESS, self.origin_port), timeout=10),
                                                server_hostname="localhost") as up_sock:
                self._run(down_sock, up_sock)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(repr(exc))

    def _run(self, down: ssl.SSLSocket, up: ssl.SSLSocket) -> None:
        bridge = Bridge(H2ClientLayer(), H2UpstreamLayer())
        layers: dict[ssl.SSLSocket, ProtocolLayer] = {down: bridge.down, up: bridge.up}
        handlers = {down: (bridge.from_down, bridge.from_up), up: (bridge.from_up, bridge.from_down)}
        for _ in range(1_000_000):
            for sock, layer in layers.items():
                sock.sendall(layer.bytes_to_send())
            ready = [s for s in (down, up) if s.pending()] or select.select([down, up], [], [], 10)[0]
            if not ready:
                return
            for sock in ready:
                data = sock.recv(1 << 16)
                if not data:
                    return
                mine, theirs = handlers[sock]
                other = up if sock is down else down
                if not all(map(mine, layers[sock].receive_data(data))):
                    return
                # what our calls produced there (e.g. a refused stream)
                if not all(map(theirs, layers[other].pop_events())):
                    return

    def close(self) -> None:
        self.sock.close()
