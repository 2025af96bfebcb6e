"""CLI options for real networks: proxy authentication, an upstream proxy, exposure warnings.

:func:`add_network_options` and :func:`network_options` parse and validate
``--proxy-auth USER:PASS``, ``--proxy-auth-file FILE``, ``--upstream-proxy
http://[user:pass@]host:port`` and ``--upstream-proxy-bypass PATTERN``. They
are not part of ``interceptkit``'s parser yet: the core does not enforce
authentication or chain to a parent proxy yet, and a flag that is accepted
but does nothing would be worse than none (see the issue note for what the
integration needs). :func:`exposure_warning` is used today.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .core.proxyauth import Credentials, parse_user_password
from .core.upstreamproxy import UpstreamProxy, parse_upstream_proxy
from .policy import host_matcher


def add_auth_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--proxy-auth`` and ``--proxy-auth-file`` to ``parser`` (read them with :func:`auth_options`)."""
    parser.add_argument("--proxy-auth", default=None, metavar="USER:PASS",
                        help="require these credentials from clients (407 otherwise; SOCKS5 too)")
    parser.add_argument("--proxy-auth-file", default=None, metavar="FILE",
                        help="require credentials from a file of user:password lines ('#' comments)")


def auth_options(args: argparse.Namespace) -> Credentials | None:
    """The credentials ``--proxy-auth``/``--proxy-auth-file`` ask for. Raises ValueError naming the flag."""
    if args.proxy_auth and args.proxy_auth_file:
        raise ValueError("give --proxy-auth or --proxy-auth-file, not both")
    if args.proxy_auth:
        return Credentials([parse_user_password(args.proxy_auth, "--proxy-auth")])
    if args.proxy_auth_file:
        return _read_credentials(Path(args.proxy_auth_file))
    return None


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """Add the authentication and upstream-proxy flags to ``parser``."""
    add_auth_options(parser)
    add_upstream_proxy_options(parser)


def add_upstream_proxy_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--upstream-proxy`` and ``--upstream-proxy-bypass`` to ``parser``."""
    parser.add_argument("--upstream-proxy", default=None, metavar="URL",
                        help="send everything through this proxy: http://[user:pass@]host:port")
    parser.add_argument("--upstream-proxy-bypass", action="append", default=[], metavar="PATTERN",
                        help="reach matching hosts directly, not through --upstream-proxy (globs or "
                             "regexes as for --ignore-host; repeatable)")


@dataclass(frozen=True)
class NetworkOptions:
    """The validated values of :func:`add_network_options`' flags."""

    credentials: Credentials | None = None
    upstream_proxy: UpstreamProxy | None = None
    #: ``(host, port) -> bool``: reach this host directly (None: nothing bypasses).
    bypass: Callable[[str, int], bool] | None = None


def network_options(args: argparse.Namespace) -> NetworkOptions:
    """Validate the flags. Raises ValueError naming the flag and what is wrong."""
    credentials = auth_options(args)
    upstream, bypass = upstream_proxy_options(args)
    return NetworkOptions(credentials=credentials, upstream_proxy=upstream, bypass=bypass)


def upstream_proxy_options(args: argparse.Namespace) -> tuple[UpstreamProxy | None, Callable[[str, int], bool] | None]:
    """The parent proxy and its bypass matcher. Raises ValueError naming the flag."""
    upstream = parse_upstream_proxy(args.upstream_proxy) if args.upstream_proxy else None
    if args.upstream_proxy_bypass and upstream is None:
        raise ValueError("--upstream-proxy-bypass needs --upstream-proxy")
    try:
        bypass = host_matcher(args.upstream_proxy_bypass)
    except ValueError as exc:
        raise ValueError(f"--upstream-proxy-bypass: {exc}") from None
    return upstream, bypass


def _read_credentials(path: Path) -> Credentials:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--proxy-auth-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return Credentials.from_lines(text, f"--proxy-auth-file {path}")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def exposure_warning(host: str, port: int, *, authenticated: bool, auth_available: bool = False) -> str | None:
    """The startup warning for a proxy others can reach without credentials, or None."""
    if authenticated or is_loopback(host):
        return None
    fix = ("require credentials with --proxy-auth USER:PASS (or --proxy-auth-file FILE), or listen on "
           "127.0.0.1" if auth_available else "listen on 127.0.0.1 (the default) unless other devices must "
           "use it, and firewall the port if they must")
    return (f"warning: listening on {host}:{port} without authentication: anyone who can reach this port can "
            f"use the proxy, and because it decrypts HTTPS with its CA, read and change that traffic for "
            f"clients that trust the CA. To prevent it, {fix}.")
