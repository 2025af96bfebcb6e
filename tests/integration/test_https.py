"""HTTPS interception over real loopback sockets, with clients nobody here wrote.

A real TLS origin (tls_origin.py: ``http.server`` + ``ssl``, its own CA) runs
on 127.0.0.1; curl and urllib talk to it through the proxy, trusting the
proxy's CA (each test has its own, in ``tmp_path``). The proxy trusts the
origin's CA through ``upstream_ca``. Names resolve only through the static
resolver: origin.test and localhost to 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import socket
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from origin import (
    CURL,
    HELLO,
    clean_env,
    curl,
    pattern_sha256,
    read_head,
    status_of,
    wait_flows_done,
)
from tls_origin import OriginPKI, TLSOrigin

from interceptkit import Proxy



def https(proxy: Proxy, url: str, *args: str, cacert: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """curl through ``proxy``, trusting ``cacert`` (default: the proxy's CA) and nothing else."""
    ca = cacert if cacert is not None else proxy.ca_cert_path
    return curl("--cacert", str(ca), "--capath", "/nonexistent", *args, url, proxy=proxy, timeout=20)


def inner(output: bytes) -> bytes:
    """curl --include output without the proxy's answer to the CONNECT."""
    head, sep, rest = output.partition(b"\r\n\r\n")
    return rest if sep and b"Connection established" in head else output


def decrypted(proxy: Proxy, count: int = 1) -> list:
    flows = wait_flows_done(proxy, count)
    return [f for f in flows if f.request.method != "CONNECT"]


# -- decrypting ----------------------------------------------------------------------------


def test_curl_through_the_proxy_is_decrypted(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    result = https(proxy, tls_origin.url("/hello?x=1"), "-H", "X-Client-Secret: s3cret")
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO
    [flow] = decrypted(proxy)
    assert flow.error is None and flow.state == "done"
    request = flow.request
    assert (request.method, request.scheme, request.host, request.port) == ("GET", "https", "origin.test",
                                                                             tls_origin.port)
    assert request.path == "/hello?x=1" and request.url == tls_origin.url("/hello?x=1")
    assert request.headers["X-Client-Secret"] == "s3cret"  # seen in the clear
    assert flow.response is not None and flow.response.status == 200 and flow.response.content == HELLO
    assert flow.client_tls is not None and flow.client_tls.sni == "origin.test"
    assert flow.client_tls.version in ("TLSv1.2", "TLSv1.3") and flow.client_tls.cipher
    assert flow.server_tls is not None and flow.server_tls.sni == "origin.test"
    assert flow.server_tls.version in ("TLSv1.2", "TLSv1.3")
    [seen] = tls_origin.requests
    assert seen.path == "/hello?x=1" and seen.header("X-Client-Secret") == "s3cret"
    assert [c.sni for c in tls_origin.connections] == ["origin.test"]
    # The table shows it like any other exchange.
    row = proxy.flows[-1]
    assert row is flow


def test_urllib_post_through_the_proxy(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    context = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": proxy.url}),
                                         urllib.request.HTTPSHandler(context=context))
    body = bytes(range(256)) * 4096 + b"tail"  # 1 MiB: many TLS records each way
    with opener.open(urllib.request.Request(tls_origin.url("/echo"), data=body, method="POST"),
                     timeout=10) as response:
        assert response.status == 200 and response.read() == body
    [flow] = decrypted(proxy)
    assert flow.request.method == "POST" and flow.request.body_size == len(body)
    assert flow.request.content == body[:64 * 1024] and flow.request.truncated  # the capture limit
    assert flow.response is not None and flow.response.body_size == len(body)
    assert tls_origin.requests[0].body == body


def test_large_download_is_intact(make: Callable[..., Proxy], tls_origin: TLSOrigin, tmp_path: Path) -> None:
    proxy = make()
    size = 3 * 1024 * 1024 + 17
    out = tmp_path / "download"
    result = https(proxy, tls_origin.url(f"/bytes/{size}"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    import hashlib

    assert hashlib.sha256(out.read_bytes()).hexdigest() == pattern_sha256(size)


@pytest.mark.parametrize("version", ["--tlsv1.2", "--tlsv1.3"])
def test_client_tls_versions(make: Callable[..., Proxy], tls_origin: TLSOrigin, version: str) -> None:
    proxy = make()
    result = https(proxy, tls_origin.url("/hello"), version, "--tls-max", version[-3:])
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr
    [flow] = decrypted(proxy)
    assert flow.client_tls is not None and flow.client_tls.version == "TLSv" + version[-3:]


def test_keep_alive_inside_the_tunnel(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    urls = [tls_origin.url(p) for p in ("/hello", "/json", "/echo", "/hello")]
    result = curl("--cacert", str(proxy.ca_cert_path), "--write-out", "%{num_connects}\\n",
                  "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", *urls,
                  proxy=proxy, timeout=20)
    assert result.returncode == 0, result.stderr
    connects = [int(n) for n in result.stdout.split()]
    assert len(connects) == 4 and sum(connects) == 1, "curl used one CONNECT for all requests"
    flows = decrypted(proxy, 4)
    assert [f.request.path for f in flows] == ["/hello", "/json", "/echo", "/hello"]
    assert tls_origin.served_counts() == [4], "the origin saw one TLS connection"


def test_sni_hostname_and_localhost(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    result = https(proxy, tls_origin.url("/hello", host="localhost"))
    assert result.returncode == 0, result.stderr
    [flow] = decrypted(proxy)
    assert flow.request.host == "localhost" and flow.client_tls is not None
    assert flow.client_tls.sni == "localhost"
    assert [c.sni for c in tls_origin.connections] == ["localhost"]


def test_no_sni_for_an_ip_address(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    # curl checks the leaf's IP address SAN against 127.0.0.1 (there is no name to send as SNI).
    result = https(proxy, tls_origin.url("/hello", host="127.0.0.1"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO
    [flow] = decrypted(proxy)
    assert flow.request.host == "127.0.0.1" and flow.client_tls is not None and flow.client_tls.sni is None
    assert [c.sni for c in tls_origin.connections] == [None]
    leaf = _leaf_through(proxy, "127.0.0.1", tls_origin.port)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)


# -- upstream certificates ------------------------------------------------------------------------


def test_untrusted_upstream_certificate_is_a_502(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make(upstream_ca=None)
    result = https(proxy, tls_origin.url("/hello"), "--include")
    assert result.returncode == 0, result.stderr  # the client's TLS session with the proxy is fine
    assert status_of(inner(result.stdout)) == 502
    assert b"certificate verify failed" in result.stdout
    [flow] = decrypted(proxy)
    assert flow.error is not None and "certificate verify failed" in flow.error
    assert tls_origin.requests == []


def test_ssl_insecure_skips_upstream_verification(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make(upstream_ca=None, ssl_insecure=True)
    result = https(proxy, tls_origin.url("/hello"))
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr


def test_bad_upstream_ca_file_is_refused(make: Callable[..., Proxy], tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match="nope.pem"):
        make(upstream_ca=missing)


# -- not decrypting ------------------------------------------------------------------------------


def test_ignored_host_shows_the_origin_certificate(make: Callable[..., Proxy], tls_origin: TLSOrigin,
                                                   origin_pki: OriginPKI) -> None:
    proxy = make(ignore_hosts=["localhost"])
    url = tls_origin.url("/hello", host="localhost")
    result = https(proxy, url, cacert=origin_pki.ca_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO
    result = https(proxy, url, cacert=proxy.ca_cert_path)
    assert result.returncode == 60, (result.returncode, result.stderr)
    flows = wait_flows_done(proxy, 2)
    assert all(f.request.method == "CONNECT" and f.kind == "tunnel" for f in flows)
    assert [f.request.host for f in flows] == ["localhost", "localhost"]
    # origin.test is still decrypted by the same proxy.
    result = https(proxy, tls_origin.url("/hello"))
    assert result.returncode == 0, result.stderr
    assert decrypted(proxy, 3)[-1].request.path == "/hello"


def test_intercept_false_relays_everything(make: Callable[..., Proxy], tls_origin: TLSOrigin,
                                           origin_pki: OriginPKI) -> None:
    proxy = make(intercept=False)
    result = https(proxy, tls_origin.url("/hello"), cacert=origin_pki.ca_path)
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr
    [flow] = wait_flows_done(proxy, 1)
    assert flow.request.method == "CONNECT"


# -- clients that do not trust the CA ---------------------------------------------------------------


def test_client_without_the_ca_fails_and_the_flow_says_why(make: Callable[..., Proxy], tls_origin: TLSOrigin,
                                                           origin_pki: OriginPKI,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    proxy = make()
    with caplog.at_level(logging.WARNING, logger="interceptkit"):
        for _ in range(2):
            result = https(proxy, tls_origin.url("/hello"), cacert=origin_pki.ca_path)
            assert result.returncode == 60, (result.returncode, result.stderr)
        flows = wait_flows_done(proxy, 2)
    assert len(flows) == 2
    for flow in flows:
        assert flow.request.method == "CONNECT" and flow.state == "error"
        assert flow.error is not None and "interceptkit CA" in flow.error and "origin.test" in flow.error
    warnings = [r.getMessage() for r in caplog.records if "interceptkit CA" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per host, not once per connection
    assert tls_origin.requests == []


# -- the CA ---------------------------------------------------------------------------------------------


def test_ca_files_and_fields(make: Callable[..., Proxy], tmp_path: Path, tls_origin: TLSOrigin) -> None:
    folder = tmp_path / "fresh-ca"
    proxy = make(confdir=folder)
    key_file = folder / "interceptkit-ca.pem"
    pem_file, der_file = folder / "interceptkit-ca-cert.pem", folder / "interceptkit-ca-cert.cer"
    assert proxy.ca_cert_path == pem_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in key_file.read_bytes() and b"PRIVATE KEY" not in pem_file.read_bytes()
    ca = x509.load_pem_x509_certificate(pem_file.read_bytes())
    assert x509.load_der_x509_certificate(der_file.read_bytes()) == ca
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert ca.subject == ca.issuer
    assert "interceptkit" in ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    now = dt.datetime.now(dt.timezone.utc)
    assert ca.not_valid_before_utc <= now < ca.not_valid_after_utc
    # The leaf a client gets is issued by that CA, for the name it asked for.
    leaf = _leaf_through(proxy, "origin.test", tls_origin.port)
    assert leaf.issuer == ca.subject
    assert "origin.test" in leaf.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=398)
    # A second proxy on the same folder keeps the CA: clients that trust it keep working.
    again = make(confdir=folder)
    assert again.ca_cert_path.read_bytes() == pem_file.read_bytes()


def _leaf_through(proxy: Proxy, host: str, port: int) -> x509.Certificate:
    """CONNECT by hand and return the certificate the proxy shows, verified against
    its CA and ``host`` (for an address: no SNI, checked against the IP SANs)."""
    context = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head, rest = read_head(sock)
        assert status_of(head) == 200 and rest == b""
        with context.wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der)


def test_client_env_makes_curl_and_python_work(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    env = {**clean_env(), **proxy.client_env()}
    assert env["HTTPS_PROXY"] == proxy.url
    assert proxy.ca_cert_path.read_text() in Path(env["SSL_CERT_FILE"]).read_text()  # the CA, in the bundle
    result = subprocess.run([CURL, "--silent", "--show-error", "--max-time", "15",
                             tls_origin.url("/hello")], capture_output=True, timeout=20, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == HELLO
    script = ("import urllib.request, sys; "
              f"sys.stdout.buffer.write(urllib.request.urlopen({tls_origin.url('/json')!r}, timeout=10).read())")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"origin": "tls", "path": "/json"}
    flows = decrypted(proxy, 2)
    assert sorted(f.request.path for f in flows) == ["/hello", "/json"]
    assert all(f.request.scheme == "https" for f in flows)


def test_info_page_serves_the_ca(make: Callable[..., Proxy]) -> None:
    proxy = make()
    result = curl("http://interceptkit/cert/pem", proxy=proxy, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == proxy.ca_cert_path.read_bytes()
    result = curl("http://interceptkit/cert/cer", proxy=proxy, timeout=10)
    assert result.returncode == 0
    assert result.stdout == (proxy.ca_cert_path.parent / "interceptkit-ca-cert.cer").read_bytes()
    result = curl("--include", "http://interceptkit/", proxy=proxy, timeout=10)
    assert status_of(result.stdout) == 200 and b"/cert/pem" in result.stdout


def test_ca_command_prints_the_path_and_how_to_trust_it(tmp_path: Path) -> None:
    folder = tmp_path / "cli-ca"
    env = {**clean_env(), "INTERCEPTKIT_HOME": str(tmp_path / "not-used")}
    result = subprocess.run([sys.executable, "-m", "interceptkit", "ca", "--confdir", str(folder)],
                            capture_output=True, timeout=30, env=env, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    pem = folder / "interceptkit-ca-cert.pem"
    assert str(pem) in out and pem.exists()
    assert "--cacert" in out and "SSL_CERT_FILE" in out and "0600" in out
    assert not (tmp_path / "not-used").exists()
    # Run twice: the same CA, not a new one.
    before = pem.read_bytes()
    again = subprocess.run([sys.executable, "-m", "interceptkit", "ca", "--confdir", str(folder)],
                           capture_output=True, timeout=30, env=env, check=False)
    assert again.returncode == 0 and pem.read_bytes() == before


# -- hooks on decrypted traffic ----------------------------------------------------------------------


def test_hooks_see_and_change_decrypted_requests(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    schemes: list[str] = []

    def tag(flow) -> None:  # type: ignore[no-untyped-def]
        schemes.append(flow.request.scheme)
        flow.request.headers["X-Through"] = "interceptkit"

    proxy.on("request", tag, host="origin.test")
    proxy.on("response", lambda flow: flow.response.headers.__setitem__("X-Seen", flow.request.url))
    result = https(proxy, tls_origin.url("/hello"), "--include")
    assert result.returncode == 0, result.stderr
    assert schemes == ["https"]
    assert tls_origin.requests[0].header("X-Through") == "interceptkit"
    assert f"x-seen: {tls_origin.url('/hello')}".encode() in result.stdout.lower()  # h2 names are lower case


def test_mock_answers_https_without_the_origin(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    proxy = make()
    mock = proxy.mock("GET", f"https://origin.test:{tls_origin.port}/api/*", json={"mocked": "tls"})
    result = https(proxy, tls_origin.url("/api/users"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"mocked": "tls"} and mock.calls == 1
    assert tls_origin.requests == [] and tls_origin.connections == []


def test_tunnel_hook_can_pass_a_host_through(make: Callable[..., Proxy], tls_origin: TLSOrigin,
                                            origin_pki: OriginPKI) -> None:
    proxy = make()
    seen: list[str] = []

    def passthrough(flow) -> None:  # type: ignore[no-untyped-def]
        seen.append(flow.request.authority)
        flow.intercept = False

    proxy.on("tunnel", passthrough)
    result = https(proxy, tls_origin.url("/hello"), cacert=origin_pki.ca_path)
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr
    assert seen == [f"origin.test:{tls_origin.port}"]
    [flow] = wait_flows_done(proxy, 1)
    assert flow.request.method == "CONNECT" and flow.kind == "tunnel" and flow.error is None
    assert flow.response is not None and flow.response.body_size > 0  # bytes relayed, not decrypted


# -- bugs ------------------------------------------------------------------------------------------------


def test_block_with_a_path_blocks_only_that_path_over_https(make: Callable[..., Proxy],
                                                            tls_origin: TLSOrigin) -> None:
    proxy = make()
    proxy.block(host="origin.test", path="/admin*")
    allowed = https(proxy, tls_origin.url("/hello"))
    assert allowed.returncode == 0 and allowed.stdout == HELLO, allowed.stderr
    refused = https(proxy, tls_origin.url("/admin/users"), "--include")
    assert status_of(inner(refused.stdout)) == 403


def test_url_rewrite_inside_a_tunnel_updates_host(make: Callable[..., Proxy], tls_origin: TLSOrigin) -> None:
    from origin import Origin

    plain = Origin().start()
    try:
        proxy = make()
        proxy.on("request", lambda flow: setattr(flow.request, "url", plain.url("/headers")))
        result = https(proxy, tls_origin.url("/hello"))
        assert result.returncode == 0, result.stderr
        [seen] = plain.wait_for_requests(1)
        assert seen.header("Host") == f"origin.test:{plain.port}"
        assert tls_origin.requests == []
    finally:
        plain.stop()
