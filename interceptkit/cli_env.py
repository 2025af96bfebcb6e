"""``interceptkit env`` and ``interceptkit run``: a shell's tools through a running proxy."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .certs import CertStore, CertStoreError, default_confdir
from .clientenv import SHELLS, client_environment, shell_lines, write_bundle


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen-host", default="127.0.0.1", help="where the proxy listens (default: 127.0.0.1)")
    parser.add_argument("--listen-port", type=int, default=8080, help="its port (default: 8080)")
    parser.add_argument("--confdir", default=None,
                        help="folder of the interceptkit CA (default: $INTERCEPTKIT_HOME or ~/.interceptkit)")
    parser.add_argument("--keep-no-proxy", action="store_true",
                        help="keep NO_PROXY/no_proxy as they are (default: empty, so nothing bypasses the proxy)")


def _environment(args: argparse.Namespace, command: str) -> dict[str, str] | None:
    """client_env() for the proxy the options name; None (after saying why) if the CA cannot load."""
    confdir = Path(args.confdir).expanduser() if args.confdir else default_confdir()
    try:
        store = CertStore.load_or_create(confdir)
    except CertStoreError as exc:
        print(f"interceptkit {command}: {exc}", file=sys.stderr)
        return None
    host = f"[{args.listen_host}]" if ":" in args.listen_host else args.listen_host
    _warn_if_nothing_listens(args.listen_host, args.listen_port, command)
    bundle = write_bundle(confdir, store.ca_cert_pem)
    return client_environment(f"http://{host}:{args.listen_port}", store.ca_cert_path, bundle,
                              keep_no_proxy=args.keep_no_proxy)


def _warn_if_nothing_listens(host: str, port: int, command: str) -> None:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        print(f"interceptkit {command}: warning: nothing listens on {host}:{port}; start the proxy with "
              f"`interceptkit --listen-port {port}` (or give the port it uses)", file=sys.stderr)


def env_main(argv: Sequence[str]) -> int:
    """``interceptkit env``: print the client variables as lines a shell evaluates."""
    parser = argparse.ArgumentParser(
        prog="interceptkit env",
        description="Print the variables that send a shell's tools through the proxy and make them trust "
                    "its CA: eval \"$(interceptkit env)\".")
    _common_options(parser)
    parser.add_argument("--shell", choices=SHELLS, default="sh",
                        help="syntax of the lines: sh (bash, zsh; default), fish or powershell")
    args = parser.parse_args(argv)
    env = _environment(args, "env")
    if env is None:
        return 1
    sys.stdout.write(shell_lines(env, args.shell))
    return 0


def run_main(argv: Sequence[str]) -> int:
    """``interceptkit run -- CMD ARGS...``: run one command through the proxy; return its exit status."""
    argv = list(argv)
    options, command = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        prog="interceptkit run", usage="interceptkit run [options] -- COMMAND [ARGS...]",
        description="Run one command with the variables of `interceptkit env`; exit with its status.")
    _common_options(parser)
    args = parser.parse_args(options)
    if not command:
        parser.error("give the command after --, e.g. interceptkit run -- curl https://example.com/")
    env = _environment(args, "run")
    if env is None:
        return 1
    return _run_command(command, {**os.environ, **env})


def _run_command(command: list[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"interceptkit run: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126  # what shells answer
    # Ctrl-C reaches the child (same process group); we wait for it to finish.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        status = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return 128 - status if status < 0 else status  # killed by a signal: as a shell reports it
