"""ProxyConnection: the proxy logic of one client connection, with no I/O.

Theory of operation
-------------------
The transport feeds events (bytes arrived, upstream connected, timer due)
into :meth:`ProxyConnection.handle` and executes the commands it returns
(send bytes, open an upstream, close). Everything a proxy decides is here.

A connection is in one :class:`Phase`. In ``HTTP`` an h11 SERVER connection
parses the client's requests; each request becomes an :class:`Exchange` with
a :class:`~interceptkit.flow.Flow`, and is re-sent on an h11 CLIENT connection
to the upstream (one upstream is bound to the client connection while the
client keeps asking the same host, so keep-alive holds end to end). The
response travels back the same way. h11 frames both hops; this module
removes what belongs to one hop only and adds ``Via``.

``CONNECT`` opens an upstream and, once it is connected, switches to
``TUNNEL``: bytes pass unchanged both ways. A ``101 Switching Protocols``
answer does the same after the upgrade handshake.

``CONNECT`` to a host we intercept is answered at once (``SNIFF``): the
tunnel's first bytes decide whether it is TLS (decrypted with a leaf for its
SNI, then parsed as HTTP like any other client), plain HTTP, or something to
relay unchanged. A WebSocket ``101`` switches to ``WEBSOCKET``: wsproto parses
frames on both sides so hooks see whole messages.

A hook is a pause: the core emits ``RunHook(call=n)``, stops reading that
exchange, and takes it up again in a continuation when ``HookReturned(call=n)``
arrives. With no hook attached the continuation runs at once.

Bytes meant for one peer in one ``handle`` call are joined into a single
send command, so a small response costs one write.

Layout
------
The class is assembled from one mixin per concern, each in its own module:
``conn_requests`` (client side, request path), ``conn_responses`` (answers
back to the client), ``conn_upstreams`` (connections towards servers),
``conn_tunnels`` (CONNECT, interception, relays), ``conn_socks5`` (a SOCKS5
client's handshake, up to its tunnel), ``conn_websockets`` and
``conn_lifecycle`` (hooks returning, timers). ``base.ConnectionBase`` holds
the shared state, the output path and the endings, and names the methods one
part offers the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import commands as cmd
from . import events as ev
from .conn_lifecycle import Lifecycle
from .conn_requests import Requests
from .conn_responses import Responses
from .conn_socks5 import Socks5Side
from .conn_tunnels import Tunnels
from .conn_upstreams import Upstreams
from .conn_websockets import WebSockets
from .state import Phase


class ProxyConnection(Requests, Responses, Upstreams, Tunnels, WebSockets, Lifecycle, Socks5Side):
    """The proxy state machine for one client connection.

    ``handle(event)`` returns the commands to execute, in order. It never
    raises on any bytes from a peer: bad input becomes an HTTP answer.
    """

    def handle(self, event: ev.Event) -> list[cmd.Command]:
        """Process one event; return the commands it calls for."""
        self._begin(event.time)
        try:
            _HANDLERS[type(event)](self, event)
        except Exception as exc:  # a bug here must cost one connection, not the proxy
            self._internal_error(exc)
        return self._take_commands()

    def _route_client_bytes(self, data: bytes) -> None:
        """Client bytes go where the connection's phase says (the table below)."""
        route = _CLIENT_BYTES.get(self._phase)
        if route is not None:  # CLOSED: nothing is read any more
            route(self, data)


#: Who takes the client's bytes in each phase. CONNECTING: h11 holds them
#: (its state is past the CONNECT), or the SOCKS5 handshake, until the tunnel is up.
_CLIENT_BYTES: dict[Phase, Callable[[ProxyConnection, bytes], None]] = {
    Phase.HTTP: Requests._feed_client,
    Phase.SOCKS: Socks5Side._socks_bytes,
    Phase.CONNECTING: Socks5Side._connecting_bytes,
    Phase.SNIFF: Tunnels._sniff,
    Phase.TUNNEL: Tunnels._relay_to_upstream,
    Phase.WEBSOCKET: WebSockets._ws_client_bytes,
}

Handler = Callable[["ProxyConnection", Any], None]

_HANDLERS: dict[type[ev.Event], Handler] = {
    ev.ClientConnected: ProxyConnection._on_client_connected,
    ev.ClientDataReceived: ProxyConnection._on_client_data,
    ev.UpstreamDataReceived: ProxyConnection._on_upstream_data,
    ev.UpstreamConnected: ProxyConnection._on_upstream_connected,
    ev.UpstreamConnectFailed: ProxyConnection._on_upstream_connect_failed,
    ev.TimerFired: ProxyConnection._on_timer,
    ev.HookReturned: ProxyConnection._on_hook_returned,
    ev.ClientBackpressure: ProxyConnection._on_client_backpressure,
}


def _on_closed(self: ProxyConnection, event: ev.ConnectionClosed) -> None:
    if event.upstream is None:
        self._on_client_closed(event)
    else:
        self._on_upstream_closed(event)


_HANDLERS[ev.ConnectionClosed] = _on_closed


