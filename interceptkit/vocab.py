"""The words every ring shares, defined once: hook names, timer names, pause reasons, flow states and kinds.

Each is a ``Literal`` type (so mypy checks every use) with the tuple of its
values beside it (so code can list or validate them). The lowest ring of
the package: it imports nothing of ours.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Hook names, in the order of an exchange's life (DESIGN.md, "Hooks").
HookName = Literal[
    "client_connected", "tunnel", "request_headers", "request", "response_headers",
    "response_chunk", "response", "done", "error", "websocket_message", "client_disconnected",
]
HOOK_NAMES: tuple[HookName, ...] = get_args(HookName)

#: The core's timers: "read" (the upstream owes an answer), "idle" (the
#: client sends nothing), "sniff" (a tunnel's first bytes are late), "shape"
#: (the next paced response piece); per exchange (keyed by its xid): "hold"
#: (a held exchange moves on) and "upload" (the next paced request piece).
TimerName = Literal["read", "idle", "sniff", "shape", "hold", "upload"]
TIMER_NAMES: tuple[TimerName, ...] = get_args(TimerName)

#: Why the client is not being read: "pipeline" (a request waits behind the
#: one being answered), "pending" (the upstream is still connecting and its
#: buffer is full), "hook" (a hook runs on the exchange), "pace" (a paced
#: upload has pieces waiting for their turn).
#: Why the core stops reading an upstream: a hook holds its exchange, a paced
#: body waits for its timer, an HTTP/2 client's window for that stream is closed.
UpstreamPause = Literal["hook", "pace", "window"]
PauseReason = Literal["pipeline", "pending", "hook", "pace"]
PAUSE_REASONS: tuple[PauseReason, ...] = get_args(PauseReason)

#: A flow's life: "new" (an intercepted CONNECT not yet shown), "open" (in
#: flight), then "done" or "error"; "unsent" for an edited copy
#: (``Flow.copy()``) that nothing has sent yet.
FlowState = Literal["new", "open", "done", "error", "unsent"]
FLOW_STATES: tuple[FlowState, ...] = get_args(FlowState)

#: What a flow records: "http" (one exchange), "tunnel" (a CONNECT),
#: "upgrade" (a 101 relayed as bytes), "websocket" (a 101 parsed as messages).
FlowKind = Literal["http", "tunnel", "upgrade", "websocket"]
FLOW_KINDS: tuple[FlowKind, ...] = get_args(FlowKind)

#: Why an upstream could not be connected to, as the transport saw it:
#: "refused" (nothing listens there), "unreachable" (no route to the host),
#: "network_unreachable" (no route to its network), "timeout" (no answer in
#: time), "resolve" (the name has no address), "other" (anything else).
ConnectCause = Literal["refused", "unreachable", "network_unreachable", "timeout", "resolve", "other"]
CONNECT_CAUSES: tuple[ConnectCause, ...] = get_args(ConnectCause)


def protocol_name(http_version: str) -> str:
    """A flow's ``http_version`` as users read it: "HTTP/2" for any spelling of h2.

    The core writes "HTTP/2"; HAR files and other tools write "h2",
    "http/2.0", "HTTP/2.0" (and "h3" for HTTP/3). HTTP/1.x versions are
    returned in upper case as they are ("HTTP/1.1", "HTTP/1.0").
    """
    lower = http_version.strip().lower()
    if lower in ("2", "h2", "h2c", "http/2", "http/2.0"):
        return "HTTP/2"
    if lower in ("3", "h3", "http/3", "http/3.0") or lower.startswith("h3-"):
        return "HTTP/3"
    return http_version.strip().upper() or "HTTP/1.1"
