"""The ``interceptkit`` command: run the proxy in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from .flow import Flow
from .proxy import Proxy, ProxyStartError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interceptkit",
        description="An HTTP(S) proxy that shows every exchange it carries, one line each.",
    )
    parser.add_argument("--listen-host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--listen-port", type=int, default=8080, help="port to listen on (default: 8080)")
    parser.add_argument("--read-timeout", type=float, default=60.0,
                        help="seconds to wait for an upstream's answer before a 504 (default: 60)")
    parser.add_argument("--connect-timeout", type=float, default=10.0,
                        help="seconds to wait for an upstream connection before a 504 (default: 10)")
    parser.add_argument("--idle-timeout", type=float, default=120.0,
                        help="seconds an idle client connection stays open (default: 120)")
    parser.add_argument("--connect-retries", type=int, default=0,
                        help="extra attempts when connecting to an upstream fails (default: 0)")
    parser.add_argument("--forwarded-for", action="store_true",
                        help="add an X-Forwarded-For header with the client's address")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print a line per exchange")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    return parser


def format_flow(flow: Flow) -> str:
    """One line for one exchange: method, URL, status, response size, duration."""
    request = flow.request
    if flow.response is not None:
        status = str(flow.response.status)
        size = _human_size(flow.response.body_size)
    else:
        status, size = "ERR", "-"
    duration = f"{flow.duration * 1000:.0f}ms" if flow.duration is not None else "-"
    line = f"{request.method} {request.url} {status} {size} {duration}"
    return f"{line} ({flow.error})" if flow.error else line


def _human_size(size: int) -> str:
    for unit in ("B", "k", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size}B"


def _printer(stream: TextIO):  # type: ignore[no-untyped-def]
    def print_flow(flow: Flow) -> None:
        stream.write(format_flow(flow) + "\n")
        if stream.isatty():
            stream.flush()

    return print_flow


async def _run(proxy: Proxy) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(proxy.serve_forever(stop))
    while not proxy._addresses and not task.done():
        await asyncio.sleep(0.01)
    if proxy._addresses:
        print(f"interceptkit listening on {proxy.url} (forward proxy); Ctrl-C stops it", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    proxy = Proxy(
        args.listen_host, args.listen_port, read_timeout=args.read_timeout,
        connect_timeout=args.connect_timeout, idle_timeout=args.idle_timeout,
        connect_retries=args.connect_retries, forwarded_for=args.forwarded_for,
    )
    if not args.quiet:
        proxy.on_flow(_printer(sys.stdout))
    try:
        asyncio.run(_run(proxy))
    except ProxyStartError as exc:
        print(f"interceptkit: {exc.strerror}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
