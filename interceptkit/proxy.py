"""Proxy: the one object a user holds."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from typing import Any
from dataclasses import replace
from pathlib import Path

from ._wire import format_address
from .breakpoints import Breakpoint, PausedFlows
from .certs import CertStore, default_confdir
from .clientenv import client_environment, write_bundle
from .core.config import ProxyConfig
from .core.upstreamproxy import UpstreamProxy, parse_upstream_proxy
from .core.proxyauth import Credentials
from .faults import ConnectResets
from .flow import Flow
from . import testkit
from .hooks import FlowFilter, HookHandle, HookRegistry, check_hook_name, handler_methods, make_filter
from .live import LiveView, status_frame
from .loops import choose_loop, loop_factory
from .core.alpn import h2_enabled, listen_protocols
from .policy import host_matcher, listen_ssl_context, parse_routes, upstream_ssl_contexts
from .redact import Redact
from .replay import replay, replay_async
from .scripts import ScriptHandle, load_script
from .proxy_callbacks import _ProxyCallbacks, _self_addresses
from .proxy_testing import TestingVerbs
from .store import FlowRecorder
from .table import FlowTable
from .transport import ProxyServer, Resolver, TransportSettings

log = logging.getLogger("interceptkit")


class ProxyStartError(OSError):
    """The proxy could not start (for example: the port is in use)."""


class Proxy(TestingVerbs):
    """An HTTP(S) proxy that runs on its own thread and event loop.

    ``Proxy(port=0).start()`` returns once it listens (``port=0`` picks a
    free port); ``.stop()`` ends it. Also ``with Proxy() as p:`` and
    ``async with Proxy() as p:``. Several proxies in one process are
    independent of each other.

    Args:
        host: address to listen on; 127.0.0.1 unless you mean to expose it.
        port: port to listen on; 0 picks a free one.
        mode: "forward" (clients configure it as their proxy), "reverse", or "socks5" (a SOCKS5 proxy).
        proxy_auth: ``("user", "pass")`` or ``(user, password) -> bool``: clients must authenticate
            (407 otherwise; RFC 1929 in socks5 mode); the user is ``flow.proxy_user``.
        read_timeout: seconds to wait for the upstream's answer (then 504).
        connect_timeout: seconds to wait for an upstream connection (then 504).
        idle_timeout: seconds an idle client connection is kept open.
        connect_retries: extra connection attempts, with exponential backoff.
        forwarded_for: add X-Forwarded-For (default off in forward mode).
        resolver: ``async (host, port) -> [(ip, port), ...]``, for tests or pinning.
        max_flows: how many flows ``.flows`` keeps (the oldest are dropped).
        body_capture_limit: bytes of each body kept on its flow.
        max_capture_bytes: bytes of body kept on all flows together (default 256 MiB;
            None for no limit): past it the oldest flows' bodies are dropped (the
            flows stay; with ``save=`` the bodies are read back from the file).
        max_request_body: refuse request bodies over this many bytes with 413
            (None, the default: no limit).
        confdir: folder of the CA (default ``$INTERCEPTKIT_HOME`` or ~/.interceptkit).
        intercept: decrypt HTTPS (CONNECT) traffic with certificates from the CA.
        ignore_hosts: glob or regex patterns of hosts relayed without decrypting.
        upstream_proxy: a parent proxy, ``"http://[user:pass@]host:port"``; upstream_proxy_bypass: hosts reached directly.
        ssl_insecure: do not verify upstream certificates (only if you must).
        upstream_ca: a PEM file of extra CAs to trust for upstream servers.
        http2: speak HTTP/2 where the peers offer it (default True): ALPN offers
            ``h2`` to clients and upstreams that offer it, and a TLS listener
            offers it; False keeps both sides on HTTP/1.1 (``--no-http2``).
        routes: reverse mode: ``{"/api": "http://127.0.0.1:9000", "/": {"url": "https://...",
            "strip": True}}``; the longest matching prefix wins, ``strip`` removes it.
        keep_host: reverse mode: send the client's Host instead of the upstream's.
        certfile, keyfile: serve TLS on the listening side with this certificate.
        tls_name: serve TLS on the listening side with a certificate for this name
            from the interceptkit CA.
        save: a file to append every finished flow to (JSON lines, flushed per
            flow, so a crash loses nothing already finished); ``FlowTable.load``
            reads it, also while it grows.
        redact: a :class:`Redact`: what cassettes, HAR and ``save=`` files hide
            (cassettes and HAR also hide the credential headers by default).
        loop: the event loop of its thread: "auto" (uvloop when installed,
            ``pip install interceptkit[speed]``; ``$INTERCEPTKIT_LOOP`` overrides),
            "asyncio" or "uvloop". ``proxy.loop`` says which one it got.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        mode: str = "forward",
        read_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        idle_timeout: float = 120.0,
        connect_retries: int = 0,
        forwarded_for: bool = False,
        resolver: Resolver | None = None,
        max_flows: int | None = 10_000,
        body_capture_limit: int = 64 * 1024,
        max_capture_bytes: int | None = 256 * 2**20,
        pool_size: int = 32,
        confdir: str | os.PathLike[str] | None = None,
        intercept: bool = True,
        ignore_hosts: Iterable[str] = (),
        upstream_proxy: str | UpstreamProxy | None = None,
        upstream_proxy_bypass: Iterable[str] = (),
        ssl_insecure: bool = False,
        upstream_ca: str | os.PathLike[str] | None = None,
        routes: dict[str, str | dict[str, Any]] | None = None,
        keep_host: bool = False,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        tls_name: str | None = None,
        save: str | os.PathLike[str] | None = None,
        redact: Redact | None = None,
        max_request_body: int | None = None,
        loop: str = "auto",
        proxy_auth: tuple[str, str] | Callable[[str, str], bool] | Credentials | None = None,
        http2: bool = True,
    ) -> None:
        if mode not in ("forward", "reverse", "socks5"):
            raise ValueError(f"unknown mode {mode!r}: use 'forward', 'reverse' or 'socks5'")
        if proxy_auth is not None and mode == "reverse":
            raise ValueError("proxy_auth applies to the forward and socks5 modes, not reverse")
        if mode == "reverse" and not routes:
            raise ValueError("reverse mode needs routes, e.g. routes={'/': 'http://127.0.0.1:9000'}")
        #: "asyncio" or "uvloop": the loop its thread runs.
        self.loop = choose_loop(loop)
        self._loop_factory = loop_factory(self.loop)
        self.host = host
        self._requested_port = port
        self.mode = mode
        # What cassettes and HAR hide (defaults + the user's); save= files hide the user's only.
        self._redaction = Redact().merge(redact)
        self._save_redaction = Redact(headers=()).merge(redact)
        self.flows = FlowTable(max_flows=max_flows, max_capture_bytes=max_capture_bytes,
                               redact=self._redaction)
        self.hooks = HookRegistry()
        self._kit = testkit.TestKit(self.hooks, self._redaction)
        self._connect_resets = ConnectResets()  # "reset at=connect" faults, asked by the core on accept
        self._handlers: dict[int, HookHandle] = {}
        self.confdir = Path(confdir) if confdir is not None else default_confdir()
        self.intercept = intercept
        self.certs: CertStore | None = None
        self._replay_auth = ("interceptkit-replay", secrets.token_urlsafe(16))  # replay.py is a client too
        # The h2 variant costs a second load of the trust store (~30 ms): built only once it can be used.
        upstream_http1, upstream_h2 = upstream_ssl_contexts(insecure=ssl_insecure, extra_ca=upstream_ca,
                                                            http2=h2_enabled(http2))
        self._config = ProxyConfig(
            mode=mode, read_timeout=read_timeout, idle_timeout=idle_timeout,
            forwarded_for=forwarded_for, body_capture_limit=body_capture_limit,
            via_token=secrets.token_hex(4), next_flow_id=itertools.count(1).__next__,
            hooks=self.hooks.active,
            intercept=intercept, ignore_host=host_matcher(ignore_hosts),
            upstream_context=upstream_http1, upstream_context_h2=upstream_h2, http2=http2,
            routes=parse_routes(routes or {}), keep_host=keep_host,
            listen_context=listen_ssl_context(certfile, keyfile, self._listen_alpn(http2)),
            max_request_body=max_request_body,
            upstream_proxy=parse_upstream_proxy(upstream_proxy) if isinstance(upstream_proxy, str) else upstream_proxy,
            upstream_proxy_bypass=host_matcher(upstream_proxy_bypass),
            credentials=Credentials.of(proxy_auth).with_pair(*self._replay_auth) if proxy_auth is not None else None,
            reset_at_connect=self._connect_resets,
            answers_locally=self._kit.answers_locally,
        )
        self._tls_name = tls_name
        self._settings = TransportSettings(
            connect_timeout=connect_timeout, connect_retries=connect_retries,
            resolver=resolver, pool_size=pool_size,
        )
        self._listeners: list[Callable[[Flow], None]] = []
        self._server: ProxyServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._addresses: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._serving = False
        # Recording and replay (store.py, replay.py).
        self._save_path = Path(save) if save is not None else None
        self._recorder: FlowRecorder | None = None
        self._watchers: list[Any] = []
        self._paused = PausedFlows()

    # -- where it listens --------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (the real one when started with port=0)."""
        return self._addresses[0][1] if self._addresses else self._requested_port

    @property
    def url(self) -> str:
        """``http://host:port`` (https with listening TLS, socks5 in socks5 mode): what to give clients."""
        scheme = "https" if self._config.listen_context is not None or self._tls_name else "http"
        scheme = "socks5" if self.mode == "socks5" else scheme
        return f"{scheme}://{format_address(self.host, self.port)}"

    @property
    def running(self) -> bool:
        """Whether it is serving, on its own thread or in a loop via serve_forever."""
        return self._serving or (self._thread is not None and self._thread.is_alive())

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Proxy:
        """Start on a new thread; return once listening. Raises ProxyStartError."""
        with self._lock:
            if self.running:
                return self
            self._load_ca()
            self._open_recorder()
            ready = threading.Event()
            failure: list[BaseException] = []
            self._thread = threading.Thread(
                target=self._thread_main, args=(ready, failure), name=f"interceptkit:{self._requested_port}",
                daemon=True,
            )
            self._thread.start()
            ready.wait()
            if failure:
                self._thread.join()
                self._thread = None
                self._close_recorder()
                raise failure[0]
        return self

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop_factory()
        self._loop = loop
        try:
            loop.run_until_complete(self._listen())
        except BaseException as exc:  # reported to the thread that called start()
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _listen(self) -> None:
        server = ProxyServer(self._config, self._settings, _ProxyCallbacks(self))
        try:
            addresses = await server.listen(self.host, self._requested_port)
        except OSError as exc:
            raise ProxyStartError(exc.errno, f"cannot listen on {self.host}:{self._requested_port}: "
                                  f"{exc.strerror or exc}") from exc
        self._addresses = addresses
        server.config = replace(self._config, listen_addresses=frozenset(_self_addresses(addresses)))
        self._server = server

    async def _shutdown(self) -> None:
        if self._server is not None:
            if isinstance(self._server.callbacks, _ProxyCallbacks):
                self._server.callbacks.runner.cancel()  # hooks still waiting (a slow async hook, say)
            await self._server.close()
            self._server = None

    def stop(self) -> None:
        """Stop listening and close every connection. Safe to call twice."""
        with self._lock:
            thread, loop = self._thread, self._loop
            if thread is None or loop is None:
                return
            if thread is not threading.current_thread():
                for flow in self._paused.flows():
                    flow.kill()  # a paused client is told at once (its connection closes)
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=10)
                self._close_recorder()
                self._kit.close()
            self._paused.forget()
            self._thread = None
        self.flows._ended()

    async def serve_forever(self, stop: asyncio.Event) -> None:
        """Run in the current event loop until ``stop`` is set (used by the CLI)."""
        self._load_ca()
        self._open_recorder()
        try:
            await self._listen()
            self._serving = True
            await stop.wait()
        finally:
            self._serving = False
            await self._shutdown()
            self._close_recorder()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Proxy:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    def _load_ca(self) -> None:
        if self.certs is None:
            self.certs = CertStore.load_or_create(self.confdir)
        certs = self.certs
        self._config = replace(
            self._config, ca_cert_pem=certs.ca_cert_pem, ca_cert_der=certs.ca_cert_der,
            server_context=certs.server_context if self.intercept else None,
        )
        if self._tls_name is not None and self._config.listen_context is None:
            alpn = self._listen_alpn(self._config.http2)
            self._config = replace(self._config, listen_context=certs.server_context(self._tls_name, alpn))

    @staticmethod
    def _listen_alpn(http2: bool) -> tuple[str, ...]:
        """What a TLS listener offers: h2 too once the core carries it (core.alpn.H2_READY)."""
        return listen_protocols(http2=h2_enabled(http2))

    # -- recording and replay -------------------------------------------------------

    def _open_recorder(self) -> None:
        if self._save_path is not None and self._recorder is None:
            self._recorder = FlowRecorder.open(self._save_path, self._save_redaction)

    def _close_recorder(self) -> None:
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            recorder.close()

    def replay_flow(self, flow: Flow, *, timeout: float = 30.0) -> Flow:
        """Send ``flow``'s request again through this proxy (``Flow.replay`` calls this)."""
        return replay(flow, self, timeout=timeout)

    async def replay_flow_async(self, flow: Flow, *, timeout: float = 30.0) -> Flow:
        """:meth:`replay_flow` for async code."""
        return await replay_async(flow, self, timeout=timeout)

    def _watch(self, watcher: Any) -> Callable[[], None]:
        """Tell ``watcher`` of every flow (``.flow_started(flow)``, ``.flow_finished(flow)``)
        on the proxy thread, until the returned function is called (used by replay)."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    # -- trusting the CA -----------------------------------------------------------

    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate (PEM) that clients must trust to be intercepted."""
        if self.certs is None:
            self.certs = CertStore.load_or_create(self.confdir)
        return self.certs.ca_cert_path

    def client_env(self, *, keep_no_proxy: bool = False) -> dict[str, str]:
        """Environment variables that make a child process use this proxy and trust its CA.

        ``subprocess.run(cmd, env={**os.environ, **proxy.client_env()})``.
        ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``,
        ``PIP_CERT``, ``GIT_SSL_CAINFO``, ``AWS_CA_BUNDLE``,
        ``CARGO_HTTP_CAINFO`` and ``DENO_CERT`` point at a bundle in the
        confdir holding the CA *and* what this process trusts (so hosts the
        proxy relays unchanged still verify); it is refreshed on each call
        when either changed. ``NODE_EXTRA_CA_CERTS`` is the CA alone (Node
        adds it to its roots). ``NO_PROXY``/``no_proxy`` are set empty, so
        nothing bypasses the proxy, unless ``keep_no_proxy``.
        """
        ca_path = self.ca_cert_path
        assert self.certs is not None  # loaded by ca_cert_path
        bundle = write_bundle(self.confdir, self.certs.ca_cert_pem)
        return client_environment(self.url, ca_path, bundle, keep_no_proxy=keep_no_proxy)

    # -- hooks ---------------------------------------------------------------------

    def on(self, name: str, fn: Callable[..., Any] | None = None, *, where: FlowFilter | str | None = None,
           thread: bool = False, **filters: Any) -> Any:
        """Attach ``fn`` as the hook ``name``; returns a handle with ``.remove()`` and ``.flows``.

        ``fn(flow)`` may change ``flow.request``/``flow.response``, call
        ``flow.respond(...)`` or ``flow.kill()``; it may be ``async``. Data
        hooks (``response_chunk``, ``websocket_message``) get ``fn(flow,
        data)`` and may return replacement data. ``where=`` (a callable or a
        filter expression such as ``"~d api.example.com"``) and
        keyword filters (``host=``, ``method=``, ``path=``, ``url=``,
        ``status=``, ``content_type=``) choose the flows it sees;
        ``thread=True`` runs a blocking hook off the event loop. Without
        ``fn`` it is a decorator. Raises ValueError for an unknown hook name,
        TypeError for a ``fn`` or ``where`` that is not callable.
        """
        check_hook_name(name)
        flow_filter = make_filter(where, **filters)
        if fn is None:
            return lambda function: self.on(name, function, where=flow_filter, thread=thread)
        return HookHandle(self.hooks, [self.hooks.add(name, fn, flow_filter, thread)])

    def load_script(self, path: str | os.PathLike[str], reload: bool = True) -> ScriptHandle:
        """Attach the hooks of a Python file; with ``reload`` follow its changes live.

        The file's functions named like hooks (``def request(flow)``,
        ``def response(flow)``, ...), its ``addons = [Handler()]`` and what its
        optional ``def setup(proxy)`` attaches are attached now. When the file
        changes, the new version replaces the old within a second; a version
        that fails to import or raises in ``setup`` is logged with its
        traceback (also on ``handle.error``) and the old one stays.
        ``handle.remove()`` detaches the script. Raises FileNotFoundError.
        """
        return load_script(self, path, reload=reload)

    def add(self, handler: object) -> HookHandle:
        """Attach every hook method of ``handler`` (``request``, ``on_request_received``, ...)."""
        if id(handler) in self._handlers:
            raise ValueError(f"{type(handler).__name__} handler is attached already")
        hooks = [self.hooks.add(name, method) for name, method in handler_methods(handler)]
        if not hooks:
            raise ValueError(f"{type(handler).__name__} has no hook methods")
        handle = HookHandle(self.hooks, hooks)
        self._handlers[id(handler)] = handle
        return handle

    def remove(self, handler: object) -> None:
        """Detach a handler attached with :meth:`add`."""
        handle = self._handlers.pop(id(handler), None)
        if handle is not None:
            handle.remove()

    # -- breakpoints -----------------------------------------------------------------

    def breakpoint(self, where: FlowFilter | str | None = None, *, at: str = "request",
                   timeout: float | None = 300, **filters: Any) -> Breakpoint:
        """Pause matching flows at ``at`` ("request" or "response"); other traffic keeps flowing.

        ``where``: a filter expression (``"~u /checkout"``) or a callable; keyword
        filters as for :meth:`on`. Find paused flows in :attr:`paused` or with
        :meth:`next_paused`, edit them, then ``flow.resume()``, ``kill()`` or
        ``respond(...)``. After ``timeout`` seconds a flow goes on as it was
        paused (logged). ``bp.remove()`` resumes what it holds. Raises ValueError.
        """
        return Breakpoint(self._paused, at, timeout).attach(self.on, where, filters)

    @property
    def paused(self) -> FlowTable:
        """The flows paused at breakpoints now, oldest first (a still table)."""
        return FlowTable(self._paused.flows(), max_flows=None)

    def next_paused(self, timeout: float | None = None) -> Flow:
        """The next flow paused at a breakpoint (waiting for one); TimeoutError after ``timeout``."""
        return self._paused.next(timeout)

    # FlowOwner: what flow.resume() and flow.replay() call.
    def resume_flow(self, flow: Flow) -> bool:
        """Let ``flow`` go on from its breakpoint (``Flow.resume`` calls this)."""
        return self._paused.resume(flow)

    # -- observing -----------------------------------------------------------------

    def on_flow(self, listener: Callable[[Flow], None]) -> Callable[[], None]:
        """Call ``listener(flow)`` on the proxy thread as each flow finishes.

        Returns a function that removes the listener.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Proxy {self.mode} {self.url} {state}, {len(self.flows)} flows>"

    def _ipython_display_(self) -> None:
        # In a notebook: address, mode, state and live counts, updated as traffic flows.
        status = LiveView(self.flows, lambda: status_frame(self.url, self.mode, self.running, self.flows))
        if status._handle is None:  # a terminal: no display to update
            status.stop()
            print(repr(self))
