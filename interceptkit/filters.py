"""One filter language, the one mitmproxy users know: ``"~m POST & ~c 201"``.

:func:`compile_filter` turns an expression into a predicate on a
:class:`~interceptkit.flow.Flow`; every place that takes a filter
(``flows.where``, ``proxy.on(..., where=)``, ``proxy.breakpoint``, the CLI's
``--filter``) accepts such a string.

Theory of operation: a tokenizer that records each token's position, then a
recursive-descent parser over this grammar (``!`` binds tightest, then
``&``, then ``|``; two expressions side by side are AND-ed, as in
mitmproxy)::

    expr    := and ('|' and)*
    and     := unary ('&'? unary)*
    unary   := '!' unary | '(' expr ')' | '~' NAME [VALUE] | VALUE   # a bare VALUE is ~u

Regular expressions are searched case-insensitively. A value containing
whitespace, parentheses, ``&``, ``|`` or quotes is written in quotes
(``"..."`` or ``'...'``, backslash escapes the quote). Any mistake raises a
``ValueError`` whose message shows the expression and a caret under the
position.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from .flow import Flow, Message

FlowPredicate = Callable[[Flow], bool]

#: Response content types that count as assets for ``~a`` (mitmproxy's list).
_ASSET_TYPES = re.compile(
    r"^(text/javascript|application/x-javascript|application/javascript|text/css|image/.*|font/.*"
    r"|application/font.*)$", re.IGNORECASE)
#: Nesting deeper than this is refused (a ValueError, not a RecursionError).
_MAX_DEPTH = 100
_SPECIAL = "()&|"


@dataclass(frozen=True)
class _Token:
    kind: str  # one of "!", "&", "|", "(", ")", "op", "value", "end"
    text: str
    pos: int


def filter_error(expr: str, pos: int, message: str) -> ValueError:
    """A ValueError whose message shows ``expr`` with a caret under ``pos``."""
    return ValueError(f"{message} at position {pos}\n  {expr}\n  {' ' * pos}^")


# -- tokens ----------------------------------------------------------------------


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch in _SPECIAL or ch == "!":
            tokens.append(_Token(ch, ch, i))
            i += 1
        elif ch in "\"'":
            i = _quoted(expr, i, tokens)
        else:
            i = _word(expr, i, tokens)
    tokens.append(_Token("end", "", len(expr)))
    return tokens


def _quoted(expr: str, start: int, tokens: list[_Token]) -> int:
    quote, i, out = expr[start], start + 1, []
    while i < len(expr):
        ch = expr[i]
        if ch == "\\" and i + 1 < len(expr) and expr[i + 1] in (quote, "\\"):
            out.append(expr[i + 1])
            i += 2
        elif ch == quote:
            tokens.append(_Token("value", "".join(out), start))
            return i + 1
        else:
            out.append(ch)
            i += 1
    raise filter_error(expr, start, "unterminated quoted value")


def _word(expr: str, start: int, tokens: list[_Token]) -> int:
    i = start
    while i < len(expr) and not expr[i].isspace() and expr[i] not in _SPECIAL and expr[i] not in "\"'":
        i += 1
    text = expr[start:i]
    tokens.append(_Token("op" if text.startswith("~") else "value", text, start))
    return i


# -- what each operator tests ---------------------------------------------------------


def _search(pattern: re.Pattern[str], text: str | None) -> bool:
    return text is not None and pattern.search(text) is not None


def _body_text(message: Message | None) -> str | None:
    if message is None:
        return None
    try:
        data = message.decoded_content()
    except Exception:  # a body that does not decode is searched as it was captured
        data = message.content
    return data.decode("utf-8", errors="surrogateescape")


def _header_lines(message: Message | None) -> list[str]:
    return [] if message is None else [f"{n}: {v}" for n, v in message.headers.items()]


def _sides(flow: Flow, side: str) -> list[Message | None]:
    if side == "q":
        return [flow.request]
    return [flow.response] if side == "s" else [flow.request, flow.response]


def _body(side: str, pattern: re.Pattern[str]) -> FlowPredicate:
    return lambda flow: any(_search(pattern, _body_text(m)) for m in _sides(flow, side))


def _header(side: str, pattern: re.Pattern[str]) -> FlowPredicate:
    return lambda flow: any(_search(pattern, line) for m in _sides(flow, side) for line in _header_lines(m))


def _ctype(side: str, pattern: re.Pattern[str]) -> FlowPredicate:
    return lambda flow: any(m is not None and _search(pattern, m.headers.get("content-type"))
                            for m in _sides(flow, side))


def _asset(flow: Flow) -> bool:
    return flow.response is not None and _ASSET_TYPES.match(flow.response.content_type) is not None


def _status(code: int) -> FlowPredicate:
    return lambda flow: flow.response is not None and flow.response.status == code


#: Operators without a value.
_FLAGS: dict[str, FlowPredicate] = {
    "a": _asset,
    "e": lambda flow: flow.error is not None,
    "q": lambda flow: flow.response is None,
    "s": lambda flow: flow.response is not None,
    "websocket": lambda flow: flow.websocket is not None,
    "http2": lambda flow: flow.request.http_version.upper() in ("HTTP/2", "HTTP/2.0"),
}
#: Operators taking a regular expression.
_REGEX_OPS: dict[str, Callable[[re.Pattern[str]], FlowPredicate]] = {
    "b": lambda p: _body("", p), "bq": lambda p: _body("q", p), "bs": lambda p: _body("s", p),
    "h": lambda p: _header("", p), "hq": lambda p: _header("q", p), "hs": lambda p: _header("s", p),
    "t": lambda p: _ctype("", p), "tq": lambda p: _ctype("q", p), "ts": lambda p: _ctype("s", p),
    "d": lambda p: lambda flow: _search(p, flow.request.host),
    "m": lambda p: lambda flow: _search(p, flow.request.method),
    "u": lambda p: lambda flow: _search(p, flow.request.url),
}
#: Every operator name, for the error message.
OPERATORS = tuple(sorted([*_FLAGS, *_REGEX_OPS, "c"]))


# -- the parser ----------------------------------------------------------------------


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokenize(expr)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, token: _Token, message: str) -> ValueError:
        return filter_error(self.expr, token.pos, message)

    def parse(self) -> FlowPredicate:
        if self.peek().kind == "end":
            raise self.error(self.peek(), "empty filter expression")
        predicate = self.parse_or()
        if self.peek().kind != "end":
            raise self.error(self.peek(), f"unexpected {self.peek().text!r}")
        return predicate

    def parse_or(self) -> FlowPredicate:
        parts = [self.parse_and()]
        while self.peek().kind == "|":
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else _any(parts)

    def parse_and(self) -> FlowPredicate:
        parts = [self.parse_unary()]
        while self.peek().kind in ("&", "!", "(", "op", "value"):
            if self.peek().kind == "&":
                self.take()
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else _all(parts)

    def parse_unary(self) -> FlowPredicate:
        token = self.take()
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.error(token, f"filter nested deeper than {_MAX_DEPTH} levels")
        try:
            return self._unary(token)
        finally:
            self.depth -= 1

    def _unary(self, token: _Token) -> FlowPredicate:
        if token.kind == "!":
            inner = self.parse_unary()
            return lambda flow: not inner(flow)
        if token.kind == "(":
            inner = self.parse_or()
            if self.peek().kind != ")":
                raise self.error(self.peek(), f"expected ')' (to close the '(' at {token.pos})")
            self.take()
            return inner
        if token.kind == "op":
            return self.operator(token)
        if token.kind == "value":
            return _REGEX_OPS["u"](self.regex(token))
        what = "end of expression" if token.kind == "end" else repr(token.text)
        raise self.error(token, f"expected a filter, found {what}")

    def operator(self, token: _Token) -> FlowPredicate:
        name = token.text[1:]
        if name in _FLAGS:
            return _FLAGS[name]
        if name not in _REGEX_OPS and name != "c":
            raise self.error(token, f"unknown operator {token.text!r} (operators: "
                             f"{', '.join('~' + o for o in OPERATORS)})")
        value = self.take()
        if value.kind != "value":
            raise self.error(value, f"{token.text} needs a value")
        if name == "c":
            return _status(self.status(value))
        return _REGEX_OPS[name](self.regex(value))

    def regex(self, token: _Token) -> re.Pattern[str]:
        try:
            with warnings.catch_warnings():
                # "[[" and the like: valid today; Python's note about future set syntax is not
                # the user's concern when a filter compiles.
                warnings.simplefilter("ignore", FutureWarning)
                return re.compile(token.text, re.IGNORECASE)
        except (re.error, RecursionError, OverflowError) as exc:
            # Point at the offending character inside the value (past an opening quote).
            inside = (getattr(exc, "pos", None) or 0) + (1 if self.expr[token.pos] in "\"'" else 0)
            raise filter_error(self.expr, min(token.pos + inside, len(self.expr)),
                               f"bad regular expression {token.text!r}: {exc}") from None

    def status(self, token: _Token) -> int:
        if not (token.text.isascii() and token.text.isdigit() and len(token.text) == 3):
            raise self.error(token, f"~c needs a three-digit status code, not {token.text!r}")
        return int(token.text)


def _all(parts: list[FlowPredicate]) -> FlowPredicate:
    return lambda flow: all(part(flow) for part in parts)


def _any(parts: list[FlowPredicate]) -> FlowPredicate:
    return lambda flow: any(part(flow) for part in parts)


def compile_filter(expr: str) -> Callable[[Flow], bool]:
    """Compile a filter expression into a predicate on flows.

    Args:
        expr: e.g. ``"~m POST & ~c 201"``, ``"~d api.example.com & !~a"``,
            ``"/checkout"`` (a bare word is ``~u``).

    Returns:
        A function ``flow -> bool``.

    Raises:
        ValueError: the expression is malformed; the message shows it with a
            caret at the position of the mistake.
    """
    if not isinstance(expr, str):
        raise TypeError(f"a filter expression is a str, not {type(expr).__name__}")
    return _Parser(expr).parse()
