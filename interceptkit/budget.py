"""The capture budget: bodies kept on flows are bounded in bytes, not only in count.

A notebook proxy keeps up to ``max_flows`` flows with up to
``body_capture_limit`` bytes of each body: 10,000 x 64 KiB x 2 is more than a
kernel should hold. :class:`CaptureBudget` counts the body bytes of finished
flows, oldest first; when they pass the limit it drops the oldest flows'
bodies (the flows stay, with every other field, and say so in
``message.body_dropped``). With a ``save=`` file the dropped body is read back
from there when someone asks for it.

The owning :class:`~interceptkit.FlowTable` calls it under its lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .flow import Flow

Reload = Callable[[str], bytes]


class CaptureBudget:
    """Body bytes held by finished flows, bounded by ``limit`` (None: unbounded)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        #: Bytes of body counted now.
        self.used = 0
        #: Flows whose bodies were dropped.
        self.dropped = 0
        self._held: OrderedDict[Flow, tuple[int, Reload | None]] = OrderedDict()
        #: Flows that left the table while in flight: not counted when they finish.
        self._gone: set[Flow] = set()

    def add(self, flow: Flow, reload: Reload | None) -> None:
        """Count ``flow``'s bodies; drop the oldest ones while over the limit."""
        if self.limit is None or flow in self._held:
            return
        if flow in self._gone:
            self._gone.discard(flow)
            return
        size = len(flow.request.content) + (len(flow.response.content) if flow.response is not None else 0)
        if size == 0:
            return
        self._held[flow] = (size, reload)
        self.used += size
        while self.used > self.limit and self._held:
            self._drop(*self._held.popitem(last=False))

    def _drop(self, flow: Flow, entry: tuple[int, Reload | None]) -> None:
        size, reload = entry
        flow.request._drop_body(_side(reload, "request"))
        if flow.response is not None:
            flow.response._drop_body(_side(reload, "response"))
        self.used -= size
        self.dropped += 1

    def forget(self, flow: Flow) -> None:
        """``flow`` left the table (max_flows): its bytes no longer count."""
        if self.limit is None:
            return
        entry = self._held.pop(flow, None)
        if entry is not None:
            self.used -= entry[0]
        elif flow.state == "open":
            self._gone.add(flow)

    def clear(self) -> None:
        self._held.clear()
        self._gone.clear()
        self.used = 0
        self.dropped = 0


def _side(reload: Reload | None, side: str) -> Callable[[], bytes] | None:
    return None if reload is None else lambda: reload(side)
