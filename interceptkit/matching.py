"""Which request matches which mock or recording, and why not.

Policy tier (beside hooks and redact): pure functions over :class:`Request`
objects, no I/O. A matcher compares one field and, when it differs, says
how, in the words a miss report uses (``query: page=2 vs page=1``). Mocks,
cassette recordings and ``assert_requested`` expectations are all
*candidates*: something with a ``label`` and ``differences(request)``; the
nearest candidate is the one with the fewest differences.
"""

from __future__ import annotations

import fnmatch
import json as _json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl

from .flow import Flow, Request
from .redact import PLACEHOLDER

Matcher = str | Callable[[Request, Request], bool]
#: The field matchers a cassette understands (plus ``headers:<name>`` and callables).
FIELD_MATCHERS = ("method", "scheme", "host", "port", "path", "query", "url", "body", "json")
_URL_PARTS = ("scheme", "host", "port", "path", "query")
#: How many candidates a miss report lists (the nearest first).
MISS_LIST_LIMIT = 20


class Candidate(Protocol):
    """A mock, a recording or an expectation a request can be compared with."""

    label: str

    def differences(self, request: Request) -> list[str]: ...


def check_match_on(match_on: Iterable[Matcher]) -> tuple[Matcher, ...]:
    """``match_on`` as a tuple; raises ValueError for an unknown matcher name."""
    result = tuple(match_on) if not isinstance(match_on, str) else (match_on,)
    for matcher in result:
        if callable(matcher):
            continue
        if not isinstance(matcher, str) or not (matcher in FIELD_MATCHERS or
                                                (matcher.startswith("headers:") and len(matcher) > 8)):
            raise ValueError(f"unknown matcher {matcher!r}; use {', '.join(FIELD_MATCHERS)}, "
                             f"'headers:<name>' or a callable (request, recorded_request) -> bool")
    return result


# -- comparing a request with a recorded one ------------------------------------------


def differences(live: Request, recorded: Request, match_on: Sequence[Matcher]) -> list[str]:
    """How ``live`` differs from ``recorded`` in the fields of ``match_on`` (empty: a match).

    A recorded value of ``<redacted>`` matches anything, so a cassette
    recorded with one token replays for a test that sends another.
    """
    found: list[str] = []
    for matcher in match_on:
        names: Iterable[Matcher] = _URL_PARTS if matcher == "url" else (matcher,)
        for name in names:
            diff = _compare(name, live, recorded)
            if diff and diff not in found:
                found.append(diff)
    return found


def _compare(matcher: Matcher, live: Request, recorded: Request) -> str | None:
    if callable(matcher):
        label = getattr(matcher, "__name__", repr(matcher))
        return None if matcher(live, recorded) else f"matcher {label}: no match"
    if matcher.startswith("headers:"):
        name = matcher[8:]
        a, b = live.headers.get(name), recorded.headers.get(name)
        return None if b == PLACEHOLDER or a == b else f"headers:{name}: {a} vs {b}"
    return _FIELDS[matcher](live, recorded)


def _simple(get: Callable[[Request], Any], name: str) -> Callable[[Request, Request], str | None]:
    def compare(live: Request, recorded: Request) -> str | None:
        a, b = get(live), get(recorded)
        return None if a == b else f"{name}: {a} vs {b}"

    return compare


def query_pairs(request: Request) -> list[tuple[str, str]]:
    return parse_qsl(request.path.partition("?")[2], keep_blank_values=True)


def compare_query(live: list[tuple[str, str]], wanted: list[tuple[str, str]]) -> str | None:
    """Order-insensitive; a wanted value ``<redacted>`` matches any value of that name."""
    redacted = {k for k, v in wanted if v == PLACEHOLDER}
    a = sorted((k, "" if k in redacted else v) for k, v in live)
    b = sorted((k, "" if k in redacted else v) for k, v in wanted)
    if a == b:
        return None
    only_a = [f"{k}={v}" for k, v in a if (k, v) not in b]
    only_b = [f"{k}={v}" for k, v in b if (k, v) not in a]
    return f"query: {'&'.join(only_a) or '(none)'} vs {'&'.join(only_b) or '(none)'}"


def _query(live: Request, recorded: Request) -> str | None:
    return compare_query(query_pairs(live), query_pairs(recorded))


def _body(live: Request, recorded: Request) -> str | None:
    a, b = live.content, recorded.content
    if a == b:
        return None
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"body: {len(a)} bytes vs {len(b)} bytes (first difference at byte {at})"


def parse_json(request: Request) -> Any:
    try:
        return request.json()
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


_NOT_JSON = object()


def json_equal(live: Any, wanted: Any) -> bool:
    """Semantic JSON equality; a wanted ``"<redacted>"`` matches any value."""
    if wanted == PLACEHOLDER:
        return True
    if isinstance(wanted, dict):
        return isinstance(live, dict) and live.keys() == wanted.keys() and all(
            json_equal(live[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(live, list) and len(live) == len(wanted) and all(
            json_equal(a, b) for a, b in zip(live, wanted))
    return type(live) is type(wanted) and live == wanted


def short(value: Any, limit: int = 60) -> str:
    text = "(not JSON)" if value is _NOT_JSON else (
        _json.dumps(value, sort_keys=True) if not isinstance(value, str) else value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def compare_json(live: Any, wanted: Any) -> str | None:
    return None if json_equal(live, wanted) else f"json: {short(live)} vs {short(wanted)}"


def _json_field(live: Request, recorded: Request) -> str | None:
    return compare_json(parse_json(live), parse_json(recorded))


_FIELDS: dict[str, Callable[[Request, Request], str | None]] = {
    "method": _simple(lambda r: r.method.upper(), "method"),
    "scheme": _simple(lambda r: r.scheme, "scheme"),
    "host": _simple(lambda r: r.host.lower(), "host"),
    "port": _simple(lambda r: r.port, "port"),
    "path": _simple(lambda r: r.path_only, "path"),
    "query": _query,
    "body": _body,
    "json": _json_field,
}


# -- mocks and expectations --------------------------------------------------------------


class RequestPattern:
    """What a mock or an assertion expects: a method, a URL glob, query, headers, JSON.

    ``url`` is a glob on the whole URL; when ``query`` is given the glob is
    matched against the URL without its query string, and the query is
    compared on its own (order-insensitive, the listed names only).
    """

    def __init__(self, method: str | None = None, url: str | None = None, *,
                 query: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                 json: Any = None, label: str = "") -> None:
        self.method = method.upper() if method else None
        self.url = url
        self.query = None if query is None else [(str(k), str(v)) for k, v in query.items()]
        self.headers = dict(headers or {})
        self.json = json
        self.label = label or self.describe()

    @property
    def needs_body(self) -> bool:
        return self.json is not None

    def describe(self) -> str:
        parts = [self.method or "*", self.url or "*"]
        if self.query is not None:
            parts.append("query=" + "&".join(f"{k}={v}" for k, v in self.query))
        parts += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.json is not None:
            parts.append("json=" + short(self.json))
        return " ".join(parts)

    def differences(self, request: Request) -> list[str]:
        found = []
        if self.method and request.method.upper() != self.method:
            found.append(f"method: {request.method} vs {self.method}")
        found += self._url_differences(request)
        for name, value in self.headers.items():
            seen = request.headers.get(name)
            if seen != value:
                found.append(f"headers:{name}: {seen} vs {value}")
        if self.json is not None:
            diff = compare_json(parse_json(request), self.json)
            if diff:
                found.append(diff)
        return found

    def _url_differences(self, request: Request) -> list[str]:
        found = []
        url = request.url if self.query is None else request.url.partition("?")[0]
        if self.url and not fnmatch.fnmatchcase(url.lower(), self.url.lower()):
            found.append(f"url: {url} vs {self.url}")
        if self.query is not None:
            live = [(k, v) for k, v in query_pairs(request) if k in {name for name, _ in self.query}]
            diff = compare_query(live, self.query)
            if diff:
                found.append(diff)
        return found

    def matches(self, flow: Flow) -> bool:
        return not self.differences(flow.request)


def nearest(request: Request, candidates: Iterable[Candidate]) -> list[tuple[Candidate, list[str]]]:
    """Every candidate with its differences, the nearest (fewest) first."""
    compared = [(c, c.differences(request)) for c in candidates]
    return sorted(compared, key=lambda pair: distance(pair[1]))


_WHERE = ("method:", "scheme:", "host:", "port:", "path:", "url:")


def distance(found: list[str]) -> int:
    """How far a candidate is: a different place (method, host, path...) counts
    twice a different detail (query, header, body), so ``/items?page=1`` is
    nearer to ``/items?page=2`` than ``/users`` is."""
    return sum(2 if d.startswith(_WHERE) else 1 for d in found)


# -- what a miss says ---------------------------------------------------------------------


def explain_miss(request: Request, candidates: Iterable[Candidate]) -> str:
    """The plain-text body of a strict-mode answer: the request, what it was compared
    with, and for the nearest candidate the fields that differed."""
    compared = nearest(request, candidates)
    lines = ["interceptkit strict mode: no mock or recording matches this request",
             f"  {request.method} {request.url}", ""]
    if not compared:
        lines.append("there are no mocks or recordings to compare it with")
    else:
        lines.append(f"compared with {len(compared)}:")
        lines += [f"  - {c.label}: {'; '.join(d) or 'matches'}" for c, d in compared[:MISS_LIST_LIMIT]]
        if len(compared) > MISS_LIST_LIMIT:
            lines.append(f"  ... and {len(compared) - MISS_LIST_LIMIT} more, further away")
        best, diffs = compared[0]
        lines += ["", f"nearest: {best.label}", *(f"  {d}" for d in diffs)]
    return "\n".join(lines) + "\n"


def flow_lines(flows: Iterable[Flow]) -> list[str]:
    """A short table of HTTP flows: id, method, URL, status, matched-by."""
    rows = [("#", "method", "url", "status", "matched by")]
    for flow in flows:
        if flow.request.method == "CONNECT":
            continue
        status = str(flow.response.status) if flow.response is not None else (flow.error or flow.state)
        rows.append((str(flow.id), flow.request.method, flow.request.url, status,
                     str(flow.metadata.get("matched_by", "upstream"))))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
