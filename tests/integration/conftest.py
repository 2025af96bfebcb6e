"""Fixtures for the loopback integration tests.

Rules these tests keep: only loopback addresses; every Proxy gets a static
resolver (no DNS lookups, ever); port 0 everywhere; every wait is bounded;
every subprocess has a timeout and is ended by its own PID.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from origin import PROXY_ENV, RESOLVER_TABLE, EchoServer, Origin

from interceptkit import Proxy, static_resolver

_CONFDIR: list[Path] = []


@pytest.fixture(autouse=True, scope="session")
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No proxy variables (urllib honours no_proxy even with an explicit
    ProxyHandler), and a throw-away CA folder instead of ~/.interceptkit,
    also for the CLI subprocesses (they inherit INTERCEPTKIT_HOME)."""
    confdir = tmp_path_factory.mktemp("interceptkit-home")
    _CONFDIR.append(confdir)
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.lower() in PROXY_ENV:
                mp.delenv(name)
        mp.setenv("INTERCEPTKIT_HOME", str(confdir))
        yield
    _CONFDIR.clear()


def make_proxy(**kwargs: object) -> Proxy:
    """A Proxy on a free port that resolves only origin.test, with the test CA folder."""
    kwargs.setdefault("resolver", static_resolver(RESOLVER_TABLE))
    if _CONFDIR:
        kwargs.setdefault("confdir", _CONFDIR[0])
    kwargs.setdefault("port", 0)
    return Proxy(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = make_proxy(read_timeout=10.0, connect_timeout=5.0)
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def new_proxy() -> Iterator[Callable[..., Proxy]]:
    """Make Proxy objects that are not started yet (stopped at teardown regardless)."""
    made: list[Proxy] = []

    def factory(**kwargs: object) -> Proxy:
        p = make_proxy(**kwargs)
        made.append(p)
        return p

    try:
        yield factory
    finally:
        for p in made:
            p.stop()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[..., Proxy]]:
    started: list[Proxy] = []

    def factory(**kwargs: object) -> Proxy:
        p = make_proxy(**kwargs).start()
        started.append(p)
        return p

    try:
        yield factory
    finally:
        for p in started:
            p.stop()
