"""Drive a ProxyConnection in memory: events in with a fake clock, commands out.

A :class:`Driver` owns one :class:`ProxyConnection`, stamps every event with
its own clock, keeps the whole transcript of commands, tracks the timers the
core asked for, and can feed bytes whole, in fixed-size pieces, one byte at a
time, or cut at given offsets. Nothing here opens a socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from typing import Any

from interceptkit.core import commands as cmd
from interceptkit.core import events as ev
from interceptkit.core.config import ProxyConfig
from interceptkit.core.connection import ProxyConnection
from interceptkit.flow import Flow
from interceptkit.vocab import ConnectCause

#: How to cut bytes before feeding them: None (whole), an int (pieces of that
#: size; 1 is byte by byte), or a sequence of cut offsets.
Split = int | Sequence[int] | None

CLIENT = ("192.0.2.10", 50123)
VIA = b"1.1 interceptkit (interceptkit)"


def pieces(data: bytes, split: Split) -> list[bytes]:
    """``data`` cut as ``split`` says; never yields an empty piece."""
    if not data:
        return []
    if split is None:
        return [data]
    if isinstance(split, int):
        return [data[i : i + split] for i in range(0, len(data), split)]
    cuts = sorted({c for c in split if 0 < c < len(data)})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


class Driver:
    """One client connection under test.

    ``split`` is the default way bytes are fed (see :data:`Split`); every call
    returns the commands that call produced, and ``transcript`` keeps all of them.
    """

    def __init__(
        self,
        config: ProxyConfig | None = None,
        *,
        client_address: tuple[str, int] | None = CLIENT,
        split: Split = None,
        start: float = 1000.0,
        announce: bool = True,
    ) -> None:
        self.config = config or ProxyConfig()
        self.conn = ProxyConnection(self.config, client_address)
        self.now = start
        self.split = split
        self.transcript: list[cmd.Command] = []
        #: Timer name -> the clock value at which it is due.
        self.timers: dict[str, float] = {}
        self.timer_keys: dict[str, int] = {}  # the key each timer was started with (per-exchange timers)
        if announce:
            self.feed(ev.ClientConnected, address=client_address)

    # -- the clock ---------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.now += seconds

    # -- events ------------------------------------------------------------------

    def feed(self, event_type: type[ev.Event], **fields: Any) -> list[cmd.Command]:
        """Feed one event stamped with the current time; return its commands."""
        out: list[cmd.Command] = self.conn.handle(event_type(time=self.now, **fields))
        for command in out:
            if isinstance(command, cmd.StartTimer):
                self.timers[command.name] = self.now + command.delay
                self.timer_keys[command.name] = command.key
        self.transcript.extend(out)
        return out

    def client(self, data: bytes, split: Split | str = "default") -> list[cmd.Command]:
        """Bytes from the client, fed as ``split`` says (default: the driver's)."""
        out: list[cmd.Command] = []
        for piece in pieces(data, self.split if split == "default" else split):  # type: ignore[arg-type]
            out += self.feed(ev.ClientDataReceived, data=piece)
        return out

    def upstream(self, data: bytes, upstream: int = 1, split: Split | str = "default") -> list[cmd.Command]:
        out: list[cmd.Command] = []
        for piece in pieces(data, self.split if split == "default" else split):  # type: ignore[arg-type]
            out += self.feed(ev.UpstreamDataReceived, upstream=upstream, data=piece)
        return out

    def connected(self, upstream: int = 1, *, reused: bool = False,
                  address: tuple[str, int] | None = ("203.0.113.5", 80)) -> list[cmd.Command]:
        return self.feed(ev.UpstreamConnected, upstream=upstream, reused=reused, address=address)

    def connect_failed(self, upstream: int = 1, reason: str = "connection refused",
                       timeout: bool = False, cause: ConnectCause = "other") -> list[cmd.Command]:
        return self.feed(ev.UpstreamConnectFailed, upstream=upstream, reason=reason, timeout=timeout,
                         cause=cause)

    def client_closed(self, aborted: bool = False) -> list[cmd.Command]:
        return self.feed(ev.ConnectionClosed, upstream=None, aborted=aborted)

    def upstream_closed(self, upstream: int = 1, aborted: bool = False) -> list[cmd.Command]:
        return self.feed(ev.ConnectionClosed, upstream=upstream, aborted=aborted)

    def fire(self, name: str, *, at: float | None = None) -> list[cmd.Command]:
        """Fire timer ``name``: at its due time (the clock moves there) or at ``at``."""
        due = self.timers.pop(name, None)
        due = due if at is None else at
        assert due is not None, f"timer {name!r} was never started"
        self.now = max(self.now, due)
        return self.feed(ev.TimerFired, timer=name, key=self.timer_keys.get(name, 0))


# -- reading commands -------------------------------------------------------------


def to_client(commands: Iterable[cmd.Command]) -> bytes:
    """Every byte sent to the client, joined."""
    return b"".join(c.data for c in commands if isinstance(c, cmd.SendToClient))


def to_upstream(commands: Iterable[cmd.Command], upstream: int | None = None) -> bytes:
    """Every byte sent upstream (to one upstream id, or to all), joined."""
    return b"".join(
        c.data for c in commands
        if isinstance(c, cmd.SendToUpstream) and (upstream is None or c.upstream == upstream)
    )


def of_type(commands: Iterable[cmd.Command], kind: type[Any]) -> list[Any]:
    return [c for c in commands if isinstance(c, kind)]


def opened(commands: Iterable[cmd.Command]) -> list[cmd.OpenUpstream]:
    return of_type(commands, cmd.OpenUpstream)


def started(commands: Iterable[cmd.Command]) -> list[Flow]:
    return [c.flow for c in commands if isinstance(c, cmd.FlowStarted)]


def finished(commands: Iterable[cmd.Command]) -> list[Flow]:
    return [c.flow for c in commands if isinstance(c, cmd.FlowFinished)]


def closes_client(commands: Iterable[cmd.Command]) -> bool:
    return any(isinstance(c, cmd.CloseClient) for c in commands)


def errors_logged(commands: Iterable[cmd.Command]) -> list[str]:
    return [c.message for c in commands if isinstance(c, cmd.Log) and c.level == "error"]


def _coalesced(commands: Iterable[cmd.Command]) -> Iterator[cmd.Command]:
    """Adjacent sends to the same peer as one send, as if fed in one piece."""
    held: cmd.Command | None = None
    for c in commands:
        if isinstance(c, cmd.Log) and c.level == "debug":
            continue
        if isinstance(held, cmd.SendToClient) and isinstance(c, cmd.SendToClient):
            held = cmd.SendToClient(data=held.data + c.data)
        elif (isinstance(held, cmd.SendToUpstream) and isinstance(c, cmd.SendToUpstream)
              and held.upstream == c.upstream):
            held = cmd.SendToUpstream(upstream=c.upstream, data=held.data + c.data)
        else:
            if held is not None:
                yield held
            held = c
    if held is not None:
        yield held


def script(commands: Iterable[cmd.Command]) -> list[Any]:
    """Commands as a comparable transcript.

    Sends to the same peer that follow each other are joined (so a transcript
    does not depend on how the input was cut), debug logs are left out, and
    flows, which compare by identity, become ``("FlowStarted", id)`` and
    ``("FlowFinished", id, error)``.
    """
    out: list[Any] = []
    for c in _coalesced(commands):
        if isinstance(c, cmd.FlowStarted):
            out.append(("FlowStarted", c.flow.id))
        elif isinstance(c, cmd.FlowFinished):
            out.append(("FlowFinished", c.flow.id, c.flow.error))
        else:
            out.append(c)
    return out


# -- building and reading HTTP messages ---------------------------------------------


def head_fields(message: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The start line and the header fields of the first message in ``message``."""
    head = message.split(b"\r\n\r\n", 1)[0]
    start, *lines = head.split(b"\r\n")
    fields = []
    for line in lines:
        name, _, value = line.partition(b":")
        fields.append((name, value.strip()))
    return start, fields


def field_names(message: bytes) -> set[bytes]:
    return {name.lower() for name, _ in head_fields(message)[1]}


def field_values(message: bytes, name: bytes) -> list[bytes]:
    return [v for n, v in head_fields(message)[1] if n.lower() == name.lower()]


def body_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[1]


def status_of(message: bytes) -> int:
    """The status code of a response (0 when ``message`` is not one)."""
    parts = message.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def ok(body: bytes = b"hello", *extra: bytes, status: bytes = b"200 OK") -> bytes:
    """A Content-Length framed response from an upstream."""
    lines = [b"HTTP/1.1 " + status, b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(*chunks: bytes, trailers: bytes = b"") -> bytes:
    """A chunked body: each chunk, the last-chunk, optional trailer lines."""
    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c)
    return out + b"0\r\n" + trailers + b"\r\n"
