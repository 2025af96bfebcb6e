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
``conn_tunnels`` (CONNECT, interception, relays; the tunnel's state is a
``tunnel.Tunnel``), ``conn_socks5`` (a SOCKS5 client's handshake, up to its
tunnel), ``conn_websockets`` (over a ``wssession.WebSocketSession``) and
``conn_lifecycle`` (hooks returning, timers). ``base.ConnectionBase`` holds
the shared state, the output path and the endings, and names the methods one
part offers the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..vocab import HookName
from . import commands as cmd
from . import events as ev
from . import layers as ly
from .conn_holds import Holds
from .conn_alpn import AlpnFirst
from .conn_lifecycle import Lifecycle
from .conn_requests import Requests
from .conn_responses import Responses
from .conn_socks5 import Socks5Side
from .conn_streams import Streams
from .conn_tunnels import Tunnels
from .conn_upstreams import Upstreams
from .conn_websockets import WebSockets
from .config import ProxyConfig
from .exchange import Exchange
from .state import IN_HTTP, Phase, Upstream


AfterHook = Callable[[Any, Exchange, Any, Any], None]

#: What follows each hook: the exchange moves on from the state the hook held it in.
_AFTER_HOOK: dict[HookName, AfterHook] = {
    "request_headers": Requests._after_request_headers,
    "request": Requests._after_request_hook,
    "response_headers": Responses._after_response_headers,
    "response": Responses._after_response_hook,
    "response_chunk": Responses._after_chunk_hook,
    "tunnel": Tunnels._after_tunnel_hook,
    "websocket_message": lambda self, ex, result, payload: self._ws_after_hook(payload, result),
}


class ProxyConnection(Requests, Responses, Upstreams, Tunnels, WebSockets, Lifecycle, Socks5Side, Holds, Streams,
                      AlpnFirst):
    """The proxy state machine for one client connection.

    ``handle(event)`` returns the commands to execute, in order. It never
    raises on any bytes from a peer: bad input becomes an HTTP answer.
    """

    def __init__(self, config: ProxyConfig, client_address: tuple[str, int] | None = None) -> None:
        super().__init__(config, client_address)
        # On the instance, not the class: CPython 3.11 looks a class attribute
        # up in full on every read through an instance (twice per request here).
        self._after_hooks = _AFTER_HOOK

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
        if self._phase is IN_HTTP:  # the common case, without a table lookup
            self._feed_client(data)
            return
        route = _CLIENT_BYTES.get(self._phase)
        if route is not None:  # CLOSED: nothing is read any more
            route(self, data)

    # _client_events and _upstream_events are _deliver unrolled for a batch:
    # they run for every event of every request (HTTP/1 forwarding's hot path).

    def _client_events(self, events: list[ly.LayerEvent], *, any_phase: bool = False) -> None:
        exchanges = self._exchanges
        for event in events:
            if self._phase is not IN_HTTP and not any_phase:
                return  # a CONNECT or an upgrade took the stream over: the rest is not HTTP
            kind = type(event)
            ex = None if kind in _CONNECTION_WIDE else exchanges.get(event.xid)  # type: ignore[union-attr]
            if ex is not None and ex.waiting is not None:
                self._hold_for_hook(None, ex, event)
            else:
                _FROM_CLIENT[kind](self, ex, event)

    def _upstream_events(self, up: Upstream, events: list[ly.LayerEvent]) -> None:
        exchanges = up.exchanges
        for event in events:
            if up.id not in self._upstreams:
                return  # dropped by an earlier event: the rest is for nobody
            kind = type(event)
            ex = None if kind in _CONNECTION_WIDE else exchanges.get(event.xid)  # type: ignore[union-attr]
            if ex is not None and ex.waiting is not None:
                self._hold_for_hook(up, ex, event)
            else:
                _FROM_UPSTREAM[kind](self, up, ex, event)

    def _deliver(self, source: Upstream | None, event: ly.LayerEvent) -> None:
        """One layer event to its handler; to its exchange's inbox while that waits for a hook."""
        if source is None:
            self._client_events([event], any_phase=True)
        else:
            self._upstream_events(source, [event])

    def _hold_for_hook(self, source: Upstream | None, ex: Exchange, event: ly.LayerEvent) -> None:
        """``ex`` waits for a hook: keep ``event`` for after it, and read no more from its source meanwhile."""
        if ex.inbox is None:
            ex.inbox = []
        ex.inbox.append((source, event))
        if source is None:
            if not self._client.multiplexed:
                self._pause_client("hook")  # HTTP/2: the stream is paused (no WINDOW_UPDATE), not the socket
        else:
            if source.layer.multiplexed:
                source.layer.pause(ex.up_xid)  # HTTP/2: that stream's acknowledgements wait, the others flow
            else:
                self._pause_upstream(source)



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
    ev.ClientConnected: ProxyConnection._on_client_accepted,  # conn_holds: the policy may reset it first
    ev.ClientDataReceived: ProxyConnection._on_client_data,
    ev.UpstreamDataReceived: ProxyConnection._on_upstream_data,
    ev.UpstreamConnected: ProxyConnection._on_upstream_connected,
    ev.UpstreamConnectFailed: ProxyConnection._on_upstream_connect_failed,
    ev.TimerFired: ProxyConnection._on_timer,
    ev.HookReturned: ProxyConnection._on_hook_returned,
    ev.ClientBackpressure: ProxyConnection._on_client_backpressure,
    ev.HoldReleased: ProxyConnection._on_hold_released,
    ev.BodyPiece: ProxyConnection._on_body_piece,
}


def _on_closed(self: ProxyConnection, event: ev.ConnectionClosed) -> None:
    if event.upstream is None:
        self._on_client_closed(event)
    else:
        self._on_upstream_closed(event)


_HANDLERS[ev.ConnectionClosed] = _on_closed




# -- what each layer event does (ex: its exchange, None if it has none or is over) -------------------


#: Layer events about the whole connection (no exchange id).
_CONNECTION_WIDE = frozenset({ly.LayerFailed, ly.ConnectionGoingAway, ly.PeerClosed})


def _request_trailers(self: ProxyConnection, ex: Exchange | None, event: ly.TrailersReceived) -> None:
    if ex is not None:
        ex.request_trailers = event.headers


def _client_failed(self: ProxyConnection, ex: Exchange | None, event: ly.LayerFailed) -> None:
    if self._client.multiplexed:  # HTTP/2: the GOAWAY is out; every stream ends with it
        self._abort(f"bad HTTP/2 from the client: {event.reason}")
        return
    self._on_client_failed(event.status_hint, event.reason)


def _client_reset(self: ProxyConnection, ex: Exchange | None, event: ly.StreamReset) -> None:
    """The client cancelled a stream (RST_STREAM), or h2 refused it: that exchange ends, the others go on."""
    if ex is None:
        return
    up = ex.upstream
    self._fail_exchange(ex, f"the client reset the stream: {event.reason}")
    if up is not None:
        self._abandon_upstream(ex, up)


def _client_window(self: ProxyConnection, ex: Exchange | None, event: ly.DataSent) -> None:
    """The client's window took held bytes: read on from the upstream that waited for it."""
    if ex is not None:
        self._client_took(ex)


def _client_going_away(self: ProxyConnection, ex: Exchange | None, event: ly.ConnectionGoingAway) -> None:
    """The client's GOAWAY: the streams it started go on; the layer says when the connection is done."""


def _client_closed(self: ProxyConnection, ex: Exchange | None, event: ly.PeerClosed) -> None:
    self._on_client_eof()


def _ignored(self: ProxyConnection, ex: Exchange | None, event: ly.LayerEvent) -> None:
    """Events HTTP/1 towards the client does not produce."""


_FROM_CLIENT: dict[type[ly.LayerEvent], Callable[[ProxyConnection, Exchange | None, Any], None]] = {
    ly.HeadReceived: ProxyConnection._on_request,
    ly.DataReceived: ProxyConnection._on_request_data,
    ly.TrailersReceived: _request_trailers,
    ly.MessageEnded: ProxyConnection._on_request_end,
    ly.LayerFailed: _client_failed,
    ly.PeerClosed: _client_closed,
    ly.InformationalReceived: _ignored,
    ly.DataSent: _client_window,
    ly.StreamReset: _client_reset,
    ly.ConnectionGoingAway: _client_going_away,
}


def _informational(self: ProxyConnection, up: Upstream, ex: Exchange | None,
                   event: ly.InformationalReceived) -> None:
    if ex is not None:
        self._on_informational(up, ex, event.head)


def _response_trailers(self: ProxyConnection, up: Upstream, ex: Exchange | None,
                       event: ly.TrailersReceived) -> None:
    if ex is not None:
        ex.response_trailers = event.headers


def _upstream_layer_failed(self: ProxyConnection, up: Upstream, ex: Exchange | None,
                           event: ly.LayerFailed) -> None:
    self._upstream_failed(up, event.reason, event.status_hint)


def _upstream_peer_closed(self: ProxyConnection, up: Upstream, ex: Exchange | None,
                          event: ly.PeerClosed) -> None:
    self._drop_upstream(up)


def _upstream_reset(self: ProxyConnection, up: Upstream, ex: Exchange | None, event: ly.StreamReset) -> None:
    """The origin reset one stream (or did not process it, past its GOAWAY): that exchange only."""
    if ex is not None:
        self._upstream_stream_failed(ex, up, event)


def _upstream_window(self: ProxyConnection, up: Upstream, ex: Exchange | None, event: ly.DataSent) -> None:
    """The origin's window took held request bytes: the client may send more."""


def _upstream_going_away(self: ProxyConnection, up: Upstream, ex: Exchange | None,
                         event: ly.ConnectionGoingAway) -> None:
    """The origin's GOAWAY: no new streams there (the layer refuses them, retryable); new requests open another."""


_FROM_UPSTREAM: dict[type[ly.LayerEvent], Callable[[ProxyConnection, Upstream, Exchange | None, Any], None]] = {
    ly.HeadReceived: ProxyConnection._on_response,
    ly.InformationalReceived: _informational,
    ly.DataReceived: ProxyConnection._on_response_data,
    ly.TrailersReceived: _response_trailers,
    ly.MessageEnded: ProxyConnection._on_response_end,
    ly.LayerFailed: _upstream_layer_failed,
    ly.PeerClosed: _upstream_peer_closed,
    ly.DataSent: _upstream_window,
    ly.StreamReset: _upstream_reset,
    ly.ConnectionGoingAway: _upstream_going_away,
}
