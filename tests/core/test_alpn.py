"""ALPN decisions (core.alpn): what each side is offered, and what a handshake then selects.

The decisions are pure functions; the last tests run them through real
OpenSSL handshakes over memory BIOs, because a server context selects in its
own list's order and the functions rely on that to give the client its
preference.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Sequence

import pytest
import tlspair
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from interceptkit.core import alpn
from interceptkit.core.config import ProxyConfig

BOTH = ("h2", "http/1.1")


# -- what the upstream is offered ---------------------------------------------------------


@pytest.mark.parametrize("client, http2, expected", [
    (["h2", "http/1.1"], True, ("h2", "http/1.1")),
    (["http/1.1", "h2"], True, ("http/1.1", "h2")),        # the client's order
    (["h2"], True, ("h2",)),
    (["http/1.1"], True, ("http/1.1",)),
    (["h3", "h2", "spdy/3.1", "http/1.1"], True, ("h2", "http/1.1")),  # only what we speak
    (["h2", "h2", "http/1.1"], True, ("h2", "http/1.1")),
    (["h2", "http/1.1"], False, ("http/1.1",)),            # --no-http2
    (["h2"], False, ("http/1.1",)),
    ([], True, ("http/1.1",)),                              # no ALPN extension from the client
    (["spdy/3.1"], True, ("http/1.1",)),
])
def test_upstream_offer(client: list[str], http2: bool, expected: tuple[str, ...]) -> None:
    assert alpn.upstream_offer(client, http2=http2) == expected


# -- what the client is answered with -------------------------------------------------------


@pytest.mark.parametrize("client, upstream, http2, expected", [
    (["h2", "http/1.1"], "h2", True, ("h2",)),              # h2 <-> h2
    (["h2", "http/1.1"], "http/1.1", True, ("http/1.1",)),  # both speak HTTP/1.1
    (["h2", "http/1.1"], None, True, ("http/1.1",)),        # no ALPN from the upstream: HTTP/1.1
    (["h2"], None, True, ("h2",)),                          # h2 client, h1 upstream: translated
    (["http/1.1"], "http/1.1", True, ("http/1.1",)),
    ([], None, True, ()),                                   # no ALPN asked, none given
    (["h2", "http/1.1"], "http/1.1", False, ("http/1.1",)),
    (["h2"], None, False, ()),                              # h2 only and HTTP/2 off: no ALPN
    (["http/1.1", "h2"], "spdy/3.1", True, ("http/1.1", "h2")),  # an upstream choosing what we never offered
])
def test_client_protocols_follow_the_upstream(client: list[str], upstream: str | None, http2: bool,
                                              expected: tuple[str, ...]) -> None:
    assert alpn.client_protocols(client, upstream, http2=http2) == expected


@pytest.mark.parametrize("client, http2, expected", [
    (["h2", "http/1.1"], True, ("h2", "http/1.1")),
    (["http/1.1", "h2"], True, ("h2", "http/1.1")),  # our order: a client offering h2 can speak it
    (["h2", "http/1.1"], False, ("http/1.1",)),
    ([], True, ()),
])
def test_fallback_without_an_upstream_answer(client: list[str], http2: bool, expected: tuple[str, ...]) -> None:
    assert alpn.fallback_protocols(client, http2=http2) == expected


def test_listening_side_and_protocol_names() -> None:
    assert alpn.listen_protocols(http2=True) == BOTH
    assert alpn.listen_protocols(http2=False) == ("http/1.1",)
    assert alpn.protocol_for("h2") == "HTTP/2"
    assert alpn.protocol_for("http/1.1") == alpn.protocol_for(None) == "HTTP/1.1"


def test_h2_is_offered_unless_the_user_turns_it_off() -> None:
    assert alpn.H2_READY is True
    assert alpn.h2_enabled(True) is True and alpn.h2_enabled(False) is False


def test_config_picks_the_upstream_context_for_an_offer() -> None:
    http1, both = ssl.create_default_context(), ssl.create_default_context()
    config = ProxyConfig(upstream_context=http1, upstream_context_h2=both)
    assert config.http2 is True
    assert config.upstream_context_for(alpn.upstream_offer(["h2", "http/1.1"], http2=True)) is both
    assert config.upstream_context_for(alpn.upstream_offer(["http/1.1"], http2=True)) is http1
    assert config.upstream_context_for(alpn.upstream_offer([], http2=True)) is http1
    off = ProxyConfig(upstream_context=http1, upstream_context_h2=both, http2=False)
    assert off.upstream_context_for(BOTH) is http1
    assert ProxyConfig(upstream_context=http1).upstream_context_for(BOTH) is http1


# -- the decisions in real handshakes -------------------------------------------------------


@pytest.fixture(scope="module")
def leaf(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A self-signed certificate and key for "localhost", as one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    path = tmp_path_factory.mktemp("alpn") / "leaf.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _selected(leaf: str, server_protocols: Sequence[str], client_protocols: Sequence[str]) -> tuple[str | None,
                                                                                                     str | None]:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(leaf)
    if server_protocols:
        server_ctx.set_alpn_protocols(list(server_protocols))
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
    if client_protocols:
        client_ctx.set_alpn_protocols(list(client_protocols))
    return tlspair.selected(server_ctx, client_ctx, "localhost")


@pytest.mark.parametrize("client", [["h2", "http/1.1"], ["http/1.1", "h2"], ["h2"], ["http/1.1"]])
def test_the_fallback_prefers_h2_whenever_the_client_offers_it(leaf: str, client: list[str]) -> None:
    chosen, _ = _selected(leaf, alpn.fallback_protocols(client, http2=True), client)
    assert chosen == ("h2" if "h2" in client else "http/1.1")


@pytest.mark.parametrize("upstream", ["h2", "http/1.1", None])
def test_the_client_gets_what_the_upstream_selected(leaf: str, upstream: str | None) -> None:
    client = ["h2", "http/1.1"]
    # The upstream is offered the client's list and selects; the client's side follows.
    offered = alpn.upstream_offer(client, http2=True)
    assert upstream is None or upstream in offered
    chosen, _ = _selected(leaf, alpn.client_protocols(client, upstream, http2=True), client)
    assert chosen == (upstream or "http/1.1")


def test_no_alpn_from_the_client_means_none_in_the_answer(leaf: str) -> None:
    assert _selected(leaf, alpn.client_protocols([], None, http2=True), []) == (None, None)
