"""The ``interceptkit`` command: run the proxy in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from . import loops
from .certs import CertStoreError
from .cli_env import env_main, run_main
from .cli_network import (
    add_auth_options,
    add_upstream_proxy_options,
    auth_options,
    exposure_warning,
    upstream_proxy_options,
)
from .filters import compile_filter
from .flowlog import FlowFormatter, printer, use_color
from .proxy import Proxy, ProxyStartError
from .transport.tuning import tune_allocator


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interceptkit",
        description="An HTTP(S) proxy that shows every exchange it carries, one line each.",
        epilog="Also: `interceptkit ca` (the CA and how to trust it), `interceptkit env` (variables that send a "
               "shell's tools through the proxy), `interceptkit run -- CMD` (one command through it).",
    )
    parser.add_argument("--listen-host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--listen-port", type=int, default=8080, help="port to listen on (default: 8080)")
    parser.add_argument("--mode", choices=("forward", "reverse", "socks5"), default="forward",
                        help="forward: clients use it as their proxy; reverse: it stands in front of "
                             "services given with --route; socks5: clients use it as a SOCKS5 proxy "
                             "(default: forward)")
    parser.add_argument("--route", action="append", default=[], metavar="PREFIX=URL",
                        help="reverse mode: send paths under PREFIX to URL, e.g. /api=http://127.0.0.1:9000 "
                             "(repeatable; longest prefix wins)")
    parser.add_argument("--strip-prefix", action="store_true",
                        help="reverse mode: remove the matched prefix from the path sent upstream")
    parser.add_argument("--keep-host", action="store_true",
                        help="reverse mode: send the client's Host header instead of the upstream's")
    parser.add_argument("--certfile", default=None, help="serve TLS on the listening side with this certificate")
    parser.add_argument("--keyfile", default=None, help="the private key of --certfile")
    parser.add_argument("--tls-name", default=None,
                        help="serve TLS on the listening side with a certificate for this name from the CA")
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
    parser.add_argument("--confdir", default=None,
                        help="folder of the interceptkit CA (default: $INTERCEPTKIT_HOME or ~/.interceptkit)")
    parser.add_argument("--ignore-host", action="append", default=[], metavar="PATTERN",
                        help="relay HTTPS to matching hosts without decrypting (glob like '*.bank.com' "
                             "or a regex; repeatable; '*' passes everything through)")
    parser.add_argument("--no-intercept", action="store_true", help="never decrypt HTTPS; relay every tunnel")
    parser.add_argument("--no-http2", action="store_true",
                        help="speak HTTP/1.1 only, on both sides (ALPN never offers h2)")
    add_upstream_proxy_options(parser)
    parser.add_argument("--ssl-insecure", action="store_true",
                        help="do not verify upstream certificates (dangerous; for test servers)")
    parser.add_argument("--upstream-ca", default=None, metavar="PEM",
                        help="also trust the CA certificates in this PEM file for upstream servers")
    add_auth_options(parser)
    parser.add_argument("--max-request-body", type=int, default=None, metavar="BYTES",
                        help="answer 413 to request bodies over BYTES (default: no limit)")
    parser.add_argument("--save", default=None, metavar="FILE",
                        help="append every finished exchange to FILE (JSON lines; FlowTable.load reads it)")
    parser.add_argument("-s", "--script", action="append", default=[], metavar="FILE",
                        help="attach the hooks in this Python file (def request(flow): ...); reloaded "
                             "when it changes (repeatable; see docs/scripts.md)")
    parser.add_argument("--flow-detail", type=int, choices=(0, 1, 2, 3), default=1, metavar="0-3",
                        help="what to print per exchange: 0 nothing, 1 one line (default), 2 plus request "
                             "and response headers, 3 plus a preview of each body (4 KiB, decoded)")
    parser.add_argument("--filter", default=None, metavar="EXPR",
                        help="print only exchanges matching EXPR, e.g. '~m POST & ~d api.example.com' "
                             "(the filter language of docs/filters.md)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                        help="event loop: uvloop when installed (pip install 'interceptkit[speed]'), else "
                             "asyncio's (default: auto; $INTERCEPTKIT_LOOP overrides auto)")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print a line per exchange "
                        "(same as --flow-detail 0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    return parser


async def _flush_periodically(stream: TextIO, every: float = 0.25) -> None:
    """Pipes and log files see lines within ``every`` seconds, without a write per line."""
    while True:
        await asyncio.sleep(every)
        try:
            stream.flush()
        except (OSError, ValueError) as exc:  # the reader went away (| head, a closed pipe): say so once
            print(f"interceptkit: stdout cannot be written ({exc}); exchange lines are lost from now on",
                  file=sys.stderr, flush=True)
            return  # the proxy goes on carrying traffic


@contextlib.contextmanager
def lines_in_batches() -> Iterator[None]:
    """Buffer stdout while the proxy runs when it is a pipe or a file left unbuffered (``PYTHONUNBUFFERED``, ``-u``).

    Unbuffered, every exchange's line is a write(2) of its own: a system call
    per request, at thousands a second (Docker images set PYTHONUNBUFFERED
    nearly always). Buffered, ``_flush_periodically`` still shows each line
    within 0.25 s and the way out flushes the rest. A terminal is left as it
    is (it flushes each line), and so is a stdout that is not a real file
    (tests capturing it, a notebook).
    """
    out = sys.stdout
    if not isinstance(out, io.TextIOWrapper) or not isinstance(out.buffer, io.FileIO) or out.isatty():
        yield
        return
    # A file object of our own on the same descriptor (closing it leaves stdout open), under a
    # BufferedWriter (not write_through=False: it finishes a write a signal cut short).
    raw = io.FileIO(out.fileno(), "wb", closefd=False)
    batched = io.TextIOWrapper(io.BufferedWriter(raw), encoding=out.encoding, errors=out.errors)
    sys.stdout = batched
    try:
        yield
    finally:
        sys.stdout = out
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nobody reads any more
            batched.flush()
        raw.close()  # what could not be written is dropped; the descriptor stays stdout's


async def _run(proxy: Proxy) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(proxy.serve_forever(stop))
    flusher = asyncio.create_task(_flush_periodically(sys.stdout))
    while not proxy._addresses and not task.done():
        await asyncio.sleep(0.01)
    if proxy._addresses:
        if proxy.mode == "reverse":
            what = "reverse proxy"
        else:
            what = ("SOCKS5" if proxy.mode == "socks5" else "forward") + " proxy, " + (
                "intercepting HTTPS" if proxy.intercept else "HTTPS relayed")
        print(f"interceptkit listening on {proxy.url} ({what}; {proxy.loop} loop); Ctrl-C stops it", flush=True)
        if proxy.intercept and proxy.certs is not None:
            print(f"CA certificate: {proxy.certs.ca_cert_path} (`interceptkit ca` shows how to trust it)",
                  flush=True)
    try:
        await task
    finally:
        flusher.cancel()


CA_HELP = """\
interceptkit CA certificate: {pem}
  (DER form, for Windows and Android: {der})

Clients must trust it to let interceptkit decrypt their HTTPS traffic:
  curl      curl --proxy http://127.0.0.1:8080 --cacert {pem} https://example.com/
  Python    SSL_CERT_FILE={pem} (urllib, httpx) and REQUESTS_CA_BUNDLE={pem} (requests)
  Node      NODE_EXTRA_CA_CERTS={pem}
  Firefox   Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import
  Chromium  Settings > Privacy and security > Security > Manage certificates > Authorities > Import
  Debian/Ubuntu  sudo cp {pem} /usr/local/share/ca-certificates/interceptkit.crt && sudo update-ca-certificates
  macOS     sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {pem}
  Windows   certutil -addstore root {der}
Or browse through the proxy to http://interceptkit/ to download it.
The private key is in {key} (mode 0600): keep it secret; anyone with it can
impersonate any site to clients that trust this CA.
"""


def ca_main(argv: Sequence[str]) -> int:
    """``interceptkit ca``: create the CA if needed and say how to trust it."""
    from .certs import CertStore, CertStoreError

    parser = argparse.ArgumentParser(prog="interceptkit ca",
                                     description="Show the CA certificate and how to install it.")
    parser.add_argument("--confdir", default=None, help="folder of the CA (default: ~/.interceptkit)")
    args = parser.parse_args(argv)
    try:
        store = CertStore.load_or_create(args.confdir)
    except CertStoreError as exc:
        print(f"interceptkit: {exc}", file=sys.stderr)
        return 1
    print(CA_HELP.format(pem=store.ca_cert_path, der=store.ca_cert_der_path, key=store.ca_key_path), end="")
    return 0


def _routes(specs: list[str], strip: bool) -> dict[str, str | dict[str, object]]:
    routes: dict[str, str | dict[str, object]] = {}
    for spec in specs:
        prefix, sep, url = spec.partition("=")
        if not sep or not url:
            raise ValueError(f"--route wants PREFIX=URL, not {spec!r}")
        routes[prefix] = {"url": url, "strip": strip}
    return routes


def _make_proxy(args: argparse.Namespace) -> Proxy:
    """The Proxy the flags describe. Raises ValueError for a bad combination."""
    parent, bypass = upstream_proxy_options(args)
    return Proxy(
        args.listen_host, args.listen_port, read_timeout=args.read_timeout,
        connect_timeout=args.connect_timeout, idle_timeout=args.idle_timeout,
        connect_retries=args.connect_retries, forwarded_for=args.forwarded_for,
        confdir=args.confdir, intercept=not args.no_intercept, ignore_hosts=args.ignore_host,
        ssl_insecure=args.ssl_insecure, upstream_ca=args.upstream_ca,
        mode=args.mode, routes=_routes(args.route, args.strip_prefix), keep_host=args.keep_host,
        certfile=args.certfile, keyfile=args.keyfile, tls_name=args.tls_name,
        max_flows=0,  # the CLI prints each exchange; keeping them would only cost memory
        save=args.save, loop=args.loop, max_request_body=args.max_request_body,
        upstream_proxy=parent, upstream_proxy_bypass=args.upstream_proxy_bypass if bypass else (),  # checked above
        proxy_auth=auth_options(args), http2=not args.no_http2,
    )


def _attach_log(proxy: Proxy, args: argparse.Namespace) -> None:
    """Print each exchange as --flow-detail and --filter say. Raises ValueError for a bad filter."""
    try:
        wanted = compile_filter(args.filter) if args.filter is not None else None
    except ValueError as exc:
        raise ValueError(f"--filter: {exc}") from None
    detail = 0 if args.quiet else args.flow_detail
    if detail:
        proxy.on_flow(printer(sys.stdout, FlowFormatter(detail, color=use_color(sys.stdout)), wanted))


def _serve(proxy: Proxy) -> int:
    try:
        loops.run(_run(proxy), loops.loop_factory(proxy.loop))
    except ProxyStartError as exc:
        print(f"interceptkit: {exc.strerror}", file=sys.stderr)
        return 1
    except CertStoreError as exc:
        print(f"interceptkit: {exc}", file=sys.stderr)
        return 1
    _flush_stdout()
    return 0


def _flush_stdout() -> None:
    """Flush what is left; if nobody reads stdout any more, drop it quietly (and exit 0 still)."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        # Python's own flush at exit would fail again and make the exit status 120:
        # point the descriptor at /dev/null, as the signal module's docs advise for EPIPE.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"ca": ca_main, "env": env_main, "run": run_main}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    tune_allocator()
    with lines_in_batches():
        return _start(args)


def _start(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        proxy = _make_proxy(args)
        _attach_log(proxy, args)
    except ValueError as exc:
        print(f"interceptkit: {exc}", file=sys.stderr)
        return 2
    warning = exposure_warning(args.listen_host, args.listen_port,
                               authenticated=bool(args.proxy_auth or args.proxy_auth_file), auth_available=True)
    if warning:
        print(f"interceptkit: {warning}", file=sys.stderr)
    try:
        scripts = [proxy.load_script(path) for path in args.script]
    except FileNotFoundError as exc:
        print(f"interceptkit: --script: {exc}", file=sys.stderr)
        return 2
    try:
        return _serve(proxy)
    finally:
        for script in scripts:
            script.remove()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
