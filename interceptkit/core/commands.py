"""Commands: what the core asks the transport to do.

Commands are imperative verbs. The transport executes them in order and
reports outcomes back as events; it makes no protocol decisions of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..vocab import HookName, TimerName
from .records import set_slots_directly

if TYPE_CHECKING:
    from ..flow import Flow
    from .websocket import WebSocketMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """What the core asks the transport to do; each subclass owns only its fields."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendToClient(Command):
    """Write ``data`` to the client socket (already encrypted when the client speaks TLS)."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SendToUpstream(Command):
    """Write ``data`` to upstream connection ``upstream``."""

    upstream: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenUpstream(Command):
    """Connect to ``host:port`` and answer with UpstreamConnected/ConnectFailed.

    ``reuse`` allows the transport to hand out an idle pooled connection for
    the same ``(host, port, tls)`` key; the core always frames TLS itself, so
    ``tls`` only separates pool keys.
    """

    upstream: int
    host: str
    port: int
    tls: bool = False
    reuse: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseUpstream(Command):
    """Stop using ``upstream``; ``reusable`` lets the transport pool it."""

    upstream: int
    reusable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseClient(Command):
    """Close the client connection once queued data has been written.

    ``reset``: end it with a TCP reset (RST, SO_LINGER 0) instead of an
    orderly FIN; what the kernel has not yet sent is dropped, as a peer
    that crashed would drop it.
    """

    reset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseClient(Command):
    """Stop reading from the client: the core is not consuming its bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeClient(Command):
    """Resume reading from the client after :class:`PauseClient`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseUpstream(Command):
    """Stop reading from ``upstream``: the core is not consuming its bytes."""

    upstream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeUpstream(Command):
    """Read upstream ``upstream`` again (after a PauseUpstream)."""

    upstream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunHook(Command):
    """Run the user's hooks named ``name`` on ``flow``.

    With ``call`` set, the core waits for ``HookReturned(call=...)`` before it
    goes on with this flow; with ``call`` None the hooks only observe.
    ``payload`` carries what a hook works on besides the flow (a body chunk
    for ``response_chunk``); the hooks' replacement comes back as
    ``HookReturned.result``.
    """

    name: HookName
    flow: Flow
    call: int | None = None
    payload: bytes | WebSocketMessage | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowStarted(Command):
    """A new exchange began: record it (the table shows in-flight flows)."""

    flow: Flow


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowFinished(Command):
    """An exchange ended, completely or with ``flow.error`` set."""

    flow: Flow


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTimer(Command):
    """Fire ``TimerFired(timer=name, key=key)`` after ``delay`` seconds.

    A timer is named by ``(name, key)``: per-exchange timers ("hold",
    "upload") use the exchange's xid as ``key``. Starting a timer that is
    already pending replaces it.
    """

    name: TimerName
    delay: float
    key: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PullBody(Command):
    """Read the next piece of a streamed mock body for exchange ``xid``; answer with ``BodyPiece``.

    ``source`` is what the hook gave ``flow.respond(body=...)``: an iterator
    of bytes, a binary file object or a path (the same object on every pull
    of one body). The transport reads files off the event loop and answers
    only once the client can take more bytes, so one piece is in memory at a
    time. ``stop``: the core needs no more of it (close the source).
    """

    xid: int
    source: object
    stop: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Log(Command):
    """A log line at ``level`` (debug, info, warning, error): logs are output, not side effects."""

    level: str
    message: str


# Made for every read and every write: see records.py.
set_slots_directly(*(kind for kind in list(globals().values()) if isinstance(kind, type) and issubclass(kind, Command)))
