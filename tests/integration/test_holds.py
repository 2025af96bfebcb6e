"""Holds, paced uploads, resets at accept and streamed mock bodies, seen by real clients.

The core does the waiting on its own timers (``flow.hold``, ``flow.pace_upload``)
and the transport streams mock bodies on the core's pulls; these tests watch
it from outside: curl and httpx through the proxy, a raw TCP origin that
notes when each piece of an upload arrives, and the proxy process's memory
while 50 MB of a generated mock body pass through it.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from origin import HELLO, ORIGIN_HOST, Origin, curl, pattern, pattern_sha256, raw_exchange, wait_until

from interceptkit import Proxy


def http(proxy: Proxy, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(proxy=proxy.url, timeout=timeout, trust_env=False)


# -- delay and hang ----------------------------------------------------------------------------


def test_curl_sees_the_delay_before_the_first_byte(proxy: Proxy, origin: Origin) -> None:
    proxy.fault("delay", seconds=0.5, path="/hello")
    result = curl("-w", "%{time_starttransfer}", origin.url("/hello"), proxy=proxy, check=True)
    assert result.stdout.startswith(HELLO)
    assert float(result.stdout[len(HELLO):]) >= 0.45


def test_a_hang_ends_when_the_client_times_out_and_the_fault_removal_frees_the_rest(
        proxy: Proxy, origin: Origin) -> None:
    fault = proxy.fault("hang", path="/hello")
    with http(proxy, timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
        client.get(origin.url("/hello"))
    # The client left: the held exchange ends with it (no task or timer waits on).
    assert wait_until(lambda: len(proxy.flows) == 1 and proxy.flows[0].state == "error")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.sendall(f"GET {origin.url('/hello')} HTTP/1.1\r\nHost: {ORIGIN_HOST}\r\n\r\n".encode())
    assert wait_until(lambda: fault.calls == 2)
    fault.remove()  # the policy side releases what it holds: the core closes that connection
    assert sock.recv(100) == b""
    sock.close()
    assert origin.requests == []


def test_flow_release_lets_a_held_request_go_on(proxy: Proxy, origin: Origin) -> None:
    held: list[object] = []

    def hold(flow: object) -> None:
        flow.hold()  # type: ignore[attr-defined]
        held.append(flow)

    proxy.on("request_headers", hold, path="/hello")
    answers: list[bytes] = []
    client = threading.Thread(target=lambda: answers.append(curl(origin.url("/hello"), proxy=proxy).stdout))
    client.start()
    assert wait_until(lambda: held)
    time.sleep(0.2)
    assert answers == [] and origin.requests == []  # still held
    held[0].release()  # type: ignore[attr-defined]
    client.join(timeout=10)
    assert answers == [HELLO]


# -- paced upload ------------------------------------------------------------------------------


class ArrivalOrigin:
    """A raw HTTP/1.1 origin on 127.0.0.1 that notes when each piece of a request body arrives."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.arrivals: list[tuple[float, int]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            received = len(body)
            while received < length:
                piece = conn.recv(65536)
                if not piece:
                    break
                self.arrivals.append((time.monotonic(), len(piece)))
                received += len(piece)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(received)), received))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(timeout=5)


def test_the_upstream_sees_a_throttled_upload_arrive_in_pieces_over_time(proxy: Proxy) -> None:
    server = ArrivalOrigin()
    try:
        proxy.fault("throttle", bytes_per_second=100_000, direction="upload", path="/upload")
        started = time.monotonic()
        with http(proxy) as client:
            answer = client.post(f"http://{ORIGIN_HOST}:{server.port}/upload", content=b"u" * 50_000)
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert answer.status_code == 200 and answer.content == b"50000"
    # 50 kB at 100 kB/s in 5 kB pieces: about 0.45 s, spread over many arrivals.
    assert elapsed >= 0.4 and len(server.arrivals) >= 5
    assert server.arrivals[-1][0] - server.arrivals[0][0] >= 0.3


# -- reset at accept -----------------------------------------------------------------------------


def test_curl_gets_a_reset_at_connect_without_a_hook(proxy: Proxy, origin: Origin) -> None:
    fault = proxy.fault("reset", at="connect", times=1)
    assert not proxy.hooks.active  # the core asks the policy on accept: no hook runs
    result = curl(origin.url("/hello"), proxy=proxy)
    # On loopback the RST often reaches curl's non-blocking connect() before it completes
    # (7, "Couldn't connect"); otherwise its first send or read sees it (55/56, "reset by peer").
    assert result.returncode in (7, 55, 56), result.stderr
    assert result.returncode == 7 or b"reset" in result.stderr.lower()
    assert fault.calls == 1 and len(proxy.flows) == 0
    assert curl(origin.url("/hello"), proxy=proxy).stdout == HELLO  # times=1: spent


# -- streamed mock bodies ------------------------------------------------------------------------


def generated(size: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < size:
        n = min(piece, size - sent)
        yield pattern(n, sent)
        sent += n


def test_a_50_mb_streamed_mock_passes_with_bounded_memory(proxy: Proxy, tmp_path: Path) -> None:
    size = 50 * 1000 * 1000
    proxy.on("request_headers", lambda flow: flow.respond(200, body=generated(size)), path="/big")
    me = psutil.Process()
    baseline = peak = me.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, me.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = tmp_path / "big.bin"
    try:
        result = curl("--limit-rate", "100M", f"http://{ORIGIN_HOST}/big", "-o", str(out), proxy=proxy)
    finally:
        done.set()
        sampler.join(timeout=5)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size == size
    digest = hashlib.sha256()
    with out.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == pattern_sha256(size)
    growth = (peak - baseline) / 1e6
    print(f"\n50 MB streamed mock: RSS grew by {growth:.1f} MB (peak {peak / 1e6:.1f} MB)")
    assert growth < 50, f"RSS grew by {growth:.1f} MB while streaming 50 MB"  # loose: not the whole body


def test_a_mock_body_streams_from_a_file_object_and_a_path(proxy: Proxy, tmp_path: Path) -> None:
    path = tmp_path / "body.bin"
    path.write_bytes(pattern(300_000))
    opened: list[object] = []

    def answer(flow: object) -> None:
        if flow.request.path == "/path":  # type: ignore[attr-defined]
            flow.respond(200, body=path, headers={"Content-Type": "application/octet-stream"})  # type: ignore[attr-defined]
        else:
            file = path.open("rb")
            opened.append(file)
            flow.respond(200, body=file)  # type: ignore[attr-defined]

    proxy.on("request_headers", answer)
    with http(proxy) as client:
        by_path = client.get(f"http://{ORIGIN_HOST}/path")
        by_file = client.get(f"http://{ORIGIN_HOST}/file")
    assert by_path.content == pattern(300_000) and by_path.headers["content-length"] == "300000"
    assert by_file.content == pattern(300_000) and by_file.headers["content-length"] == "300000"
    assert by_path.headers["content-type"] == "application/octet-stream"
    for file in opened:
        file.close()  # type: ignore[attr-defined]


def test_raw_client_gets_a_chunked_streamed_mock_from_a_generator(proxy: Proxy) -> None:
    proxy.on("request_headers", lambda flow: flow.respond(201, body=iter([b"one,", b"", b"two"])))
    answer = raw_exchange(proxy.port, f"GET http://{ORIGIN_HOST}/x HTTP/1.1\r\nHost: {ORIGIN_HOST}\r\n"
                                      f"Connection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 201") and b"transfer-encoding: chunked" in answer.lower()
    assert answer.endswith(b"4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n")
