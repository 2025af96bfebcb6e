"""FlowTable: the live, bounded, list-like record of captured exchanges."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import overload

from .flow import Flow


class FlowTable:
    """Every exchange a proxy saw, newest last, at most ``max_flows`` of them.

    In-flight flows are listed too (``flow.state == "open"``). When the table
    is full the oldest flow is dropped and counted in ``dropped``. Safe to
    read from any thread while the proxy adds to it.
    """

    def __init__(self, flows: Iterable[Flow] = (), *, max_flows: int | None = 10_000) -> None:
        self._flows: deque[Flow] = deque(flows, maxlen=max_flows)
        self._lock = threading.Lock()
        self.max_flows = max_flows
        #: How many flows were dropped because the table was full.
        self.dropped = 0

    def _add(self, flow: Flow) -> None:
        with self._lock:
            if self._flows.maxlen is not None and len(self._flows) == self._flows.maxlen:
                self.dropped += 1
            self._flows.append(flow)

    def _snapshot(self) -> list[Flow]:
        with self._lock:
            return list(self._flows)

    def __len__(self) -> int:
        return len(self._flows)

    @overload
    def __getitem__(self, index: int) -> Flow: ...

    @overload
    def __getitem__(self, index: slice) -> FlowTable: ...

    def __getitem__(self, index: int | slice) -> Flow | FlowTable:
        flows = self._snapshot()
        if isinstance(index, slice):
            return FlowTable(flows[index], max_flows=None)
        return flows[index]

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._snapshot())

    def clear(self) -> None:
        with self._lock:
            self._flows.clear()

    def __repr__(self) -> str:
        lines = [f"<FlowTable: {len(self)} flows>"]
        for flow in self._snapshot()[-20:]:
            status = flow.response.status if flow.response else (flow.error or flow.state)
            lines.append(f"  #{flow.id} {flow.request.method} {flow.request.url} {status}")
        return "\n".join(lines)
