"""Header translation between HTTP/1.1 and HTTP/2 heads (pure functions).

A proxy must not normalise what it forwards, so these functions only do what
the other protocol requires (RFC 9113 8.2-8.3, RFC 9110 7.6.1):

- h2 requests carry ``:method :scheme :authority :path``; HTTP/1 carries a
  request line and ``Host``. ``:authority`` <-> ``Host``.
- HTTP/2 field names are lower case (RFC 9113 8.2.1); HTTP/1 names are sent
  as they are, h2 names are already lower case.
- Connection-specific fields are forbidden in h2 (RFC 9113 8.2.2): they are
  dropped both ways (they are hop-by-hop in HTTP/1 too). ``TE`` is the
  exception: ``te: trailers`` may cross into h2, and gRPC needs it.
- Several ``cookie`` fields (h2 may split them, RFC 9113 8.2.3) are joined
  with ``"; "`` for HTTP/1.
- HTTP/2 has no reason phrase: one is made for HTTP/1 clients.
- Trailers can reach an HTTP/1 client only in a chunked message.
- ``Upgrade: h2c`` on HTTP/1 is stripped, never half-honoured.
"""

from __future__ import annotations

from http import HTTPStatus

from .http1 import connection_tokens, first_value
from .layers import Fields, RequestHead, ResponseHead

# RFC 9113 8.2.2 plus Proxy-Connection, which some HTTP/1 clients still send.
CONNECTION_SPECIFIC = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
})


def drop_connection_specific(headers: Fields, *, keep_te_trailers: bool) -> Fields:
    """Drop connection-specific fields and those ``Connection`` names.

    ``TE`` is dropped unless ``keep_te_trailers`` and it names ``trailers``,
    which is then sent as exactly ``te: trailers`` (the only value h2 allows).
    """
    named = connection_tokens(headers) | CONNECTION_SPECIFIC
    out: Fields = []
    te_trailers = False
    for name, value in headers:
        low = name.lower()
        if low == b"te":
            te_trailers |= b"trailers" in [t.strip().split(b";")[0].lower() for t in value.split(b",")]
        elif low not in named and low != b"http2-settings":
            out.append((name, value))
    if te_trailers and keep_te_trailers:
        out.append((b"te", b"trailers"))
    return out


def lower_names(headers: Fields) -> Fields:
    """HTTP/2 field names are lower case (RFC 9113 8.2.1)."""
    return [(name.lower(), value) for name, value in headers]


def join_cookies(headers: Fields) -> Fields:
    """Join several ``cookie`` fields into one at the first one's place (RFC 9113 8.2.3)."""
    cookies = [value for name, value in headers if name.lower() == b"cookie"]
    if len(cookies) < 2:
        return list(headers)
    out: Fields = []
    for name, value in headers:
        if name.lower() != b"cookie":
            out.append((name, value))
        elif cookies:
            out.append((name, b"; ".join(cookies)))
            cookies = []
    return out


def reason_phrase(status: int) -> bytes:
    """A reason phrase for an HTTP/1 status line (h2 has none)."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def h2_request_to_h1(head: RequestHead, *, keep_te_trailers: bool = False) -> RequestHead:
    """The HTTP/1.1 head of an h2 request: ``Host`` first, from ``:authority``.

    A ``host`` field sent alongside ``:authority`` is replaced (RFC 9113
    8.3.1: ``:authority`` wins). The target stays (``:path``; CONNECT: the
    authority); ``scheme`` and ``authority`` are left out, HTTP/1 has no
    place for them in origin form.
    """
    headers = join_cookies(drop_connection_specific(head.headers, keep_te_trailers=keep_te_trailers))
    rest = [(n, v) for n, v in headers if n.lower() != b"host"]
    host = head.authority or first_value(headers, b"host") or b""
    front: Fields = [(b"host", host)] if host else []
    return RequestHead(method=head.method, target=head.target, headers=front + rest, http_version=b"1.1")


def _split_target(target: bytes, scheme: bytes) -> tuple[bytes, bytes | None, bytes]:
    """(scheme, authority or None, path) of an origin- or absolute-form target."""
    if b"://" in target and not target.startswith(b"/"):
        scheme, rest = target.split(b"://", 1)
        slash = rest.find(b"/")
        authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        return scheme.lower(), authority, path
    return scheme, None, target


def h1_request_to_h2(head: RequestHead, *, scheme: bytes) -> RequestHead:
    """The h2 head of an HTTP/1 request (``Host`` -> ``:authority``).

    ``scheme`` is the one the request arrived under (``https`` when
    intercepted); an absolute-form target supplies its own scheme and
    authority and leaves its path as the target. CONNECT keeps its
    authority-form target as ``authority``. ``te: trailers`` is kept (gRPC),
    ``Upgrade``/``HTTP2-Settings`` are dropped.
    """
    kept = drop_connection_specific(head.headers, keep_te_trailers=True)
    if head.method == b"CONNECT":
        return RequestHead(method=head.method, target=head.target, authority=head.target,
                           headers=lower_names(kept), http_version=b"2")
    scheme, authority, path = _split_target(head.target, scheme)
    host = first_value(kept, b"host")
    rest = [(n, v) for n, v in kept if n.lower() != b"host"]
    return RequestHead(method=head.method, target=path or b"/", scheme=scheme, authority=authority or host,
                       headers=lower_names(rest), http_version=b"2")


def h1_response_to_h2(head: ResponseHead) -> ResponseHead:
    """The h2 head of an HTTP/1 response: names lower-cased, connection fields dropped, no reason."""
    return ResponseHead(status=head.status, headers=lower_names(drop_connection_specific(head.headers, keep_te_trailers=False)),
                        http_version=b"2")


def h2_response_to_h1(head: ResponseHead) -> ResponseHead:
    """The HTTP/1.1 head of an h2 response; the reason is made up from the status."""
    headers = drop_connection_specific(head.headers, keep_te_trailers=False)
    return ResponseHead(status=head.status, headers=headers, reason=head.reason or reason_phrase(head.status),
                        http_version=b"1.1")


def trailers_for_h1(trailers: Fields, *, chunked: bool) -> Fields | None:
    """Trailers an HTTP/1 client can take, or None when the message is not
    chunked (the caller drops them and logs one line)."""
    if not chunked:
        return None
    return drop_connection_specific(trailers, keep_te_trailers=False)


def strip_h2c_upgrade(headers: Fields) -> Fields:
    """Remove an ``Upgrade: h2c`` offer from an HTTP/1 request (and its
    ``HTTP2-Settings`` and ``Connection`` tokens); other upgrades are kept."""
    out: Fields = []
    upgrade_left = False
    for name, value in headers:
        low = name.lower()
        if low == b"upgrade":
            protocols = [p.strip() for p in value.split(b",") if p.strip().lower() != b"h2c"]
            if protocols:
                out.append((name, b", ".join(protocols)))
                upgrade_left = True
        elif low != b"http2-settings":
            out.append((name, value))
    fixed = [_drop_tokens(n, v, upgrade_left) if n.lower() == b"connection" else (n, v) for n, v in out]
    return [(n, v) for n, v in fixed if v or n.lower() != b"connection"]


def _drop_tokens(name: bytes, value: bytes, keep_upgrade: bool) -> tuple[bytes, bytes]:
    drop = {b"http2-settings"} if keep_upgrade else {b"http2-settings", b"upgrade"}
    tokens = [t.strip() for t in value.split(b",") if t.strip() and t.strip().lower() not in drop]
    return name, b", ".join(tokens)
