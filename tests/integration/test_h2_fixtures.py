"""Tests of the HTTP/2 test fixtures themselves (no proxy involved): real
clients straight to the hypercorn and grpcio origins, so the proxy tests
that use them later start from origins known to be good."""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
from collections.abc import Iterator

import grpc
import httpx
import pytest
from h2_origin import GrpcOrigin, H2Origin, h2_request
from origin import pattern_sha256
from tls_origin import OriginPKI


def _client(origin_pki: OriginPKI, http2: bool) -> httpx.Client:
    return httpx.Client(http2=http2, verify=ssl.create_default_context(cafile=str(origin_pki.ca_path)),
                        trust_env=False, timeout=10)


def test_fixture_hypercorn_speaks_h2_over_tls_to_httpx(h2_origin: H2Origin, origin_pki: OriginPKI) -> None:
    with _client(origin_pki, http2=True) as client:
        response = client.get(h2_origin.url("/proto"), headers={"x-probe": "1"})
    assert response.http_version == "HTTP/2"
    seen = response.json()
    assert seen["http_version"] == "2" and seen["scheme"] == "https"
    assert ["x-probe", "1"] in seen["headers"]


def test_fixture_hypercorn_speaks_h1_when_asked(h2_origin: H2Origin, origin_pki: OriginPKI) -> None:
    with _client(origin_pki, http2=False) as client:
        tls = client.get(h2_origin.url("/proto"))
        plain = client.get(h2_origin.url("/proto", tls=False))
    assert tls.http_version == "HTTP/1.1" and tls.json()["http_version"] == "1.1"
    assert plain.json() == {**plain.json(), "http_version": "1.1", "scheme": "http"}


def test_fixture_hypercorn_echo_and_large_download_over_h2(h2_origin: H2Origin, origin_pki: OriginPKI) -> None:
    with _client(origin_pki, http2=True) as client:
        echo = client.post(h2_origin.url("/echo"), content=b"x" * 300_000)
        assert echo.content == b"x" * 300_000 and echo.headers["x-echo-length"] == "300000"
        digest = hashlib.sha256()
        with client.stream("GET", h2_origin.url("/bytes/20000000")) as download:
            assert download.http_version == "HTTP/2"
            for piece in download.iter_bytes():
                digest.update(piece)
    assert digest.hexdigest() == pattern_sha256(20_000_000)


def test_fixture_hypercorn_sends_trailers_to_h2_with_te_trailers(h2_origin: H2Origin, origin_pki: OriginPKI) -> None:
    answer = h2_request(h2_origin.tls_port, "/trailers", origin_pki, headers=[(b"te", b"trailers")])
    assert answer.alpn == "h2" and answer.status == 200
    assert answer.body == b"with trailers\n"
    assert answer.trailers == [(b"x-checksum", b"abc123"), (b"grpc-status", b"0")]


def test_fixture_curl_http2_and_h2c_prior_knowledge(h2_origin: H2Origin, origin_pki: OriginPKI) -> None:
    def curl(*args: str) -> tuple[str, dict[str, object]]:
        out = subprocess.run(["curl", "-sS", "--noproxy", "*", "-w", "\n%{http_version}", *args],
                             capture_output=True, timeout=20, check=True, text=True).stdout
        body, version = out.rsplit("\n", 1)
        return version, json.loads(body)

    version, seen = curl("--http2", "--cacert", str(origin_pki.ca_path), h2_origin.url("/proto"))
    assert version == "2" and seen["http_version"] == "2"
    version, seen = curl("--http2-prior-knowledge", h2_origin.url("/proto", tls=False))
    assert version == "2" and seen["http_version"] == "2" and seen["scheme"] == "http"


def test_fixture_grpc_unary_and_server_streaming_over_tls(grpc_origin: GrpcOrigin) -> None:
    with grpc_origin.channel() as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        reply, call = unary.with_call(b"ping", timeout=10)
        assert reply == b"echo:ping"
        assert ("x-trailer", "done") in call.trailing_metadata()
        assert call.code() == grpc.StatusCode.OK
        stream = channel.unary_stream("/test.Echo/Stream")(b"3", timeout=10)
        assert list(stream) == [b"message 0", b"message 1", b"message 2"]
        assert ("x-trailer", "done") in stream.trailing_metadata()
        with pytest.raises(grpc.RpcError) as failed:
            unary(b"fail", timeout=10)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == "asked to fail"
