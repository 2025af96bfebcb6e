"""The tunnel of one client connection: a CONNECT (HTTP or SOCKS5), or an upgrade relayed unparsed.

:class:`Tunnel` owns what a tunnel is made of, so that the connection part
that acts on it (``conn_tunnels.py``) decides and emits commands while the
state itself has one owner: the tunnel's flow, the bytes the client sent
that nobody consumed yet (early data, or the sniffed start), whether the
CONNECT was answered, the origin and server name inside an intercepted
tunnel, the ALPN offer of the client's ClientHello, and the client's TLS
endpoint with what it negotiated. Its :meth:`Tunnel.sniff` reads the first
bytes and returns a :class:`SniffVerdict`: TLS, HTTP, raw, or wait.
No I/O happens here.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import Enum

from ..flow import Flow, TLSInfo
from ..vocab import ConnectCause
from .client_hello import ClientHello, TLSParseError, looks_like_tls, parse_client_hello
from .http1 import looks_like_http
from .tls import TLSEndpoint

#: Bytes of a tunnel's first message we wait for before giving up on TLS.
SNIFF_LIMIT = 64 * 1024


class Sniffed(Enum):
    """What a tunnel's first bytes are."""

    WAIT = "wait"  # not enough bytes to tell yet
    TLS = "tls"  # a whole ClientHello: decrypt
    HTTP = "http"  # an HTTP/1 request line: parse it
    RAW = "raw"  # anything else (or a hello past SNIFF_LIMIT, or broken): relay it unchanged


@dataclass(frozen=True, slots=True)
class SniffVerdict:
    """The sniff decision, with the ClientHello when it is TLS."""

    kind: Sniffed
    hello: ClientHello | None = None


_WAIT = SniffVerdict(Sniffed.WAIT)
_HTTP = SniffVerdict(Sniffed.HTTP)
_RAW = SniffVerdict(Sniffed.RAW)


def sniff(buf: bytes) -> SniffVerdict:
    """Decide from the first bytes of a tunnel (all of them so far) what it carries."""
    verdict = looks_like_tls(buf)
    if verdict is None:
        return _WAIT
    if not verdict:
        return _HTTP if looks_like_http(buf) else _RAW
    try:
        hello = parse_client_hello(buf)
    except TLSParseError:
        return _RAW
    if hello is not None:
        return SniffVerdict(Sniffed.TLS, hello)
    return _RAW if len(buf) > SNIFF_LIMIT else _WAIT


class Tunnel:
    """The tunnel of one client connection, and the client's TLS endpoint.

    Owns: the tunnel's flow (a CONNECT, or an upgrade relayed unparsed; None
    once it is over or decrypted), its early bytes (take/keep), whether the
    CONNECT was answered, the origin and server name (SNI) of an intercepted
    tunnel, the ALPN offer of the client's ClientHello, the client's TLS
    endpoint and its ``TLSInfo``, and why the upstream of the tunnel could
    not be reached (for a SOCKS5 reply, only while that failure is handled).
    The client TLS endpoint also serves reverse mode's TLS from the first byte.
    Read through the properties (``origin`` and ``tls``, read on every
    request, are plain attributes); written only through the methods.
    """

    __slots__ = ("_flow", "_early", "_answered", "origin", "_server_name", "_client_offer",
                 "tls", "_tls_info", "_cause")

    def __init__(self, listen_context: ssl.SSLContext | None = None) -> None:
        """``listen_context``: TLS from the first byte (reverse mode), else None."""
        self._flow: Flow | None = None
        self._early = b""
        self._answered = False
        #: Inside an intercepted CONNECT: where every request goes.
        self.origin: tuple[str, str, int] | None = None
        self._server_name: str | None = None
        #: The protocols the client's ClientHello offered (ALPN), in its order.
        self._client_offer: tuple[str, ...] = ()
        #: The client's TLS endpoint, when the tunnel (or reverse mode's listener) decrypts.
        self.tls: TLSEndpoint | None = None
        self._tls_info: TLSInfo | None = None
        self._cause: ConnectCause = "other"
        if listen_context is not None:
            self._start_tls(listen_context, TLSInfo())

    # -- reads ------------------------------------------------------------
    @property
    def flow(self) -> Flow | None:
        return self._flow

    @property
    def answered(self) -> bool:
        return self._answered

    @property
    def server_name(self) -> str | None:
        return self._server_name

    @property
    def client_offer(self) -> tuple[str, ...]:
        return self._client_offer

    @property
    def tls_info(self) -> TLSInfo | None:
        return self._tls_info

    @property
    def cause(self) -> ConnectCause:
        return self._cause

    @property
    def has_early(self) -> bool:
        return bool(self._early)

    # -- the flow ---------------------------------------------------------
    def open(self, flow: Flow) -> None:
        """``flow`` is this connection's tunnel (a CONNECT, or an upgrade relayed unparsed)."""
        self._flow = flow

    def take_flow(self) -> Flow | None:
        """The tunnel's flow, which is no longer the tunnel's (it ends, or is decrypted)."""
        flow, self._flow = self._flow, None
        return flow

    def mark_answered(self) -> None:
        """The client was told the tunnel is open (200, or a SOCKS5 success)."""
        self._answered = True

    # -- early bytes ------------------------------------------------------
    def keep_early(self, data: bytes) -> None:
        """What the client sent past the CONNECT (or the 101) waits here for whoever parses it."""
        self._early = data

    def add_early(self, data: bytes) -> None:
        """More first bytes of a tunnel being sniffed."""
        if data:
            self._early += data

    def take_early(self) -> bytes:
        """The tunnel bytes not consumed yet, handed to whoever parses them next."""
        early, self._early = self._early, b""
        return early

    def sniff(self) -> SniffVerdict:
        """Decide from the bytes kept so far; a TLS verdict records the hello's ALPN offer."""
        verdict = sniff(self._early)
        if verdict.hello is not None:
            self._client_offer = verdict.hello.alpn
        return verdict

    # -- interception -----------------------------------------------------
    def name_server(self, server_name: str) -> None:
        """The TLS name (SNI) to use towards the origin of an intercepted tunnel."""
        self._server_name = server_name

    def intercept(self, scheme: str, host: str, port: int, server_name: str | None = None) -> None:
        """Requests inside this tunnel go to ``host:port`` (and, if given, use ``server_name`` for TLS)."""
        self.origin = (scheme, host, port)
        if server_name is not None:
            self._server_name = server_name

    def start_client_tls(self, context: ssl.SSLContext, sni: str | None, host: str) -> TLSEndpoint:
        """Decrypt the client with ``context``; the origin's TLS name is its SNI, else the CONNECT host."""
        self._server_name = sni or host
        return self._start_tls(context, TLSInfo(sni=sni))

    def _start_tls(self, context: ssl.SSLContext, info: TLSInfo) -> TLSEndpoint:
        tls = self.tls = TLSEndpoint(context, server_side=True)
        tls.start()
        self._tls_info = info
        return tls

    def client_tls_done(self, tls: TLSEndpoint) -> None:
        """The client's handshake finished: record what it negotiated."""
        info = self._tls_info or TLSInfo()
        info.version, info.cipher, info.alpn = tls.version, tls.cipher, tls.alpn
        self._tls_info = info

    def drop_client_tls(self) -> None:
        """The client's TLS failed: nothing more goes through it."""
        self.tls = None

    def close_client_tls(self) -> bytes:
        """End the client's TLS session; the close_notify to send."""
        tls, self.tls = self.tls, None
        return tls.close() if tls is not None else b""

    # -- failures ---------------------------------------------------------
    def note_cause(self, cause: ConnectCause) -> None:
        """Why the upstream being opened could not be reached (``other`` once that is handled)."""
        self._cause = cause
