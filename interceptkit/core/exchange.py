"""One request/response pair in flight: its state, what it holds, the hook it waits for.

An ``Exchange`` moves through ``ExchangeState`` only along
``EXCHANGE_TRANSITIONS``, checked in :meth:`Exchange.enter` (h11's
``_state.py`` pattern). Waiting for a hook is recorded on the exchange
(:class:`PendingHook`); layer events that arrive for it meanwhile wait in its
``inbox`` and are taken up, in order, when ``HookReturned`` moves it on.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import TYPE_CHECKING

from ..flow import Flow, Request, Response
from ..vocab import HookName
from .layers import Fields, LayerEvent, RequestHead
from .shaping import Pace, Shape
from .websocket import WebSocketMessage

if TYPE_CHECKING:  # state.py's Upstream binds exchanges too: a type-only import keeps them apart
    from .state import Upstream


class ExchangeState(Enum):
    """Where an exchange is; the request may still be arriving in any state before DONE."""

    __hash__ = object.__hash__  # singletons: identity hashing, without a Python call per lookup

    RECEIVING = auto()  # its head arrived; the upstream is not asked yet (hooks decide, or hold the body)
    FORWARDING = auto()  # its head went to the upstream; the answer is owed
    MOCKED = auto()  # a hook answered it: the answer goes out once the request is complete
    ANSWERING = auto()  # the upstream's response head arrived; the hooks decide what the client gets
    REPLACED = auto()  # a hook replaced the upstream's answer: its body is dropped, then the replacement goes
    RESPONDING = auto()  # the response head went to the client; the body follows
    UPGRADED = auto()  # a 101: the connection became a tunnel or a WebSocket (the flow goes on there)
    DONE = auto()
    FAILED = auto()


_S = ExchangeState

# Each state as a module global too, for the per-request path: CPython 3.11
# specialises loading a global but not an attribute of a class, so
# ``ExchangeState.DONE`` is a full lookup (type cache, class dict) each time.
RECEIVING, FORWARDING, MOCKED = _S.RECEIVING, _S.FORWARDING, _S.MOCKED
ANSWERING, REPLACED, RESPONDING = _S.ANSWERING, _S.REPLACED, _S.RESPONDING
UPGRADED, DONE, FAILED = _S.UPGRADED, _S.DONE, _S.FAILED

#: Which state may follow which; ``Exchange.enter`` checks it. FORWARDING to
#: itself: a retry on a fresh connection. FAILED is reachable from every live state.
EXCHANGE_TRANSITIONS: dict[ExchangeState, frozenset[ExchangeState]] = {
    _S.RECEIVING: frozenset({_S.FORWARDING, _S.MOCKED, _S.FAILED}),
    _S.FORWARDING: frozenset({_S.FORWARDING, _S.ANSWERING, _S.MOCKED, _S.UPGRADED, _S.FAILED}),
    _S.MOCKED: frozenset({_S.RESPONDING, _S.FAILED}),
    _S.ANSWERING: frozenset({_S.RESPONDING, _S.REPLACED, _S.FAILED}),
    _S.REPLACED: frozenset({_S.RESPONDING, _S.FAILED}),
    _S.RESPONDING: frozenset({_S.DONE, _S.FAILED}),
    _S.UPGRADED: frozenset({_S.DONE, _S.FAILED}),
    _S.DONE: frozenset(),
    _S.FAILED: frozenset(),
}

#: States in which the client may still get an answer of our own (an error status):
#: nothing of a response has reached it.
ANSWERABLE = frozenset({_S.RECEIVING, _S.FORWARDING, _S.MOCKED})
#: States in which the upstream's answer has begun.
RESPONSE_STARTED = frozenset({_S.ANSWERING, _S.REPLACED, _S.RESPONDING})
LIVE = frozenset(set(ExchangeState) - {_S.DONE, _S.FAILED})


class PendingHook:
    """The hook call an exchange waits for, and what it was shown (a chunk, a message)."""

    __slots__ = ("call", "name", "payload")

    def __init__(self, call: int, name: HookName, payload: bytes | WebSocketMessage | None) -> None:
        self.call = call
        self.name = name
        self.payload = payload


class PendingHold(PendingHook):
    """A hook asked to hold the exchange (``flow.hold``): what follows that hook runs when it ends.

    ``result`` is what the hook returned, kept for then; ``forever``: no
    timer runs, only a release (or the client going away) ends it.
    """

    __slots__ = ("result", "forever")

    def __init__(self, name: HookName, payload: bytes | WebSocketMessage | None, result: object,
                 forever: bool) -> None:
        super().__init__(0, name, payload)  # call 0: no HookReturned ever matches a hold
        self.result = result
        self.forever = forever


class SentEnd:
    """The end of a request as sent upstream (with its trailers), kept for a retry."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: Fields | tuple[()]) -> None:
        self.trailers = trailers


SentPart = RequestHead | bytes | SentEnd


class Exchange:
    """One request/response pair: owns its state, flow, upstream binding, held bodies and hook wait.

    ``xid`` is its id on the client's layer (the pipeline sequence number,
    or the HTTP/2 stream id); ``up_xid`` the one on its upstream's layer.
    """

    __slots__ = ("xid", "flow", "state", "upstream", "up_xid", "request_complete", "request_trailers", "unacked",
                 "request_bodyless", "response_bodyless", "response_ended", "upstream_bytes", "replay",
                 "replay_size", "retried", "upgrade", "absolute_form", "request_parts", "response_parts",
                 "parts_size", "hooked", "upstream_response", "websocket", "body_shape", "waiting", "inbox",
                 "response_trailers", "upload_pace", "streaming")

    def __init__(self, xid: int, flow: Flow, *, absolute_form: bool) -> None:
        self.xid = xid
        self.flow = flow
        self.state = RECEIVING
        self.upstream: Upstream | None = None
        self.up_xid = 0
        self.request_complete = False
        # Empty tuples, shared: an exchange allocates as little as it can (each
        # container is one more object for the garbage collector to track).
        self.request_trailers: Fields | tuple[()] = ()
        #: Response bytes from an HTTP/2 origin not acknowledged yet: the
        #: client's window holds them (acknowledged when it takes them).
        self.unacked = 0
        #: The message said it has no body (HTTP/2 END_STREAM on HEADERS): its
        #: end goes out with its head on the other side too.
        self.request_bodyless = False
        self.response_bodyless = False
        #: The client's answer is complete on the wire (ended with its head).
        self.response_ended = False
        self.upstream_bytes = 0
        #: What was sent so far, kept while small enough to resend (None: not kept).
        self.replay: list[SentPart] | None = None
        self.replay_size = 0
        self.retried = False
        self.upgrade = False
        #: Absolute-form requests get Host from the target (RFC 9112 3.2.2);
        #: origin-form ones (inside an intercepted tunnel) keep the client's.
        self.absolute_form = absolute_form
        #: Body pieces held back while a ``request``/``response`` hook needs
        #: the whole body; None while streaming.
        self.request_parts: list[bytes] | None = None
        self.response_parts: list[bytes] | None = None
        self.parts_size = 0
        #: A hook may have changed the message: validate it before sending.
        self.hooked = False
        self.upstream_response: Response | None = None
        #: How the response body is cut or paced (flow.truncate_after,
        #: flow.pace_body), set when its head goes out; None: sent as it comes.
        self.body_shape: Shape | None = None
        #: The request asks to upgrade to WebSocket.
        self.websocket = False
        #: The hook call this exchange waits for; None when it is not waiting.
        self.waiting: PendingHook | None = None
        #: Layer events that arrived while it waited, taken up in order after.
        self.inbox: list[tuple[Upstream | None, LayerEvent]] | None = None
        #: The upstream's trailers, kept while paced pieces still go out.
        self.response_trailers: Fields | tuple[()] = ()
        #: How the request body is paced towards the upstream (flow.pace_upload); None: as it comes.
        self.upload_pace: Pace | None = None
        #: The source of a streamed mock body being pulled (flow.respond(body=...)); None otherwise.
        self.streaming: object | None = None

    def enter(self, state: ExchangeState) -> None:
        """Move to ``state``; the one place that checks the table."""
        if state not in EXCHANGE_TRANSITIONS[self.state]:
            raise RuntimeError(f"exchange {self.xid} in {self.state.name} cannot become {state.name}")
        self.state = state

    @property
    def response_started(self) -> bool:
        return self.state in RESPONSE_STARTED

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def hold(self, parts: list[bytes], data: bytes, limit: int) -> bool:
        """Hold a body piece for a hook; True once the held bytes exceed ``limit`` (then stream)."""
        parts.append(data)
        self.parts_size += len(data)
        return self.parts_size > limit

    def remember(self, part: SentPart, size: int, limit: int) -> None:
        """Keep what was sent while it is small enough to resend (a retry replays it)."""
        if self.replay is None:
            return
        self.replay_size += size
        if self.replay_size > limit:
            self.replay = None
        else:
            self.replay.append(part)


def bind(ex: Exchange, up: Upstream, up_xid: int) -> None:
    """``ex`` goes out on ``up`` as ``up_xid``: both sides of the binding, set in one place."""
    if ex.upstream is not None:  # a retry, or an HTTP/2 stream moved: off the old one first
        unbind(ex)
    ex.upstream, ex.up_xid = up, up_xid
    up.exchanges[up_xid] = ex


def unbind(ex: Exchange) -> None:
    """``ex`` no longer goes out on its upstream (over, answered by a hook, or retried elsewhere)."""
    up = ex.upstream
    if up is not None and up.exchanges.get(ex.up_xid) is ex:
        del up.exchanges[ex.up_xid]
    ex.upstream = None


def set_held_body(message: Request | Response, parts: list[bytes]) -> None:
    """The whole body a hook sees: the held parts, joined and counted (nothing was cut)."""
    message.content = b"".join(parts)
    message.body_size, message.truncated = len(message.content), False

