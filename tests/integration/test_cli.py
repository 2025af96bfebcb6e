"""``python -m interceptkit`` as a user runs it: a subprocess on a free port.

The CLI has no resolver option, so requests through it use IP literals
(127.0.0.1), which are never looked up.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from origin import HELLO, clean_env, curl, wait_until

LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class CLI:
    """A running ``python -m interceptkit`` whose stdout lines arrive on a queue."""

    def __init__(self, *args: str, confdir: Path, env: dict[str, str] | None = None,
                 drop_env: tuple[str, ...] = ()) -> None:
        env = {**clean_env(), "INTERCEPTKIT_HOME": str(confdir), **(env or {})}
        for name in drop_env:
            env.pop(name, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "interceptkit", "--confdir", str(confdir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            cwd=str(Path(__file__).resolve().parents[2]),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))

    def next_line(self, timeout: float = 5.0, match: str | None = None) -> str:
        """The next stdout line (matching ``match``), or AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(f"no line{' matching ' + repr(match) if match else ''} within "
                                     f"{timeout} s; saw {self.seen!r}") from None
            self.seen.append(line)
            if match is None or re.search(match, line):
                return line

    def wait_listening(self, timeout: float = 10.0) -> int:
        line = self.next_line(timeout, match=LISTENING.pattern)
        found = LISTENING.search(line)
        assert found is not None
        return int(found.group(1))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        return self.process.wait(timeout=timeout)

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read().decode("utf-8", "replace")

    def rest_of_stdout(self, timeout: float = 5.0) -> list[str]:
        self._reader.join(timeout)
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get_nowait())
        self.seen += lines
        return lines

    def kill(self) -> None:
        """End this process (by its own PID), if it still runs."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def confdir() -> Path:
    # One CA for all CLI runs (created on first use; later runs load it).
    return Path(os.environ["INTERCEPTKIT_HOME"])


@pytest.fixture
def cli(confdir: Path) -> Iterator[type[CLI]]:
    started: list[CLI] = []

    class _Tracked(CLI):
        def __init__(self, *args: str, **kwargs: object) -> None:
            super().__init__(*args, confdir=confdir, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    try:
        yield _Tracked
    finally:
        for process in started:
            process.kill()


def test_help_lists_the_flags():
    result = subprocess.run([sys.executable, "-m", "interceptkit", "--help"], capture_output=True,
                            timeout=20, env=clean_env(), check=False)
    assert result.returncode == 0
    text = result.stdout.decode()
    for flag in ("--listen-host", "--listen-port", "--read-timeout", "--connect-timeout", "--idle-timeout",
                 "--quiet", "--verbose"):
        assert flag in text


def test_prints_listening_line_then_one_line_per_exchange_and_sigint_exits_0(cli, origin):
    proc = cli("--listen-port", "0")
    port = proc.wait_listening()
    assert port != 0
    url = f"http://127.0.0.1:{origin.port}/hello"
    assert curl(url, proxy=f"http://127.0.0.1:{port}", check=True).stdout == HELLO
    assert curl(f"http://127.0.0.1:{origin.port}/status/404", proxy=f"http://127.0.0.1:{port}").returncode == 0
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0
    lines = proc.rest_of_stdout()
    exchanges = [line for line in lines if "/hello" in line or "/status/404" in line]
    assert len(exchanges) == 2, lines
    hello = exchanges[0].split()
    assert hello[0] == "GET" and hello[1] == url and hello[2] == "200"
    assert hello[3] == f"{len(HELLO)}B"
    assert re.fullmatch(r"\d+ms", hello[4])
    assert exchanges[1].split()[2] == "404"
    assert "Traceback" not in proc.stderr()


def test_exchange_lines_appear_while_running_when_piped(cli, origin):
    # As in a user's shell: no PYTHONUNBUFFERED (this test environment sets it).
    proc = cli("--listen-port", "0", drop_env=("PYTHONUNBUFFERED",))
    port = proc.wait_listening()
    curl(f"http://127.0.0.1:{origin.port}/hello", proxy=f"http://127.0.0.1:{port}", check=True)
    line = proc.next_line(timeout=2, match=r"/hello")
    assert line.startswith("GET ")


@pytest.mark.parametrize("unbuffered", ["1", None], ids=["PYTHONUNBUFFERED", "buffered"])
def test_a_reader_that_goes_away_costs_the_lines_not_the_proxy(confdir, origin, unbuffered):
    env = {**clean_env(), "INTERCEPTKIT_HOME": str(confdir)}
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    proc = subprocess.Popen([sys.executable, "-m", "interceptkit", "--confdir", str(confdir), "--listen-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        found = None
        while found is None:
            line = proc.stdout.readline().decode()
            assert line, proc.stderr.read().decode()
            found = LISTENING.search(line)
        proc.stdout.close()  # as `interceptkit | head -1` does once it has its line
        proxy = urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{found.group(1)}"})
        opener = urllib.request.build_opener(proxy)
        url = f"http://127.0.0.1:{origin.port}/hello"
        for i in range(300):  # more lines than a buffer holds, and a periodic flush between them
            with opener.open(url, timeout=5) as answer:
                assert answer.read() == HELLO
            if i == 20:
                time.sleep(0.6)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
    assert "stdout cannot be written" in err and "Traceback" not in err, err


def test_sigterm_exits_0(cli, origin):
    proc = cli("--listen-port", "0", "--quiet")
    port = proc.wait_listening()
    assert curl(f"http://127.0.0.1:{origin.port}/hello", proxy=f"http://127.0.0.1:{port}",
                check=True).stdout == HELLO
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert "Traceback" not in proc.stderr()
    assert not any("/hello" in line for line in proc.rest_of_stdout())  # --quiet


def test_sigint_with_an_open_client_connection_exits_0(cli):
    proc = cli("--listen-port", "0")
    port = proc.wait_listening()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET http://127.0.0.1:9/ HTTP/1.1\r\n")  # an unfinished request
        time.sleep(0.1)
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0
    assert "Traceback" not in proc.stderr()


def test_port_in_use_exits_1_with_one_line_message(cli):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        proc = cli("--listen-port", str(port))
        assert proc.wait(timeout=20) == 1
        stderr = proc.stderr()
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert str(port) in lines[0] or "in use" in lines[0].lower()


def test_bad_flag_value_exits_nonzero_without_traceback():
    result = subprocess.run([sys.executable, "-m", "interceptkit", "--listen-port", "not-a-port"],
                            capture_output=True, timeout=20, env=clean_env(), check=False)
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr
    assert b"--listen-port" in result.stderr


def test_max_request_body_option_answers_413(cli, origin):
    proc = cli("--listen-port", "0", "--max-request-body", "100")
    port = proc.wait_listening()
    url = f"http://127.0.0.1:{origin.port}/echo"
    big = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "x" * 101, url,
               proxy=f"http://127.0.0.1:{port}")
    assert big.stdout == b"413"
    small = curl("--data-binary", "x" * 100, url, proxy=f"http://127.0.0.1:{port}", check=True)
    assert small.stdout == b"x" * 100
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0


def test_refused_upstream_line_shows_the_502_the_client_got_with_the_reason(cli):
    # Issue 9, defect 6: the line read "GET http://127.0.0.1:1/ ERR - 0ms (...)".
    proc = cli("--listen-port", "0")
    port = proc.wait_listening()
    result = curl("--write-out", "%{http_code}", "--output", "/dev/null", "http://127.0.0.1:1/",
                  proxy=f"http://127.0.0.1:{port}")
    assert result.stdout == b"502"
    line = proc.next_line(match=r"127\.0\.0\.1:1/")
    fields = line.split()
    assert fields[:3] == ["GET", "http://127.0.0.1:1/", "502"], line
    assert "ERR" not in line
    assert "(cannot connect to 127.0.0.1:1: " in line


def test_upstream_that_never_answers_line_shows_504(cli):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # accepts (in the backlog) and never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/slow"
        proc = cli("--listen-port", "0", "--read-timeout", "0.3")
        port = proc.wait_listening()
        result = curl("--write-out", "%{http_code}", "--output", "/dev/null", url,
                      proxy=f"http://127.0.0.1:{port}")
        assert result.stdout == b"504"
        line = proc.next_line(match="/slow")
    assert line.split()[:3] == ["GET", url, "504"], line
    assert "did not answer within 0.3 s" in line


def _script_header(port: int, origin_port: int) -> str | None:
    result = curl("--include", f"http://127.0.0.1:{origin_port}/hello", proxy=f"http://127.0.0.1:{port}",
                  check=True)
    for line in result.stdout.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "x-script":
            return value.strip()
    return None


def test_script_edited_while_curl_requests_run(cli, origin, tmp_path):
    script = tmp_path / "hooks.py"
    script.write_text("def response(flow):\n    flow.response.headers['X-Script'] = 'v1'\n")
    proc = cli("--listen-port", "0", "--script", str(script))
    port = proc.wait_listening()
    assert _script_header(port, origin.port) == "v1"
    seen: list[str | None] = []
    stop = threading.Event()

    def keep_requesting() -> None:
        while not stop.is_set() and len(seen) < 200:
            seen.append(_script_header(port, origin.port))

    worker = threading.Thread(target=keep_requesting)
    worker.start()
    try:
        script.write_text("def response(flow):\n    flow.response.headers['X-Script'] = 'v2-edited'\n")
        edited = time.monotonic()
        while seen[-1:] != ["v2-edited"] and time.monotonic() - edited < 3:
            time.sleep(0.02)
        assert time.monotonic() - edited < 1.5, seen[-5:]
        # A broken edit: reported with its traceback; the v2 hooks keep working.
        script.write_text("def response(flow:\n")
        time.sleep(0.6)
        count = len(seen)
        assert wait_until(lambda: len(seen) >= count + 3, timeout=5)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert None not in seen  # never a moment without hooks
    assert set(seen) <= {"v1", "v2-edited"}
    assert seen[-1] == "v2-edited"
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0
    stderr = proc.stderr()
    assert "SyntaxError" in stderr and "previous version stays attached" in stderr
    assert str(script) in stderr


# -- --flow-detail --------------------------------------------------------------------


def _through(port: int, *args: str) -> None:
    curl(*args, proxy=f"http://127.0.0.1:{port}", check=True)


def _lines_after_exit(proc: CLI) -> list[str]:
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0
    return proc.rest_of_stdout()


def test_flow_detail_0_prints_no_line_per_exchange(cli, origin):
    proc = cli("--listen-port", "0", "--flow-detail", "0")
    port = proc.wait_listening()
    _through(port, f"http://127.0.0.1:{origin.port}/hello")
    assert not any("/hello" in line for line in _lines_after_exit(proc))


def test_flow_detail_2_adds_request_and_response_headers_without_colours_when_piped(cli, origin):
    proc = cli("--listen-port", "0", "--flow-detail", "2", drop_env=("NO_COLOR",))
    port = proc.wait_listening()
    _through(port, "-H", "X-Asked: yes", f"http://127.0.0.1:{origin.port}/hello")
    lines = _lines_after_exit(proc)
    start = next(i for i, line in enumerate(lines) if line.startswith("GET "))
    block = lines[start:]
    assert block[0].split()[2] == "200"
    assert "    > GET /hello HTTP/1.1" in block
    assert "    > X-Asked: yes" in block
    assert "    < HTTP/1.1 200 OK" in block
    assert f"    < Content-Length: {len(HELLO)}" in block
    assert not any(HELLO.decode().strip() in line for line in block)  # bodies only at 3
    assert not any("\033[" in line for line in lines)


def test_flow_detail_3_previews_text_and_summarises_binary_bodies(cli, origin):
    proc = cli("--listen-port", "0", "--flow-detail", "3")
    port = proc.wait_listening()
    _through(port, "--data-binary", "name=ada", f"http://127.0.0.1:{origin.port}/echo")
    _through(port, "--output", "/dev/null", f"http://127.0.0.1:{origin.port}/bytes/10000")
    lines = _lines_after_exit(proc)
    assert "    > name=ada" in lines and "    < name=ada" in lines
    binary = [line for line in lines if "<binary, 10,000 bytes: " in line]
    assert len(binary) == 1 and binary[0].startswith("    < "), lines


def _run_on_a_terminal(confdir: Path, origin_port: int, env: dict[str, str]) -> str:
    """Run the CLI with a pseudo-terminal as stdout; one exchange; return what it printed."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "interceptkit", "--confdir", str(confdir), "--listen-port", "0"],
        stdout=slave, stderr=subprocess.PIPE, env={**clean_env(), **env},
        cwd=str(Path(__file__).resolve().parents[2]))
    os.close(slave)
    output = b""
    try:
        deadline = time.monotonic() + 15
        while b"/hello" not in output and time.monotonic() < deadline:
            found = LISTENING.search(output.decode("utf-8", "replace"))
            if found and b"curl-done" not in output:
                curl(f"http://127.0.0.1:{origin_port}/hello", proxy=f"http://127.0.0.1:{found.group(1)}",
                     check=True)
                output += b"curl-done\n"
            ready, _, _ = __import__("select").select([master], [], [], 0.2)
            if ready:
                output += os.read(master, 65536)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
        os.close(master)
    return output.decode("utf-8", "replace")


def test_colours_on_a_terminal_and_none_with_no_color(confdir, origin):
    coloured = _run_on_a_terminal(confdir, origin.port, {"NO_COLOR": ""})
    line = next(line for line in coloured.splitlines() if "/hello" in line)
    assert "\033[32m200\033[0m" in line  # a green 200
    plain = _run_on_a_terminal(confdir, origin.port, {"NO_COLOR": "1"})
    line = next(line for line in plain.splitlines() if "/hello" in line)
    assert "\033[" not in line and " 200 " in line


# -- --filter ----------------------------------------------------------------------------


def test_filter_limits_the_lines(cli, origin):
    proc = cli("--listen-port", "0", "--filter", "~m POST | ~c 404")
    port = proc.wait_listening()
    base = f"http://127.0.0.1:{origin.port}"
    _through(port, f"{base}/hello")
    _through(port, "--data-binary", "x", f"{base}/echo")
    _through(port, f"{base}/status/404")
    _through(port, f"{base}/status/200")
    shown = [line.split()[:3] for line in _lines_after_exit(proc) if line.startswith(("GET", "POST"))]
    assert shown == [["POST", f"{base}/echo", "200"], ["GET", f"{base}/status/404", "404"]]


def test_a_bad_filter_exits_2_with_a_caret_under_the_mistake(cli):
    proc = cli("--listen-port", "0", "--filter", "~m POST & (~c 200")
    assert proc.wait(timeout=20) == 2
    stderr = proc.stderr()
    assert "Traceback" not in stderr
    assert stderr.startswith("interceptkit: --filter: ")
    assert "^" in stderr and "~m POST & (~c 200" in stderr


def test_missing_script_exits_2_naming_it(tmp_path):
    missing = tmp_path / "nope.py"
    result = subprocess.run([sys.executable, "-m", "interceptkit", "--listen-port", "0", "--confdir",
                             str(tmp_path), "--script", str(missing)],
                            capture_output=True, timeout=20, env=clean_env(), check=False)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"interceptkit: --script: no script at {missing}"
