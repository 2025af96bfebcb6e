"""TLS contexts with per-connection ALPN (issue 10): the upstream pair, the leaves, the listener.

An SSLContext has one ALPN list, so each list the proxy may offer is its own
context. Each variant is checked by a real handshake (memory BIOs, or
loopback against a started proxy) and ``selected_alpn_protocol()``.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

import pytest
import tlspair

from interceptkit import Proxy, cli
from interceptkit.certs import CertStore
from interceptkit.core import alpn
from interceptkit.policy import listen_ssl_context, upstream_ssl_context, upstream_ssl_contexts


@pytest.fixture(scope="module")
def origin_ca(tmp_path_factory: pytest.TempPathFactory) -> CertStore:
    return CertStore.load_or_create(tmp_path_factory.mktemp("origin-ca"))


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
              host: str = "origin.test") -> tuple[str | None, str | None]:
    """A TLS handshake over memory BIOs; what (client, server) selected in ALPN."""
    return tlspair.selected(server_ctx, client_ctx, host)


def client_offering(cafile: Path, protocols: Sequence[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if protocols:
        ctx.set_alpn_protocols(list(protocols))
    return ctx


# -- towards upstreams -----------------------------------------------------------------------


def test_the_two_upstream_contexts_offer_their_lists_and_verify_alike(origin_ca: CertStore) -> None:
    http1, both = upstream_ssl_contexts(extra_ca=origin_ca.ca_cert_path)
    assert both is not None
    origin = origin_ca.server_context("origin.test", ("h2", "http/1.1"))  # an origin that prefers h2
    assert handshake(origin, http1) == ("http/1.1", "http/1.1")
    assert handshake(origin, both) == ("h2", "h2")
    assert handshake(origin_ca.server_context("origin.test"), both) == ("http/1.1", "http/1.1")
    for ctx in (http1, both):
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(origin, ctx, host="other.test")
    assert http1.get_ca_certs() == both.get_ca_certs()
    assert http1.minimum_version == both.minimum_version and http1.options == both.options


def test_upstream_contexts_without_http2_and_insecure(origin_ca: CertStore) -> None:
    http1, both = upstream_ssl_contexts(http2=False)
    assert both is None
    _, insecure = upstream_ssl_contexts(insecure=True)
    assert insecure is not None and insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
    untrusted = origin_ca.server_context("origin.test", ("h2", "http/1.1"))
    assert handshake(untrusted, insecure) == ("h2", "h2")  # the user opted out of verification
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(untrusted, http1)
    assert handshake(untrusted, upstream_ssl_context(insecure=True)) == ("http/1.1", "http/1.1")


# -- leaves for the client side -----------------------------------------------------------------


@pytest.mark.parametrize("offered, client, selected", [
    (("h2", "http/1.1"), ["h2", "http/1.1"], "h2"),
    (("h2",), ["h2", "http/1.1"], "h2"),
    (("http/1.1",), ["h2", "http/1.1"], "http/1.1"),
    (("http/1.1", "h2"), ["h2", "http/1.1"], "http/1.1"),  # the context's order decides
    ((), ["h2", "http/1.1"], None),                         # no ALPN in the answer
])
def test_leaf_contexts_offer_the_list_they_were_built_for(origin_ca: CertStore, offered: tuple[str, ...],
                                                          client: list[str], selected: str | None) -> None:
    ctx = origin_ca.server_context("origin.test", offered)
    assert handshake(ctx, client_offering(origin_ca.ca_cert_path, client)) == (selected, selected)


def test_leaf_contexts_are_cached_per_host_and_list(origin_ca: CertStore) -> None:
    h2 = origin_ca.server_context("origin.test", ("h2",))
    assert origin_ca.server_context("origin.test", ["h2"]) is h2
    assert origin_ca.server_context("origin.test", ("h2", "http/1.1")) is not h2
    assert origin_ca.server_context("origin.test", ("http/1.1", "h2")) is not h2
    assert origin_ca.server_context("other.test", ("h2",)) is not h2
    # What the ALPN functions return can be passed as it is.
    assert origin_ca.server_context("origin.test", alpn.fallback_protocols(["h2"], http2=True)) is h2


# -- the listening side (reverse mode) ------------------------------------------------------------


def test_listen_context_offers_what_it_is_given(origin_ca: CertStore, tmp_path: Path) -> None:
    leaf = origin_ca.leaf_for("origin.test")
    certfile = tmp_path / "leaf.pem"
    certfile.write_bytes(leaf.chain_pem + leaf.key_pem)
    client = client_offering(origin_ca.ca_cert_path, ["h2", "http/1.1"])
    listen_h2 = listen_ssl_context(certfile, None, alpn.listen_protocols(http2=True))
    listen_h1 = listen_ssl_context(certfile, None)
    assert listen_h2 is not None and listen_h1 is not None
    assert handshake(listen_h2, client) == ("h2", "h2")
    assert handshake(listen_h1, client) == ("http/1.1", "http/1.1")
    assert handshake(listen_h2, client_offering(origin_ca.ca_cert_path, ["http/1.1"])) == ("http/1.1",) * 2


def _alpn_of_listener(proxy: Proxy, cafile: Path) -> str | None:
    ctx = client_offering(cafile, ["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.selected_alpn_protocol()


def test_the_proxy_offers_h2_on_its_tls_listener_and_upstream(tmp_path: Path) -> None:
    with Proxy(port=0, mode="reverse", routes={"/": "http://127.0.0.1:1"}, tls_name="localhost",
               confdir=tmp_path / "ca") as proxy:
        assert proxy.certs is not None
        assert _alpn_of_listener(proxy, proxy.certs.ca_cert_path) == "h2"
        config = proxy._config
        assert config.http2 is True and alpn.H2_READY is True
        assert config.upstream_context_h2 is not None
        assert config.upstream_context_for(("h2", "http/1.1")) is config.upstream_context_h2
    with Proxy(port=0, mode="reverse", routes={"/": "http://127.0.0.1:1"}, tls_name="localhost",
               confdir=tmp_path / "ca", http2=False) as proxy:
        assert proxy.certs is not None
        assert _alpn_of_listener(proxy, proxy.certs.ca_cert_path) == "http/1.1"


def test_http2_off_in_python_and_on_the_command_line(tmp_path: Path) -> None:
    off = Proxy(port=0, http2=False, confdir=tmp_path)
    assert off._config.http2 is False and off._config.upstream_context_h2 is None
    assert off._config.upstream_context_for(("h2", "http/1.1")) is off._config.upstream_context
    assert "--no-http2" in cli.build_parser().format_help()
    args = cli.build_parser().parse_args(["--no-http2", "--confdir", str(tmp_path)])
    assert cli._make_proxy(args)._config.http2 is False
    args = cli.build_parser().parse_args(["--confdir", str(tmp_path)])
    assert cli._make_proxy(args)._config.http2 is True
