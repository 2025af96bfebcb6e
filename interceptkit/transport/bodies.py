"""Streamed mock bodies on the transport side: read a piece when the core pulls one.

The core asks with ``PullBody(xid, source)`` and waits for ``BodyPiece``.
A :class:`BodyPuller` (one per client session) answers only while the
client's socket takes bytes (asyncio's ``pause_writing`` parks the pull
until ``resume_writing``), reads files and paths in a thread executor (a
disk read never blocks the loop) and iterators on the loop, one piece per
loop turn, so one long body does not starve the other connections.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from ..core import commands as cmd
from ..core import events as ev

#: Bytes read from a file per piece.
PIECE = 64 * 1024


class _Reader:
    """One body source: a path (opened here), a binary file object, bytes, or an iterator of bytes."""

    def __init__(self, source: Any) -> None:
        self.file: IO[bytes] | None = None
        self.iterator: Iterator[Any] | None = None
        self.owned = isinstance(source, (str, os.PathLike))
        self.busy = False  # a read runs in the executor: close after it returns
        if self.owned:
            self.file = open(source, "rb")  # noqa: SIM115 (closed by close())
        elif hasattr(source, "read"):
            self.file = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            self.iterator = iter([data[i:i + PIECE] for i in range(0, len(data), PIECE)])
        else:
            self.iterator = iter(source)

    @property
    def blocking(self) -> bool:
        return self.file is not None

    def read(self) -> bytes | None:
        """The next piece; None at the end."""
        if self.file is not None:
            data = self.file.read(PIECE)
            return bytes(data) if data else None
        assert self.iterator is not None
        for piece in self.iterator:
            if piece:  # an empty piece is not the end
                return bytes(piece)
        return None

    def close(self) -> None:
        if self.file is not None and self.owned:
            self.file.close()
        close = getattr(self.iterator, "close", None)
        if callable(close):  # a generator: run its finally blocks
            close()


class BodyPuller:
    """The streamed mock bodies of one client session, by exchange id."""

    def __init__(self, feed: Callable[[ev.Event], None]) -> None:
        self._feed = feed
        self._readers: dict[int, _Reader] = {}
        self._parked: list[cmd.PullBody] = []
        self._writable = True
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def pull(self, command: cmd.PullBody) -> None:
        """Execute a ``PullBody``: read now, or once the client can take more."""
        if command.stop:
            self._close(command.xid)
        elif self._writable:
            asyncio.get_running_loop().call_soon(self._read, command)
        else:
            self._parked.append(command)

    def set_writable(self, writable: bool) -> None:
        """The client's socket stopped (False) or started again (True) taking our bytes."""
        self._writable = writable
        if writable:
            parked, self._parked = self._parked, []
            for command in parked:
                self._read(command)

    def _read(self, command: cmd.PullBody) -> None:
        if self._closed:
            return
        if not self._writable:
            self._parked.append(command)
            return
        xid = command.xid
        reader = self._readers.get(xid)
        try:
            if reader is None:
                reader = self._readers[xid] = _Reader(command.source)
            if not reader.blocking:
                self._answer(xid, reader.read(), None)
                return
        except Exception as exc:  # the user's iterator or path: its failure cuts this answer only
            self._answer(xid, None, f"{type(exc).__name__}: {exc}")
            return
        task = asyncio.get_running_loop().create_task(self._read_file(xid, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_file(self, xid: int, reader: _Reader) -> None:
        reader.busy = True
        try:
            data, error = await asyncio.get_running_loop().run_in_executor(None, reader.read), None
        except Exception as exc:
            data, error = None, f"{type(exc).__name__}: {exc}"
        finally:
            reader.busy = False
        if self._closed or self._readers.get(xid) is not reader:
            reader.close()  # the session or the exchange ended while it read
            return
        self._answer(xid, data, error)

    def _answer(self, xid: int, data: bytes | None, error: str | None) -> None:
        if data is None:
            self._close(xid)
        self._feed(ev.BodyPiece(time=time.time(), xid=xid, data=data or b"", end=data is None, error=error))

    def _close(self, xid: int) -> None:
        reader = self._readers.pop(xid, None)
        if reader is not None and not reader.busy:
            reader.close()

    def close_all(self) -> None:
        """The session ended: close every source (one being read closes when its read returns)."""
        self._closed = True
        self._parked.clear()
        for xid in list(self._readers):
            self._close(xid)
