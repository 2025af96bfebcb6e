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
#: client sends nothing), "sniff" (a tunnel's first bytes are late).
TimerName = Literal["read", "idle", "sniff", "shape"]
TIMER_NAMES: tuple[TimerName, ...] = get_args(TimerName)

#: Why the client is not being read: "pipeline" (a request waits behind the
#: one being answered), "pending" (the upstream is still connecting and its
#: buffer is full), "hook" (a hook runs on the exchange).
PauseReason = Literal["pipeline", "pending", "hook"]
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
