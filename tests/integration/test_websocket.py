"""WebSocket through the proxy, with the ``websockets`` package on both ends.

Every test runs the same conversation in each way a client can reach a
WebSocket server through interceptkit:

``forward``      ws:// sent to the forward proxy as an absolute-form ``GET`` with Upgrade
``connect``      ws:// through a CONNECT tunnel (what ``websockets`` does with ``proxy=``);
                 the proxy intercepts and finds HTTP inside
``connect-tls``  wss:// through an intercepted CONNECT: the client trusts the proxy's CA,
                 the proxy trusts a test CA that signed the origin's certificate
``reverse``      ws:// to a reverse proxy whose route strips ``/ws``
``reverse-tls``  wss:// to a reverse proxy listening with TLS (``tls_name``), routed to a
                 wss:// origin

Only 127.0.0.1; the proxies resolve names with a static table; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from origin import read_head, status_of, wait_until
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from interceptkit import Proxy, static_resolver
from interceptkit.certs import CertStore

MODES = ["forward", "connect", "connect-tls", "reverse", "reverse-tls"]
NAMES = {"origin.test": "127.0.0.1", "localhost": "127.0.0.1"}
TIMEOUT = 10.0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def run(coro: Any, timeout: float = TIMEOUT) -> Any:
    """Run one scenario on a fresh loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- the origin: a websockets server on its own thread --------------------------------------


@dataclass
class Seen:
    path: str
    headers: list[tuple[str, str]]
    messages: list[str | bytes] = field(default_factory=list)
    close: tuple[int | None, str | None] | None = None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class WSOrigin:
    """A ``websockets`` server on 127.0.0.1 (port 0), run by its own thread and loop.

    Paths: ``/echo`` echoes every message, and obeys a few commands:
    ``close:CODE:REASON`` closes with that code, ``ping-me`` pings the client
    and answers ``pong-ok`` once the pong came back, ``fragments`` sends a
    fragmented text message, ``big:N`` sends N bytes, ``ticks:N`` sends N messages
    0.3 s apart, ``vanish`` drops the TCP
    connection. ``/ack`` answers ``ack:<message>`` a moment after each message; ``/sink``
    answers nothing.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.seen: list[Seen] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="ws-origin", daemon=True)
        self._stop: asyncio.Event | None = None

    def start(self) -> WSOrigin:
        self._thread.start()
        assert self._ready.wait(5), "the WebSocket origin did not start"
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=5)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, ssl=self.ssl_context, max_size=None,
                         ping_interval=None, close_timeout=2) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        seen = Seen(request.path, list(request.headers.raw_items()))
        self.seen.append(seen)
        try:
            async for message in ws:
                seen.messages.append(message)
                if request.path.startswith("/sink"):
                    continue
                if request.path.startswith("/ack"):
                    await asyncio.sleep(0.05)  # one answer per read at the proxy
                    await ws.send(f"ack:{message if isinstance(message, str) else message.hex()}")
                elif message == "ping-me":
                    waiter = await ws.ping(b"from-server")
                    await asyncio.wait_for(waiter, 5)
                    await ws.send("pong-ok")
                elif message == "fragments":
                    await ws.send(["frag", "ment", "ed ✓"])
                elif isinstance(message, str) and message.startswith("big:"):
                    await ws.send(os.urandom(16) * (int(message[4:]) // 16))
                elif isinstance(message, str) and message.startswith("ticks:"):
                    for i in range(int(message[6:])):
                        await asyncio.sleep(0.3)
                        await ws.send(f"tick {i}")
                elif message == "vanish":
                    assert ws.transport is not None
                    ws.transport.abort()
                    return
                elif isinstance(message, str) and message.startswith("close:"):
                    _, code, reason = message.split(":", 2)
                    await ws.close(int(code), reason)
                    break
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            seen.close = (ws.close_code, ws.close_reason)

    def wait_closed(self, count: int = 1, timeout: float = 5.0) -> list[Seen]:
        wait_until(lambda: sum(1 for s in self.seen if s.close is not None) >= count, timeout)
        return self.seen


# -- certificates ----------------------------------------------------------------------------


@dataclass
class OriginCA:
    ca_path: Path
    certfile: Path
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> OriginCA:
    """A CA of the tests' own (not the proxy's) and a localhost certificate from it."""
    folder = tmp_path_factory.mktemp("ws-test-ca")
    store = CertStore.load_or_create(folder / "ca")
    leaf = store.leaf_for("localhost", ["127.0.0.1"])
    certfile, keyfile = folder / "origin.pem", folder / "origin.key"
    certfile.write_bytes(leaf.chain_pem)
    keyfile.write_bytes(leaf.key_pem)
    return OriginCA(store.ca_cert_path, certfile, keyfile)


@pytest.fixture(scope="module")
def confdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The proxies' CA folder (shared by this module's proxies: one key to make)."""
    return tmp_path_factory.mktemp("ws-proxy-home")


# -- one proxied setup per mode ----------------------------------------------------------------


def absolute_form(target: str) -> Callable[..., ClientConnection]:
    """A ``create_connection`` for websockets that sends an absolute-form request-target,
    as a client of a forward proxy must."""

    def create(protocol: Any, **kwargs: Any) -> ClientConnection:
        connection = ClientConnection(protocol, **kwargs)
        original = protocol.connect

        def connect_request() -> Any:
            request = original()
            request.path = target
            return request

        protocol.connect = connect_request
        return connection

    return create


@dataclass
class Setup:
    mode: str
    proxy: Proxy
    origin: WSOrigin
    client_ssl: ssl.SSLContext | None = None

    @property
    def secure(self) -> bool:
        return self.mode.endswith("-tls")

    def uri(self, path: str) -> str:
        if self.mode in ("forward", "connect"):
            return f"ws://origin.test:{self.origin.port}{path}"
        if self.mode == "connect-tls":
            return f"wss://localhost:{self.origin.port}{path}"
        if self.mode == "reverse":
            return f"ws://127.0.0.1:{self.proxy.port}/ws{path}"
        return f"wss://localhost:{self.proxy.port}/ws{path}"

    @asynccontextmanager
    async def client(self, path: str = "/echo", **kwargs: Any) -> Any:
        kwargs.setdefault("max_size", None)
        kwargs.setdefault("ping_interval", None)
        kwargs.setdefault("open_timeout", 5)
        kwargs.setdefault("close_timeout", 2)
        uri = self.uri(path)
        if self.mode == "forward":
            sock = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
            sock.setblocking(False)
            target = kwargs.pop("target", f"http://origin.test:{self.origin.port}{path}")
            kwargs.update(sock=sock, proxy=None, create_connection=absolute_form(target))
        elif self.mode.startswith("connect"):
            kwargs.update(proxy=self.proxy.url)
        else:
            kwargs.update(proxy=None)
        if self.client_ssl is not None:
            kwargs.update(ssl=self.client_ssl)
        async with connect(uri, **kwargs) as ws:
            yield ws

    def websocket_flows(self, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """The finished WebSocket flows, once ``count`` of them are."""
        def done() -> list[Any]:
            return [f for f in self.proxy.flows if f.kind == "websocket" and f.state != "open"]

        wait_until(lambda: len(done()) >= count, timeout)
        return done()

    def raw_handshake(self, path: str = "/echo") -> socket.socket:
        """A WebSocket handshake done by hand (a raw socket, TLS-wrapped where needed)."""
        sock: socket.socket = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=5)
        host = f"origin.test:{self.origin.port}"
        if self.mode.startswith("connect"):
            host = f"{'localhost' if self.secure else 'origin.test'}:{self.origin.port}"
            sock.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            head, rest = read_head(sock)
            assert status_of(head) == 200 and rest == b""
            target = path
        elif self.mode == "forward":
            target = f"http://{host}{path}"
        else:
            host, target = f"localhost:{self.proxy.port}", f"/ws{path}"
        if self.client_ssl is not None:
            sock = self.client_ssl.wrap_socket(sock, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head, rest = read_head(sock)
        assert status_of(head) == 101, head
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert accept.encode() in head
        assert rest == b""
        return sock


def make_setup(mode: str, confdir: Path, test_ca: OriginCA, **proxy_kwargs: Any) -> Setup:
    secure_origin = mode in ("connect-tls", "reverse-tls")
    origin = WSOrigin(test_ca.server_context() if secure_origin else None).start()
    kwargs: dict[str, Any] = {"port": 0, "confdir": confdir, "resolver": static_resolver(NAMES),
                              "read_timeout": 10.0, "connect_timeout": 5.0, "upstream_ca": test_ca.ca_path}
    if mode.startswith("reverse"):
        scheme = "wss" if secure_origin else "ws"
        kwargs.update(mode="reverse", routes={"/ws": {"url": f"{scheme}://localhost:{origin.port}",
                                                      "strip": True}})
        if mode == "reverse-tls":
            kwargs.update(tls_name="localhost")
    kwargs.update(proxy_kwargs)
    proxy = Proxy(**kwargs).start()
    client_ssl = None
    if mode.endswith("-tls"):
        client_ssl = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    return Setup(mode, proxy, origin, client_ssl)


@pytest.fixture
def setups(confdir: Path, test_ca: OriginCA) -> Iterator[Callable[..., Setup]]:
    made: list[Setup] = []

    def factory(mode: str, **proxy_kwargs: Any) -> Setup:
        setup = make_setup(mode, confdir, test_ca, **proxy_kwargs)
        made.append(setup)
        return setup

    try:
        yield factory
    finally:
        for setup in made:
            setup.proxy.stop()
            setup.origin.stop()


@pytest.fixture(params=MODES)
def setup(request: pytest.FixtureRequest, setups: Callable[..., Setup]) -> Setup:
    return setups(request.param)


# -- reading frames on raw sockets ------------------------------------------------------------


def read_frames(sock: socket.socket, timeout: float = 5.0) -> tuple[list[tuple[int, bytes]], bool]:
    """Unmasked frames read until the peer closes (bounded): [(opcode, payload)], closed?"""
    deadline = time.monotonic() + timeout
    buf = b""
    closed = False
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except (ConnectionResetError, ssl.SSLError, OSError):
            closed = True
            break
        if not data:
            closed = True
            break
        buf += data
    frames = []
    while len(buf) >= 2:
        opcode, length, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if length == 126:
            length, offset = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            length, offset = struct.unpack("!Q", buf[2:10])[0], 10
        frames.append((opcode, buf[offset: offset + length]))
        buf = buf[offset + length:]
    return frames, closed


def recv_exactly(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def masked(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    key = os.urandom(4)
    assert len(payload) < 126
    return (bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + key
            + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))


def close_codes(frames: list[tuple[int, bytes]]) -> list[int]:
    return [struct.unpack("!H", payload[:2])[0] for opcode, payload in frames if opcode == 0x8 and payload]


# -- the conversation, in every mode ---------------------------------------------------------


def test_text_binary_ping_pong_and_client_close(setup: Setup) -> None:
    async def scenario() -> dict[str, Any]:
        async with setup.client("/echo") as ws:
            await ws.send("héllo ✓")
            text = await ws.recv()
            await ws.send(b"\x00\x01\xfe\xff")
            binary = await ws.recv()
            pong = await ws.ping(b"from-client")
            latency = await asyncio.wait_for(pong, 5)
            await ws.send("ping-me")  # the server pings us; our pong must reach it
            after_ping = await ws.recv()
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            await ws.close(4000, "client bye")
        return {"text": text, "binary": binary, "latency": latency, "after_ping": after_ping,
                "extensions": extensions, "close": (ws.close_code, ws.close_reason)}

    result = run(scenario())
    assert result["text"] == "héllo ✓"
    assert result["binary"] == b"\x00\x01\xfe\xff"
    assert result["latency"] >= 0
    assert result["after_ping"] == "pong-ok"
    # Compression is negotiated end to end and every message above crossed it.
    assert result["extensions"] is not None and result["extensions"].startswith("permessage-deflate")
    assert result["close"] == (4000, "client bye")

    [seen] = setup.origin.wait_closed()
    assert seen.path == "/echo"
    # The client's compression offer reached the origin (only permessage-deflate is ever forwarded).
    assert (seen.header("Sec-WebSocket-Extensions") or "").startswith("permessage-deflate")
    assert seen.messages == ["héllo ✓", b"\x00\x01\xfe\xff", "ping-me"]
    assert seen.close == (4000, "client bye")

    [flow] = setup.websocket_flows()
    assert flow.response.status == 101
    assert flow.request.headers.get("Upgrade", "").lower() == "websocket"
    assert flow.error is None
    data = flow.websocket
    assert (data.close_code, data.close_reason, data.closed_by) == (4000, "client bye", "client")
    records = [(m.direction, m.type, m.content) for m in data.messages]
    assert records[:8] == [
        ("client", "text", "héllo ✓"), ("server", "text", "héllo ✓"),
        ("client", "binary", b"\x00\x01\xfe\xff"), ("server", "binary", b"\x00\x01\xfe\xff"),
        ("client", "ping", b"from-client"), ("server", "pong", b"from-client"),
        ("client", "text", "ping-me"), ("server", "ping", b"from-server"),
    ]
    assert ("client", "pong", b"from-server") in records
    assert records[-2:] == [("client", "close", "client bye"), ("server", "close", "client bye")]
    assert all(m.time >= flow.timings.start for m in data.messages)
    assert [m.size for m in list(data.messages)[:4]] == [len("héllo ✓".encode()), len("héllo ✓".encode()), 4, 4]
    if setup.secure:
        assert flow.client_tls is not None


def test_server_close_code_and_reason_reach_the_client(setup: Setup) -> None:
    async def scenario() -> tuple[int | None, str | None, str]:
        async with setup.client("/echo") as ws:
            await ws.send("close:4001:server bye ✓")
            try:
                await asyncio.wait_for(ws.recv(), 5)
                outcome = "message"
            except ConnectionClosed:
                outcome = "closed"
        return ws.close_code, ws.close_reason, outcome

    code, reason, outcome = run(scenario())
    assert (code, reason, outcome) == (4001, "server bye ✓", "closed")
    [seen] = setup.origin.wait_closed()
    assert seen.close is not None and seen.close[0] == 4001
    [flow] = setup.websocket_flows()
    assert (flow.websocket.close_code, flow.websocket.closed_by) == (4001, "server")


def test_hook_sees_changes_drops_and_injects(setup: Setup) -> None:
    seen_by_hook: list[tuple[str, str, Any]] = []

    def hook(flow: Any, message: Any) -> Any:
        seen_by_hook.append((message.direction, message.type, message.content))
        if message.content == "secret":
            return "redacted"
        if message.content == "drop me":
            message.drop()
        if message.content == "inject":
            flow.websocket.inject("to the client", to="client")
            flow.websocket.inject(b"to the server", to="server")
        if message.direction == "server" and message.content == "ack:redacted":
            return "ack:changed by the hook"
        return None

    setup.proxy.on("websocket_message", hook)

    async def scenario() -> list[Any]:
        got = []
        async with setup.client("/ack") as ws:
            await ws.send("secret")
            got.append(await ws.recv())
            await ws.send("drop me")  # nothing answers a dropped message
            await ws.send("inject")
            got.append(await ws.recv())  # "to the client", injected at once
            got.append(await ws.recv())  # ack:inject
            got.append(await ws.recv())  # ack of the injected binary message
            await ws.close()
        return got

    got = run(scenario())
    assert got == ["ack:changed by the hook", "to the client", "ack:inject", "ack:" + b"to the server".hex()]
    [seen] = setup.origin.wait_closed()
    assert seen.messages == ["redacted", "inject", b"to the server"]
    assert ("client", "text", "secret") in seen_by_hook
    assert ("client", "text", "drop me") in seen_by_hook
    assert ("server", "text", "ack:redacted") in seen_by_hook
    assert all(kind in ("text", "binary") for _, kind, _ in seen_by_hook)
    [flow] = setup.websocket_flows()
    records = [(m.direction, m.content, m.dropped, m.injected) for m in flow.websocket.messages]
    assert ("client", "drop me", True, False) in records
    assert ("server", "to the client", False, True) in records
    assert ("client", b"to the server", False, True) in records


@pytest.mark.parametrize("mode", ["reverse", "connect-tls"])
def test_fragmented_messages_are_whole_for_the_hook(setups: Callable[..., Setup], mode: str) -> None:
    setup = setups(mode)
    whole: list[tuple[str, Any]] = []
    setup.proxy.on("websocket_message", lambda flow, message: whole.append((message.direction, message.content)))

    async def scenario() -> Any:
        async with setup.client("/echo") as ws:
            await ws.send(["frag", "men", "ted"])
            echoed = await ws.recv()
            await ws.send("fragments")
            fragmented = await ws.recv()
            await ws.close()
        return echoed, fragmented

    assert run(scenario()) == ("fragmented", "fragmented ✓")
    assert whole == [("client", "fragmented"), ("server", "fragmented"), ("client", "fragments"),
                     ("server", "fragmented ✓")]


def test_large_messages_stream_both_ways(setup: Setup) -> None:
    size = 3 * 1024 * 1024
    payload = os.urandom(size)

    async def scenario() -> tuple[bytes, int]:
        async with setup.client("/echo") as ws:
            await ws.send(payload)
            echoed = await ws.recv()
            await ws.send(f"big:{size}")
            big = await ws.recv()
            await ws.close()
        return echoed, len(big)

    echoed, big = run(scenario(), timeout=30)
    assert echoed == payload and big == size
    [flow] = setup.websocket_flows()
    sizes = [(m.direction, m.type, m.size) for m in flow.websocket.messages if m.type == "binary"]
    assert sizes == [("client", "binary", size), ("server", "binary", size), ("server", "binary", size)]
    assert all(len(m.content) <= flow.websocket.max_content for m in flow.websocket.messages)


def test_message_over_the_hook_limit_streams_past_the_hook(setups: Callable[..., Setup]) -> None:
    setup = setups("reverse")
    hooked: list[int] = []
    setup.proxy.on("websocket_message", lambda flow, message: hooked.append(message.size))
    size = 5 * 1024 * 1024  # over the 4 MiB a hook may hold

    payload = os.urandom(size)

    async def scenario() -> tuple[Any, Any]:
        async with setup.client("/echo") as ws:
            await ws.send(payload)
            echoed = await ws.recv()
            await ws.send("small")
            small = await ws.recv()
            await ws.close()
        return echoed, small

    echoed, small = run(scenario(), timeout=30)
    assert echoed == payload and small == "small"
    assert hooked == [5, 5]  # only the small ones were held for the hook
    [flow] = setup.websocket_flows()
    assert [m.size for m in flow.websocket.messages if m.type == "binary"] == [size, size]


# -- broken peers -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    pytest.param(bytes([0x81, 0x02]) + b"hi", id="unmasked-frame"),
    pytest.param(masked(0x3, b"x"), id="reserved-opcode"),
])
def test_client_breaking_the_protocol_gets_1002_and_the_server_is_closed(setup: Setup, bad: bytes) -> None:
    sock = setup.raw_handshake("/echo")
    try:
        sock.sendall(masked(0x1, b"fine"))
        # Wait for the echo first: once the client breaks the protocol the
        # proxy fails the connection at once (RFC 6455 7.1.7), and an echo
        # still on its way would be dropped with it.
        echo = recv_exactly(sock, 6)
        sock.sendall(bad)
        frames, closed = read_frames(sock)
    finally:
        sock.close()
    frames = [(echo[0] & 0x0F, echo[2:]), *frames]
    assert (0x1, b"fine") in frames  # the echo of the good message
    assert close_codes(frames) == [1002]
    assert closed
    [seen] = setup.origin.wait_closed()
    assert seen.messages == ["fine"]
    assert seen.close is not None and seen.close[0] == 1002
    [flow] = setup.websocket_flows()
    assert flow.error is not None and "protocol" in flow.error


class RawWSServer:
    """A WebSocket 'server' by hand that answers the handshake, then sends ``bad``."""

    def __init__(self, bad: bytes) -> None:
        self.bad = bad
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> RawWSServer:
        self.thread.start()
        return self

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            head, _ = read_head(conn)
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            time.sleep(0.1)
            conn.sendall(self.bad)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                conn.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    self.closed = True
                    break
                self.received += data

    def stop(self) -> None:
        self.sock.close()
        self.thread.join(timeout=6)


@pytest.mark.parametrize("mode", ["forward", "connect", "reverse"])
@pytest.mark.parametrize("bad", [
    pytest.param(masked(0x1, b"masked"), id="masked-server-frame"),
    pytest.param(bytes([0x8B, 0x01]) + b"x", id="reserved-opcode"),
])
def test_server_breaking_the_protocol_gets_1002_and_the_client_is_closed(
        confdir: Path, mode: str, bad: bytes) -> None:
    raw = RawWSServer(bad).start()
    kwargs: dict[str, Any] = {"port": 0, "confdir": confdir, "resolver": static_resolver(NAMES)}
    if mode == "reverse":
        kwargs.update(mode="reverse", routes={"/ws": {"url": f"http://127.0.0.1:{raw.port}", "strip": True}})
    proxy = Proxy(**kwargs).start()
    setup = Setup(mode, proxy, SimpleNamespace(port=raw.port))  # type: ignore[arg-type]
    try:
        async def scenario() -> tuple[int | None, str]:
            async with setup.client("/x") as ws:
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                    outcome = "message"
                except ConnectionClosed:
                    outcome = "closed"
            return ws.close_code, outcome

        code, outcome = run(scenario())
        assert (code, outcome) == (1002, "closed")
        assert wait_until(lambda: raw.closed, 5)
        assert raw.received[:1] == b"\x88"  # a close frame reached the server ...
        key, payload = raw.received[2:6], raw.received[6:8]
        assert struct.unpack("!H", bytes(b ^ key[i] for i, b in enumerate(payload)))[0] == 1002  # ... 1002
        [flow] = setup.websocket_flows()
        assert flow.error is not None and "server" in flow.error
    finally:
        proxy.stop()
        raw.stop()


@pytest.mark.parametrize("mode", ["forward", "reverse", "connect-tls"])
def test_server_vanishing_closes_the_client_with_a_close_frame(setups: Callable[..., Setup], mode: str) -> None:
    setup = setups(mode)

    async def scenario() -> tuple[int | None, str]:
        async with setup.client("/echo") as ws:
            await ws.send("vanish")
            try:
                await asyncio.wait_for(ws.recv(), 5)
                outcome = "message"
            except ConnectionClosed:
                outcome = "closed"
        return ws.close_code, outcome

    code, outcome = run(scenario())
    assert outcome == "closed"
    assert code == 1001  # a proper close frame, not a dropped connection (1006)
    [flow] = setup.websocket_flows()
    assert flow.websocket.closed_by == "server"


def test_client_vanishing_closes_the_server_side(setup: Setup) -> None:
    sock = setup.raw_handshake("/echo")
    sock.sendall(masked(0x1, b"hello"))
    frames, _ = read_frames(sock, timeout=0.5)
    assert (0x1, b"hello") in frames
    sock.close()
    [seen] = setup.origin.wait_closed()
    assert seen.close is not None and seen.close[0] == 1001
    [flow] = setup.websocket_flows()
    assert flow.websocket.closed_by == "client"


def test_back_to_back_messages_with_a_hook_are_not_stalled(setups: Callable[..., Setup]) -> None:
    setup = setups("reverse")
    setup.proxy.on("websocket_message", lambda flow, message: None)
    sock = setup.raw_handshake("/sink")  # no answer: nothing from the server can unblock the relay
    try:
        sock.sendall(masked(0x1, b"one") + masked(0x1, b"two"))  # one write: one read at the proxy
        assert wait_until(lambda: len(setup.origin.seen[0].messages) >= 2, 2.0), setup.origin.seen[0].messages
    finally:
        sock.close()


# -- forward specifics ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "ws"])
def test_forward_absolute_form_target_with_either_scheme(setups: Callable[..., Setup], scheme: str) -> None:
    setup = setups("forward")

    async def scenario() -> str:
        target = f"{scheme}://origin.test:{setup.origin.port}/echo"
        async with setup.client("/echo", target=target) as ws:
            await ws.send("hi")
            answer = str(await ws.recv())
            await ws.close()
        return answer

    assert run(scenario()) == "hi"
    [seen] = setup.origin.wait_closed()
    assert seen.path == "/echo"
    assert seen.header("Host") == f"origin.test:{setup.origin.port}"
    [flow] = setup.websocket_flows()
    assert (flow.request.host, flow.request.port, flow.request.path) == ("origin.test", setup.origin.port, "/echo")


def test_websocket_through_an_unintercepted_tunnel_is_relayed(setups: Callable[..., Setup],
                                                               test_ca: OriginCA) -> None:
    setup = setups("connect-tls", intercept=False)
    # Not intercepted: the client talks TLS with the origin itself.
    setup.client_ssl = ssl.create_default_context(cafile=str(test_ca.ca_path))

    async def scenario() -> str:
        async with setup.client("/echo") as ws:
            await ws.send("through the tunnel")
            answer = str(await ws.recv())
            await ws.close()
        return answer

    assert run(scenario()) == "through the tunnel"
    wait_until(lambda: any(f.state != "open" for f in setup.proxy.flows), 5)
    assert {f.kind for f in setup.proxy.flows} == {"tunnel"}


def test_several_websockets_at_once(setups: Callable[..., Setup]) -> None:
    setup = setups("reverse")

    async def one(i: int) -> list[Any]:
        async with setup.client("/echo") as ws:
            got = []
            for j in range(5):
                await ws.send(f"{i}-{j}")
                got.append(await ws.recv())
            await ws.close()
        return got

    async def scenario() -> list[list[Any]]:
        return await asyncio.gather(*(one(i) for i in range(8)))

    results = run(scenario())
    assert results == [[f"{i}-{j}" for j in range(5)] for i in range(8)]
    assert len(setup.websocket_flows(8)) == 8


# -- reverse specifics -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reverse", "reverse-tls"])
def test_reverse_websocket_routing_host_and_forwarded_headers(setups: Callable[..., Setup], mode: str) -> None:
    setup = setups(mode)

    async def scenario() -> None:
        async with setup.client("/echo?room=7", additional_headers={"X-Forwarded-For": "203.0.113.9"}) as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close()

    run(scenario())
    [seen] = setup.origin.wait_closed()
    assert seen.path == "/echo?room=7"  # /ws stripped, query kept
    assert seen.header("Host") == f"localhost:{setup.origin.port}"
    assert seen.header("X-Forwarded-For") == "203.0.113.9, 127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == ("https" if mode == "reverse-tls" else "http")
    host = "localhost" if mode == "reverse-tls" else "127.0.0.1"
    assert seen.header("X-Forwarded-Host") == f"{host}:{setup.proxy.port}"
    [flow] = setup.websocket_flows()
    assert flow.request.path == "/echo?room=7"
    assert flow.request.host == "localhost" and flow.request.port == setup.origin.port


def test_reverse_websocket_keep_host(setups: Callable[..., Setup]) -> None:
    setup = setups("reverse", keep_host=True)

    async def scenario() -> None:
        async with setup.client("/echo") as ws:
            await ws.send("x")
            await ws.recv()
            await ws.close()

    run(scenario())
    [seen] = setup.origin.wait_closed()
    assert seen.header("Host") == f"127.0.0.1:{setup.proxy.port}"


def test_reverse_websocket_unrouted_path_is_404(setups: Callable[..., Setup]) -> None:
    setup = setups("reverse")
    with socket.create_connection(("127.0.0.1", setup.proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head, _ = read_head(sock)
    assert status_of(head) == 404
    assert setup.origin.seen == []


# -- the other hooks around a WebSocket ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["async", "thread"])
def test_async_and_threaded_message_hooks_change_messages(setups: Callable[..., Setup], kind: str) -> None:
    setup = setups("reverse")
    if kind == "async":
        async def hook(flow: Any, message: Any) -> Any:
            await asyncio.sleep(0.01)
            return message.content.upper() if isinstance(message.content, str) else None

        setup.proxy.on("websocket_message", hook)
    else:
        def blocking(flow: Any, message: Any) -> Any:
            time.sleep(0.01)
            return message.content.upper() if isinstance(message.content, str) else None

        setup.proxy.on("websocket_message", blocking, thread=True)

    async def scenario() -> list[Any]:
        async with setup.client("/echo") as ws:
            got = []
            for word in ("one", "two"):
                await ws.send(word)
                got.append(await ws.recv())
            await ws.close()
        return got

    # Upper-cased on the way in, and again (unchanged) on the way back.
    assert run(scenario()) == ["ONE", "TWO"]
    assert setup.origin.wait_closed()[0].messages == ["ONE", "TWO"]


def test_request_hooks_apply_to_the_upgrade_request(setups: Callable[..., Setup]) -> None:
    setup = setups("reverse")
    done: list[Any] = []
    setup.proxy.on("request_headers", lambda flow: flow.request.headers.add("X-Hooked", "yes"))
    setup.proxy.on("done", lambda flow: done.append((flow.kind, flow.websocket.close_code)))
    setup.proxy.block(path="/echo-blocked*", status=403)

    async def scenario() -> str:
        async with setup.client("/echo") as ws:
            await ws.send("hi")
            answer = await ws.recv()
            await ws.close()
        try:
            async with setup.client("/echo-blocked"):
                pass
        except InvalidStatus as exc:
            return f"{answer} / refused: {exc.response.status_code}"
        return f"{answer} / not refused"

    assert run(scenario()) == "hi / refused: 403"
    [seen] = setup.origin.wait_closed()
    assert seen.path == "/echo" and seen.header("X-Hooked") == "yes"
    wait_until(lambda: len(done) >= 1, 5)
    assert done[0] == ("websocket", 1000)


def test_server_only_traffic_keeps_the_websocket_alive(setups: Callable[..., Setup]) -> None:
    setup = setups("reverse", idle_timeout=1.0)

    async def scenario() -> list[Any]:
        got: list[Any] = []
        async with setup.client("/echo") as ws:
            await ws.send("ticks:6")  # then the client only listens, for ~1.8 s
            try:
                for _ in range(6):
                    got.append(await asyncio.wait_for(ws.recv(), 3))
            except ConnectionClosed:
                got.append(("closed", ws.close_code))
            await ws.close()
        return got

    assert run(scenario()) == [f"tick {i}" for i in range(6)]
