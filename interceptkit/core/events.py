"""Events: what happened, fed into :meth:`ProxyConnection.handle`.

Events are past-tense nouns. Every event carries ``time`` (seconds since the
epoch, from the transport's clock): the core has no clock of its own, so
timeouts and flow timings are computed from these values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..vocab import ConnectCause, TimerName
from .records import set_slots_directly


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something that happened, stamped with the transport's clock: the core's only time source."""

    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConnected(Event):
    """A client connection was accepted: the first event of every connection."""

    address: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDataReceived(Event):
    """Bytes arrived from the client."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamDataReceived(Event):
    """Bytes arrived from upstream connection ``upstream``."""

    upstream: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConnected(Event):
    """An :class:`OpenUpstream` succeeded.

    ``reused`` is true when the transport handed out an idle pooled
    connection: such a connection may have been closed by the server in the
    meantime, which is why the core may retry an idempotent request once.
    """

    upstream: int
    reused: bool = False
    address: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConnectFailed(Event):
    """An :class:`OpenUpstream` failed; ``timeout`` distinguishes 504 from 502.

    ``reason`` is for people (logs, the flow's error); ``cause`` is for code
    (a SOCKS5 reply code), set by the transport from the exception it caught.
    """

    upstream: int
    reason: str
    timeout: bool = False
    cause: ConnectCause = "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """A peer stopped sending.

    ``upstream`` is None for the client connection. ``aborted`` is false for
    an orderly EOF (the peer may still read: HTTP allows a client to
    half-close after its request) and true when the connection is gone.
    """

    upstream: int | None = None
    aborted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HookReturned(Event):
    """The hooks asked for by :class:`RunHook` ``call`` have finished.

    The hooks changed the flow in place; ``error`` is set when one raised
    (the exchange then goes on as if that hook were absent).
    """

    call: int
    error: str | None = None
    result: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(Event):
    """The timer named ``timer`` (from :class:`StartTimer`) is due.

    ``key`` tells apart timers of one name: per-exchange timers ("hold",
    "upload") carry the exchange's xid; connection-wide ones carry 0.
    """

    timer: TimerName
    key: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldReleased(Event):
    """The policy side let go of a held flow (``flow.release()``): its exchange moves on now.

    Addressed by flow id; a connection that holds no such flow ignores it.
    """

    flow_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyPiece(Event):
    """The next piece of a streamed mock body, answering :class:`~interceptkit.core.commands.PullBody`.

    ``end``: the source is exhausted (``data`` may still carry a last piece).
    ``error``: reading the source failed; the answer is cut short.
    """

    xid: int
    data: bytes = b""
    end: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientBackpressure(Event):
    """The client's socket stopped (or started again) taking our bytes.

    While it is blocked the upstream is not read, so its silence is not a
    stall the read timeout should punish.
    """

    blocked: bool


# Made for every read and every write: see records.py.
set_slots_directly(*(kind for kind in list(globals().values()) if isinstance(kind, type) and issubclass(kind, Event)))
