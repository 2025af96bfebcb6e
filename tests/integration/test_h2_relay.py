"""The two HTTP/2 layers relaying between real peers (the recipe the
exchange logic follows): grpcio and httpx clients, hypercorn and grpcio
origins, trailers and statuses intact, bodies bounded by the windows."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Iterator

import grpc
import httpx
import pytest
from h2_origin import GrpcOrigin, H2Origin, h2_request
from h2_relay import H2Relay
from origin import pattern_sha256
from tls_origin import OriginPKI


@pytest.fixture(scope="module")
def hypercorn_relay(origin_pki: OriginPKI) -> Iterator[H2Relay]:
    origin = H2Origin(origin_pki).start()
    relay = H2Relay(origin_pki, origin.tls_port)
    yield relay
    relay.close()
    origin.stop()


def test_relay_carries_grpc_unary_and_streaming_with_trailers(origin_pki: OriginPKI) -> None:
    origin = GrpcOrigin(origin_pki).start()
    relay = H2Relay(origin_pki, origin.port)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=origin_pki.ca_path.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{relay.port}", creds, options=[("grpc.enable_http_proxy", 0)]) as ch:
            reply, call = ch.unary_unary("/test.Echo/Unary").with_call(b"via relay", timeout=10)
            assert reply == b"echo:via relay" and ("x-trailer", "done") in call.trailing_metadata()
            stream = ch.unary_stream("/test.Echo/Stream")(b"5", timeout=10)
            assert list(stream) == [b"message %d" % i for i in range(5)]
            assert stream.code() == grpc.StatusCode.OK
            with pytest.raises(grpc.RpcError) as failed:
                ch.unary_unary("/test.Echo/Unary")(b"fail", timeout=10)
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        relay.close()
        origin.stop()
    assert relay.errors == []


def test_relay_keeps_trailers_and_large_bodies(hypercorn_relay: H2Relay, origin_pki: OriginPKI) -> None:
    answer = h2_request(hypercorn_relay.port, "/trailers", origin_pki, headers=[(b"te", b"trailers")])
    assert answer.status == 200 and answer.trailers == [(b"x-checksum", b"abc123"), (b"grpc-status", b"0")]
    echo = h2_request(hypercorn_relay.port, "/echo", origin_pki, method="POST", body=b"e" * 50_000)
    assert echo.body == b"e" * 50_000
    context = ssl.create_default_context(cafile=str(origin_pki.ca_path))
    digest = hashlib.sha256()
    with httpx.Client(http2=True, verify=context, trust_env=False, timeout=20) as client, \
            client.stream("GET", f"https://localhost:{hypercorn_relay.port}/bytes/12000000") as response:
        assert response.http_version == "HTTP/2"
        for piece in response.iter_bytes():
            digest.update(piece)
    assert digest.hexdigest() == pattern_sha256(12_000_000)


def test_relay_multiplexes_50_concurrent_streams(hypercorn_relay: H2Relay, origin_pki: OriginPKI) -> None:
    async def run() -> list[httpx.Response]:
        context = ssl.create_default_context(cafile=str(origin_pki.ca_path))
        async with httpx.AsyncClient(http2=True, verify=context, trust_env=False, timeout=20) as client:
            return await asyncio.gather(*(client.get(f"https://localhost:{hypercorn_relay.port}/proto?i={i}")
                                          for i in range(50)))

    responses = asyncio.run(run())
    assert all(r.status_code == 200 and r.json()["http_version"] == "2" for r in responses)
    assert sorted(r.json()["query"] for r in responses) == sorted(f"i={i}" for i in range(50))
