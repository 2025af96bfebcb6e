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
import threading

from tls_origin import ADDRESS, OriginPKI

from interceptkit.core.h2base import H2Layer
from interceptkit.core.h2events import (
    DataReceived,
    DataSent,
    HeadReceived,
    InformationalReceived,
    LayerEvent,
    LayerFailed,
    MessageEnded,
    StreamReset,
    TrailersReceived,
)
from interceptkit.core.http2 import H2ClientLayer, H2UpstreamLayer


def relay_event(event: LayerEvent, src: H2Layer, dst: H2Layer) -> bool:
    """Apply one event of ``src`` to ``dst``; False when the connection is over."""
    if isinstance(event, HeadReceived):
        dst.send_head(event.xid, event.head, end_stream=event.end_stream)  # type: ignore[attr-defined]
    elif isinstance(event, InformationalReceived) and isinstance(dst, H2ClientLayer):
        dst.send_informational(event.xid, event.head)
    elif isinstance(event, DataReceived):
        src.consumed(event.xid, dst.send_data(event.xid, event.data))
    elif isinstance(event, DataSent):
        dst.consumed(event.xid, event.n)  # held bytes of dst's peer direction left: ack their source
    elif isinstance(event, TrailersReceived):
        dst.send_trailers(event.xid, event.headers)
    elif isinstance(event, MessageEnded):
        dst.end(event.xid)
    elif isinstance(event, StreamReset):
        dst.reset(event.xid, event.reason)
    elif isinstance(event, LayerFailed):
        return False
    return True


class H2Relay:
    """``H2Relay(pki, origin_port)``: listens on 127.0.0.1 ``.port``; ``.close()``."""

    def __init__(self, pki: OriginPKI, origin_port: int) -> None:
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(pki.chain_path, pki.key_path)
        self.server_ctx.set_alpn_protocols(["h2"])
        self.client_ctx = ssl.create_default_context(cafile=str(pki.ca_path))
        self.client_ctx.set_alpn_protocols(["h2"])
        self.origin_port = origin_port
        self.sock = socket.create_server((ADDRESS, 0))
        self.port: int = self.sock.getsockname()[1]
        self.errors: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            with self.server_ctx.wrap_socket(raw, server_side=True) as down_sock, \
                    self.client_ctx.wrap_socket(socket.create_connection((ADDRESS, self.origin_port), timeout=10),
                                                server_hostname="localhost") as up_sock:
                self._run({down_sock: H2ClientLayer(), up_sock: H2UpstreamLayer()}, down_sock, up_sock)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(repr(exc))

    def _run(self, layers: dict[ssl.SSLSocket, H2Layer], down: ssl.SSLSocket, up: ssl.SSLSocket) -> None:
        other = {down: up, up: down}
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
                src, dst = layers[sock], layers[other[sock]]
                for event in src.receive_data(data):
                    if not relay_event(event, src, dst):
                        return
                for event in dst.pop_events():  # what our calls produced there (e.g. a refused stream)
                    if not relay_event(event, dst, src):
                        return

    def close(self) -> None:
        self.sock.close()
