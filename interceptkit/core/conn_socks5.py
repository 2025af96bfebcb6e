"""ProxyConnection, part: a SOCKS5 client side (``mode="socks5"``), up to the tunnel.

The client's first bytes are a SOCKS5 handshake (RFC 1928; RFC 1929
username/password against the proxy's credentials). Its CONNECT becomes a
tunnel flow exactly like an HTTP ``CONNECT``: the ``tunnel`` hook decides,
then conn_tunnels sniffs and intercepts, or relays. Only the answers differ:
a SOCKS5 reply instead of ``200 Connection established`` or an HTTP error.
See connection.py for the theory of operation.
"""

from __future__ import annotations

from .._wire import format_address
from ..flow import Headers, Request
from .base import ConnectionBase
from .socks5 import ConnectRequested, HandshakeFailed, Reply, Socks5Handshake
from .exchange import Exchange
from .state import Phase


class Socks5Side(ConnectionBase):
    """SOCKS5 mode: owns the handshake (core/socks5.py) until the tunnel takes the stream over."""

    def _init_socks5(self) -> None:
        self._socks: Socks5Handshake | None = None
        if self._config.mode == "socks5":
            credentials = self._config.credentials
            self._socks = Socks5Handshake(credentials.check if credentials is not None else None)
            self._enter(Phase.SOCKS)

    def _socks_bytes(self, data: bytes) -> None:
        """Client bytes during the handshake, and while its CONNECT waits for an answer."""
        socks = self._socks
        if socks is None:
            return
        try:
            events = socks.receive_data(data)
        except Exception as exc:  # the user's checker (RFC 1929): its failure refuses the client
            self._log("error", f"the proxy_auth checker raised {exc!r}; refusing the client")
            events = [HandshakeFailed("the credentials check failed", Reply.GENERAL_FAILURE)]
        self._to_client(socks.data_to_send())
        for event in events:
            if isinstance(event, ConnectRequested):
                self._on_socks_connect(event)
            else:
                self._socks_failed(event)

    def _connecting_bytes(self, data: bytes) -> None:
        """CONNECTING: h11 holds an HTTP client's bytes (it is past the CONNECT); SOCKS5 keeps its own."""
        if self._socks is not None:
            self._socks_bytes(data)
        else:
            self._feed_client(data)

    def _socks_failed(self, event: HandshakeFailed) -> None:
        client = format_address(*self._client_address) if self._client_address else "client"
        code = f" (reply: {event.reply.name.lower().replace('_', ' ')})" if event.reply is not None else ""
        self._log("warning", f"SOCKS5 handshake from {client} failed: {event.reason}{code}")
        self._close_client()  # what the handshake queued (its answer) goes out first

    def _on_socks_connect(self, event: ConnectRequested) -> None:
        if event.user is not None:
            self._set_proxy_user(event.user)
        # Bytes sent before our answer wait in the handshake: read no more meanwhile.
        self._pause_client("pipeline")
        request = Request(
            method="CONNECT", scheme="https" if event.port == 443 else "tcp", host=event.host,
            port=event.port, path="", http_version="SOCKS5", headers=Headers(),
            authority=format_address(event.host, event.port),
        )
        self._begin_tunnel(Exchange(0, self._new_flow(request), absolute_form=False))

    def _socks_reply(self, code: Reply) -> bytes:
        """Answer the CONNECT; for ``SUCCEEDED`` the client's bytes that came after it (the tunnel's)."""
        socks = self._socks
        assert socks is not None
        socks.reply(code)
        self._to_client(socks.data_to_send())
        if code is not Reply.SUCCEEDED:
            return b""
        self._resume_client("pipeline")
        return socks.trailing_data  # later bytes take the tunnel's route, not the handshake's
