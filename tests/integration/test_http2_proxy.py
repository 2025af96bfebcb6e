"""HTTP/2 through the intercepting proxy (issue 10), with clients and servers nobody here wrote.

curl (nghttp2) and httpx (h2) talk to hypercorn (tests/integration/h2_origin.py)
and to the HTTP/1.1-only TLS origin (tls_origin.py) through the proxy, trusting
only the proxy's CA; the proxy trusts the origins' CA (``make``'s default).
What a user notices is checked on both ends: the protocol each client got,
what each origin saw (hypercorn's /proto reports its side), and the flow
(``request.http_version`` the client's side, ``response.http_version`` the
upstream's, ``client_tls.alpn`` / ``server_tls.alpn``).

Here: ALPN on both sides, the four pairings and their translation, trailers,
``http2=False`` / ``--no-http2``, HAR, replay, the table and the CLI line.
Streams, kill and pooling are in test_http2_streams.py; gRPC, reverse mode
and WebSocket in test_http2_grpc_reverse.py; memory in test_http2_memory.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from h2_clients import H2Tunnel, curl_h2, intercepted, trust
from h2_origin import H2Origin
from origin import HELLO, clean_env, curl, pattern, pattern_sha256, wait_until
from tls_origin import OriginPKI, TLSOrigin

from interceptkit import FlowTable, Proxy

def _proto(body: bytes) -> dict:
    return json.loads(body)


def _httpx(proxy: Proxy, **kwargs: object) -> httpx.Client:
    return httpx.Client(proxy=proxy.url, verify=trust(proxy.ca_cert_path), trust_env=False, timeout=10,
                        **kwargs)  # type: ignore[arg-type]


# -- ALPN on both sides --------------------------------------------------------------------------


def test_curl_http2_speaks_h2_to_the_proxy_and_the_proxy_h2_to_hypercorn(make: Callable[..., Proxy],
                                                                         h2_origin: H2Origin) -> None:
    proxy = make()
    used, body = curl_h2(proxy, h2_origin.url("/proto?via=curl"), "-H", "x-probe: 1")
    assert used == "2"  # curl negotiated h2 with the proxy
    seen = _proto(body)
    assert seen["http_version"] == "2" and seen["scheme"] == "https"  # the proxy spoke h2 to the origin
    assert ["x-probe", "1"] in seen["headers"] and seen["query"] == "via=curl"
    [flow] = intercepted(proxy, 1)
    assert flow.error is None and flow.response is not None and flow.response.status == 200
    assert flow.request.http_version == "HTTP/2" and flow.response.http_version == "HTTP/2"
    assert flow.client_tls is not None and flow.client_tls.alpn == "h2"
    assert flow.server_tls is not None and flow.server_tls.alpn == "h2"
    assert flow.request.url == h2_origin.url("/proto?via=curl")
    assert flow.response.json()["http_version"] == "2"  # the body is captured as on HTTP/1


def test_httpx_http2_through_the_proxy_uploads_and_downloads(make: Callable[..., Proxy],
                                                             h2_origin: H2Origin) -> None:
    proxy = make()
    upload = bytes(range(256)) * 2000  # 512 kB: more than one stream window's worth of DATA
    with _httpx(proxy, http2=True) as client:
        seen = client.get(h2_origin.url("/proto"))
        echo = client.post(h2_origin.url("/echo"), content=upload)
        download = client.get(h2_origin.url("/bytes/3000000"))
    assert {seen.http_version, echo.http_version, download.http_version} == {"HTTP/2"}
    assert seen.json()["http_version"] == "2"
    assert echo.content == upload and echo.headers["x-echo-length"] == str(len(upload))
    assert hashlib.sha256(download.content).hexdigest() == pattern_sha256(3_000_000)
    flows = intercepted(proxy, 3)
    assert len(flows) == 3
    assert {(f.request.http_version, f.response.http_version) for f in flows} == {("HTTP/2", "HTTP/2")}
    assert {f.client_address for f in flows} and len({f.client_address for f in flows}) == 1  # one h2 connection


def test_http2_false_keeps_both_sides_on_http1(make: Callable[..., Proxy], h2_origin: H2Origin) -> None:
    proxy = make(http2=False)
    used, body = curl_h2(proxy, h2_origin.url("/proto"))
    assert used == "1.1" and _proto(body)["http_version"] == "1.1"
    with H2Tunnel.through(proxy, "localhost", h2_origin.tls_port, proxy.ca_cert_path,
                          alpn=("h2", "http/1.1")) as tunnel:
        assert tunnel.alpn == "http/1.1"  # h2 is not even offered
    [flow] = intercepted(proxy, 1)
    assert flow.request.http_version == "HTTP/1.1" and flow.response.http_version == "HTTP/1.1"
    assert flow.client_tls.alpn == "http/1.1" and flow.server_tls.alpn == "http/1.1"


# -- the four pairings ---------------------------------------------------------------------------


def test_h2_client_to_an_http1_only_origin_is_translated(make: Callable[..., Proxy],
                                                         tls_origin: TLSOrigin) -> None:
    """A client that offers only h2 keeps h2; the origin that speaks only HTTP/1.1 gets HTTP/1.1."""
    proxy = make()
    with H2Tunnel.through(proxy, "origin.test", tls_origin.port, proxy.ca_cert_path, alpn=("h2",)) as tunnel:
        assert tunnel.alpn == "h2"
        sid = tunnel.request("/echo?x=1", method="POST", body=b"ping", headers=[
            (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"x-custom", b"Value"), (b"content-type", b"text/plain"),
            (b"content-length", b"4")])
        chunked = tunnel.request("/chunked/300000")
        results = tunnel.wait()
    answer = results[sid]
    assert answer.status == 200 and bytes(answer.body) == b"ping"
    names = [k for k, _ in answer.headers]
    assert all(k == k.lower() for k in names), names  # lower-case for h2
    assert not {b"connection", b"keep-alive", b"transfer-encoding", b"proxy-connection"} & set(names)
    assert bytes(results[chunked].body) == pattern(300_000)
    assert b"transfer-encoding" not in [k for k, _ in results[chunked].headers]
    # The two streams went out on two pooled connections: the origin may see either first.
    first = next(r for r in tls_origin.requests if r.path.startswith("/echo"))
    assert first.method == "POST" and first.path == "/echo?x=1" and first.body == b"ping"
    assert first.header("Host") == f"origin.test:{tls_origin.port}"  # from :authority
    assert [v for k, v in first.headers if k.lower() == "cookie"] == ["a=1; b=2"]  # joined for HTTP/1
    assert first.header("x-custom") == "Value"
    flows = intercepted(proxy, 2)
    assert {(f.request.http_version, f.response.http_version) for f in flows} == {("HTTP/2", "HTTP/1.1")}
    flow = next(f for f in flows if f.request.path.startswith("/echo"))
    assert flow.client_tls.alpn == "h2" and flow.server_tls.alpn in (None, "http/1.1")


def test_an_h2_request_body_without_content_length_reaches_an_http1_origin(make: Callable[..., Proxy],
                                                                          tls_origin: TLSOrigin) -> None:
    """h2 needs no content-length (the body ends with END_STREAM): towards HTTP/1.1 it must be framed."""
    proxy = make()
    body = pattern(60_000)  # within the initial windows: this bare client does no send-side flow control
    with H2Tunnel.through(proxy, "origin.test", tls_origin.port, proxy.ca_cert_path, alpn=("h2",)) as tunnel:
        sid = tunnel.request("/echo", method="POST", body=body)
        answer = tunnel.wait([sid])[sid]
    assert answer.status == 200 and bytes(answer.body) == body
    [seen] = tls_origin.requests
    assert seen.body == body
    assert seen.header("Transfer-Encoding") == "chunked" or seen.header("Content-Length") == str(len(body))


def test_h1_client_and_h1_origin_stay_http1_with_http2_on(make: Callable[..., Proxy], tls_origin: TLSOrigin,
                                                         h2_origin: H2Origin) -> None:
    proxy = make()
    used, body = curl_h2(proxy, tls_origin.url("/hello"), version="--http1.1")
    assert (used, body) == ("1.1", HELLO)
    # An h2-capable origin is offered what the client offered: http/1.1 only.
    used, body = curl_h2(proxy, h2_origin.url("/proto"), version="--http1.1")
    assert used == "1.1" and _proto(body)["http_version"] == "1.1"
    flows = intercepted(proxy, 2)
    assert {(f.request.http_version, f.response.http_version) for f in flows} == {("HTTP/1.1", "HTTP/1.1")}
    assert {f.server_tls.alpn for f in flows} == {"http/1.1"}


def test_h2_client_offering_both_to_an_http1_origin_is_given_http1(make: Callable[..., Proxy],
                                                                   tls_origin: TLSOrigin) -> None:
    """Upstream first: the origin chose http/1.1, so the client is offered exactly that."""
    proxy = make()
    used, body = curl_h2(proxy, tls_origin.url("/hello"))
    assert (used, body) == ("1.1", HELLO)
    [flow] = intercepted(proxy, 1)
    assert flow.client_tls.alpn == "http/1.1" and flow.server_tls.alpn == "http/1.1"


def test_a_mocked_host_with_no_upstream_answers_h2_clients_over_h2(make: Callable[..., Proxy]) -> None:
    """No upstream answer to take ALPN from: the client is offered both and keeps its choice."""
    proxy = make()
    mock = proxy.mock("GET", "https://localhost:1/api/*", json={"mocked": "h2"})
    used, body = curl_h2(proxy, "https://localhost:1/api/users")
    assert used == "2" and json.loads(body) == {"mocked": "h2"} and mock.calls == 1
    [flow] = intercepted(proxy, 1)
    assert flow.request.http_version == "HTTP/2" and flow.client_tls.alpn == "h2"


def test_h2_trailers_and_te_trailers_reach_an_h2_client(make: Callable[..., Proxy], h2_origin: H2Origin) -> None:
    proxy = make()
    with H2Tunnel.through(proxy, "localhost", h2_origin.tls_port, proxy.ca_cert_path) as tunnel:
        sid = tunnel.request("/trailers", headers=[(b"te", b"trailers")])
        empty = tunnel.request("/status/204")
        results = tunnel.wait()
    answer = results[sid]
    assert answer.status == 200 and bytes(answer.body) == b"with trailers\n"
    # hypercorn sends trailers only when the request it got kept `te: trailers`
    assert answer.trailers == [(b"x-checksum", b"abc123"), (b"grpc-status", b"0")]
    assert results[empty].status == 204 and results[empty].ended and bytes(results[empty].body) == b""


# -- trailers towards an HTTP/1 client -----------------------------------------------------------


@pytest.fixture(scope="module")
def h2_only_origin(origin_pki: OriginPKI) -> Iterator[H2Origin]:
    """hypercorn whose TLS side selects h2 only (offered http/1.1 alone, it answers no ALPN)."""
    server = H2Origin(origin_pki, alpn=("h2",)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def to_h2_origin(make: Callable[..., Proxy], h2_only_origin: H2Origin) -> Proxy:
    """A reverse proxy, plain listener (HTTP/1 clients), routing to the h2-only hypercorn over TLS.
    (In forward mode an HTTP/1-only client makes the proxy offer the origin http/1.1 only.)"""
    return make(mode="reverse", routes={"/": f"https://localhost:{h2_only_origin.tls_port}"})


def test_h1_client_to_an_h2_origin_gets_a_reason_phrase_and_te_trailers_is_kept(
        to_h2_origin: Proxy, h2_only_origin: H2Origin) -> None:
    proxy = to_h2_origin
    result = curl("--http1.1", "-i", "-H", "TE: trailers", "-H", "Cookie: a=1; b=2",
                  f"http://127.0.0.1:{proxy.port}/proto", timeout=20, check=True)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"  # a reason phrase made for HTTP/1
    seen = _proto(body)
    assert seen["http_version"] == "2"  # the origin was spoken to in h2
    headers = {k: v for k, v in seen["headers"]}
    assert headers["host"] == f"localhost:{h2_only_origin.tls_port}"  # :authority from the upstream's Host
    assert headers.get("te") == "trailers"  # kept towards h2 (gRPC needs it)
    assert headers["cookie"] == "a=1; b=2"
    [flow] = intercepted(proxy, 1)
    assert flow.request.http_version == "HTTP/1.1" and flow.response.http_version == "HTTP/2"
    assert flow.server_tls is not None and flow.server_tls.alpn == "h2"


def test_trailers_reach_an_h1_client_in_a_chunked_answer(to_h2_origin: Proxy) -> None:
    result = curl("--http1.1", "-i", "--raw", "-H", "TE: trailers", f"http://127.0.0.1:{to_h2_origin.port}/trailers",
                  timeout=20, check=True)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"with trailers\n" in body
    assert re.search(rb"(?i)\r\nx-checksum: abc123\r\n", b"\r\n" + body.split(b"\r\n0\r\n", 1)[1])
    assert body.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("how", ["sized", "http/1.0"])
def test_trailers_an_h1_client_cannot_take_are_dropped_with_a_log_line(
        to_h2_origin: Proxy, caplog: pytest.LogCaptureFixture, how: str) -> None:
    caplog.set_level(logging.INFO, logger="interceptkit")
    path, version = ("/trailers?sized=1", "--http1.1") if how == "sized" else ("/trailers", "--http1.0")
    result = curl(version, "-i", "-H", "TE: trailers", f"http://127.0.0.1:{to_h2_origin.port}{path}",
                  timeout=20, check=True)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200" and body == b"with trailers\n"
    assert b"x-checksum" not in result.stdout.lower()
    [flow] = intercepted(to_h2_origin, 1)
    assert flow.error is None and flow.state == "done"
    # The core marks the flow done (the proxy's thread) before the transport runs the Log command it
    # emitted just before: under load this thread can see the flow done first, so wait for the line.
    def dropped() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "trailer" in r.getMessage().lower()]

    wait_until(lambda: dropped(), 10)
    assert len(dropped()) == 1, [r.getMessage() for r in caplog.records]
    # ...and the proxy goes on serving
    assert curl("--http1.1", f"http://127.0.0.1:{to_h2_origin.port}/hello", timeout=20, check=True).stdout == HELLO


# -- what the user sees: table, HAR, replay, CLI ---------------------------------------------------


def test_an_h2_flow_in_the_table_in_har_and_replayed(make: Callable[..., Proxy], h2_origin: H2Origin,
                                                     tmp_path: Path) -> None:
    proxy = make()
    used, body = curl_h2(proxy, h2_origin.url("/proto?n=1"), "-H", "cookie: a=1", "-H", "cookie: b=2")
    assert used == "2"
    [flow] = intercepted(proxy, 1)
    assert "HTTP/2" in list(proxy.flows["protocol"])
    document = proxy.flows.to_har(tmp_path / "h2.har")
    entry = next(e for e in document["log"]["entries"] if e["request"]["url"] == h2_origin.url("/proto?n=1"))
    assert entry["request"]["httpVersion"] == "http/2.0" and entry["response"]["httpVersion"] == "http/2.0"
    [loaded] = [f for f in FlowTable.from_har(tmp_path / "h2.har") if f.request.url == flow.request.url]
    assert loaded.request.http_version == "HTTP/2" and loaded.response.http_version == "HTTP/2"
    replayed = flow.replay(timeout=15)
    assert replayed.error is None and replayed.response is not None and replayed.response.status == 200
    assert replayed.request.http_version == "HTTP/1.1"  # the replay client speaks HTTP/1.1
    again = replayed.response.json()
    assert again["path"] == "/proto" and again["query"] == "n=1"
    assert ["cookie", "a=1; b=2"] in again["headers"]  # the two h2 cookie fields, joined


@pytest.fixture
def cli(tmp_path: Path, origin_pki: OriginPKI) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "interceptkit", "--listen-host", "127.0.0.1", "--listen-port", "0",
             "--confdir", str(tmp_path / "cli-ca"), "--upstream-ca", str(origin_pki.ca_path), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**clean_env(), "INTERCEPTKIT_HOME": str(tmp_path / "cli-ca")})
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)


def _listening_port(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    for _ in range(50):
        line = process.stdout.readline()
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
        if not line:
            break
    raise AssertionError("the CLI did not say where it listens")


@pytest.mark.parametrize("flag", [None, "--no-http2"])
def test_the_cli_line_shows_http2_and_no_http2_turns_it_off(cli: Callable[..., subprocess.Popen[str]],
                                                            h2_origin: H2Origin, tmp_path: Path,
                                                            flag: str | None) -> None:
    process = cli(*([flag] if flag else []))
    port = _listening_port(process)
    url = h2_origin.url("/hello", host="127.0.0.1")  # the CLI has no resolver: IP literals only
    result = curl("--http2", "--cacert", str(tmp_path / "cli-ca" / "interceptkit-ca-cert.pem"),
                  "--capath", "/nonexistent", "-w", "\n%{http_version}", url,
                  proxy=f"http://127.0.0.1:{port}", timeout=20, check=True)
    assert result.stdout == HELLO + (b"\n1.1" if flag else b"\n2")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=10)
    [line] = [line for line in out.splitlines() if "/hello" in line]
    if flag:
        assert "HTTP/2" not in line and line.split()[2] == "200"
    else:
        assert line.split()[:4] == ["GET", url, "HTTP/2", "200"], line
    assert "Traceback" not in err
