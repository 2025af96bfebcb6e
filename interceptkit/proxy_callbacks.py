"""What the transport tells a running :class:`~interceptkit.Proxy`: flows, hooks, clients.

Kept apart from proxy.py (the user's object) because it is the per-request
path: flows start and finish here, hooks run, listeners and the table are told.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from .flow import Flow
from .hooks import HookRunner
from .store import read_body
from .transport import Callbacks

if TYPE_CHECKING:  # (proxy imports this module; the name is only for annotations)
    from .proxy import Proxy

log = logging.getLogger("interceptkit")


class _ProxyCallbacks(Callbacks):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.runner = HookRunner(proxy.hooks)

    def flow_started(self, flow: Flow) -> None:
        proxy = self.proxy
        flow._owner = proxy
        if proxy._watchers:  # most proxies have none; the list is copied as a watcher may detach itself
            for watcher in list(proxy._watchers):
                watcher.flow_started(flow)
        proxy.flows._add(flow)

    def run_hook(self, name: str, flow: Flow, payload: Any,
                 done: Callable[[str | None, Any], None] | None) -> None:
        self.runner.run(name, flow, payload, done)

    def client_connected(self, address: tuple[str, int] | None) -> None:
        if "client_connected" in self.proxy.hooks.active:
            self.runner.run("client_connected", address, None, None)

    def client_disconnected(self, address: tuple[str, int] | None) -> None:
        if "client_disconnected" in self.proxy.hooks.active:
            self.runner.run("client_disconnected", address, None, None)

    def flow_finished(self, flow: Flow) -> None:
        active = self.proxy.hooks.active
        if "done" in active:
            self.runner.run("done", flow, None, None)
        if flow.error is not None and "error" in active:
            self.runner.run("error", flow, None, None)
        proxy = self.proxy
        if proxy._listeners:  # each list is copied: a callback may detach itself
            for listener in list(proxy._listeners):
                try:
                    listener(flow)
                except Exception:  # a listener's bug must not break the proxy
                    log.exception("flow listener %r failed", listener)
        recorder = proxy._recorder
        offset = recorder.write(flow) if recorder is not None else None
        if proxy._watchers:
            for watcher in list(proxy._watchers):
                watcher.flow_finished(flow)
        reload = partial(read_body, recorder.path, offset) if recorder is not None and offset is not None else None
        proxy.flows._touched(flow, reload)


def _self_addresses(addresses: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (host, port) pairs that mean "this proxy" in a request-target."""
    result = set(addresses)
    for host, port in addresses:
        if host in ("127.0.0.1", "0.0.0.0", "::1", "::"):
            result.update({("127.0.0.1", port), ("localhost", port), ("::1", port)})
    return result
