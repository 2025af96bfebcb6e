"""Cassettes over real sockets: recorded from a real origin, replayed with it stopped.

Clients: a curl subprocess and httpx, over HTTPS through the intercepting
proxy to the TLS origin of tls_origin.py (its own CA, trusted through
``upstream_ca``), and curl over plain HTTP to origin.py. Names resolve only
through the static resolver.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from origin import HELLO, Origin, curl, pattern_sha256, wait_flows_done
from tls_origin import TLSOrigin

from interceptkit import Proxy, Redact



def https_curl(proxy: Proxy, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return curl("--cacert", str(proxy.ca_cert_path), "--capath", "/nonexistent", *args, url,
                proxy=proxy, timeout=20)


def client(proxy: Proxy) -> httpx.Client:
    return httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert_path)),
                        timeout=10, trust_env=False)


def test_curl_over_https_records_then_replays_with_the_origin_stopped(
        make: Callable[..., Proxy], tls_origin: TLSOrigin, tmp_path: Path) -> None:
    proxy = make()
    path = tmp_path / "curl.har"
    url = tls_origin.url("/json?page=1")
    with proxy.cassette(path) as cas:
        recorded = https_curl(proxy, url)
    assert recorded.returncode == 0, recorded.stderr
    assert len(cas.new) == 1 and path.exists()
    document = json.loads(path.read_text())  # HAR 1.2, as DevTools opens it
    assert document["log"]["version"] == "1.2" and document["log"]["entries"][0]["request"]["url"] == url
    tls_origin.stop()

    with proxy.cassette(path) as cas:
        replayed = https_curl(proxy, url, "-i")
    assert replayed.returncode == 0, replayed.stderr
    head, _, body = replayed.stdout.partition(b"\r\n\r\n")
    body = body.split(b"\r\n\r\n", 1)[-1]  # after the CONNECT answer
    assert json.loads(body) == json.loads(recorded.stdout)
    assert cas.play_count == 1 and cas.all_played and cas.new == []
    replay_flow = [f for f in proxy.flows if f.request.method == "GET"][-1]
    assert replay_flow.request.url == url and replay_flow.metadata["replayed"]  # shows what the client asked


def test_httpx_over_https_with_a_json_matching_cassette(make: Callable[..., Proxy], tls_origin: TLSOrigin,
                                                        tmp_path: Path) -> None:
    proxy = make()
    path = tmp_path / "json.har"
    url = tls_origin.url("/echo")
    with proxy.cassette(path, match_on=("method", "url", "json")), client(proxy) as http:
        first = http.post(url, json={"user": "ada", "tags": [1, 2]}).content
        second = http.post(url, json={"user": "bob"}).content
    tls_origin.stop()

    with proxy.cassette(path, match_on=("method", "url", "json")) as cas, client(proxy) as http:
        # Same JSON, other key order and spacing: semantically equal, so it matches.
        again_bob = http.post(url, content=b'{ "user" : "bob" }', headers={"Content-Type": "application/json"})
        again_ada = http.post(url, content=b'{"tags":[1,2],"user":"ada"}')
        miss = http.post(url, json={"user": "eve"})
    assert again_bob.content == second and again_ada.content == first
    assert cas.play_count == 2
    assert miss.status_code == 599
    assert 'json: {"user": "eve"} vs {"user": "bob"}' in miss.text
    assert [f for f in proxy.flows if f.metadata.get("unmatched")][0].request.url == url


def test_record_modes(make: Callable[..., Proxy], tmp_path: Path) -> None:
    proxy = make()
    origin = Origin().start()
    path = tmp_path / "modes.har"
    try:
        with pytest.raises(FileNotFoundError, match="modes.har"):
            proxy.cassette(path, record_mode="none").__enter__()
        with proxy.cassette(path, record_mode="new_episodes") as cas:
            curl(origin.url("/hello"), proxy=proxy, check=True)
        assert len(cas.new) == 1
        with proxy.cassette(path, record_mode="new_episodes") as cas:
            curl(origin.url("/hello"), proxy=proxy, check=True)  # replayed
            curl(origin.url("/status/201"), proxy=proxy, check=True)  # recorded
        assert cas.play_count == 1 and [f.request.path for f in cas.new] == ["/status/201"]
        assert len(origin.requests) == 2
        with proxy.cassette(path, record_mode="all") as cas:
            curl(origin.url("/hello"), proxy=proxy, check=True)
        assert len(origin.requests) == 3 and cas.play_count == 0
        assert len(json.loads(path.read_text())["log"]["entries"]) == 1  # "all" re-recorded it whole
    finally:
        origin.stop()
    with proxy.cassette(path, record_mode="none") as cas:
        assert curl(origin.url("/hello"), proxy=proxy).stdout == HELLO
        assert b"no mock or recording matches" in curl(origin.url("/status/201"), proxy=proxy).stdout


def test_identical_requests_replay_in_recorded_order_and_repeats(make: Callable[..., Proxy],
                                                                 tmp_path: Path) -> None:
    proxy = make()
    origin = Origin().start()
    path = tmp_path / "order.har"
    answers = iter([b"first\n", b"second\n"])
    proxy.on("response", lambda flow: flow.response.set_content(next(answers)))  # type: ignore[union-attr]
    with proxy.cassette(path):
        curl(origin.url("/hello"), proxy=proxy, check=True)
        curl(origin.url("/hello"), proxy=proxy, check=True)
    origin.stop()
    proxy.hooks.clear()
    with proxy.cassette(path) as cas:
        got = [curl(origin.url("/hello"), proxy=proxy).stdout for _ in range(3)]
    assert got[:2] == [b"first\n", b"second\n"] and b"599" not in got[2] and b"strict mode" in got[2]
    with proxy.cassette(path, allow_repeats=True) as cas:
        got = [curl(origin.url("/hello"), proxy=proxy).stdout for _ in range(3)]
    assert got == [b"first\n", b"second\n", b"second\n"] and cas.play_count == 3


def test_redacted_token_is_not_written_and_matching_ignores_it(make: Callable[..., Proxy], tmp_path: Path) -> None:
    # The echo origin reflects request headers into a response header: only values= catches that copy.
    proxy = make(redact=Redact(query=["api_key"], values=["s3cr3t-value", "real-token"]))
    origin = Origin().start()
    path = tmp_path / "secret.har"
    match = ("method", "url", "headers:authorization")
    with proxy.cassette(path, match_on=match):
        curl(origin.url("/echo?api_key=k1&q=1"), "-H", "Authorization: Bearer real-token",
             "--data-binary", "password=s3cr3t-value", proxy=proxy, check=True)
    origin.stop()
    text = path.read_text()
    assert "real-token" not in text and "k1" not in text and "s3cr3t-value" not in text
    [entry] = json.loads(text)["log"]["entries"]
    assert {"name": "Authorization", "value": "<redacted>"} in entry["request"]["headers"]
    assert entry["request"]["url"].endswith("/echo?api_key=<redacted>&q=1")
    with proxy.cassette(path, match_on=match) as cas:
        replayed = curl(origin.url("/echo?q=1&api_key=other"), "-H", "Authorization: Bearer test-token",
                        "--data-binary", "password=s3cr3t-value", proxy=proxy)
    assert cas.play_count == 1 and replayed.stdout == b"password=<redacted>"
    assert proxy.flows[-1].request.headers["Authorization"] == "Bearer test-token"  # live traffic untouched


def test_a_50_mb_recorded_body_replays_streamed_with_bounded_memory(make: Callable[..., Proxy],
                                                                    tmp_path: Path) -> None:
    size = 50 * 1000 * 1000
    proxy = make(body_capture_limit=1024)
    origin = Origin().start()
    path = tmp_path / "big.har"
    with proxy.cassette(path):
        curl(origin.url(f"/bytes/{size}"), "-o", str(tmp_path / "recorded.bin"), proxy=proxy, check=True)
    origin.stop()
    assert path.stat().st_size < 100_000  # the body lives beside the HAR, not inside it
    out = tmp_path / "replayed.bin"
    tracemalloc.start()
    try:
        with proxy.cassette(path) as cas:
            result = curl(origin.url(f"/bytes/{size}"), "-o", str(out), proxy=proxy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.returncode == 0, result.stderr
    assert cas.play_count == 1 and out.stat().st_size == size
    digest = hashlib.sha256()
    with out.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == pattern_sha256(size)
    assert peak < 16 * 1024 * 1024, f"replay peaked at {peak / 1e6:.1f} MB of Python memory"


def test_save_files_and_har_exports_are_redacted_but_live_traffic_is_not(make: Callable[..., Proxy],
                                                                        tmp_path: Path) -> None:
    saved = tmp_path / "flows.jsonl"
    proxy = make(save=saved, redact=Redact(values=["tok-42"]))
    origin = Origin().start()
    try:
        result = curl(origin.url("/echo?k=tok-42"), "-H", "Authorization: Basic dXNlcg==",
                      "--data-binary", "tok-42", proxy=proxy, check=True)
    finally:
        origin.stop()
    assert result.stdout == b"tok-42"  # the origin got the real value
    wait_flows_done(proxy, 1)
    proxy.stop()
    line = saved.read_text()
    assert "tok-42" not in line and "<redacted>" in line
    assert "dXNlcg==" in line  # save= files are lossless apart from what the user asked to hide
    har = proxy.flows.to_har(tmp_path / "export.har")
    [entry] = har["log"]["entries"]
    assert {"name": "Authorization", "value": "<redacted>"} in entry["request"]["headers"]
    assert "tok-42" not in (tmp_path / "export.har").read_text()
    assert proxy.flows[-1].request.headers["Authorization"] == "Basic dXNlcg=="
