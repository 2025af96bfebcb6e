"""How a flow reaches the rings above it without importing them.

The flow model sits low in the module order (DESIGN.md), so a Flow calls up
through two seams defined here: its owner (``flow._owner``, the Proxy that
captured it: replay, resume) and services the display and store modules lend
it by name when they are imported (HTML, to_dict/from_dict).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .flow import Flow


class ReplayError(Exception):
    """The request could not be replayed (no proxy, a truncated body, no answer)."""


class FlowOwner(Protocol):
    """Whoever captured a flow (a Proxy) and can send its request again.

    The flow model sits below the proxy in the module order, so it reaches
    the proxy's services through this interface instead of importing them.
    """

    def replay_flow(self, flow: Flow, *, timeout: float) -> Flow: ...

    async def replay_flow_async(self, flow: Flow, *, timeout: float) -> Flow: ...

    def resume_flow(self, flow: Flow) -> bool:
        """Let a flow paused at a breakpoint go on; False if it was not paused."""

    def release_flow(self, flow: Flow) -> None:
        """End ``flow.hold()``: tell the connection holding it (any thread; no-op if none does)."""


def owner_of(flow: Flow, proxy: FlowOwner | None) -> FlowOwner:
    owner = proxy if proxy is not None else flow._owner
    if owner is None:
        raise ReplayError(f"flow #{flow.id} was not captured by a proxy here (loaded from a file?): "
                          "pass one, flow.replay(proxy=...)")
    return owner


#: Services the rings above lend the flow model, by name: the display module
#: registers "html", the store module "to_dict" and "from_dict" when they are
#: imported (interceptkit's __init__ imports both). The same for every proxy.
_SERVICES: dict[str, Callable[..., Any]] = {}


def register_service(name: str, function: Callable[..., Any]) -> None:
    """Lend ``function`` to the flow model as ``name`` (called by display and store)."""
    _SERVICES[name] = function


def lent_service(name: str, module: str) -> Callable[..., Any]:
    try:
        return _SERVICES[name]
    except KeyError:
        raise RuntimeError(f"interceptkit.{module} is not imported: import interceptkit first") from None
