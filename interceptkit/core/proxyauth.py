"""Proxy authentication, the pure part: ``Proxy-Authorization: Basic ...`` checked in constant time.

A client that must authenticate and sends no valid credentials gets ``407
Proxy Authentication Required`` with :data:`CHALLENGE` (RFC 9110 11.7.1, 15.5.8;
Basic is RFC 7617). SOCKS5 clients use the same credentials through RFC 1929
(core/socks5.py takes :meth:`Credentials.check` as its authenticator).
Nothing here keeps or logs a password; the header itself is hop-by-hop and
must never be forwarded (RFC 9110 11.7.2), which the core ensures.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

REALM = "interceptkit"
#: The header field a 407 answer carries.
CHALLENGE: tuple[bytes, bytes] = (b"Proxy-Authenticate", f'Basic realm="{REALM}"'.encode())

Checker = Callable[[str, str], bool]


def parse_basic(value: bytes | str) -> tuple[str, str] | None:
    """``(user, password)`` from a ``Basic`` credentials value, or None if it is not one.

    The scheme is case-insensitive; the token is base64 of ``user:password``
    in UTF-8 (RFC 7617 2.1), the password may contain ``:``.
    """
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else value
    scheme, _, token = raw.strip().partition(b" ")
    if scheme.lower() != b"basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "surrogateescape"), password.decode("utf-8", "surrogateescape")


def basic_value(user: str, password: str) -> bytes:
    """The ``Basic ...`` value for these credentials (for an upstream proxy, or a test client)."""
    token = base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogateescape"))
    return b"Basic " + token


@dataclass(frozen=True)
class _Pair:
    user: bytes
    password: bytes


class Credentials:
    """Who may use the proxy: user/password pairs, or a callable that decides.

    :meth:`check` compares every stored pair, user and password alike, with
    ``hmac.compare_digest`` and without stopping at the first match, so the
    time it takes does not tell which part was wrong or which users exist.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = (), checker: Checker | None = None) -> None:
        self._pairs = tuple(_Pair(_b(u), _b(p)) for u, p in pairs)
        self._checker = checker
        if not self._pairs and checker is None:
            raise ValueError("proxy authentication needs at least one user:password or a checker")

    @classmethod
    def of(cls, spec: tuple[str, str] | Checker | Credentials) -> Credentials:
        """From ``("user", "pass")``, a callable ``(user, password) -> bool``, or Credentials."""
        if isinstance(spec, Credentials):
            return spec
        if callable(spec):
            return cls(checker=spec)
        if isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(s, str) for s in spec):
            user, password = spec
            _validate(user, password, "proxy_auth")
            return cls([(user, password)])
        raise TypeError("proxy_auth is a (user, password) pair of strings or a callable (user, password) -> bool")

    @classmethod
    def from_lines(cls, text: str, source: str = "proxy auth file") -> Credentials:
        """From ``user:password`` lines; blank lines and ``#`` comments are skipped. Raises ValueError."""
        pairs = []
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            pairs.append(parse_user_password(stripped, f"{source}, line {number}"))
        if not pairs:
            raise ValueError(f"{source} has no user:password lines")
        return cls(pairs)

    def with_pair(self, user: str, password: str) -> Credentials:
        """These credentials and one more pair (a Proxy's own, which its replay client sends)."""
        extra = Credentials([(user, password)])
        # "|" runs both checks: the time taken does not tell which one matched.
        return Credentials(checker=lambda u, p: extra.check(u, p) | self.check(u, p))

    def check(self, user: str, password: str) -> bool:
        """Whether these credentials may use the proxy (constant time over the stored pairs)."""
        if self._checker is not None:
            return bool(self._checker(user, password))
        given_user, given_password = _b(user), _b(password)
        found = False
        for pair in self._pairs:
            # Both comparisons always run: "&" does not short-circuit, "and" would.
            same = hmac.compare_digest(pair.user, given_user) & hmac.compare_digest(pair.password, given_password)
            found |= same
        return found

    def authenticate(self, header_value: bytes | str | None) -> str | None:
        """The user a ``Proxy-Authorization`` value authenticates, or None (then answer 407)."""
        if header_value is None:
            return None
        parsed = parse_basic(header_value)
        if parsed is None or not self.check(*parsed):
            return None
        return parsed[0]

    def __repr__(self) -> str:  # never the passwords
        users = ", ".join(p.user.decode("utf-8", "replace") for p in self._pairs)
        return f"<Credentials users=[{users}]{' checker' if self._checker else ''}>"


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def parse_user_password(spec: str, what: str = "--proxy-auth") -> tuple[str, str]:
    """``USER:PASS`` split at the first ``:`` (a password may contain more). Raises ValueError."""
    user, sep, password = spec.partition(":")
    if not sep:
        raise ValueError(f"{what}: want USER:PASSWORD, got no ':'")
    _validate(user, password, what)
    return user, password


def _validate(user: str, password: str, what: str) -> None:
    if not user:
        raise ValueError(f"{what}: the user name is empty")
    if not password:
        raise ValueError(f"{what}: the password for {user!r} is empty")
    if any(c in user + password for c in "\r\n\x00"):
        raise ValueError(f"{what}: user names and passwords cannot contain line breaks or NUL")


def challenge_answer(body_note: str = "") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, header fields and body of the 407 answer (the caller adds framing and closes or not)."""
    body = ("407 Proxy Authentication Required: this proxy needs a user name and password "
            f"(curl: --proxy-user USER:PASS).{' ' + body_note if body_note else ''}\n").encode()
    fields = [CHALLENGE, (b"Content-Type", b"text/plain; charset=utf-8"),
              (b"Content-Length", str(len(body)).encode())]
    return 407, fields, body
