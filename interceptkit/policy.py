"""Policy the proxy applies around the core: which hosts to decrypt, whom to trust."""

from __future__ import annotations

import fnmatch
import os
import re
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .core.alpn import HTTP1_ONLY, SUPPORTED
from .core.config import Route
from ._wire import parse_absolute_url
from .errors_base import RemoteProtocolError

_REGEX_HINTS = re.compile(r"[\\^$()|+\[\]{}]")


def host_matcher(patterns: Iterable[str]) -> Callable[[str, int], bool] | None:
    """A predicate ``(host, port) -> bool`` for ``ignore_hosts`` patterns.

    A pattern with regex syntax (``^``, ``$``, ``\\``, ``(``, ``|``, ...) is a
    regular expression searched in ``host`` and ``host:port``; anything else
    is a glob (``*.example.com``) matched against the host. Case-insensitive.
    Raises ValueError for a pattern that is not a valid regular expression.
    """
    globs: list[str] = []
    regexes: list[re.Pattern[str]] = []
    for pattern in patterns:
        if _REGEX_HINTS.search(pattern):
            try:
                regexes.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise ValueError(f"invalid ignore-host pattern {pattern!r}: {exc}") from exc
        else:
            globs.append(pattern.lower())
    if not globs and not regexes:
        return None

    def matches(host: str, port: int) -> bool:
        host = host.lower()
        if any(fnmatch.fnmatchcase(host, g) or fnmatch.fnmatchcase(f"{host}:{port}", g) for g in globs):
            return True
        return any(r.search(host) or r.search(f"{host}:{port}") for r in regexes)

    return matches


def upstream_ssl_context(*, insecure: bool = False, extra_ca: str | os.PathLike[str] | None = None,
                         alpn: Sequence[str] = HTTP1_ONLY) -> ssl.SSLContext:
    """The client context used towards upstream servers.

    Verification (chain and host name) is on, against the system's trust
    store plus ``extra_ca``; ``insecure`` turns it off, for when the user
    has said so explicitly. ``alpn`` is the list offered in the ClientHello.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if extra_ca is not None:
        try:
            context.load_verify_locations(cafile=os.fspath(extra_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load upstream CA file {os.fspath(extra_ca)}: {exc}") from exc
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    return context


def upstream_ssl_contexts(*, insecure: bool = False, extra_ca: str | os.PathLike[str] | None = None,
                          http2: bool = True) -> tuple[ssl.SSLContext, ssl.SSLContext | None]:
    """The two upstream contexts of ProxyConfig: offering ``http/1.1``, and ``h2, http/1.1``.

    Built by the same function with the same arguments, so verification is
    identical; the second is None when HTTP/2 is off.
    """
    http1 = upstream_ssl_context(insecure=insecure, extra_ca=extra_ca)
    both = upstream_ssl_context(insecure=insecure, extra_ca=extra_ca, alpn=SUPPORTED) if http2 else None
    return http1, both


def parse_routes(routes: Mapping[str, str | Mapping[str, Any]]) -> tuple[Route, ...]:
    """Reverse-proxy routes from ``{prefix: url}`` (or ``{prefix: {"url": ..., "strip": bool}}``),
    longest prefix first. Raises ValueError for a bad prefix or URL."""
    parsed = [_route(prefix, spec) for prefix, spec in routes.items()]
    return tuple(sorted(parsed, key=lambda route: len(route.prefix), reverse=True))


def _route(prefix: str, spec: str | Mapping[str, Any]) -> Route:
    if not prefix.startswith("/"):
        raise ValueError(f"route prefix must start with '/': {prefix!r}")
    url, strip = (spec, False) if isinstance(spec, str) else (str(spec["url"]), bool(spec.get("strip", False)))
    try:
        scheme, host, port, path = parse_absolute_url(url.encode("ascii"))
    except (RemoteProtocolError, UnicodeEncodeError) as exc:
        raise ValueError(f"bad route target for {prefix}: {url!r} ({exc})") from exc
    return Route(prefix=prefix, scheme=scheme, host=host, port=port,
                 path="" if path == "/" and not url.rstrip().endswith("/") else path.rstrip("/"), strip=strip)


def listen_ssl_context(certfile: str | os.PathLike[str] | None,
                       keyfile: str | os.PathLike[str] | None,
                       alpn: Sequence[str] = HTTP1_ONLY) -> ssl.SSLContext | None:
    """A server context for TLS on the listening side, or None without a certificate.

    ``alpn``: the protocols offered, in order of preference (a server
    context selects in its own order); core.alpn.listen_protocols says which.
    """
    if certfile is None:
        if keyfile is not None:
            raise ValueError("keyfile given without certfile")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(os.fspath(certfile), None if keyfile is None else os.fspath(keyfile))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load certificate {os.fspath(certfile)}: {exc}") from exc
    context.set_alpn_protocols(list(alpn))
    return context
