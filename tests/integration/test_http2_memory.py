"""HTTP/2 flow control with back-pressure, end to end (issue 10, point 5).

The proxy runs as its own process (``python -m interceptkit``), so its RSS
is its own and not the test's (which also runs the origins). Two loads:

- a 1 GiB download over h2<->h2 (grpcio, a C client and server, so the proxy
  is the only slow part): the proxy's RSS stays bounded;
- a slow reader (the bare h2 client, acknowledging 256 KiB/s) downloading a
  512 MB body from hypercorn: what the origin manages to write stays near the
  windows' worth (the proxy does not acknowledge DATA it has not passed on),
  and the proxy's RSS does not grow.

The RSS bound asserted is loose (the proxy's peak below 300 MB, and within
idle + 100 MB); the numbers measured are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from h2_clients import H2Tunnel
from h2_origin import SENT, GrpcOrigin, H2Origin
from origin import clean_env
from tls_origin import OriginPKI

GIB_IN_MIB = 1024


@dataclass
class CLIProxy:
    """A proxy process: ``port``, its CA file, its PID."""

    process: subprocess.Popen[str]
    port: int
    ca_cert_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert found, status
        return int(found.group(1)) / 1024


class Sampler:
    """The peak of a process's RSS, sampled every 20 ms on a thread until stopped."""

    def __init__(self, proxy: CLIProxy) -> None:
        self.proxy, self.peak = proxy, proxy.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, self.proxy.rss_mb())
            except (OSError, AssertionError):
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return self.peak


@pytest.fixture
def cli_proxy(tmp_path: Path, origin_pki: OriginPKI) -> Iterator[CLIProxy]:
    confdir = tmp_path / "ca"
    process = subprocess.Popen(
        [sys.executable, "-m", "interceptkit", "--listen-host", "127.0.0.1", "--listen-port", "0",
         "--confdir", str(confdir), "--upstream-ca", str(origin_pki.ca_path), "--read-timeout", "30", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**clean_env(), "INTERCEPTKIT_HOME": str(confdir)})
    try:
        assert process.stdout is not None
        port = None
        for _ in range(20):
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", process.stdout.readline())
            if found:
                port = int(found.group(1))
                break
        assert port is not None, "the proxy did not start"
        yield CLIProxy(process, port, confdir / "interceptkit-ca-cert.pem")
    finally:
        process.kill()  # our own child, by its PID
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def grpc_origin(origin_pki: OriginPKI) -> Iterator[GrpcOrigin]:
    server = GrpcOrigin(origin_pki).start()
    try:
        yield server
    finally:
        server.stop()


def _grpc_channel(proxy: CLIProxy, origin: GrpcOrigin) -> grpc.Channel:
    # The CLI has no resolver: CONNECT goes to the IP literal; the TLS name is localhost.
    creds = grpc.ssl_channel_credentials(root_certificates=proxy.ca_cert_path.read_bytes())
    return grpc.secure_channel(origin.target, creds, options=[
        ("grpc.enable_http_proxy", 1), ("grpc.http_proxy", proxy.url),
        ("grpc.ssl_target_name_override", "localhost"), ("grpc.max_receive_message_length", 4 << 20)])


def test_a_1_gib_h2_download_keeps_the_proxy_rss_bounded(cli_proxy: CLIProxy, grpc_origin: GrpcOrigin) -> None:
    with _grpc_channel(cli_proxy, grpc_origin) as channel:
        bulk = channel.unary_stream("/test.Echo/Bulk")
        assert sum(map(len, bulk(b"2", timeout=20))) == 2 << 20  # warm: CA loaded, leaf made
        time.sleep(0.3)
        idle = cli_proxy.rss_mb()
        sampler = Sampler(cli_proxy)
        started = time.monotonic()
        received = 0
        for message in bulk(str(GIB_IN_MIB).encode(), timeout=120):
            received += len(message)
        seconds = time.monotonic() - started
        peak = sampler.stop()
    assert received == GIB_IN_MIB << 20
    print(f"\n1 GiB over h2<->h2 through the proxy: {received / seconds / 1e6:.0f} MB/s, "
          f"proxy RSS idle {idle:.0f} MB, peak {peak:.0f} MB (+{peak - idle:.0f} MB)")
    assert peak < 300, (idle, peak)
    assert peak - idle < 100, (idle, peak)


def test_a_slow_h2_reader_slows_the_origin_instead_of_filling_the_proxy(cli_proxy: CLIProxy,
                                                                        h2_origin: H2Origin) -> None:
    total, rate, seconds = 512_000_000, 256 * 1024, 4.0
    with H2Tunnel.through(cli_proxy, "127.0.0.1", h2_origin.tls_port, cli_proxy.ca_cert_path,
                          window=65535, keep_bodies=False) as tunnel:
        assert tunnel.alpn == "h2"
        warm = tunnel.request("/hello")
        assert tunnel.wait([warm])[warm].status == 200
        idle = cli_proxy.rss_mb()
        sampler = Sampler(cli_proxy)
        sid = tunnel.request(f"/bytes/{total}?tag=slow-reader")
        tunnel.read_slowly(sid, rate=rate, seconds=seconds)
        written, read = SENT.get("slow-reader", 0), tunnel.streams[sid].size
        peak = sampler.stop()
        tunnel.reset(sid)
    print(f"\nslow h2 reader: read {read / 1e6:.1f} MB in {seconds:.0f} s, origin wrote {written / 1e6:.1f} MB "
          f"of {total / 1e6:.0f}; proxy RSS idle {idle:.0f} MB, peak {peak:.0f} MB")
    assert 0 < read <= rate * seconds + 65535 + 16384
    # ~1 MiB stream windows on each side and a 256 KiB piece of hypercorn's: far below what a
    # proxy that acknowledges at once lets a fast origin write in 4 s (the whole body, or near it).
    assert written < 16_000_000, written
    assert peak - idle < 50, (idle, peak)
