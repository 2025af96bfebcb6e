"""Shaping a response body on its way to the client: pure decisions, bytes in.

Core tier, no I/O. A fault (faults.py) or any hook asks for it on the flow
(``flow.truncate_after``, ``flow.pace_body``); the part that sends responses (conn_responses.py)
keeps the decision on the exchange and applies it to each body piece.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class Cut:
    """Let ``after`` body bytes through, then nothing: ``take(data) -> (send, cut_now)``."""

    __slots__ = ("left", "done")

    def __init__(self, after: int) -> None:
        self.left = after
        self.done = False

    def take(self, data: bytes) -> tuple[bytes, bool]:
        if self.done:
            return b"", False
        if len(data) < self.left:
            self.left -= len(data)
            return data, False
        self.done = True
        return data[:self.left], True


class Pace:
    """A body in pieces of ``chunk`` bytes, ``interval`` seconds apart (a dribble, or a throttle).

    ``queue`` holds what waits for the next tick; ``ticking`` says a timer is
    due; ``end`` holds the end of the message while pieces still wait.
    """

    __slots__ = ("chunk", "interval", "queue", "ticking", "end")

    def __init__(self, chunk: int, interval: float) -> None:
        self.chunk = max(1, int(chunk))
        self.interval = max(0.0, float(interval))
        self.queue: deque[bytes] = deque()
        self.ticking = False
        self.end: Any = None

    def add(self, data: bytes) -> None:
        self.queue.extend(data[i:i + self.chunk] for i in range(0, len(data), self.chunk))


class Shape:
    """How one response body is shaped: cut short, paced, or both (None: not at all)."""

    __slots__ = ("cut", "pace")

    def __init__(self, truncate_after: int | None, pace: tuple[int, float] | None) -> None:
        self.cut = Cut(truncate_after) if truncate_after is not None else None
        self.pace = Pace(*pace) if pace is not None else None
