"""Wire helpers: default ports, authority parsing and formatting, IPv6 brackets.

The lowest module of the package (it imports only ``errors_base``): the flow
model, the core, replay, HAR and the table all use these, so each rule is
written once. RFC 3986 3.2 (authority), RFC 9112 3.2 (request-target forms).
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors_base import RemoteProtocolError

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# RFC 3986 3.2.2 reg-name characters; also what DNS and IP literals need.
_REG_NAME = re.compile(rb"[A-Za-z0-9\-._~%!$&'()*+,;=]+")
_IPV6 = re.compile(rb"\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(rb"[0-9]{1,5}")
_AUTHORITY_END = re.compile(rb"[/?#]")


def bracket(host: str) -> str:
    """An IPv6 literal in brackets (RFC 3986 3.2.2); any other host unchanged."""
    return f"[{host}]" if ":" in host else host


def format_address(host: str, port: int) -> str:
    """``host:port`` with the port always written (socket addresses)."""
    return f"{bracket(host)}:{port}"


def format_authority(host: str, port: int, scheme: str | None = None) -> str:
    """``host:port`` for a Host field or URL; the port is left out when it is the scheme's default."""
    # Written out rather than through bracket/format_address: this runs for
    # every request head and every logged URL, and the calls showed up.
    text = f"[{host}]" if ":" in host else host
    if scheme is not None and DEFAULT_PORTS.get(scheme) == port:
        return text
    return f"{text}:{port}"


# Cached: a client sends the same few authorities again and again, and this is
# checked for every request (a refusal raises, and is not cached). Bounded.
@lru_cache(maxsize=1024)
def parse_authority(authority: bytes, default_port: int | None) -> tuple[str, int]:
    """Split ``host[:port]`` (RFC 3986 3.2) into a host and a port.

    Raises RemoteProtocolError for userinfo, a bad port, or illegal characters.
    """
    if b"@" in authority:
        # RFC 9110 4.2.4: userinfo is deprecated and a phishing vector.
        raise RemoteProtocolError("userinfo in the request-target is not allowed")
    host, port_text = _split_host_port(authority)
    if not (_REG_NAME.fullmatch(host) or _IPV6.fullmatch(host)):
        raise RemoteProtocolError(f"invalid host in request-target: {authority!r}")
    if port_text is None:
        if default_port is None:
            raise RemoteProtocolError(f"missing port in {authority!r}")
        return _host_text(host), default_port
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise RemoteProtocolError(f"invalid port in request-target: {authority!r}")
    return _host_text(host), int(port_text)


def _split_host_port(authority: bytes) -> tuple[bytes, bytes | None]:
    if authority.startswith(b"["):
        end = authority.find(b"]")
        rest = authority[end + 1 :]
        if end < 0 or (rest and not rest.startswith(b":")):
            raise RemoteProtocolError(f"invalid IPv6 authority: {authority!r}")
        return authority[: end + 1], (rest[1:] if rest else None)
    host, colon, port = authority.rpartition(b":")
    return (host, port) if colon else (authority, None)


def _host_text(host: bytes) -> str:
    text = host.decode("ascii").lower()
    return text[1:-1] if text.startswith("[") else text


def parse_absolute_url(target: bytes) -> tuple[str, str, int, str]:
    """Parse an absolute-form target into ``(scheme, host, port, path)``.

    The path keeps its query and defaults to ``/`` (RFC 9112 3.2.1).
    """
    scheme, sep, rest = target.partition(b"://")
    scheme_text = scheme.decode("ascii", "replace").lower()
    if not sep or scheme_text not in DEFAULT_PORTS:
        raise RemoteProtocolError(f"unsupported request-target: {target[:100]!r}")
    end = _AUTHORITY_END.search(rest)
    cut = len(rest) if end is None else end.start()
    authority, path = rest[:cut], rest[cut:].partition(b"#")[0]
    if not authority:
        raise RemoteProtocolError("empty host in request-target")
    host, port = parse_authority(authority, DEFAULT_PORTS[scheme_text])
    if not path.startswith(b"/"):
        path = b"/" + path
    return scheme_text, host, port, path.decode("latin-1")
