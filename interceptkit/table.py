"""FlowTable: the live, bounded, list-like record of captured exchanges.

``proxy.flows`` is one: the proxy thread appends each flow as it starts and
the flow finishes in place. Everything that derives a new table from it
(``where``, ``sort``, a slice, ...) takes a snapshot, so the result stays
still while the proxy goes on. Columns are computed from the flows on
demand; nothing here needs pandas, which :meth:`FlowTable.to_pandas` imports
only when called.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, overload

from .columns import _PHASES, COLUMNS, ordered
from .display import DEFAULT_COLUMNS, Timeline, table_html, table_text
from .flow import Flow
from .hooks import make_filter
from .live import LiveView, table_view
from .budget import CaptureBudget

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped, unused-ignore]  # optional extra
    import pyarrow  # type: ignore[import-untyped, unused-ignore]  # optional extra

log = logging.getLogger("interceptkit")

#: How many flows a table keeps unless told otherwise (``max_flows``).
DEFAULT_MAX_FLOWS = 10_000


def flow_record(flow: Flow, columns: Iterable[str]) -> dict[str, Any]:
    """One row: ``{column: value}`` for the named columns of ``flow``."""
    names = list(columns)
    row: dict[str, Any] = {}
    phases = ordered(flow.timings).phases() if any(n in _PHASES for n in names) else {}
    for name in names:
        row[name] = phases[name] if name in phases else COLUMNS[name](flow)
    return row


def _check_columns(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise KeyError(f"unknown column(s) {', '.join(map(repr, unknown))}; columns are: {', '.join(COLUMNS)}")
    return names


def _sort_key(key: str | Callable[[Flow], Any]) -> Callable[[Flow], Any]:
    if callable(key):
        return key
    return COLUMNS[_check_columns([key])[0]]


# -- the table --------------------------------------------------------------------


class FlowTable:
    """Captured exchanges, oldest first, at most ``max_flows`` of them.

    List-like (``len``, ``flows[-1]``, ``flows[2:5]``, iteration, ``in``)
    and DataFrame-like without pandas: ``columns``, ``flows["status"]`` (one
    column as a list), :meth:`where`, :meth:`filter`, :meth:`select`,
    :meth:`sort`, :meth:`head`, :meth:`tail`, :meth:`to_records`. In-flight
    flows are listed too (``flow.state == "open"``). When the table is full
    the oldest flow is dropped and counted in :attr:`dropped`. Safe to read
    from any thread while a proxy adds to it.

    Args:
        flows: the initial flows, oldest first.
        max_flows: keep at most this many (the newest); None for no bound.
        columns: the columns shown and exported (default: all of them).
    """

    def __init__(self, flows: Iterable[Flow] = (), *, max_flows: int | None = DEFAULT_MAX_FLOWS,
                 columns: Iterable[str] | None = None, max_capture_bytes: int | None = None,
                 redact: Any = None) -> None:
        if max_capture_bytes is not None and max_capture_bytes < 0:
            raise ValueError(f"max_capture_bytes must be >= 0 or None, not {max_capture_bytes!r}")
        initial = list(flows)
        #: What HAR exports hide (a :class:`~interceptkit.Redact`; None: the defaults).
        self.redact = redact
        self._flows: deque[Flow] = deque(initial, maxlen=max_flows)
        self._lock = threading.Lock()
        self.max_flows = max_flows
        #: How many flows were dropped because the table was full.
        self.dropped = len(initial) - len(self._flows)
        self._columns = _check_columns(columns) if columns is not None else tuple(COLUMNS)
        #: Whether the columns were chosen (``select``): then display shows exactly them.
        self._selected = columns is not None
        #: Told of each flow added or finished, and of None when the proxy stops (live views).
        self._watchers: list[Callable[[Flow | None], None]] = []
        self._budget = CaptureBudget(max_capture_bytes)

    def _add(self, flow: Flow) -> None:
        with self._lock:
            if self._flows.maxlen is not None and len(self._flows) == self._flows.maxlen:
                self.dropped += 1
                # With max_flows=0 (the CLI) nothing is ever kept, so nothing
                # is counted either: _touched skips the budget for it.
                if self._flows:
                    self._budget.forget(self._flows[0])
            self._flows.append(flow)
        if self._watchers:  # the common case: no live view (the check saves a call per flow)
            self._notify(flow)

    def _touched(self, flow: Flow, reload: Callable[[str], bytes] | None = None) -> None:
        """A flow in the table finished (the proxy calls this); its bodies count against the budget.

        ``reload(side)`` reads a body ("request" or "response") back from
        the ``save=`` file once the budget drops it.
        """
        if self._flows.maxlen != 0:  # max_flows=0 keeps no flow, so no body counts
            with self._lock:
                self._budget.add(flow, reload)
        if self._watchers:
            self._notify(flow)

    @property
    def max_capture_bytes(self) -> int | None:
        """The budget for bodies kept on flows (None: no limit); see :class:`CaptureBudget`."""
        return self._budget.limit

    @property
    def capture_bytes(self) -> int:
        """Bytes of body currently kept on the table's finished flows (counted against the budget)."""
        return self._budget.used

    @property
    def bodies_dropped(self) -> int:
        """How many flows had their bodies dropped to stay within :attr:`max_capture_bytes`."""
        return self._budget.dropped

    def _ended(self) -> None:
        """The proxy feeding this table stopped: live views stop too."""
        self._notify(None)

    def _notify(self, flow: Flow | None) -> None:
        for watcher in list(self._watchers):
            try:
                watcher(flow)
            except Exception:  # a view's bug must not break the proxy
                log.exception("table watcher %r failed", watcher)

    def _watch(self, watcher: Callable[[Flow | None], None]) -> Callable[[], None]:
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    def _snapshot(self) -> list[Flow]:
        with self._lock:
            return list(self._flows)

    def _derive(self, flows: Iterable[Flow]) -> FlowTable:
        """A still table of ``flows`` with this table's columns."""
        return FlowTable(flows, max_flows=None, columns=self._columns if self._selected else None,
                         redact=self.redact)

    # -- list-like -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._flows)

    @overload
    def __getitem__(self, index: int) -> Flow: ...

    @overload
    def __getitem__(self, index: slice) -> FlowTable: ...

    @overload
    def __getitem__(self, index: str) -> list[Any]: ...

    def __getitem__(self, index: int | slice | str) -> Flow | FlowTable | list[Any]:
        """``flows[i]`` a flow, ``flows[a:b]`` a table, ``flows["status"]`` a column."""
        if isinstance(index, str):
            getter = COLUMNS[_check_columns([index])[0]]
            return [getter(flow) for flow in self._snapshot()]
        flows = self._snapshot()
        if isinstance(index, slice):
            return self._derive(flows[index])
        return flows[index]

    def __iter__(self) -> Iterator[Flow]:
        return iter(self._snapshot())

    def __contains__(self, flow: object) -> bool:
        return any(f is flow for f in self._snapshot())

    def __bool__(self) -> bool:
        return len(self._flows) > 0

    def clear(self) -> None:
        """Forget every flow (and the count of dropped ones)."""
        with self._lock:
            self._flows.clear()
            self.dropped = 0
            self._budget.clear()

    # -- DataFrame-like ----------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        """The column names, in order (all of :data:`COLUMNS` unless selected)."""
        return list(self._columns)

    @property
    def truncated(self) -> int:
        """How many flows kept only a prefix of a body (see ``body_capture_limit``)."""
        return sum(1 for f in self._snapshot() if f.request.truncated
                   or (f.response is not None and f.response.truncated))

    def where(self, predicate: Callable[[Flow], bool] | str | None = None, **filters: Any) -> FlowTable:
        """The flows that match, as a new table.

        ``predicate`` is a callable or a filter expression such as
        ``"~m POST & ~c 201"`` (see :mod:`interceptkit.filters`; a malformed
        one raises ValueError showing where). Takes the same filters as hooks (:func:`interceptkit.hooks.make_filter`):
        ``host`` and ``path`` and ``url`` (globs), ``method`` (a name or a
        list), ``status`` (an int, a range, a ``(low, high)`` pair or a
        collection), ``content_type`` (a substring), and a callable. Raises
        TypeError for an unknown filter.
        """
        check = make_filter(predicate, **filters)
        flows = self._snapshot()
        return self._derive(flows if check is None else [f for f in flows if check(f)])

    def filter(self, fn: Callable[[Flow], bool]) -> FlowTable:
        """The flows for which ``fn(flow)`` is true, as a new table."""
        return self._derive(f for f in self._snapshot() if fn(f))

    def select(self, *columns: str) -> FlowTable:
        """The same flows showing only ``columns`` (in that order). Raises KeyError."""
        return FlowTable(self._snapshot(), max_flows=None, columns=_check_columns(columns))

    def sort(self, by: str | Callable[[Flow], Any] = "id", reverse: bool = False) -> FlowTable:
        """Sorted by a column name or a key function; missing values (None) go last."""
        key = _sort_key(by)
        keyed = [(key(f), f) for f in self._snapshot()]
        present = [p for p in keyed if p[0] is not None]
        present.sort(key=lambda pair: pair[0], reverse=reverse)
        return self._derive([f for _, f in present] + [f for v, f in keyed if v is None])

    def head(self, n: int = 10) -> FlowTable:
        """The first (oldest) ``n`` flows."""
        return self._derive(self._snapshot()[: max(n, 0)])

    def tail(self, n: int = 10) -> FlowTable:
        """The last (newest) ``n`` flows."""
        flows = self._snapshot()
        return self._derive(flows[len(flows) - n:] if n > 0 else [])

    def to_records(self, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """One dict per flow: ``{column: value}`` for the table's (or the given) columns."""
        names = self._columns if columns is None else _check_columns(columns)
        return [flow_record(f, names) for f in self._snapshot()]

    def to_pandas(self) -> pandas.DataFrame:
        """The table as a ``pandas.DataFrame`` (one row per flow, these columns).

        Raises ImportError with the install command when pandas is missing.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("FlowTable.to_pandas() needs pandas, which is an optional extra: "
                              "pip install 'interceptkit[pandas]' (or pip install pandas)") from None
        return pd.DataFrame.from_records(self.to_records(), columns=list(self._columns))

    def to_curl(self) -> str:
        """One curl command per flow (CONNECT tunnels left out), one per line.

        Raises ValueError as :meth:`Flow.to_curl`.
        """
        return "\n".join(f.to_curl() for f in self._snapshot() if f.request.method != "CONNECT")

    def to_arrow(self, *, body_limit: int | None = 64 * 1024) -> pyarrow.Table:
        """The table as a ``pyarrow.Table``: one row per flow, a stable schema.

        Every column of :attr:`columns`, then ``request_headers`` and
        ``response_headers`` (lists of ``{name, value}``) and ``request_body``
        / ``response_body`` (the first ``body_limit`` captured bytes; None for
        all). Types: :data:`interceptkit.arrow.COLUMN_TYPES`, documented in
        docs/reference.md. Raises ImportError naming the extra when pyarrow
        is missing.
        """
        try:
            from . import arrow  # imports pyarrow: an optional extra
        except ImportError:
            raise ImportError("FlowTable.to_arrow() and to_parquet() need pyarrow, an optional extra: "
                              "pip install 'interceptkit[arrow]' (or pip install pyarrow)") from None
        flows = self._snapshot()
        return arrow.to_arrow(flows, [flow_record(f, self._columns) for f in flows], self._columns, body_limit)

    def to_parquet(self, path: str | os.PathLike[str], *, body_limit: int | None = 64 * 1024) -> int:
        """Write :meth:`to_arrow` to a Parquet file; returns the number of rows.

        DuckDB (``SELECT * FROM 'flows.parquet'``), Polars, pandas and Spark
        read it directly. Raises ImportError as :meth:`to_arrow`.
        """
        table = self.to_arrow(body_limit=body_limit)
        import pyarrow.parquet  # type: ignore[import-untyped, unused-ignore]  # optional extra, present once to_arrow() worked

        pyarrow.parquet.write_table(table, os.fspath(path))
        return int(table.num_rows)

    # -- files -----------------------------------------------------------------------

    def to_har(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The flows as a HAR 1.2 log; written to ``path`` when given.

        Opens in browser developer tools and HAR viewers. CONNECT tunnels are
        left out (they carry no HTTP exchange of their own). Credentials are
        redacted (see :class:`~interceptkit.Redact`; the proxy's ``redact=``).
        """
        from . import har

        document = har.to_har(self._snapshot(), redact=self.redact)
        if path is not None:
            har.write(document, path)
        return document

    @classmethod
    def from_har(cls, source: str | os.PathLike[str] | dict[str, Any], *,
                 max_flows: int | None = DEFAULT_MAX_FLOWS) -> FlowTable:
        """Read a HAR file (or an already parsed HAR dict) from a browser or another tool."""
        from . import har

        document = har.read(source) if not isinstance(source, dict) else source
        return cls(har.from_har(document), max_flows=max_flows)

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write every flow losslessly to ``path`` (JSON lines); returns how many.

        The file is replaced. :meth:`load` reads it back, as it reads a file
        that a proxy started with ``save=`` is still appending to.
        """
        from .store import write_flows

        return write_flows(self._snapshot(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *,
             max_flows: int | None = DEFAULT_MAX_FLOWS) -> FlowTable:
        """Read flows written by :meth:`save` or ``Proxy(save=...)``."""
        from .store import read_flows

        return cls(read_flows(path), max_flows=max_flows)

    # -- display ------------------------------------------------------------------------

    @property
    def display_columns(self) -> tuple[str, ...]:
        """What the views show: the selected columns, or a compact default set.

        The default set gains ``proxy_user`` when a flow has one (the proxy asks for credentials).
        """
        if self._selected:
            return self._columns
        if any(flow.proxy_user is not None for flow in self):
            return DEFAULT_COLUMNS[:2] + ("proxy_user",) + DEFAULT_COLUMNS[2:]
        return DEFAULT_COLUMNS

    def live(self, rows: int = 20, columns: Iterable[str] | None = None,
             where: Callable[[Flow], bool] | str | None = None) -> LiveView:
        """Show the newest ``rows`` flows (matching ``where``) and keep them up to date.

        In Jupyter the cell's output is updated in place as traffic flows (at
        most 4 times a second); in a terminal or plain Python one line is
        printed per finished flow. Returns a view with ``.stop()``; it stops
        by itself when the proxy stops. Raises KeyError for an unknown
        column, ValueError for a bad filter expression.
        """
        if rows < 1:
            raise ValueError(f"rows must be at least 1, not {rows!r}")
        return table_view(self, rows, columns, where)

    def timeline(self, limit: int = 200) -> Timeline:
        """A waterfall of the newest ``limit`` flows: SVG in Jupyter, bars in a terminal."""
        return Timeline(self.tail(limit)._snapshot())

    def _repr_html_(self) -> str:
        return table_html(self)

    def __repr__(self) -> str:
        return table_text(self)
