"""Redaction: secrets replaced before a flow is written anywhere.

A :class:`Redact` says what to hide: header fields by name, query
parameters by name, JSON fields by key (at any depth) and exact secret
values wherever they occur (headers, query, decoded bodies). It never
touches live traffic: :meth:`Redact.flow` returns a redacted *copy* that
cassettes, HAR files, ``save=`` files and the pytest failure report write.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from .flow import Flow, Headers, Message, Request

#: What replaces a redacted value.
PLACEHOLDER = "<redacted>"
#: Header fields redacted in cassettes and HAR files unless told otherwise.
DEFAULT_HEADERS = ("Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie")


def _names(values: Iterable[str] | str | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    return tuple(values)


class Redact:
    """What to hide before anything is written.

    Args:
        headers: header field names (case-insensitive); default the four that
            carry credentials (:data:`DEFAULT_HEADERS`).
        query: query parameter names.
        json_fields: keys of JSON bodies, at any depth.
        values: exact secrets, replaced wherever they occur.
    """

    def __init__(self, headers: Iterable[str] | str | None = DEFAULT_HEADERS, query: Iterable[str] | str | None = (),
                 json_fields: Iterable[str] | str | None = (), values: Iterable[str] | str | None = ()) -> None:
        self.headers: set[str] = {h.lower() for h in _names(headers)}
        self.query: set[str] = set(_names(query))
        self.json_fields: set[str] = set(_names(json_fields))
        self.values: list[str] = [v for v in _names(values) if v]

    def add(self, headers: Iterable[str] | str | None = None, query: Iterable[str] | str | None = None,
            json_fields: Iterable[str] | str | None = None,
            values: Iterable[str] | str | None = None) -> Redact:
        """Hide these too (same keywords as the constructor); returns self."""
        self.headers.update(h.lower() for h in _names(headers))
        self.query.update(_names(query))
        self.json_fields.update(_names(json_fields))
        self.values.extend(v for v in _names(values) if v and v not in self.values)
        return self

    def merge(self, other: Redact | None) -> Redact:
        """Add everything ``other`` hides; returns self."""
        if other is not None:
            self.add(other.headers, other.query, other.json_fields, other.values)
        return self

    def __bool__(self) -> bool:
        return bool(self.headers or self.query or self.json_fields or self.values)

    def __repr__(self) -> str:
        return (f"Redact(headers={sorted(self.headers)}, query={sorted(self.query)}, "
                f"json_fields={sorted(self.json_fields)}, values=<{len(self.values)} secrets>)")

    # -- applying it ----------------------------------------------------------------

    def text(self, value: str) -> str:
        """``value`` with every secret value replaced."""
        for secret in self.values:
            value = value.replace(secret, PLACEHOLDER)
        return value

    def flow(self, flow: Flow) -> Flow:
        """A redacted copy of ``flow`` (the original, still live, is untouched)."""
        if not self:
            return flow
        result = copy.copy(flow)
        result.metadata = dict(flow.metadata)
        result.request = self._request(flow.request)
        if flow.response is not None:
            result.response = copy.copy(flow.response)
            self._message(result.response)
        return result

    def request(self, request: Request) -> Request:
        """A redacted copy of ``request`` (what matching compares with a recording)."""
        return self._request(request) if self else request

    def _request(self, request: Request) -> Request:
        result = copy.copy(request)
        result.path = self._path(request.path)
        self._message(result)
        return result

    def _message(self, message: Message) -> None:
        message.headers = Headers.from_wire([
            (name, self._header_value(name, value)) for name, value in message.headers.fields])
        content = self._body(message)
        if content is not message.content:
            message.content = content
            if not message.truncated:
                message.body_size = len(content)

    def _header_value(self, name: bytes, value: bytes) -> bytes:
        if name.decode("latin-1").lower() in self.headers:
            return PLACEHOLDER.encode()
        if not self.values:
            return value
        return self.text(value.decode("latin-1")).encode("latin-1", "replace")

    def _path(self, path: str) -> str:
        base, sep, query = path.partition("?")
        if not sep or not (self.query or self.values):
            return path
        pairs = [(k, PLACEHOLDER if k in self.query else self.text(v))
                 for k, v in parse_qsl(query, keep_blank_values=True)]
        return f"{self.text(base)}?{urlencode(pairs, quote_via=quote, safe='<>')}"

    def _body(self, message: Message) -> bytes:
        if not message.content or not (self.json_fields or self.values):
            return message.content
        if "content-encoding" in message.headers:
            return message.content  # compressed bytes: nothing to find in them
        if self.json_fields and "json" in message.content_type:
            try:
                data = json.loads(message.content)
            except ValueError:
                pass
            else:
                text = json.dumps(self._json(data))
                return self.text(text).encode()
        if not self.values:
            return message.content
        try:
            return self.text(message.content.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            return self.data(message.content)

    def data(self, data: bytes) -> bytes:
        """``data`` with every secret value (UTF-8 encoded) replaced."""
        for secret in self.values:
            data = data.replace(secret.encode(), PLACEHOLDER.encode())
        return data

    def _json(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: PLACEHOLDER if k in self.json_fields else self._json(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self._json(v) for v in data]
        return data
