"""Replay: send a captured request again, through the proxy, as a new flow.

Theory of operation. Replay is an ordinary client of the proxy: it opens a
TCP connection to ``proxy.url`` and sends the request the way a browser
would (absolute-form for http; CONNECT, then TLS trusting the proxy's CA,
then origin-form for https). So the request passes through the hooks, is
answered by mocks, reaches the upstream through the pool, and is recorded
in ``proxy.flows`` like any other exchange.

Finding the new flow: the proxy records each flow's client address (the
peer's IP and port). The replay connection is dedicated to one request, and
its local ``(ip, port)`` cannot belong to any other open connection, so the
flow the proxy starts for that address while the connection is open is the
replay. A watcher registered on the proxy before the first byte is sent (and
removed after) sees flows start and finish; it tags the new flow with
``metadata["replay_of"]`` before any hook runs, and hands it back when it
finishes. Nothing is added to the request (no marker header reaches hooks or
the upstream), concurrent traffic cannot be confused with it, and it works
even when the table is full or cleared.

The client here is blocking and runs on the caller's thread, never on the
proxy's loop, so a notebook cell or an async function (through
:func:`replay_async`) can wait on it without deadlocking the proxy.

HTTP/2 flows. The replay client speaks HTTP/1.1, so a flow the client made
over HTTP/2 is replayed over HTTP/1.1 (the new flow's ``http_version`` says
so; the proxy still reaches the upstream in whatever protocol it selects).
Its head is carried the way the proxy carries an h2 request to an HTTP/1.1
upstream: pseudo-header fields are not sent as fields, ``Host`` comes from
the URL's authority, several ``cookie`` fields are joined with ``"; "``
(RFC 9113 8.2.3). The request line always says ``HTTP/1.1``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, cast

from ._wire import DEFAULT_PORTS, format_authority
from .core.h2translate import join_cookies
from .core.http1 import end_to_end_fields
from .core.proxyauth import basic_value
from .core.socks5 import Method, encode_connect, encode_greeting
from .flow import Flow, ReplayError, Request
from .vocab import protocol_name

if TYPE_CHECKING:
    import http.client
    from collections.abc import Iterator

    from .core.config import Route
    from .proxy import Proxy

#: Besides the hop-by-hop fields (core.http1.end_to_end_fields): the framing,
#: recomputed for the body, which is sent whole without trailers.
_REFRAMED_FIELDS = (b"content-length", b"trailer")
_READ_SIZE = 64 * 1024



def replay(flow: Flow, proxy: Proxy | None = None, *, timeout: float = 30.0) -> Flow:
    """Send ``flow``'s request again through ``proxy`` (default: the one that captured it).

    Returns the new flow once it has finished (it may carry an ``error``).
    Raises ReplayError when there is no running proxy, the request cannot be
    sent as it was (a truncated body, a CONNECT), or no flow appears within
    ``timeout`` seconds.
    """
    proxy = _proxy_for(flow, proxy)
    request = flow.request
    _check_replayable(request)
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(_proxy_address(proxy), timeout=timeout)
    except OSError as exc:
        raise ReplayError(f"cannot connect to the proxy at {proxy.url}: {exc}") from exc
    watcher = _Watcher(_local_address(sock), flow.id)
    unwatch = proxy._watch(watcher)
    try:
        failure = _exchange(sock, request, proxy, timeout, deadline)
        tunnelled = proxy.mode == "socks5" or (_is_tls(request) and proxy.mode != "reverse")
        found = watcher.wait(tunnelled=tunnelled, timeout=max(deadline - time.monotonic(), 0.1))
    finally:
        unwatch()
    if found is None:
        raise ReplayError(f"no flow recorded for the replay of #{flow.id}: {failure or 'timed out'}") from failure
    return found


async def replay_async(flow: Flow, proxy: Proxy | None = None, *, timeout: float = 30.0) -> Flow:
    """:func:`replay` for async code: the blocking client runs on a worker thread."""
    return await asyncio.to_thread(replay, flow, proxy, timeout=timeout)


# -- checks -------------------------------------------------------------------------


def _proxy_for(flow: Flow, proxy: Proxy | None) -> Proxy:
    proxy = proxy if proxy is not None else cast("Proxy | None", flow._owner)
    if proxy is None:
        raise ReplayError(f"flow #{flow.id} was not captured by a proxy here (loaded from a file?): "
                          "pass one, flow.replay(proxy=...)")
    if not proxy.running:
        raise ReplayError(f"the proxy at {proxy.url} is not running: start it first")
    if proxy.url.startswith("https:"):
        raise ReplayError("replay through a proxy that listens with TLS is not supported yet")
    if threading.current_thread() is proxy._thread:
        raise ReplayError("flow.replay() would block the proxy's own loop: use "
                          "`await flow.replay_async()` in an async hook, or a hook with thread=True")
    return proxy


def _check_replayable(request: Request) -> None:
    if request.method == "CONNECT":
        raise ReplayError("a CONNECT tunnel cannot be replayed; replay the requests inside it")
    if request.body_dropped and request.body_size and not request.content:
        raise ReplayError("the request body was dropped to keep the capture within max_capture_bytes "
                          "(start the proxy with save= to keep bodies on disk)")
    if request.truncated:
        raise ReplayError(f"only {len(request.content)} of the request body's {request.body_size} bytes "
                          "were kept (body_capture_limit), so it cannot be sent again")
    if request.scheme not in DEFAULT_PORTS:
        raise ReplayError(f"cannot replay a {request.scheme!r} request")


def _is_tls(request: Request) -> bool:
    return request.scheme in ("https", "wss")


def _proxy_address(proxy: Proxy) -> tuple[str, int]:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(proxy.host, proxy.host)
    return host, proxy.port


def _local_address(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


# -- the client ------------------------------------------------------------------------


def _exchange(sock: socket.socket, request: Request, proxy: Proxy, timeout: float,
              deadline: float) -> Exception | None:
    """Send the request and read the whole answer; the error, if it failed. Closes ``sock``."""
    import http.client  # here, not at the top: only replay needs it

    stream: socket.socket = sock
    try:
        if proxy.mode == "socks5":
            _socks_connect(sock, request, proxy, deadline)
        elif _is_tls(request) and proxy.mode != "reverse":
            _open_tunnel(sock, request, proxy, deadline)
        if _is_tls(request) and proxy.mode != "reverse":
            context = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
            stream = context.wrap_socket(sock, server_hostname=request.host)
        target = _target(request, proxy)
        connection = http.client.HTTPConnection(request.host, request.port, timeout=timeout)
        connection.sock = stream  # the connection is ours already: http.client only frames
        _send_request(connection, request, target, _auth_fields(proxy) if target == request.url else [])
        _drain(connection.getresponse(), deadline)
        return None
    except (OSError, http.client.HTTPException, ValueError, ReplayError) as exc:
        return exc
    finally:
        stream.close()
        sock.close()


def _target(request: Request, proxy: Proxy) -> str:
    """The request-target to send: origin-form inside a tunnel or to a reverse proxy."""
    if proxy.mode == "reverse":
        return _reverse_path(request, proxy)
    return request.path if _is_tls(request) or proxy.mode == "socks5" else request.url


def _reverse_path(request: Request, proxy: Proxy) -> str:
    """The client path that the reverse proxy's routes send to this request's upstream.

    A captured reverse-mode request holds where it went (the route applied,
    a prefix perhaps stripped); the route is inverted, then checked by
    routing the candidate forward again.
    """
    routes = proxy._config.routes
    for candidate in _reverse_candidates(request, routes):
        chosen = next((r for r in routes if r.matches(candidate)), None)
        if chosen is not None and _lands(chosen, candidate, request):
            return candidate
    raise ReplayError(f"no route of this reverse proxy leads to {request.url}")


def _reverse_candidates(request: Request, routes: tuple[Route, ...]) -> Iterator[str]:
    for route in routes:
        if route.strip:
            yield route.prefix.rstrip("/") + request.path
        base = route.path.rstrip("/")
        if request.path.startswith(base):
            yield request.path[len(base):] or "/"


def _lands(route: Route, path: str, request: Request) -> bool:
    scheme = {"ws": "http", "wss": "https"}.get(route.scheme, route.scheme)
    return ((scheme, route.host, route.port) == (request.scheme, request.host, request.port)
            and route.target(path) == request.path)


def _auth_fields(proxy: Proxy) -> list[tuple[str, bytes]]:
    """The proxy's own credentials, when it asks clients for some (``proxy_auth=``)."""
    if proxy._config.credentials is None:
        return []
    return [("Proxy-Authorization", basic_value(*proxy._replay_auth))]


def _socks_connect(sock: socket.socket, request: Request, proxy: Proxy, deadline: float) -> None:
    """The SOCKS5 handshake (RFC 1928, RFC 1929 with the proxy's own credentials), up to the tunnel."""
    auth = proxy._config.credentials is not None
    sock.sendall(encode_greeting((Method.USERNAME_PASSWORD,) if auth else (Method.NO_AUTH,)))
    if _recv(sock, 2, deadline)[1:] == b"\xff":
        raise ReplayError("the SOCKS5 proxy accepted no authentication method")
    if auth:
        user, password = (part.encode() for part in proxy._replay_auth)
        sock.sendall(bytes([1, len(user)]) + user + bytes([len(password)]) + password)
        if _recv(sock, 2, deadline) != b"\x01\x00":
            raise ReplayError("the SOCKS5 proxy refused the replay's credentials")
    sock.sendall(encode_connect(request.host, request.port))
    reply = _recv(sock, 4, deadline)
    if reply[1] != 0:
        raise ReplayError(f"the SOCKS5 proxy refused the CONNECT (reply {reply[1]})")
    _recv(sock, {1: 4, 4: 16}.get(reply[3], 0) + 2, deadline)  # the bound address and port


def _recv(sock: socket.socket, count: int, deadline: float) -> bytes:
    data = b""
    while len(data) < count:
        if time.monotonic() > deadline:
            raise ReplayError("the SOCKS5 proxy did not answer")
        piece = sock.recv(count - len(data))
        if not piece:
            raise ReplayError("the SOCKS5 proxy closed the connection during its handshake")
        data += piece
    return data


def _open_tunnel(sock: socket.socket, request: Request, proxy: Proxy, deadline: float) -> None:
    authority = format_authority(request.host, request.port, None)
    auth = "".join(f"{n}: {v.decode('ascii')}\r\n" for n, v in _auth_fields(proxy))
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n".encode("ascii"))
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > 65536 or time.monotonic() > deadline:
            raise ReplayError("the proxy did not answer the CONNECT")
        # One byte at a time: nothing after the head may be taken from TLS.
        byte = sock.recv(1)
        if not byte:
            raise ReplayError("the proxy closed the connection during CONNECT")
        head += byte
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    if status_line.split(" ", 2)[1:2] != ["200"]:
        raise ReplayError(f"the proxy refused the CONNECT: {status_line}")


def _replay_fields(request: Request) -> list[tuple[str, bytes]]:
    """The fields to send on HTTP/1.1: hop-by-hop and framing fields dropped, an h2 head translated."""
    fields, _ = end_to_end_fields(request.headers.fields)
    # A pseudo-header (":authority", from an h2 head) is never a field on HTTP/1.1.
    fields = [(n, v) for n, v in fields if not n.startswith(b":")]
    if protocol_name(request.http_version) in ("HTTP/2", "HTTP/3"):
        fields = join_cookies(fields)  # h2 splits cookies; HTTP/1.1 wants one field (RFC 9113 8.2.3)
    kept = [(n.decode("latin-1"), v) for n, v in fields if n.lower() not in _REFRAMED_FIELDS]
    if not any(n.lower() == "host" for n, _ in kept):
        kept.insert(0, ("Host", format_authority(request.host, request.port, request.scheme).encode("ascii")))
    if request.content or request.method in ("POST", "PUT", "PATCH"):
        kept.append(("Content-Length", str(len(request.content)).encode("ascii")))
    return kept


def _send_request(connection: http.client.HTTPConnection, request: Request, target: str,
                  extra: list[tuple[str, bytes]]) -> None:
    connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
    for name, value in _replay_fields(request) + extra:
        connection.putheader(name, value)
    connection.endheaders(request.content or None)


def _drain(response: http.client.HTTPResponse, deadline: float) -> None:
    """Read the answer to its end (the flow finishes then), without keeping it."""
    while time.monotonic() < deadline:
        if not response.read(_READ_SIZE):
            return
    raise ReplayError("timed out reading the replayed response")


# -- finding the new flow -------------------------------------------------------------------


class _Watcher:
    """Told of every flow the proxy starts and finishes; keeps the ones from one client address."""

    def __init__(self, address: tuple[str, int], original_id: int) -> None:
        self.address = address
        self.original_id = original_id
        self._condition = threading.Condition()
        self._finished: dict[str, Flow] = {}

    def _ours(self, flow: Flow) -> bool:
        address = flow.client_address
        return address is not None and (str(address[0]), int(address[1])) == self.address

    def flow_started(self, flow: Flow) -> None:
        if self._ours(flow) and flow.request.method != "CONNECT":
            flow.metadata["replay_of"] = self.original_id

    def flow_finished(self, flow: Flow) -> None:
        if not self._ours(flow):
            return
        with self._condition:
            self._finished.setdefault("tunnel" if flow.request.method == "CONNECT" else "http", flow)
            self._condition.notify_all()

    def wait(self, *, tunnelled: bool, timeout: float) -> Flow | None:
        """The replayed flow; for https the tunnel's flow if nothing got through it."""
        def ready() -> bool:
            return "http" in self._finished or (tunnelled and "tunnel" in self._finished)

        with self._condition:
            self._condition.wait_for(ready, timeout)
            return self._finished.get("http") or self._finished.get("tunnel")
