"""Shaping a response body on its way to the client: pure decisions, bytes in.

Core tier, no I/O. A fault (faults.py) or any hook asks for it on the flow
(``flow.truncate_after``); the part that sends responses (conn_responses.py)
keeps the decision on the exchange and applies it to each body piece.
"""

from __future__ import annotations


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
