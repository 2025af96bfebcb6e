"""Name resolution, injectable so that tests never make a real DNS lookup."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping

#: ``await resolver(host, port)`` -> addresses to try in order, or ResolveError.
Resolver = Callable[[str, int], Awaitable[list[tuple[str, int]]]]


class ResolveError(Exception):
    """The host name has no address."""


def _literal(host: str, port: int) -> list[tuple[str, int]] | None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return [(host, port)]


async def system_resolver(host: str, port: int) -> list[tuple[str, int]]:
    """Resolve with the operating system (getaddrinfo), IP literals directly."""
    literal = _literal(host, port)
    if literal is not None:
        return literal
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolveError(f"cannot resolve {host}: {exc.strerror}") from exc
    return [(str(info[4][0]), int(info[4][1])) for info in infos]


def static_resolver(table: Mapping[str, str]) -> Resolver:
    """A resolver that knows only ``table`` (name -> IP); every other name fails.

    For tests and for pinning names to local servers without touching DNS.
    """

    async def resolve(host: str, port: int) -> list[tuple[str, int]]:
        literal = _literal(host, port)
        if literal is not None:
            return literal
        address = table.get(host.lower())
        if address is None:
            raise ResolveError(f"cannot resolve {host}: Name or service not known")
        return [(address, port)]

    return resolve
