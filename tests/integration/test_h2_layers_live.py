"""The HTTP/2 layers against real peers on loopback, before the proxy uses them:
H2UpstreamLayer talking to hypercorn and grpcio, H2ClientLayer answering
curl --http2 and httpx (many concurrent streams). A few lines of blocking
socket code drive each layer; the layers do all the HTTP/2."""

from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import subprocess

import httpx
from h2_origin import GrpcOrigin, H2Origin
from origin import pattern_sha256
from tls_origin import ADDRESS, OriginPKI, h2_server_context, serve_connections

from interceptkit.core.layers import (
    DataReceived,
    HeadReceived,
    LayerEvent,
    MessageEnded,
    RequestHead,
    ResponseHead,
    TrailersReceived,
)
from interceptkit.core.http2 import H2ClientLayer, H2UpstreamLayer


def _tls_to(port: int, origin_pki: OriginPKI) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(origin_pki.ca_path))
    context.set_alpn_protocols(["h2"])
    tls = context.wrap_socket(socket.create_connection((ADDRESS, port), timeout=10), server_hostname="localhost")
    assert tls.selected_alpn_protocol() == "h2"
    return tls


def _exchange(layer: H2UpstreamLayer, tls: ssl.SSLSocket, xids: set[int]) -> dict[int, list[LayerEvent]]:
    """Run the socket until every xid's message ended; consume DATA at once."""
    seen: dict[int, list[LayerEvent]] = {xid: [] for xid in xids}
    open_xids = set(xids)
    for _ in range(100_000):
        tls.sendall(layer.bytes_to_send())
        if not open_xids:
            return seen
        data = tls.recv(1 << 16)
        assert data, "origin closed the connection"
        for event in layer.receive_data(data):
            xid = getattr(event, "xid", None)
            assert xid in seen, event
            seen[xid].append(event)
            if isinstance(event, DataReceived):
                layer.consumed(xid, len(event.data))
            if isinstance(event, MessageEnded):
                open_xids.discard(xid)
    raise AssertionError("never finished")


def test_upstream_layer_fetches_from_hypercorn_with_trailers_and_a_large_body(h2_origin: H2Origin,
                                                                              origin_pki: OriginPKI) -> None:
    layer = H2UpstreamLayer()
    with _tls_to(h2_origin.tls_port, origin_pki) as tls:
        first, second = layer.start_exchange(), layer.start_exchange()
        layer.send_head(first, RequestHead(method=b"GET", scheme=b"https", authority=b"localhost",
                                       target=b"/trailers", headers=[(b"te", b"trailers")]), end_stream=True)
        layer.send_head(second, RequestHead(method=b"GET", scheme=b"https", authority=b"localhost",
                                       target=b"/bytes/8000000"), end_stream=True)
        seen = _exchange(layer, tls, {first, second})
    assert (first, second) == (1, 2)
    assert isinstance(seen[1][0], HeadReceived) and seen[1][0].head == ResponseHead(
        status=200, headers=seen[1][0].head.headers, http_version=b"2")
    assert TrailersReceived(xid=1, headers=[(b"x-checksum", b"abc123"), (b"grpc-status", b"0")]) in seen[1]
    body = b"".join(e.data for e in seen[2] if isinstance(e, DataReceived))
    assert hashlib.sha256(body).hexdigest() == pattern_sha256(8_000_000)
    assert layer.active == 0


def _grpc_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def test_upstream_layer_makes_a_grpc_call(origin_pki: OriginPKI) -> None:
    server = GrpcOrigin(origin_pki).start()
    try:
        layer = H2UpstreamLayer()
        with _tls_to(server.port, origin_pki) as tls:
            head = RequestHead(method=b"POST", scheme=b"https", authority=server.target.encode(),
                               target=b"/test.Echo/Stream",
                               headers=[(b"content-type", b"application/grpc"), (b"te", b"trailers")])
            layer.send_head(7, head)
            layer.send_data(7, _grpc_frame(b"2"))
            layer.end(7)
            seen = _exchange(layer, tls, {7})[7]
    finally:
        server.stop()
    body = b"".join(e.data for e in seen if isinstance(e, DataReceived))
    assert body == _grpc_frame(b"message 0") + _grpc_frame(b"message 1")
    trailers = next(e for e in seen if isinstance(e, TrailersReceived)).headers
    assert (b"grpc-status", b"0") in trailers and (b"x-trailer", b"done") in trailers


class _LayerServer:
    """A TLS server on 127.0.0.1 whose every connection is an H2ClientLayer that
    answers each request with its path and body length (one thread per connection)."""

    def __init__(self, origin_pki: OriginPKI) -> None:
        self.context = h2_server_context(origin_pki)
        self.sock = socket.create_server((ADDRESS, 0))
        self.port = self.sock.getsockname()[1]
        self.streams_seen = 0
        serve_connections(self.sock, self._serve)

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        with self.context.wrap_socket(raw, server_side=True) as tls:
            layer, sizes = H2ClientLayer(), {}
            tls.sendall(layer.bytes_to_send())
            while data := tls.recv(1 << 16):
                for event in layer.receive_data(data):
                    self._answer(layer, event, sizes)
                tls.sendall(layer.bytes_to_send())

    def _answer(self, layer: H2ClientLayer, event: LayerEvent, sizes: dict[int, tuple[bytes, int]]) -> None:
        if isinstance(event, HeadReceived) and isinstance(event.head, RequestHead):
            sizes[event.xid] = (event.head.target, 0)
            self.streams_seen += 1
        elif isinstance(event, DataReceived):
            path, n = sizes[event.xid]
            sizes[event.xid] = (path, n + len(event.data))
            layer.consumed(event.xid, len(event.data))
        elif isinstance(event, MessageEnded):
            path, n = sizes.pop(event.xid)
            body = b"%s %d" % (path, n)
            layer.send_head(event.xid, ResponseHead(status=200, headers=[(b"content-length", b"%d" % len(body))]))
            layer.send_data(event.xid, body)
            layer.end(event.xid)

    def close(self) -> None:
        self.sock.close()


def test_client_layer_serves_curl_http2(origin_pki: OriginPKI) -> None:
    server = _LayerServer(origin_pki)
    try:
        out = subprocess.run(["curl", "-sS", "--noproxy", "*", "--http2", "--cacert", str(origin_pki.ca_path),
                              "-w", "\n%{http_version}", "--data-binary", "@-",
                              f"https://localhost:{server.port}/upload"],
                             input=b"u" * 200_000, capture_output=True, timeout=20, check=True).stdout
    finally:
        server.close()
    assert out == b"/upload 200000\n2"


def test_client_layer_serves_50_concurrent_httpx_streams_on_one_connection(origin_pki: OriginPKI) -> None:
    import asyncio

    server = _LayerServer(origin_pki)

    async def run() -> list[httpx.Response]:
        context = ssl.create_default_context(cafile=str(origin_pki.ca_path))
        async with httpx.AsyncClient(http2=True, verify=context, trust_env=False, timeout=10) as client:
            return await asyncio.gather(*(client.get(f"https://localhost:{server.port}/r/{i}") for i in range(50)))

    try:
        responses = asyncio.run(run())
    finally:
        server.close()
    assert [r.text for r in responses] == [f"/r/{i} 0" for i in range(50)]
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert server.streams_seen == 50
