"""Live views: a table (or a proxy's status) that keeps itself up to date in its cell.

Theory of operation. A view subscribes to a :class:`~interceptkit.FlowTable`
(told of each flow as it starts and finishes, and when the proxy stops). In
a Jupyter kernel it shows itself once with ``display(..., display_id=True)``
and then calls the handle's ``update()``, at most :data:`MAX_RATE` times a
second: a change within the interval only schedules one update at its end,
so a burst of 1,000 flows costs four renders a second. The updates run on
the proxy's thread; ipykernel routes output by the parent header it holds
per thread (a context variable), so the view takes the header of the cell
that created it and sets it around every update: the update reaches that
cell, not whichever ran last. Outside a kernel (a terminal, plain Python)
the view prints one line per finished flow instead.
"""

from __future__ import annotations

import asyncio
import html as _html
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

from .display import human_size, status_text, table_html
from .flow import Flow
from .hooks import make_filter

if TYPE_CHECKING:
    from .table import FlowTable

log = logging.getLogger("interceptkit")

#: At most this many display updates a second.
MAX_RATE = 4.0


def _kernel_display_pub() -> Any:
    """The kernel's display publisher, or None outside a Jupyter kernel."""
    # IPython is imported here, not at the top: importing it costs ~0.2 s that
    # the CLI and test suites, which never show a live view, need not pay.
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return shell.display_pub


class _Frame:
    """One rendering of a view; what ``display`` and ``update`` are given."""

    def __init__(self, html: str, text: str) -> None:
        self.html, self.text = html, text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


class _Coalescer:
    """Runs ``render`` soon after a change, never more often than MAX_RATE a second."""

    def __init__(self, render: Callable[[], None]) -> None:
        self._render = render
        self._lock = threading.Lock()
        self._last = 0.0
        self._pending = False

    def changed(self) -> None:
        with self._lock:
            if self._pending:
                return
            wait = self._last + 1 / MAX_RATE - time.monotonic()
            self._pending = True
        if wait <= 0:
            self.fire()
        else:
            _call_later(wait, self.fire)

    def fire(self) -> None:
        with self._lock:
            self._pending = False
            self._last = time.monotonic()
        try:
            self._render()
        except Exception:  # a broken view must not break the proxy
            log.exception("live view update failed")


def _call_later(delay: float, fn: Callable[[], None]) -> None:
    try:
        asyncio.get_running_loop().call_later(delay, fn)  # on the proxy's thread
    except RuntimeError:  # changed from a thread without a loop
        timer = threading.Timer(delay, fn)
        timer.daemon = True
        timer.start()


class LiveView:
    """A view that follows a table; what :meth:`FlowTable.live` returns. ``.stop()`` ends it.

    ``updates`` counts the display updates sent (in a kernel) and
    ``printed`` the lines printed (outside one).
    """

    def __init__(self, table: FlowTable, render: Callable[[], _Frame], *, out: TextIO | None = None,
                 line: Callable[[Flow], str | None] | None = None) -> None:
        self._table = table
        self._render = render
        self._line = line
        self._out = out
        self.updates = 0
        self.printed = 0
        self.stopped = False
        self._seen: set[int] = set()
        self._pub = _kernel_display_pub() if out is None else None
        self._handle: Any = None
        if self._pub is not None:
            self._parent = dict(self._pub.parent_header)
            self._show()
        self._coalescer = _Coalescer(self._update)
        self._unwatch = table._watch(self._changed)

    def _show(self) -> None:
        from IPython.display import display  # see _kernel_display_pub

        self._handle = display(self._render(), display_id=True)  # type: ignore[no-untyped-call, unused-ignore]

    def _changed(self, flow: Flow | None) -> None:
        if flow is None:  # the proxy stopped: one last picture, then done
            self.stop()
            return
        if self._handle is not None:
            self._coalescer.changed()
        elif self._line is not None and flow.state != "open" and id(flow) not in self._seen:
            self._print(flow)

    def _print(self, flow: Flow) -> None:
        text = self._line(flow) if self._line is not None else None
        if text is None:
            return
        self._seen.add(id(flow))
        print(text, file=self._out or sys.stdout, flush=True)
        self.printed += 1

    def _update(self) -> None:
        if self._handle is None:
            return
        frame = self._render()
        pub: Any = self._pub
        # Kernels with set_thread_parent keep the parent per thread (a context variable);
        # older ones have only the global one, which is the best they allow.
        setter = getattr(pub, "set_thread_parent", None)
        token = setter(self._parent) if setter is not None else None
        try:
            self._handle.update(frame)
            self.updates += 1
        finally:
            if token is not None:
                pub.reset_thread_parent(token)

    def stop(self) -> None:
        """Stop following the table (the last picture stays in the cell)."""
        if self.stopped:
            return
        self.stopped = True
        self._unwatch()
        self._update()

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else "live"
        return f"<LiveView {state}, {self.updates} updates, {self.printed} lines>"


# -- what the views show ----------------------------------------------------------------


def counts(flows: Iterable[Flow]) -> dict[str, int]:
    """flows, errors, in flight, and body bytes (both ways) of ``flows``."""
    result = {"flows": 0, "errors": 0, "open": 0, "bytes": 0}
    for flow in flows:
        result["flows"] += 1
        result["errors"] += flow.error is not None
        result["open"] += flow.state == "open"
        result["bytes"] += flow.request.body_size + (flow.response.body_size if flow.response else 0)
    return result


def _counts_text(c: dict[str, int]) -> str:
    return (f"{c['flows']:,} flows · {c['errors']:,} errors · {c['open']:,} in flight · "
            f"{human_size(c['bytes']) or '0 B'}")


def table_view(table: FlowTable, rows: int, columns: Iterable[str] | None, where: Any) -> LiveView:
    """:meth:`FlowTable.live`: the newest ``rows`` rows that match ``where``."""
    check = make_filter(where)
    names = tuple(columns) if columns is not None else None
    if names is not None:
        table.select(*names)  # raises KeyError for an unknown column now, not on the proxy thread

    def pick() -> FlowTable:
        chosen = table.where(check) if check is not None else table[:]
        return (chosen.select(*names) if names is not None else chosen).tail(rows)

    def render() -> _Frame:
        shown = pick()
        note = f"live · {_counts_text(counts(table))} · {datetime.now():%H:%M:%S}"
        page = (f'<div class="interceptkit-live">{table_html(shown)}'
                f'<div style="color:#666;font-size:11px">{note}</div></div>')
        return _Frame(page, f"{shown!r}\n{note}")

    def line(flow: Flow) -> str | None:
        if check is not None and not check(flow):
            return None
        return f"{flow.id:>5} {flow.request.method:<7} {status_text(flow):>5} {flow.request.url}"

    return LiveView(table, render, line=line)


def status_frame(address: str, mode: str, running: bool, table: FlowTable) -> _Frame:
    """A proxy's address, mode, state and counts, as HTML and text."""
    state = "running" if running else "stopped"
    text = f"Proxy {mode} {address} {state} · {_counts_text(counts(table))}"
    color = "#3cba54" if running else "#999"
    page = (f'<div class="interceptkit-proxy" style="font-size:12px"><span style="color:{color}">●</span> '
            f"<b>Proxy</b> {mode} <code>{_html.escape(address)}</code> {state} · {_counts_text(counts(table))}</div>")
    return _Frame(page, text)
