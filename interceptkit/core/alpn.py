"""ALPN decisions (RFC 7301): what the proxy offers and selects on each side.

Pure functions of what the peers offered and selected, so the connection
logic only has to ask them and pick the TLS context they name. An
``SSLContext`` carries one ALPN list, and a server-side OpenSSL context
selects in *its own* order (``SSL_select_next_proto`` walks the server's
list), so "the client's preference" is obtained by building the list in
the client's order; the leaf contexts are cached per (host, list).

The interception strategy (issue 10): connect upstream first, offering it
what the client offered (restricted to what we speak); then give the client
what the upstream chose, so each side speaks what it chose. When there is
no upstream answer (a mocked host, an upstream that failed) the client gets
both, in its own order, and the exchange logic translates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

H2: Final = "h2"
HTTP11: Final = "http/1.1"
#: What the proxy can speak on either side, in our order of preference.
SUPPORTED: Final[tuple[str, ...]] = (H2, HTTP11)
#: The list the proxy uses while HTTP/2 is off (or not wired yet).
HTTP1_ONLY: Final[tuple[str, ...]] = (HTTP11,)

#: Whether the exchange logic carries HTTP/2 streams (it does: one switch,
#: kept so a build can turn h2 off everywhere at once).
H2_READY: Final = True


def h2_enabled(http2: bool) -> bool:
    """Whether h2 may be offered now: the user wants it and the proxy can carry it."""
    return http2 and H2_READY


def _spoken(offer: Sequence[str], http2: bool) -> tuple[str, ...]:
    """``offer`` restricted to what we speak, in the offer's order, without repeats."""
    allowed = SUPPORTED if http2 else HTTP1_ONLY
    return tuple(dict.fromkeys(p for p in offer if p in allowed))


def upstream_offer(client_offer: Sequence[str], *, http2: bool) -> tuple[str, ...]:
    """What to offer the upstream, given the protocols the client offered us.

    The client's offer restricted to ``h2`` and ``http/1.1``, in the
    client's order (``h2`` dropped when HTTP/2 is off). A client that sent
    no ALPN extension (or offered nothing we speak) gets HTTP/1.1 from us,
    so the upstream is offered ``http/1.1``.
    """
    return _spoken(client_offer, http2) or HTTP1_ONLY


def client_protocols(client_offer: Sequence[str], upstream_selected: str | None, *,
                     http2: bool) -> tuple[str, ...]:
    """The ALPN list of the context that answers the client, once the upstream has chosen.

    ``upstream_selected`` is what the upstream's ServerHello selected (None:
    no ALPN, which means HTTP/1.1). When the client offered that protocol it
    gets exactly it, so both sides speak the same one. Otherwise (the
    upstream ignored our offer) the client keeps its own choice and the
    exchange logic translates: see :func:`fallback_protocols`. An empty
    tuple means no ALPN extension in our answer (the client offered none).
    """
    spoken = _spoken(client_offer, http2)
    chosen = upstream_selected or HTTP11
    return (chosen,) if chosen in spoken else spoken


def fallback_protocols(client_offer: Sequence[str], *, http2: bool) -> tuple[str, ...]:
    """The ALPN list for the client when there is no upstream answer to follow.

    What the client offered of the protocols we speak, in *our* order (h2
    first, as nginx and most servers prefer it): a server chooses in ALPN
    (RFC 7301 3.2), and a client that offers h2 at all can speak it (httpx
    lists http/1.1 first and still wants h2). Empty when the client offered
    nothing we speak (no ALPN in our answer).
    """
    offered = set(client_offer)
    return tuple(p for p in (SUPPORTED if http2 else HTTP1_ONLY) if p in offered)


def listen_protocols(*, http2: bool) -> tuple[str, ...]:
    """What a TLS listener (reverse mode) offers: h2 then http/1.1, or http/1.1 alone."""
    return SUPPORTED if http2 else HTTP1_ONLY


def protocol_for(alpn: str | None) -> str:
    """The ``http_version`` a side speaks after selecting ``alpn`` ("HTTP/2" or "HTTP/1.1")."""
    return "HTTP/2" if alpn == H2 else "HTTP/1.1"
