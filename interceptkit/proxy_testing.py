"""The test author's verbs on :class:`~interceptkit.Proxy`: mocks, blocks, strict mode,
cassettes, faults, redaction, assertions and waiting (testkit.py, cassette.py, faults.py).

A mixin so proxy.py keeps the object's life (start, stop, hooks) and this
module the testing surface; it only reads the proxy's state, never writes it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import Any

from . import faults, testkit
from .cassette import CassetteBlock
from .flow import Flow
from .hooks import FlowFilter, HookHandle, HookRegistry
from .matching import Matcher
from .redact import Redact
from .table import FlowTable
from .transport import ProxyServer


class TestingVerbs:
    """Methods of :class:`~interceptkit.Proxy` for tests; the state is Proxy's (annotations only)."""

    hooks: HookRegistry
    flows: FlowTable
    _kit: testkit.TestKit
    _server: ProxyServer | None
    _loop: asyncio.AbstractEventLoop | None
    _connect_resets: faults.ConnectResets
    _redaction: Redact
    _save_redaction: Redact
    on_flow: Callable[[Callable[[Flow], None]], Callable[[], None]]

    def mock(self, method: str | None, url: str, *, status: int = 200, json: Any = None,
             text: str | None = None, content: bytes | None = None, headers: dict[str, str] | None = None,
             times: int | None = None, query: dict[str, Any] | None = None,
             match_headers: dict[str, str] | None = None, match_json: Any = None,
             responses: list[dict[str, Any]] | None = None) -> HookHandle:
        """Answer matching requests without contacting the upstream.

        ``url`` is a glob on the full URL (``"https://api.example.com/users/*"``;
        without its query when ``query=`` is given); ``method`` None matches any
        method. Matchers: ``query={"page": "1"}``, ``match_headers={...}``,
        ``match_json=...`` (the request body, semantically). ``responses=[dict(status=500),
        dict(json={...})]`` answers in turn (the last repeats). ``times`` limits how
        often it answers (then it removes itself). Returns a handle (``.calls``, ``.flows``).
        """
        response = {k: v for k, v in dict(json=json, text=text, content=content, headers=headers).items()
                    if v is not None}
        return self._kit.mock(method, url, times=times, query=query, match_headers=match_headers,
                              match_json=match_json, responses=responses, status=status, **response)

    def block(self, host: str | None = None, *, status: int = 403, kill: bool = False,
              **filters: Any) -> HookHandle:
        """Refuse matching traffic: a ``status`` answer, or a closed connection with ``kill``.

        With ``host`` it also refuses CONNECT tunnels to that host, so HTTPS
        to it is blocked before any TLS handshake.
        """
        return self._kit.block(host, status=status, kill=kill, **filters)

    # -- for test authors (testkit.py, cassette.py, faults.py) -------------------------

    def strict(self, status: int = 599) -> HookHandle:
        """Answer every request no mock and no recording matches with ``status`` and a
        plain-text body naming it, what it was compared with and the nearest one's
        difference; the flow gets ``metadata["unmatched"]``. ``.remove()`` ends it."""
        return self._kit.strict(status)

    def cassette(self, path: str | os.PathLike[str], record_mode: str = "once",
                 match_on: Iterable[Matcher] = ("method", "url"), allow_repeats: bool = False) -> CassetteBlock:
        """``with proxy.cassette("api.har") as cas:`` records or replays (HAR 1.2, written
        atomically at the end). Modes ``none``, ``once``, ``new_episodes``, ``all`` (VCR.py's);
        ``match_on``: field names, ``"headers:<name>"`` or callables. See docs/testing.md."""
        return CassetteBlock(lambda: self._kit.cassette(
            path, record_mode=record_mode, match_on=match_on, allow_repeats=allow_repeats))

    def fault(self, kind: str, *, where: FlowFilter | None = None, times: int | None = None,
              **options_and_filters: Any) -> HookHandle:
        """Inject a fault: ``delay``, ``throttle``, ``reset``, ``hang``, ``truncate``, ``dribble``
        or ``status`` (options in docs/testing.md); other keywords are filters. Returns a
        handle with ``.remove()``, ``.calls``, ``.flows``."""
        return faults.install(self.hooks, self._connect_resets, kind, where=where, times=times,
                              **options_and_filters)

    # FlowOwner: what flow.release() calls (from any thread).
    def release_flow(self, flow: Flow) -> None:
        """End ``flow.hold()``: the connection holding it moves its exchange on."""
        loop, server = self._loop, self._server
        if server is None:
            return
        if loop is None:  # serve_forever (the CLI): hooks and scripts run on the proxy's own loop
            asyncio.get_running_loop().call_soon(server.release_flow, flow)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(server.release_flow, flow)

    def redact(self, headers: Iterable[str] | None = None, query: Iterable[str] | None = None,
               json_fields: Iterable[str] | None = None, values: Iterable[str] | None = None) -> Redact:
        """Also hide these in cassettes, HAR, ``save=`` files and failure reports."""
        self._save_redaction.add(headers, query, json_fields, values)
        return self._redaction.add(headers, query, json_fields, values)

    def assert_requested(self, method: str | None = None, url: str | None = None, *, times: int | None = None,
                         json: Any = None, where: FlowFilter | None = None) -> list[Flow]:
        """Raise AssertionError (with a table of the requests seen and the nearest one's
        difference) unless such requests were made (``times``: exactly that many)."""
        return testkit.assert_requested(self.flows, method, url, times=times, json=json, where=where)

    def assert_all_mocks_used(self) -> None:
        """Raise AssertionError naming each mock that never answered."""
        testkit.assert_all_mocks_used(self._kit)

    def wait_for(self, where: FlowFilter | None = None, *, timeout: float = 5.0, **filters: Any) -> Flow:
        """The first matching flow that finishes after this call (TimeoutError if none does).

        It blocks the calling thread only, so it is safe in a notebook cell."""
        return testkit.wait_for(self.on_flow, where, timeout, filters)

    async def wait_for_async(self, where: FlowFilter | None = None, *, timeout: float = 5.0,
                             **filters: Any) -> Flow:
        """:meth:`wait_for` for async code: ``flow = await proxy.wait_for_async(path="/x")``."""
        return await testkit.wait_for_async(self.on_flow, where, timeout, filters)

