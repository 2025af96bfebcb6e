"""Process handling for the benchmark: start, pin, measure and stop by PID.

Every process the benchmark starts goes through :class:`Managed`: it runs in its
own session (so a Ctrl-C in the terminal reaches only ``run.py``, which then
stops the children itself), and :meth:`Managed.stop` sends SIGTERM to that one
PID, waits, then SIGKILLs the same PID.  Every wait has a deadline.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from typing import IO

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Managed:
    """A child process started by the benchmark, stopped by its PID."""

    def __init__(self, argv: list[str], name: str, log_path: str | None = None,
                 capture_stdout: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        # Kept open for the child's lifetime; closed in stop().
        self._log: IO[bytes] | None = open(log_path, "wb") if log_path else None  # noqa: SIM115
        stdout: int | IO[bytes] = subprocess.PIPE if capture_stdout else (self._log or subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=self._log or subprocess.DEVNULL, start_new_session=True,
        )
        self.pid = self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def readline(self, timeout: float) -> str | None:
        """One line of the child's stdout (capture_stdout=True), or None on timeout/EOF."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n") and len(line) < 1 << 20:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            ch = os.read(self.proc.stdout.fileno(), 1)
            if not ch:
                break
            line += ch
        return line.decode(errors="replace") if line.endswith(b"\n") else None

    def stop(self, grace: float = 5.0) -> dict[str, object]:
        """SIGTERM this PID, wait up to ``grace`` seconds, then SIGKILL it."""
        info: dict[str, object] = {"name": self.name, "pid": self.pid, "already_exited": True, "killed": False}
        if self.proc.poll() is None:
            info["already_exited"] = False
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                info["killed"] = True
                self.proc.kill()
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
        info["returncode"] = self.proc.returncode
        for stream in (self.proc.stdout, self._log):
            if stream is not None and not stream.closed:
                stream.close()
        return info

    def log_tail(self, n: int = 800) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""


# ------------------------------------------------------------------ CPU pinning

def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of ``pid`` to ``cpus`` (no-op when cpus is None or pinning fails)."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass


def plan_cpus(enabled: bool) -> dict[str, set[int] | None]:
    """origin (+ this process and the download client) on the first CPU, the proxy
    on the second, the load generator on a third if there is one, else with the origin."""
    try:
        avail = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        avail = []
    if not enabled or len(avail) < 2:
        return {"origin": None, "proxy": None, "load": None}
    load = avail[2] if len(avail) >= 3 else avail[0]
    return {"origin": {avail[0]}, "proxy": {avail[1]}, "load": {load}}


# ------------------------------------------------------------------ /proc readers

def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, /proc/PID/clear_refs '5')."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid, in clock ticks (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` in seconds, at nanosecond resolution
    (``/proc/PID/task/*/schedstat``); clock ticks (``cpu_ticks``) where that is missing."""
    total, seen = 0, False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
                seen = True
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9 if seen else cpu_ticks(pid) / CLK_TCK


def cpu_stat() -> dict[int, tuple[int, int, int]]:
    """{cpu: (busy, steal, total)} jiffies from /proc/stat; busy excludes idle, iowait and steal."""
    out: dict[int, tuple[int, int, int]] = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    parts = line.split()
                    vals = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
                    total = sum(vals)
                    out[int(parts[0][3:])] = (total - vals[3] - vals[4] - vals[7], vals[7], total)
    except (OSError, ValueError, IndexError):
        pass
    return out


class CpuMeter:
    """Between start() and stop(): CPU use of some PIDs (``<name>_cpu_pct``, % of one core)
    and of each CPU as a whole (``cpu<N>_busy_pct``, ``cpu<N>_steal_pct``), which also
    counts processes that are not ours."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._ticks: dict[str, int] = {}
        self._stat: dict[int, tuple[int, int, int]] = {}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._ticks = {k: cpu_ticks(p) for k, p in self.pids.items()}
        self._stat = cpu_stat()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        out = {f"{k}_cpu_pct": round(100.0 * (cpu_ticks(p) - self._ticks[k]) / CLK_TCK / wall, 1)
               for k, p in self.pids.items()}
        for cpu, (busy1, steal1, total1) in cpu_stat().items():
            if cpu in self._stat:
                busy0, steal0, total0 = self._stat[cpu]
                if total1 > total0:
                    out[f"cpu{cpu}_busy_pct"] = round(100.0 * (busy1 - busy0) / (total1 - total0), 1)
                    out[f"cpu{cpu}_steal_pct"] = round(100.0 * (steal1 - steal0) / (total1 - total0), 1)
        return out


class RssSampler(threading.Thread):
    """Samples VmRSS of one PID every ``interval`` s; sets ``over_limit`` past ``limit_kb``."""

    def __init__(self, pid: int, interval: float = 0.05, limit_kb: int | None = None) -> None:
        super().__init__(daemon=True, name=f"rss-{pid}")
        self.pid, self.interval, self.limit_kb = pid, interval, limit_kb
        self.samples: list[int] = []
        self.over_limit = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set() and len(self.samples) < 1_000_000:
            kb = status_kb(self.pid, "VmRSS")
            if kb is None:
                break
            self.samples.append(kb)
            if self.limit_kb is not None and kb > self.limit_kb:
                self.over_limit.set()
            self._halt.wait(self.interval)

    def finish(self) -> dict[str, float | int | None]:
        self._halt.set()
        self.join(timeout=2)
        s = self.samples
        return {"samples": len(s), "min_mb": mb(min(s)) if s else None,
                "mean_mb": mb(sum(s) // len(s)) if s else None, "max_mb": mb(max(s)) if s else None}


# ------------------------------------------------------------------ ports

def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float, proc: Managed) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.running():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False
