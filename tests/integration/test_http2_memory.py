"""HTTP/2 flow control with back-pressure, end to end (issue 10, point 5).

The proxy runs as its own process (``python -m interceptkit``), so its RSS
is its own and not the test's (which also runs the origin and the client).
The origin is h2_origin.WindowedOrigin (it frames DATA only as far as the
proxy's windows allow and counts it: hypercorn buffers without limit, so it
cannot show back-pressure). Two loads, each through CONNECT with interception:

- a 1 GiB download over h2<->h2: the proxy's RSS stays bounded;
- a slow reader (the bare h2 client, acknowledging 256 KiB/s) of a 512 MB
  body: what the origin manages to write stays near what was read plus the
  windows (the proxy acknowledges DATA only once passed on), and the proxy's
  RSS does not grow.

The RSS bound asserted is loose (the proxy's peak below 300 MB, and within
idle + 100 MB); the numbers measured are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from h2_clients import H2Tunnel
from h2_origin import WindowedOrigin
from origin import clean_env
from tls_origin import OriginPKI

#: The large download, in MiB (1 GiB; IK_H2_BIG_MB=256 for a quicker run).
BIG_MB = int(os.environ.get("IK_H2_BIG_MB", "1024"))


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


@pytest.fixture
def windowed_origin(origin_pki: OriginPKI) -> Iterator[WindowedOrigin]:
    server = WindowedOrigin(origin_pki)
    try:
        yield server
    finally:
        server.stop()


def _tunnel(proxy: CLIProxy, origin: WindowedOrigin, window: int) -> H2Tunnel:
    # The CLI has no resolver: CONNECT to the IP literal (the origin's leaf names 127.0.0.1 too).
    tunnel = H2Tunnel.through(proxy, "127.0.0.1", origin.port, proxy.ca_cert_path, window=window,
                              keep_bodies=False, timeout=30)
    assert tunnel.alpn == "h2"
    warm = tunnel.request("/bytes/1000")  # CA loaded, leaf made, upstream connected
    assert tunnel.wait([warm])[warm].size == 1000
    return tunnel


def test_a_1_gib_h2_download_keeps_the_proxy_rss_bounded(cli_proxy: CLIProxy,
                                                         windowed_origin: WindowedOrigin) -> None:
    size = BIG_MB << 20
    with _tunnel(cli_proxy, windowed_origin, window=16 << 20) as tunnel:
        time.sleep(0.3)
        idle = cli_proxy.rss_mb()
        sampler = Sampler(cli_proxy)
        started = time.monotonic()
        sid = tunnel.request(f"/bytes/{size}")
        answer = tunnel.wait([sid], timeout=120)[sid]
        seconds = time.monotonic() - started
        peak = sampler.stop()
    assert answer.status == 200 and answer.ended and answer.size == size
    print(f"\n{BIG_MB} MiB over h2<->h2 through the proxy: {size / seconds / 1e6:.0f} MB/s in {seconds:.1f} s, "
          f"proxy RSS idle {idle:.0f} MB, peak {peak:.0f} MB (+{peak - idle:.0f} MB)")
    assert peak < 300, (idle, peak)
    assert peak - idle < 100, (idle, peak)


def test_a_slow_h2_reader_slows_the_origin_instead_of_filling_the_proxy(cli_proxy: CLIProxy,
                                                                        windowed_origin: WindowedOrigin) -> None:
    total, rate, seconds = 512_000_000, 256 * 1024, 4.0
    with _tunnel(cli_proxy, windowed_origin, window=65535) as tunnel:
        idle = cli_proxy.rss_mb()
        sampler = Sampler(cli_proxy)
        before = windowed_origin.sent
        sid = tunnel.request(f"/bytes/{total}")
        tunnel.read_slowly(sid, rate=rate, seconds=seconds)
        written, read = windowed_origin.sent - before, tunnel.streams[sid].size
        peak = sampler.stop()
        tunnel.reset(sid)
    print(f"\nslow h2 reader: read {read / 1e6:.1f} MB in {seconds:.0f} s, origin wrote {written / 1e6:.1f} MB "
          f"of {total / 1e6:.0f}; proxy RSS idle {idle:.0f} MB, peak {peak:.0f} MB")
    assert 0 < read <= rate * seconds + 65535 + 16384
    # what was read, plus about one window per side (~1 MiB each): far below what a proxy that
    # acknowledges at once lets the origin write in 4 s (hundreds of MB on loopback)
    assert written < read + 16_000_000, written
    assert peak - idle < 50, (idle, peak)
