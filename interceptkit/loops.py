"""Which asyncio event loop the proxy runs on: the standard one or uvloop.

``Proxy(loop="auto")`` and ``interceptkit --loop auto`` use uvloop when it is
installed (``pip install interceptkit[speed]``) and asyncio's own loop
otherwise. The ``INTERCEPTKIT_LOOP`` variable (``asyncio`` or ``uvloop``)
decides what "auto" means, to compare the two or to rule uvloop out without
changing code.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LOOPS = ("auto", "asyncio", "uvloop")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")


def choose_loop(name: str = "auto") -> str:
    """The loop ``name`` stands for: "asyncio" or "uvloop". Raises ValueError.

    "uvloop" when it is not installed is an error; "auto" then falls back.
    """
    if name not in LOOPS:
        raise ValueError(f"unknown loop {name!r}: use one of {', '.join(LOOPS)}")
    if name == "auto":
        wanted = os.environ.get("INTERCEPTKIT_LOOP", "")
        if wanted:
            if wanted not in LOOPS[1:]:
                raise ValueError(f"INTERCEPTKIT_LOOP={wanted!r}: use asyncio or uvloop")
            return choose_loop(wanted)
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError("loop 'uvloop' needs uvloop installed: pip install 'interceptkit[speed]'")
    return name


def loop_factory(name: str) -> LoopFactory:
    """A function making a new loop of the kind :func:`choose_loop` picked."""
    if choose_loop(name) == "uvloop":
        import uvloop  # optional extra "speed"

        factory: LoopFactory = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], factory: LoopFactory) -> T:
    """``asyncio.run(main)`` on a loop from ``factory`` (``asyncio.run`` takes none before 3.12)."""
    loop = factory()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
