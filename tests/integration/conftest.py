"""Fixtures for the loopback integration tests.

Rules these tests keep: only loopback addresses; every Proxy gets a static
resolver (no DNS lookups, ever); port 0 everywhere; every wait is bounded;
every subprocess has a timeout and is ended by its own PID.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from origin import PROXY_ENV, RESOLVER_TABLE, EchoServer, Origin
from tls_origin import OriginPKI, TLSOrigin, make_pki

from interceptkit import Proxy, static_resolver

if TYPE_CHECKING:
    from h2_origin import H2Origin

_CONFDIR: list[Path] = []
#: What ``make``'s proxies resolve: the TLS origin's certificate names, both on 127.0.0.1.
RESOLVE = {**RESOLVER_TABLE, "localhost": "127.0.0.1"}


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


@pytest.fixture(scope="session")
def origin_pki(tmp_path_factory: pytest.TempPathFactory) -> OriginPKI:
    """The test origins' own CA and certificate (for localhost and origin.test): made once, only read."""
    return make_pki(tmp_path_factory.mktemp("origin-pki"))


@pytest.fixture
def tls_origin(origin_pki: OriginPKI, tmp_path: Path) -> Iterator[TLSOrigin]:
    """A fresh HTTPS origin per test (tests read what it recorded, and some stop it)."""
    server = TLSOrigin(origin_pki, files=tmp_path / "files").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def h2_origin(origin_pki: OriginPKI) -> Iterator[H2Origin]:
    """The hypercorn HTTP/2 origin, one per module (it keeps no per-test state the tests read)."""
    from h2_origin import H2Origin  # hypercorn and grpcio: only for the modules that use it

    server = H2Origin(origin_pki).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def grpc_origin(origin_pki: OriginPKI) -> Iterator[Any]:
    """grpcio's TLS server (unary and server-streaming), one per module."""
    from h2_origin import GrpcOrigin  # grpcio: only for the modules that use it

    server = GrpcOrigin(origin_pki).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make(tmp_path: Path, origin_pki: OriginPKI) -> Iterator[Callable[..., Proxy]]:
    """Start proxies (stopped at teardown): port 0, ``RESOLVE`` only, the test's own CA folder
    (shared by the proxies of one test), bounded timeouts, and trust in the origins' CA.
    Any of these can be given; a module wraps this fixture to change its defaults."""
    started: list[Proxy] = []

    def factory(**kwargs: object) -> Proxy:
        options: dict[str, object] = {
            "resolver": static_resolver(RESOLVE), "confdir": tmp_path / "ca", "port": 0,
            "read_timeout": 10.0, "connect_timeout": 5.0, "upstream_ca": origin_pki.ca_path, **kwargs}
        proxy = Proxy(**options).start()  # type: ignore[arg-type]
        started.append(proxy)
        return proxy

    try:
        yield factory
    finally:
        for proxy in started:
            proxy.stop()
