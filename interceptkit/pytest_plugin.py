"""The pytest plugin (entry point ``pytest11``, name ``interceptkit``).

Fixtures: ``ik_proxy`` (one proxy per session, seen by each test through a
view of its own flows and hooks), ``ik_env`` (proxy and CA variables set for
the test) and ``ik_proxy_options`` (override it in ``conftest.py``). Marker:
``@pytest.mark.cassette(path=None, record_mode=None, match_on=None)``.
Options: ``--record-mode``, ``--ik-upstream-ca``, ``--ik-ssl-insecure``.
A failing test's report gets its flows as a table and a HAR file; a test
that made a request nothing matched (strict mode) fails at teardown.
See docs/testing.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import testkit
from .cassette import RECORD_MODES, CassetteBlock
from .flow import Flow
from .hooks import FlowFilter, HookHandle
from .matching import Matcher, flow_lines
from .proxy import Proxy
from .table import FlowTable

_VIEW = pytest.StashKey["ProxyView"]()
_FAILURES = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("interceptkit", "interceptkit proxy for tests")
    group.addoption("--record-mode", choices=RECORD_MODES, default=None,
                    help="cassette record mode (default: once; none when CI is set)")
    group.addoption("--ik-upstream-ca", metavar="PEM", default=None,
                    help="extra CA certificates the test proxy trusts for upstream servers")
    group.addoption("--ik-ssl-insecure", action="store_true", default=False,
                    help="do not verify upstream certificates in the test proxy")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cassette(path=None, record_mode=None, match_on=None): run the test "
                                       "inside an interceptkit cassette (record or replay its HTTP traffic)")


# -- the session's proxy -------------------------------------------------------------------


@pytest.fixture(scope="session")
def ik_proxy_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments for the session's ``Proxy(...)``; override in conftest.py."""
    options: dict[str, Any] = {}
    if request.config.getoption("--ik-upstream-ca"):
        options["upstream_ca"] = request.config.getoption("--ik-upstream-ca")
    if request.config.getoption("--ik-ssl-insecure"):
        options["ssl_insecure"] = True
    return options


class _LazyProxy:
    """The session's proxy, started on first use (a session that never asks pays nothing)."""

    def __init__(self, options: dict[str, Any], folder: Callable[[str], Path]) -> None:
        self.options = options
        self.folder = folder
        self.proxy: Proxy | None = None

    def get(self) -> Proxy:
        if self.proxy is None:
            options = {"port": 0, **self.options}
            options.setdefault("confdir", self.folder("interceptkit-ca"))
            self.proxy = Proxy(**options).start()
        return self.proxy

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()


@pytest.fixture(scope="session")
def _ik_session(ik_proxy_options: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                request: pytest.FixtureRequest) -> Iterator[_LazyProxy]:
    request.config.stash[_FAILURES] = tmp_path_factory.mktemp("interceptkit-failures")
    lazy = _LazyProxy(ik_proxy_options, lambda name: tmp_path_factory.mktemp(name))
    yield lazy
    lazy.stop()


class ProxyView:
    """One test's view of the session proxy: its own ``.flows``, and the hooks, mocks,
    faults, strict mode and cassettes it adds are removed when the test ends.
    Everything else (``url``, ``client_env()``, ``ca_cert_path``...) is the proxy's."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.flows = FlowTable(max_flows=None, redact=proxy.flows.redact)
        self._handles: list[HookHandle] = []
        self._mocks: list[HookHandle] = []
        self._unwatch = proxy._watch(self)

    # the proxy tells a watcher of each flow (Proxy._watch)
    def flow_started(self, flow: Flow) -> None:
        self.flows._add(flow)

    def flow_finished(self, flow: Flow) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proxy, name)

    def _keep(self, handle: Any) -> Any:
        if isinstance(handle, HookHandle):
            self._handles.append(handle)
        return handle

    def on(self, name: str, fn: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        if fn is None:
            return lambda function: self.on(name, function, **kwargs)
        return self._keep(self.proxy.on(name, fn, **kwargs))

    def mock(self, *args: Any, **kwargs: Any) -> HookHandle:
        handle = self._keep(self.proxy.mock(*args, **kwargs))
        self._mocks.append(handle)
        return handle  # type: ignore[no-any-return]

    def block(self, *args: Any, **kwargs: Any) -> HookHandle:
        return self._keep(self.proxy.block(*args, **kwargs))  # type: ignore[no-any-return]

    def fault(self, kind: str, **kwargs: Any) -> HookHandle:
        return self._keep(self.proxy.fault(kind, **kwargs))  # type: ignore[no-any-return]

    def strict(self, status: int = 599) -> HookHandle:
        return self._keep(self.proxy.strict(status))  # type: ignore[no-any-return]

    def add(self, handler: object) -> HookHandle:
        return self._keep(self.proxy.add(handler))  # type: ignore[no-any-return]

    def cassette(self, path: str | os.PathLike[str], record_mode: str = "once",
                 match_on: Iterable[Matcher] = ("method", "url"), allow_repeats: bool = False) -> CassetteBlock:
        return self.proxy.cassette(path, record_mode, match_on, allow_repeats)

    def assert_requested(self, method: str | None = None, url: str | None = None, *, times: int | None = None,
                         json: Any = None, where: FlowFilter | None = None) -> list[Flow]:
        return testkit.assert_requested(self.flows, method, url, times=times, json=json, where=where)

    def assert_all_mocks_used(self) -> None:
        unused = [h.label for h in self._mocks if not h.calls]
        if unused:
            raise AssertionError("mocks that never answered:\n" + "\n".join(f"  - {u}" for u in unused))

    def unmatched(self) -> list[Flow]:
        return [f for f in self.flows if f.metadata.get("unmatched")]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._unwatch()

    def __repr__(self) -> str:
        return f"<ProxyView of {self.proxy!r}, {len(self.flows)} flows in this test>"


@pytest.fixture
def ik_proxy(_ik_session: _LazyProxy, request: pytest.FixtureRequest) -> Iterator[ProxyView]:
    """The session's proxy, seen by this test: ``.flows`` holds only this test's flows."""
    view = ProxyView(_ik_session.get())
    request.node.stash[_VIEW] = view
    yield view
    view.close()
    missed = view.unmatched()
    if missed:
        pytest.fail(f"{len(missed)} request(s) matched no mock or recording (strict mode):\n"
                    + "\n".join(_table(view, missed)), pytrace=False)


@pytest.fixture
def ik_env(ik_proxy: ProxyView, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Proxy and CA variables for this test, so clients and subprocesses use ``ik_proxy``."""
    env = {**ik_proxy.client_env(), "NO_PROXY": "", "no_proxy": ""}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# -- the cassette marker ------------------------------------------------------------------------


def default_cassette_path(item: pytest.Item) -> Path:
    """``cassettes/<module name>/<test name>.har`` beside the test file."""
    test_file = Path(str(item.fspath))
    name = re.sub(r"[^A-Za-z0-9_.\-\[\]]+", "_", item.name)
    return test_file.parent / "cassettes" / test_file.stem / f"{name}.har"


def _record_mode(config: pytest.Config, marker: pytest.Mark) -> str:
    mode = marker.kwargs.get("record_mode") or config.getoption("--record-mode")
    return str(mode or ("none" if os.environ.get("CI") else "once"))


@pytest.fixture(autouse=True)
def _ik_cassette(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("cassette")
    if marker is None:
        yield
        return
    view: ProxyView = request.getfixturevalue("ik_proxy")
    path = marker.kwargs.get("path") or (marker.args[0] if marker.args else None) or default_cassette_path(
        request.node)
    match_on = marker.kwargs.get("match_on") or ("method", "url")
    with view.cassette(path, record_mode=_record_mode(request.config, marker), match_on=match_on):
        yield


# -- the failure report ---------------------------------------------------------------------------


def _table(view: ProxyView, flows: Iterable[Flow]) -> list[str]:
    redact = view.proxy.flows.redact
    return flow_lines(redact.flow(f) if redact is not None else f for f in flows)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    view = item.stash.get(_VIEW, None)
    if view is None or not report.failed or not view.flows:
        return
    folder = item.config.stash.get(_FAILURES, None)
    text = "\n".join(_table(view, view.flows))
    if folder is not None:
        har_path = folder / (re.sub(r"[^A-Za-z0-9_.\-]+", "_", item.nodeid) + ".har")
        view.flows.to_har(har_path)
        text += f"\n\nHAR file: {har_path}"
    report.sections.append(("interceptkit flows", text))
