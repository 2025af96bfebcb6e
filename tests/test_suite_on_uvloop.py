"""The suite runs with both loops (issue 13 §6): the default run uses asyncio's
loop; this test runs the files that exercise the transport hardest again on
uvloop, in a child pytest with ``--loop uvloop``, so the README's one test
command covers both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRANSPORT_HEAVY = ["test_forward.py", "test_connect.py", "test_https.py", "test_websocket.py", "test_auth_socks5.py",
                   "test_errors.py", "test_loops.py"]


def test_transport_heavy_tests_pass_on_uvloop(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--loop") == "uvloop":
        pytest.skip("this whole run is on uvloop already")
    files = [str(ROOT / "tests" / "integration" / name) for name in TRANSPORT_HEAVY]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--loop", "uvloop", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    summary = result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else []
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert summary and " passed" in summary[0] and "failed" not in summary[0], summary
