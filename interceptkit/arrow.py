"""Flows as an Apache Arrow table (and Parquet), for DuckDB, Polars, pandas, Spark.

Imported only by :meth:`FlowTable.to_arrow` / :meth:`FlowTable.to_parquet`,
since pyarrow is an optional extra (``pip install interceptkit[arrow]``).

The schema is part of the public contract: one row per flow, a fixed Arrow
type per column (:data:`COLUMN_TYPES`), then the headers as lists of
``{name, value}`` and the body prefixes as bytes. New columns may be added
at the end; existing ones keep their name and type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]  # optional extra

from .flow import Flow, Message

#: ``{"name": ..., "value": ...}`` pairs, in wire order, repeats kept (latin-1 text).
HEADER_LIST = pa.list_(pa.struct([("name", pa.string()), ("value", pa.string())]))
_SECONDS = pa.float64()
#: The Arrow type of every FlowTable column (see docs/reference.md).
COLUMN_TYPES: dict[str, pa.DataType] = {
    "id": pa.int64(),
    "time": pa.timestamp("us", tz="UTC"),
    "state": pa.string(),
    "client": pa.string(),
    "proxy_user": pa.string(),
    "method": pa.string(),
    "scheme": pa.string(),
    "host": pa.string(),
    "port": pa.int32(),
    "path": pa.string(),
    "url": pa.string(),
    "status": pa.int32(),
    "reason": pa.string(),
    "request_size": pa.int64(),
    "response_size": pa.int64(),
    "content_type": pa.string(),
    "duration": _SECONDS,
    "connect": _SECONDS,
    "tls": _SECONDS,
    "send": _SECONDS,
    "wait": _SECONDS,
    "receive": _SECONDS,
    "tls_version": pa.string(),
    "error": pa.string(),
    "protocol": pa.string(),
    "client_alpn": pa.string(),
    "server_alpn": pa.string(),
}
#: Columns after the table's own, always present.
EXTRA_TYPES: dict[str, pa.DataType] = {
    "request_headers": HEADER_LIST,
    "response_headers": HEADER_LIST,
    "request_body": pa.binary(),
    "response_body": pa.binary(),
}


def schema(columns: Sequence[str]) -> pa.Schema:
    """The schema for a table showing ``columns`` (FlowTable.columns)."""
    return pa.schema([(name, COLUMN_TYPES[name]) for name in columns] + list(EXTRA_TYPES.items()))


def _headers(message: Message | None) -> list[dict[str, str]] | None:
    if message is None:
        return None
    return [{"name": n, "value": v} for n, v in message.headers.items()]


def _body(message: Message | None, limit: int | None) -> bytes | None:
    if message is None:
        return None
    return message.content if limit is None else message.content[:limit]


def to_arrow(flows: Sequence[Flow], records: Sequence[dict[str, Any]], columns: Sequence[str],
             body_limit: int | None) -> pa.Table:
    """One row per flow: ``records`` (the table's columns) plus headers and body prefixes."""
    data: dict[str, list[Any]] = {name: [r[name] for r in records] for name in columns}
    data["request_headers"] = [_headers(f.request) for f in flows]
    data["response_headers"] = [_headers(f.response) for f in flows]
    data["request_body"] = [_body(f.request, body_limit) for f in flows]
    data["response_body"] = [_body(f.response, body_limit) for f in flows]
    return pa.Table.from_pydict(data, schema=schema(columns))
