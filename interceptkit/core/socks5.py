"""The server side of a SOCKS5 handshake (RFC 1928, with RFC 1929 username/password), sans-IO.

Theory of operation: bytes from the client go in with :meth:`receive_data`,
which returns what happened (:class:`ConnectRequested` once the client has
asked to CONNECT, :class:`HandshakeFailed` when it cannot go on); what the
client must be sent comes out of :meth:`data_to_send`. After a
``ConnectRequested`` the caller opens the upstream and answers with
:meth:`reply` (``SUCCEEDED`` hands the stream over: every byte that arrives
from then on, and any that came early, is in :attr:`trailing_data` for the
tunnel, as with h11's ``trailing_data``). A failure reply, or a failed
handshake, means: send what is queued, then close (RFC 1928 section 6).

Nothing here raises on input: any bytes end in an event or in NEED_DATA.
States and their transitions are the table ``_ALLOWED``; :meth:`_move_to` is
the one place that checks it.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from ..vocab import ConnectCause

VERSION = 5
AUTH_VERSION = 1  # RFC 1929 section 2


class Method(enum.IntEnum):
    """Authentication methods (RFC 1928 section 3)."""

    NO_AUTH = 0x00
    USERNAME_PASSWORD = 0x02
    NO_ACCEPTABLE = 0xFF


class Command(enum.IntEnum):
    CONNECT = 0x01
    BIND = 0x02
    UDP_ASSOCIATE = 0x03


class AddressType(enum.IntEnum):
    IPV4 = 0x01
    DOMAIN = 0x03
    IPV6 = 0x04


class Reply(enum.IntEnum):
    """REP codes (RFC 1928 section 6)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class State(enum.Enum):
    GREETING = "greeting"  # waiting for VER NMETHODS METHODS
    AUTH = "auth"  # waiting for the RFC 1929 username/password request
    REQUEST = "request"  # waiting for VER CMD RSV ATYP DST.ADDR DST.PORT
    WAIT_REPLY = "wait_reply"  # CONNECT asked; the caller is reaching the upstream
    ESTABLISHED = "established"  # success sent: the stream belongs to the tunnel
    FAILED = "failed"  # an error answer is queued (or none is possible): close


_ALLOWED: dict[State, frozenset[State]] = {
    State.GREETING: frozenset({State.AUTH, State.REQUEST, State.FAILED}),
    State.AUTH: frozenset({State.REQUEST, State.FAILED}),
    State.REQUEST: frozenset({State.WAIT_REPLY, State.FAILED}),
    State.WAIT_REPLY: frozenset({State.ESTABLISHED, State.FAILED}),
    State.ESTABLISHED: frozenset(),
    State.FAILED: frozenset(),
}


_HANDSHAKING = frozenset({State.GREETING, State.AUTH, State.REQUEST})


class Socks5StateError(Exception):
    """The caller (never the peer) did something the current state does not allow."""


@dataclass(frozen=True)
class ConnectRequested:
    """The client asked to CONNECT to ``host:port``; answer with :meth:`Socks5Handshake.reply`."""

    host: str
    port: int
    address_type: AddressType
    #: The RFC 1929 user name, when the client authenticated.
    user: str | None = None


@dataclass(frozen=True)
class HandshakeFailed:
    """The handshake cannot go on: send what is queued (if anything), then close."""

    reason: str
    reply: Reply | None = None


Event = ConnectRequested | HandshakeFailed
#: ``(user, password) -> bool``; it must compare in constant time (core/proxyauth.py does).
Authenticator = Callable[[str, str], bool]


class _NeedData(Exception):
    """Not enough bytes buffered for the next message yet."""


class Socks5Handshake:
    """One client's SOCKS5 handshake. Owns the input buffer, the state and the user.

    ``authenticate`` given: clients must offer username/password and pass it.
    Not given: no authentication (a client that offers only username/password
    is let in with any credentials; its user name is still recorded).
    """

    def __init__(self, authenticate: Authenticator | None = None) -> None:
        self._authenticate = authenticate
        self._buffer = bytearray()
        self._out = bytearray()
        self.state = State.GREETING
        self.user: str | None = None
        #: After ``SUCCEEDED``: bytes the client sent beyond the handshake.
        self.trailing_data = b""

    # -- the sans-IO surface ---------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; return the events they complete (often none)."""
        if self.state is State.FAILED:
            return []
        if self.state in (State.WAIT_REPLY, State.ESTABLISHED):
            self.trailing_data += bytes(data)
            return []
        self._buffer += data
        while self.state in _HANDSHAKING:
            try:
                event = self._step()
            except _NeedData:
                return []
            if event is not None:
                if isinstance(event, ConnectRequested):
                    # Whatever followed the request belongs to the tunnel.
                    self.trailing_data, self._buffer = bytes(self._buffer), bytearray()
                return [event]
        return []

    def data_to_send(self) -> bytes:
        """The bytes to write to the client now (each byte is handed out once)."""
        out, self._out = bytes(self._out), bytearray()
        return out

    def reply(self, code: Reply, bound: tuple[str, int] = ("0.0.0.0", 0)) -> None:
        """Answer the CONNECT: ``SUCCEEDED`` with the address the proxy connected from, or a failure."""
        if self.state is not State.WAIT_REPLY:
            raise Socks5StateError(f"a reply is sent in state {State.WAIT_REPLY.value}, not {self.state.value}")
        self._out += encode_reply(code, bound)
        self._move_to(State.ESTABLISHED if code is Reply.SUCCEEDED else State.FAILED)

    # -- the messages ----------------------------------------------------------------------

    def _move_to(self, state: State) -> None:
        if state not in _ALLOWED[self.state]:
            raise Socks5StateError(f"no transition from {self.state.value} to {state.value}")
        self.state = state

    def _step(self) -> Event | None:
        if self.state is State.GREETING:
            return self._greeting()
        if self.state is State.AUTH:
            return self._auth()
        return self._request()

    def _take(self, count: int, offset: int = 0) -> bytes:
        """``count`` bytes at ``offset`` of the buffer (not consumed), or _NeedData."""
        if len(self._buffer) < offset + count:
            raise _NeedData
        return bytes(self._buffer[offset:offset + count])

    def _consume(self, count: int) -> None:
        del self._buffer[:count]

    def _fail(self, reason: str, reply: Reply | None = None, answer: bytes = b"") -> HandshakeFailed:
        self._out += answer
        self._buffer.clear()
        self._move_to(State.FAILED)
        return HandshakeFailed(reason, reply)

    def _greeting(self) -> Event | None:
        version, count = self._take(2)
        if version != VERSION:
            # A SOCKS4 (or HTTP) client: RFC 1928 defines no answer for it.
            return self._fail(f"not SOCKS5 (version byte {version:#04x})")
        methods = set(self._take(count, 2))
        self._consume(2 + count)
        method = self._choose_method(methods)
        self._out += bytes([VERSION, method])
        if method is Method.NO_ACCEPTABLE:
            return self._fail("no acceptable authentication method offered")
        self._move_to(State.AUTH if method is Method.USERNAME_PASSWORD else State.REQUEST)
        return None

    def _choose_method(self, offered: set[int]) -> Method:
        if self._authenticate is not None:
            return Method.USERNAME_PASSWORD if Method.USERNAME_PASSWORD in offered else Method.NO_ACCEPTABLE
        if Method.NO_AUTH in offered:
            return Method.NO_AUTH
        return Method.USERNAME_PASSWORD if Method.USERNAME_PASSWORD in offered else Method.NO_ACCEPTABLE

    def _auth(self) -> Event | None:
        version, user_length = self._take(2)
        if version != AUTH_VERSION:
            return self._fail(f"bad username/password version {version:#04x}", answer=bytes([AUTH_VERSION, 1]))
        user = self._take(user_length, 2)
        (password_length,) = self._take(1, 2 + user_length)
        password = self._take(password_length, 3 + user_length)
        self._consume(3 + user_length + password_length)
        name, secret = _text(user), _text(password)
        if self._authenticate is not None and not self._authenticate(name, secret):
            return self._fail(f"wrong user name or password (user {name!r})", answer=bytes([AUTH_VERSION, 1]))
        self.user = name
        self._out += bytes([AUTH_VERSION, 0])
        self._move_to(State.REQUEST)
        return None

    def _request(self) -> Event | None:
        version, command, _reserved, address_type = self._take(4)
        if version != VERSION:
            return self._refuse(Reply.GENERAL_FAILURE, f"bad request version {version:#04x}")
        if command != Command.CONNECT:
            name = Command(command).name if command in Command._value2member_map_ else f"{command:#04x}"
            return self._refuse(Reply.COMMAND_NOT_SUPPORTED, f"command {name} is not supported")
        if address_type not in AddressType._value2member_map_:
            return self._refuse(Reply.ADDRESS_TYPE_NOT_SUPPORTED, f"address type {address_type:#04x}")
        kind = AddressType(address_type)
        host, length = self._address(kind)
        port = int.from_bytes(self._take(2, 4 + length), "big")
        self._consume(6 + length)
        if host is None:
            return self._refuse(Reply.GENERAL_FAILURE, "bad domain name")
        self._move_to(State.WAIT_REPLY)
        return ConnectRequested(host=host, port=port, address_type=kind, user=self.user)

    def _address(self, kind: AddressType) -> tuple[str | None, int]:
        """The destination address and how many bytes it took (None for a bad domain name)."""
        if kind is AddressType.IPV4:
            return str(ipaddress.IPv4Address(self._take(4, 4))), 4
        if kind is AddressType.IPV6:
            return str(ipaddress.IPv6Address(self._take(16, 4))), 16
        (length,) = self._take(1, 4)
        name = self._take(length, 5)
        return _domain(name), 1 + length

    def _refuse(self, code: Reply, reason: str) -> HandshakeFailed:
        return self._fail(reason, code, encode_reply(code, ("0.0.0.0", 0)))


def _text(raw: bytes) -> str:
    # Lossless for any bytes: credentials compare equal only when their bytes do.
    return raw.decode("utf-8", "surrogateescape")


def _domain(raw: bytes) -> str | None:
    """A host name as sent, if it is one: ASCII letters, digits, '-', '.', '_' (IDNs arrive punycoded)."""
    if not raw or len(raw) > 253:
        return None
    text = raw.decode("ascii", "replace")
    if not all(c.isalnum() or c in "-._" for c in text) or not text.isascii():
        return None
    return text.lower()


def encode_reply(code: Reply, bound: tuple[str, int]) -> bytes:
    """VER REP RSV ATYP BND.ADDR BND.PORT for ``bound`` (an IP address and port)."""
    host, port = bound
    address = ipaddress.ip_address(host)
    kind = AddressType.IPV4 if address.version == 4 else AddressType.IPV6
    return bytes([VERSION, code, 0, kind]) + address.packed + port.to_bytes(2, "big")


def encode_greeting(methods: tuple[Method, ...] = (Method.NO_AUTH,)) -> bytes:
    """A client's greeting (for tests and for chaining to an upstream SOCKS proxy)."""
    return bytes([VERSION, len(methods), *methods])


def encode_connect(host: str, port: int) -> bytes:
    """A client's CONNECT request for ``host:port`` (IP literals as such, else a domain)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        target = bytes([AddressType.DOMAIN, len(name)]) + name
    else:
        kind = AddressType.IPV4 if address.version == 4 else AddressType.IPV6
        target = bytes([kind]) + address.packed
    return bytes([VERSION, Command.CONNECT, 0]) + target + port.to_bytes(2, "big")


#: RFC 1928 section 6's REP code for each reason an upstream could not be reached.
_FAILURE_REPLIES: dict[ConnectCause, Reply] = {
    "refused": Reply.CONNECTION_REFUSED,
    "unreachable": Reply.HOST_UNREACHABLE,
    "resolve": Reply.HOST_UNREACHABLE,  # a name with no address: no such host, as far as the client can tell
    "network_unreachable": Reply.NETWORK_UNREACHABLE,
    "timeout": Reply.TTL_EXPIRED,
    "other": Reply.GENERAL_FAILURE,
}


def connect_failure_reply(cause: ConnectCause) -> Reply:
    """The RFC 1928 REP code for an upstream that could not be reached, by the transport's typed cause."""
    return _FAILURE_REPLIES[cause]
