"""gRPC through the intercepting proxy, HTTP/2 in reverse mode, and WebSocket beside HTTP/2 (issue 10).

gRPC: grpcio's client with ``grpc.http_proxy`` (CONNECT), trusting the proxy's
CA only, to grpcio's TLS server (h2_origin.GrpcOrigin), which the proxy trusts
through ``upstream_ca``. Reverse mode: hypercorn behind a TLS listener (ALPN h2)
and behind a plain one (prior-knowledge h2c; ``Upgrade: h2c`` never honoured).
WebSocket: the proxy never advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, so a
WebSocket to the same origin opens over HTTP/1.1 as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
import grpc
import h2.settings
import pytest
from h2_clients import H2Tunnel, curl_h2, intercepted, trust
from h2_origin import GrpcOrigin, H2Origin
from origin import HELLO, curl
from tls_origin import OriginPKI
from websockets.sync.client import connect as ws_connect

from interceptkit import Proxy


def _channel(proxy: Proxy, origin: GrpcOrigin) -> grpc.Channel:
    """A TLS channel to ``localhost:<origin port>`` through ``proxy``, trusting the proxy's CA only."""
    creds = grpc.ssl_channel_credentials(root_certificates=proxy.ca_cert_path.read_bytes())
    return grpc.secure_channel(f"localhost:{origin.port}", creds,
                               options=[("grpc.enable_http_proxy", 1), ("grpc.http_proxy", proxy.url)])


# -- gRPC ------------------------------------------------------------------------------------------


def test_grpc_unary_call_through_the_intercepting_proxy(make: Callable[..., Proxy],
                                                        grpc_origin: GrpcOrigin) -> None:
    proxy = make()
    with _channel(proxy, grpc_origin) as channel:
        reply, call = channel.unary_unary("/test.Echo/Unary").with_call(b"ping", timeout=10)
    assert reply == b"echo:ping" and call.code() == grpc.StatusCode.OK
    assert ("x-trailer", "done") in call.trailing_metadata()  # trailers arrived intact
    [flow] = intercepted(proxy, 1)
    assert (flow.request.method, flow.request.path) == ("POST", "/test.Echo/Unary")
    assert flow.request.http_version == "HTTP/2" and flow.response.http_version == "HTTP/2"
    assert flow.request.headers["content-type"].startswith("application/grpc")
    assert flow.request.headers["te"] == "trailers"
    assert flow.response is not None and flow.response.status == 200
    assert flow.response.content.endswith(b"echo:ping")  # the length-prefixed message, in the clear
    assert flow.client_tls.alpn == "h2" and flow.server_tls.alpn == "h2"


def test_grpc_server_streaming_and_an_error_status_through_the_proxy(make: Callable[..., Proxy],
                                                                     grpc_origin: GrpcOrigin) -> None:
    proxy = make()
    with _channel(proxy, grpc_origin) as channel:
        stream = channel.unary_stream("/test.Echo/Stream")(b"5", timeout=10)
        assert list(stream) == [b"message %d" % i for i in range(5)]
        assert stream.code() == grpc.StatusCode.OK and ("x-trailer", "done") in stream.trailing_metadata()
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary("/test.Echo/Unary")(b"fail", timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == "asked to fail"
    flows = intercepted(proxy, 2)
    paths = sorted(f.request.path for f in flows)
    assert paths == ["/test.Echo/Stream", "/test.Echo/Unary"]
    assert all(f.error is None and f.response.status == 200 for f in flows)


# -- reverse mode ------------------------------------------------------------------------------------


def test_reverse_tls_listener_offers_h2(make: Callable[..., Proxy], h2_origin: H2Origin) -> None:
    proxy = make(mode="reverse", routes={"/": f"http://localhost:{h2_origin.plain_port}"}, tls_name="localhost")
    result = curl("--http2", "--cacert", str(proxy.ca_cert_path), "--capath", "/nonexistent",
                  "--resolve", f"localhost:{proxy.port}:127.0.0.1", "-w", "\n%{http_version}",
                  f"https://localhost:{proxy.port}/proto", timeout=20, check=True)
    body, _, used = result.stdout.rpartition(b"\n")
    assert used == b"2" and json.loads(body)["http_version"] == "1.1"  # h2 client, plain HTTP/1.1 upstream
    [flow] = intercepted(proxy, 1)
    assert flow.request.http_version == "HTTP/2" and flow.response.http_version == "HTTP/1.1"
    assert flow.client_tls is not None and flow.client_tls.alpn == "h2"


def test_reverse_https_route_speaks_h2_when_the_upstream_selects_it(make: Callable[..., Proxy],
                                                                    h2_origin: H2Origin) -> None:
    proxy = make(mode="reverse", routes={"/": f"https://localhost:{h2_origin.tls_port}"}, tls_name="localhost")
    with H2Tunnel.direct(proxy.port, "localhost", proxy.ca_cert_path) as tunnel:
        assert tunnel.alpn == "h2"
        sid = tunnel.request("/trailers", headers=[(b"te", b"trailers")])
        answer = tunnel.wait([sid])[sid]
    assert bytes(answer.body) == b"with trailers\n"
    assert answer.trailers == [(b"x-checksum", b"abc123"), (b"grpc-status", b"0")]
    [flow] = intercepted(proxy, 1)
    assert flow.request.http_version == "HTTP/2" and flow.response.http_version == "HTTP/2"


def test_reverse_plain_listener_serves_prior_knowledge_h2c(make: Callable[..., Proxy], h2_origin: H2Origin) -> None:
    proxy = make(mode="reverse", routes={"/": f"http://localhost:{h2_origin.plain_port}"})
    result = curl("--http2-prior-knowledge", "-w", "\n%{http_version}", f"http://127.0.0.1:{proxy.port}/proto",
                  timeout=20, check=True)
    body, _, used = result.stdout.rpartition(b"\n")
    assert used == b"2" and json.loads(body)["path"] == "/proto"
    # an HTTP/1.1 client on the same listener is still served
    assert curl("--http1.1", f"http://127.0.0.1:{proxy.port}/hello", timeout=20, check=True).stdout == HELLO
    flows = intercepted(proxy, 2)
    assert sorted(f.request.http_version for f in flows) == ["HTTP/1.1", "HTTP/2"]


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_upgrade_h2c_is_stripped_never_half_honoured(make: Callable[..., Proxy], h2_origin: H2Origin,
                                                     mode: str) -> None:
    """hypercorn's plain port honours ``Upgrade: h2c``: had the proxy passed it on, the origin would answer 101."""
    if mode == "reverse":
        proxy = make(mode="reverse", routes={"/": f"http://localhost:{h2_origin.plain_port}"})
        args: tuple[str, ...] = (f"http://127.0.0.1:{proxy.port}/proto",)
    else:
        proxy = make()
        args = ("--proxy", proxy.url, h2_origin.url("/proto", tls=False))
    # curl --http2 on http:// sends Upgrade: h2c and HTTP2-Settings
    result = curl("--http2", "-i", "-w", "\n%{http_version}", *args, timeout=20, check=True)
    out, _, used = result.stdout.rpartition(b"\n")
    assert used == b"1.1" and b" 101 " not in out
    seen = json.loads(out.partition(b"\r\n\r\n")[2])
    assert seen["http_version"] == "1.1"
    names = {k.lower() for k, _ in seen["headers"]}
    assert "http2-settings" not in names
    assert all("h2c" not in v.lower() for k, v in seen["headers"] if k.lower() in ("upgrade", "connection"))
    [flow] = intercepted(proxy, 1)
    assert flow.response.status == 200 and flow.request.http_version == "HTTP/1.1"


# -- WebSocket beside HTTP/2 ------------------------------------------------------------------------


def test_the_proxy_never_advertises_extended_connect(make: Callable[..., Proxy], h2_origin: H2Origin,
                                                     origin_pki: OriginPKI) -> None:
    with H2Tunnel.direct(h2_origin.tls_port, "localhost", origin_pki.ca_path) as direct:
        direct.handshake()
        assert direct.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1  # hypercorn does
    proxy = make()
    with H2Tunnel.through(proxy, "localhost", h2_origin.tls_port, proxy.ca_cert_path) as tunnel:
        tunnel.handshake()
        assert tunnel.alpn == "h2" and tunnel.remote_settings_seen
        assert tunnel.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0) == 0


def test_a_websocket_to_an_h2_origin_opens_over_http1(make: Callable[..., Proxy], h2_origin: H2Origin) -> None:
    proxy = make()
    used, _ = curl_h2(proxy, h2_origin.url("/hello"))  # the page: over h2
    assert used == "2"
    context = trust(proxy.ca_cert_path)
    with ws_connect(f"wss://localhost:{h2_origin.tls_port}/ws", ssl=context, proxy=proxy.url,
                    open_timeout=10, close_timeout=5) as ws:
        ws.send("over http/1.1")
        assert ws.recv(timeout=10) == "over http/1.1"
        ws.send(b"\x00binary")
        assert ws.recv(timeout=10) == b"\x00binary"
    flows = intercepted(proxy, 2)
    [socket_flow] = [f for f in flows if f.kind == "websocket"]
    assert socket_flow.request.http_version == "HTTP/1.1" and socket_flow.response.status == 101
    assert socket_flow.client_tls.alpn in (None, "http/1.1")
    texts = [(m.direction, m.content) for m in socket_flow.websocket.messages if m.type == "text"]
    assert texts == [("client", "over http/1.1"), ("server", "over http/1.1")]
