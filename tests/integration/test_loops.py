"""The proxy runs on the loop it was asked for: asyncio's, or uvloop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest
from origin import HELLO, clean_env, curl

from interceptkit.loops import choose_loop


def loop_seen_by_a_hook(new_proxy, origin, **kwargs) -> str:
    proxy = new_proxy(**kwargs)
    seen: list[str] = []
    proxy.on("request", lambda flow: seen.append(type(asyncio.get_running_loop()).__module__))
    proxy.start()
    assert curl(f"http://127.0.0.1:{origin.port}/hello", proxy=proxy, check=True).stdout == HELLO
    return seen[0]


@pytest.mark.parametrize("name, module", [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_proxy_runs_on_the_loop_asked_for(new_proxy, origin, name, module):
    assert loop_seen_by_a_hook(new_proxy, origin, loop=name).startswith(module)


def test_auto_follows_interceptkit_loop(new_proxy, origin, monkeypatch):
    monkeypatch.setenv("INTERCEPTKIT_LOOP", "uvloop")
    assert new_proxy().loop == "uvloop"
    monkeypatch.setenv("INTERCEPTKIT_LOOP", "asyncio")
    assert loop_seen_by_a_hook(new_proxy, origin).startswith("asyncio")
    monkeypatch.delenv("INTERCEPTKIT_LOOP")
    assert choose_loop("auto") == "uvloop"  # installed by the test extra


def test_unknown_loops_are_refused(new_proxy, monkeypatch):
    with pytest.raises(ValueError, match="unknown loop 'trio'"):
        new_proxy(loop="trio")
    monkeypatch.setenv("INTERCEPTKIT_LOOP", "gevent")
    with pytest.raises(ValueError, match="INTERCEPTKIT_LOOP"):
        new_proxy()


def test_cli_loop_flag(origin, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "interceptkit", "--confdir", str(tmp_path), "--listen-port", "0",
         "--loop", "uvloop"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert "; uvloop loop)" in line, line
        port = line.split("127.0.0.1:")[1].split(" ")[0]
        assert curl(f"http://127.0.0.1:{origin.port}/hello", proxy=f"http://127.0.0.1:{port}",
                    check=True).stdout == HELLO
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
