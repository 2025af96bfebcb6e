"""The thin asyncio transport: sockets, timers and the upstream pool.

One :class:`ClientSession` per accepted connection owns a sans-IO
:class:`~interceptkit.core.ProxyConnection` and runs a dispatch loop: feed an
event, execute the commands that come back. No protocol decision is made
here. Back-pressure is generic: when one peer's write buffer is full, the
peers that feed it stop being read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from ..core import commands as cmd
from ..core import events as ev
from ..core.config import ProxyConfig
from ..core.connection import ProxyConnection
from ..vocab import TimerName
from ..flow import Flow
from .bodies import BodyPuller
from .connecterror import UpstreamConnectError, connect_cause
from .pool import UpstreamPool
from .resolver import Resolver, ResolveError, system_resolver

log = logging.getLogger("interceptkit")

#: Large reads cut per-call overhead on bulk transfers (asyncio reads 256 KiB).
READ_SIZE = 1024 * 1024
WRITE_HIGH_WATER = 1024 * 1024
WRITE_LOW_WATER = 256 * 1024


def linger_zero(transport: asyncio.BaseTransport) -> None:
    """Make the next close of ``transport`` a TCP reset: SO_LINGER on with 0 s (asyncio and uvloop)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # already gone: it cannot be reset, and it is closed anyway
            pass


class Callbacks:
    """What the transport reports upward; the Proxy object overrides these."""

    def flow_started(self, flow: Flow) -> None:
        pass

    def flow_finished(self, flow: Flow) -> None:
        pass

    def run_hook(self, name: str, flow: Flow, payload: Any,
                 done: Callable[[str | None, Any], None] | None) -> None:
        if done is not None:
            done(None, payload)

    def client_connected(self, address: tuple[str, int] | None) -> None:
        pass

    def client_disconnected(self, address: tuple[str, int] | None) -> None:
        pass


class TransportSettings:
    """Knobs of the I/O layer (the core's are in ProxyConfig)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        connect_retries: int = 0,
        retry_backoff: float = 0.1,
        pool_size: int = 32,
        pool_idle_timeout: float = 30.0,
        resolver: Resolver | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.connect_retries = connect_retries
        self.retry_backoff = retry_backoff
        self.pool_size = pool_size
        self.pool_idle_timeout = pool_idle_timeout
        self.resolver = resolver or system_resolver


class _Peer(asyncio.Protocol):
    """Shared socket handling for both sides: large reads and write limits."""

    transport: asyncio.Transport | None = None

    def _setup(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance(asyncio.Transport): uvloop's transports implement it without subclassing.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        if hasattr(transport, "max_size"):
            transport.max_size = READ_SIZE


class UpstreamProtocol(_Peer):
    """A connection towards a server; reports to the session that uses it."""

    def __init__(self) -> None:
        self.session: ClientSession | None = None
        self.upstream_id = 0
        self.closed = False
        #: The core asked not to read it (PauseUpstream: a hook, a paced body, a closed
        #: HTTP/2 window); the client's back-pressure lifting must not override that.
        self.core_paused = False
        self.key: tuple[str, int, bool] = ("", 0, False)
        self.pool: UpstreamPool | None = None
        self.address: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._setup(transport)

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.feed(ev.UpstreamDataReceived(time=time.time(), upstream=self.upstream_id, data=data))
        else:  # an idle pooled connection must not talk: drop it
            self.close()

    def eof_received(self) -> bool:
        if self.session is not None:
            self.session.feed(ev.ConnectionClosed(time=time.time(), upstream=self.upstream_id))
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed, self.closed = self.closed, True
        if self.pool is not None:
            self.pool.discard(self)
        if self.session is not None and not was_closed:
            self.session.feed(ev.ConnectionClosed(time=time.time(), upstream=self.upstream_id, aborted=True))
        if self.session is not None:
            self.session.upstream_gone(self)

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.set_client_blocked(True)

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.set_client_blocked(False)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class ClientSession(_Peer):
    """One client connection: the dispatch loop between sockets and the core."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.conn: ProxyConnection | None = None
        self.upstreams: dict[int, UpstreamProtocol] = {}
        self.timers: dict[tuple[TimerName, int], asyncio.TimerHandle] = {}  # by (name, key)
        self.queue: deque[ev.Event] = deque()
        self.busy = False
        self.closed = False
        self.core_paused = False
        self.blocked = False  # an upstream cannot take more: stop reading the client
        self.reading_upstreams = True
        self.address: tuple[str, int] | None = None
        self.bodies = BodyPuller(self.feed)  # streamed mock bodies (PullBody)
        self._execute = {
            cmd.SendToClient: self._send_to_client,
            cmd.SendToUpstream: self._send_to_upstream,
            cmd.FlowStarted: self._flow_started,
            cmd.FlowFinished: self._flow_finished,
            cmd.OpenUpstream: self._open_upstream,
            cmd.CloseUpstream: self._close_upstream,
            cmd.CloseClient: self._close_client,
            cmd.StartTimer: self._start_timer,
            cmd.PauseClient: self._pause_client,
            cmd.ResumeClient: self._resume_client,
            cmd.PauseUpstream: self._pause_upstream,
            cmd.ResumeUpstream: self._resume_upstream,
            cmd.RunHook: self._run_hook,
            cmd.Log: self._log,
            cmd.PullBody: self.bodies.pull,
        }

    # -- asyncio callbacks -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._setup(transport)
        peer = transport.get_extra_info("peername")
        address = (str(peer[0]), int(peer[1])) if peer else None
        self.conn = ProxyConnection(self.server.config, address)
        self.address = address
        self.server.sessions.add(self)
        self.server.callbacks.client_connected(address)
        self.feed(ev.ClientConnected(time=time.time(), address=address))

    def data_received(self, data: bytes) -> None:
        self.feed(ev.ClientDataReceived(time=time.time(), data=data))

    def eof_received(self) -> bool:
        self.feed(ev.ConnectionClosed(time=time.time()))
        return True  # keep writing: a client may half-close after its request

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.feed(ev.ConnectionClosed(time=time.time(), aborted=True))
        self._teardown()

    def pause_writing(self) -> None:
        self._set_upstream_reading(False)
        self.bodies.set_writable(False)
        self.feed(ev.ClientBackpressure(time=time.time(), blocked=True))

    def resume_writing(self) -> None:
        self._set_upstream_reading(True)
        self.bodies.set_writable(True)
        self.feed(ev.ClientBackpressure(time=time.time(), blocked=False))

    # -- the dispatch loop -------------------------------------------------------

    def feed(self, event: ev.Event) -> None:
        """Hand an event to the core and execute what it asks for.

        Events raised while commands run (a pooled upstream answering at
        once, say) are queued, so the core never sees re-entrant calls.
        """
        self.queue.append(event)
        if self.busy or self.conn is None:
            return
        self.busy = True
        try:
            while self.queue:
                execute = self._execute
                for command in self.conn.handle(self.queue.popleft()):
                    execute[type(command)](command)  # type: ignore[operator]
        finally:
            self.busy = False

    # -- commands ------------------------------------------------------------------

    def _send_to_client(self, command: cmd.SendToClient) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(command.data)

    def _send_to_upstream(self, command: cmd.SendToUpstream) -> None:
        upstream = self.upstreams.get(command.upstream)
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.write(command.data)

    def _flow_started(self, command: cmd.FlowStarted) -> None:
        self.server.callbacks.flow_started(command.flow)

    def _flow_finished(self, command: cmd.FlowFinished) -> None:
        self.server.callbacks.flow_finished(command.flow)

    def _open_upstream(self, command: cmd.OpenUpstream) -> None:
        key = (command.host, command.port, command.tls)
        pooled = self.server.pool.take(key) if command.reuse else None
        if pooled is not None:
            self._adopt(pooled, command.upstream)
            self.feed(ev.UpstreamConnected(time=time.time(), upstream=command.upstream, reused=True,
                                           address=pooled.address))
            return
        task = asyncio.get_running_loop().create_task(self._connect(command, key))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _connect(self, command: cmd.OpenUpstream, key: tuple[str, int, bool]) -> None:
        try:
            upstream = await self.server.connect(command.host, command.port)
        except UpstreamConnectError as exc:
            self.feed(ev.UpstreamConnectFailed(time=time.time(), upstream=command.upstream,
                                               reason=str(exc), timeout=exc.timeout, cause=exc.cause))
            return
        if self.closed:
            upstream.close()
            return
        upstream.key = key
        self._adopt(upstream, command.upstream)
        self.feed(ev.UpstreamConnected(time=time.time(), upstream=command.upstream, address=upstream.address))

    def _adopt(self, upstream: UpstreamProtocol, upstream_id: int) -> None:
        upstream.session = self
        upstream.upstream_id = upstream_id
        self.upstreams[upstream_id] = upstream
        if not self.reading_upstreams and upstream.transport is not None:
            upstream.transport.pause_reading()

    def _close_upstream(self, command: cmd.CloseUpstream) -> None:
        upstream = self.upstreams.pop(command.upstream, None)
        if upstream is None:
            return
        upstream.session = None
        if command.reusable and not upstream.closed and self.reading_upstreams:
            self.server.pool.put(upstream)
        else:
            upstream.close()

    def _close_client(self, command: cmd.CloseClient | None = None) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                if command is not None and command.reset:
                    linger_zero(self.transport)
                self.transport.close()  # flushes what is queued, then closes (RST after linger_zero)

    def _start_timer(self, command: cmd.StartTimer) -> None:
        name = (command.name, command.key)
        old = self.timers.pop(name, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self.timers[name] = loop.call_later(command.delay, self._fire, name)

    def _fire(self, name: tuple[TimerName, int]) -> None:
        self.timers.pop(name, None)
        if not self.closed:
            self.feed(ev.TimerFired(time=time.time(), timer=name[0], key=name[1]))

    def _pause_client(self, command: cmd.PauseClient) -> None:
        self.core_paused = True
        self._update_client_reading()

    def _resume_client(self, command: cmd.ResumeClient) -> None:
        self.core_paused = False
        self._update_client_reading()

    def _pause_upstream(self, command: cmd.PauseUpstream) -> None:
        upstream = self.upstreams.get(command.upstream)
        if upstream is not None:
            upstream.core_paused = True
            if upstream.transport is not None and not upstream.closed:
                upstream.transport.pause_reading()

    def _resume_upstream(self, command: cmd.ResumeUpstream) -> None:
        upstream = self.upstreams.get(command.upstream)
        if upstream is not None:
            upstream.core_paused = False
            if upstream.transport is not None and not upstream.closed and self.reading_upstreams:
                upstream.transport.resume_reading()

    def _run_hook(self, command: cmd.RunHook) -> None:
        call = command.call
        done = None if call is None else (
            lambda error, result: self.feed(ev.HookReturned(time=time.time(), call=call, error=error,
                                                            result=result)))
        self.server.callbacks.run_hook(command.name, command.flow, command.payload, done)

    def _log(self, command: cmd.Log) -> None:
        log.log(logging.getLevelName(command.level.upper()), command.message)

    # -- flow control --------------------------------------------------------------

    def set_client_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        self._update_client_reading()

    def _update_client_reading(self) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if self.core_paused or self.blocked:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _set_upstream_reading(self, reading: bool) -> None:
        self.reading_upstreams = reading
        for upstream in self.upstreams.values():
            if upstream.transport is not None and not upstream.closed:
                if reading:
                    if not upstream.core_paused:
                        upstream.transport.resume_reading()
                else:
                    upstream.transport.pause_reading()

    # -- endings ---------------------------------------------------------------------

    def upstream_gone(self, upstream: UpstreamProtocol) -> None:
        if self.upstreams.get(upstream.upstream_id) is upstream:
            del self.upstreams[upstream.upstream_id]

    def _teardown(self) -> None:
        self.closed = True
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        self.bodies.close_all()
        for upstream in list(self.upstreams.values()):
            upstream.session = None
            upstream.close()
        self.upstreams.clear()
        if self in self.server.sessions:
            self.server.sessions.discard(self)
            self.server.callbacks.client_disconnected(self.address)

    def abort(self) -> None:
        """Close at once (used at shutdown)."""
        self._close_client()
        if self.transport is not None:
            self.transport.abort()


class ProxyServer:
    """Listens, accepts, and keeps what all sessions share (pool, tasks)."""

    def __init__(self, config: ProxyConfig, settings: TransportSettings | None = None,
                 callbacks: Callbacks | None = None) -> None:
        self.config = config
        self.settings = settings or TransportSettings()
        self.callbacks = callbacks or Callbacks()
        self.pool = UpstreamPool(self.settings.pool_size, self.settings.pool_idle_timeout)
        self.sessions: set[ClientSession] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.base_events.Server | None = None

    async def listen(self, host: str, port: int) -> list[tuple[str, int]]:
        """Bind and start accepting; returns the bound (host, port) pairs."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ClientSession(self), host, port,
                                                reuse_address=True, backlog=1024)
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._server.sockets]

    async def connect(self, host: str, port: int) -> UpstreamProtocol:
        """Open a connection to ``host:port``, with the configured retries."""
        settings = self.settings
        attempt = 0
        while True:
            try:
                return await asyncio.wait_for(self._connect_once(host, port), settings.connect_timeout)
            except asyncio.TimeoutError:
                error = UpstreamConnectError(f"connect timed out after {settings.connect_timeout:g} s",
                                             timeout=True)
            except UpstreamConnectError as exc:
                error = exc
            if attempt >= settings.connect_retries or error.cause == "resolve":
                raise error
            await asyncio.sleep(settings.retry_backoff * (2 ** attempt))
            attempt += 1

    async def _connect_once(self, host: str, port: int) -> UpstreamProtocol:
        loop = asyncio.get_running_loop()
        try:
            addresses = await self.settings.resolver(host, port)
        except (ResolveError, socket.gaierror) as exc:  # an injected resolver may let getaddrinfo's through
            raise UpstreamConnectError(str(exc), cause=connect_cause(exc)) from exc
        last: OSError | None = None
        for address in addresses:
            try:
                _, protocol = await loop.create_connection(UpstreamProtocol, address[0], address[1])
            except OSError as exc:
                last = exc
                continue
            protocol.address = (address[0], address[1])
            return protocol
        # asyncio's own message ("Connect call failed ...") hides the cause.
        reason = os.strerror(last.errno) if last is not None and last.errno else str(last)
        raise UpstreamConnectError(reason or "no address to connect to", cause=connect_cause(last))

    def release_flow(self, flow: Flow) -> None:
        """Tell the connection of ``flow`` (found by its client address) that its hold is over."""
        for session in list(self.sessions):
            if session.address == flow.client_address and not session.closed:
                session.feed(ev.HoldReleased(time=time.time(), flow_id=flow.id))

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.abort()
        for task in list(self.tasks):
            task.cancel()
        self.pool.close_all()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)
