"""The CLI's stdout while the proxy runs: lines in batches, none lost (no sockets: a pipe)."""

from __future__ import annotations

import os
import select
import subprocess
import sys

# Inside the child: stdout is the pipe below, unbuffered by PYTHONUNBUFFERED as in a Docker image.
CHILD = r"""
import sys
from interceptkit.cli import lines_in_batches
with lines_in_batches():
    for i in range(200):
        print(f"GET http://127.0.0.1/{i} 200")
    sys.stderr.write("written\n"); sys.stderr.flush()
    sys.stdin.readline()  # the parent looked at the pipe meanwhile
    print("last")
print("after", flush=True)
"""


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0.3)[0])


def test_under_pythonunbuffered_lines_wait_for_a_flush_and_all_of_them_arrive_in_order():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    try:
        assert child.stderr is not None and child.stdout is not None and child.stdin is not None
        assert child.stderr.readline() == b"written\n"
        # 200 lines printed, none written yet: no system call per line (unbuffered, each is one).
        assert not _readable(child.stdout.fileno())
        child.stdin.write(b"go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=20)
    finally:
        child.kill()
    lines = out.decode().splitlines()
    assert lines == [f"GET http://127.0.0.1/{i} 200" for i in range(200)] + ["last", "after"], err


def test_a_stdout_that_is_not_a_file_is_left_as_it_is(capsys):
    from interceptkit.cli import lines_in_batches

    before = sys.stdout
    with lines_in_batches():
        assert sys.stdout is before
        print("seen")
    assert capsys.readouterr().out == "seen\n"
