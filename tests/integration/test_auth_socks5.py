"""Proxy authentication and SOCKS5 mode, with real clients (curl, httpx) on loopback.

Every proxy resolves names only through the static resolver (origin.test ->
127.0.0.1); curl's own lookups are pinned with --resolve.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
from pathlib import Path

import httpx
import pytest
from origin import CURL, HELLO, clean_env, curl, read_head, read_until_closed, status_of, wait_flows_done

from interceptkit import Proxy
from interceptkit.core.socks5 import encode_connect, encode_greeting



def http_code(result: subprocess.CompletedProcess[bytes]) -> int:
    """The status curl's ``--write-out %{http_code}`` printed last (the proxy's 407 shows as such)."""
    return int(result.stdout[-3:])


def curl_code(*args: str) -> subprocess.CompletedProcess[bytes]:
    return curl("--output", "/dev/null", "--write-out", "%{http_code}", *args, timeout=20)


# -- proxy authentication -------------------------------------------------------------------


def test_plain_http_needs_credentials_then_passes(make, origin) -> None:
    proxy = make(proxy_auth=("ada", "s3cret:x"))
    denied = curl("--include", origin.url("/hello"), proxy=proxy, timeout=20)
    head = denied.stdout.partition(b"\r\n\r\n")[0]
    assert status_of(denied.stdout) == 407
    assert b'Proxy-Authenticate: Basic realm="interceptkit"' in head
    assert origin.requests == []  # nothing reached the origin
    wrong = curl_code("--proxy-user", "ada:nope", origin.url("/hello"), "--proxy", proxy.url)
    assert http_code(wrong) == 407
    ok = curl("--proxy-user", "ada:s3cret:x", origin.url("/hello"), proxy=proxy, timeout=20)
    assert ok.returncode == 0 and ok.stdout == HELLO
    [seen] = origin.requests
    assert seen.header("Proxy-Authorization") is None  # never forwarded
    [flow] = wait_flows_done(proxy, 1)
    assert flow.proxy_user == "ada" and flow.response is not None and flow.response.status == 200
    assert "proxy-authorization" not in flow.request.headers  # the password is not kept on the flow
    assert proxy.flows.to_pandas()["proxy_user"].tolist() == ["ada"]


def test_https_connect_needs_credentials_and_inner_flows_carry_the_user(make, tls_origin) -> None:
    proxy = make(proxy_auth=lambda user, password: (user, password) == ("bob", "pw"))
    base = ["--cacert", str(proxy.ca_cert_path), "--capath", "/nonexistent", "--proxy", proxy.url]
    denied = curl_code(*base, tls_origin.url("/hello"))
    assert denied.returncode != 0 and b"407" in denied.stderr  # curl: CONNECT tunnel failed, response 407
    ok = curl(*base[:-2], "--proxy-user", "bob:pw", tls_origin.url("/hello"), proxy=proxy, timeout=20)
    assert ok.returncode == 0 and ok.stdout == HELLO, ok.stderr
    [seen] = tls_origin.requests
    assert seen.header("Proxy-Authorization") is None
    flows = wait_flows_done(proxy, 1)
    assert [f.proxy_user for f in flows] == ["bob"] * len(flows) and any(f.request.path == "/hello" for f in flows)


def test_relayed_connect_sends_no_proxy_authorization(make, echo_server) -> None:
    proxy = make(proxy_auth=("ada", "pw"), intercept=False)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{echo_server.port} HTTP/1.1\r\nHost: x\r\n"
                     "Proxy-Authorization: Basic YWRhOnB3\r\n\r\n".encode())
        head, rest = read_head(sock)
        assert status_of(head) == 200
        sock.sendall(b"ping")
        data = rest
        while len(data) < 4:
            data += sock.recv(100)
        assert data == b"ping"  # the echo saw only the tunnel's bytes, no header
    [flow] = wait_flows_done(proxy, 1)
    assert flow.proxy_user == "ada" and flow.kind == "tunnel"


# -- SOCKS5 -----------------------------------------------------------------------------------


def socks_curl(proxy: Proxy, flag: str, url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return curl(flag, f"127.0.0.1:{proxy.port}", *args, url, timeout=20)


@pytest.mark.parametrize("flag", ["--socks5-hostname", "--socks5"])
def test_socks5_plain_http_is_parsed_into_flows(make, origin, flag) -> None:
    proxy = make(mode="socks5")
    assert proxy.url.startswith("socks5://")
    result = socks_curl(proxy, flag, origin.url("/hello"), "--resolve", f"origin.test:{origin.port}:127.0.0.1")
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr
    flows = wait_flows_done(proxy, 1)
    [flow] = [f for f in flows if f.request.method == "GET"]
    assert flow.request.url == origin.url("/hello") if flag == "--socks5-hostname" else flow.request.port == origin.port
    assert flow.response is not None and flow.response.status == 200
    [seen] = origin.requests
    assert seen.path == "/hello"


@pytest.mark.parametrize("flag", ["--socks5-hostname", "--socks5"])
def test_socks5_https_is_intercepted(make, tls_origin, flag) -> None:
    proxy = make(mode="socks5")
    result = socks_curl(proxy, flag, tls_origin.url("/hello"), "--cacert", str(proxy.ca_cert_path),
                        "--capath", "/nonexistent", "--resolve", f"origin.test:{tls_origin.port}:127.0.0.1")
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr
    flows = wait_flows_done(proxy, 1)
    [flow] = [f for f in flows if f.request.path == "/hello"]
    assert flow.request.scheme == "https" and flow.client_tls is not None
    assert flow.client_tls.sni == "origin.test" and flow.response is not None and flow.response.content == HELLO


def test_socks5_ignored_host_is_relayed(make, tls_origin, origin_pki) -> None:
    proxy = make(mode="socks5", ignore_hosts=["origin.test"])
    result = socks_curl(proxy, "--socks5-hostname", tls_origin.url("/hello"), "--cacert", str(origin_pki.ca_path))
    assert result.returncode == 0 and result.stdout == HELLO, result.stderr
    [flow] = wait_flows_done(proxy, 1)
    assert flow.kind == "tunnel" and flow.request.host == "origin.test" and flow.error is None


def test_httpx_with_a_socks5_proxy(make, origin, tls_origin) -> None:
    proxy = make(mode="socks5")
    trust = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    with httpx.Client(proxy=f"socks5://127.0.0.1:{proxy.port}", verify=trust, timeout=10) as client:
        assert client.get(origin.url("/hello")).content == HELLO
        assert client.get(tls_origin.url("/hello")).content == HELLO
    flows = wait_flows_done(proxy, 2)
    assert {f.request.scheme for f in flows if f.request.path == "/hello"} == {"http", "https"}


def test_socks5_with_username_and_password(make, origin) -> None:
    proxy = make(mode="socks5", proxy_auth=("ada", "pw"))
    ok = curl("--socks5-hostname", f"ada:pw@127.0.0.1:{proxy.port}", origin.url("/hello"), timeout=20)
    assert ok.returncode == 0 and ok.stdout == HELLO, ok.stderr
    also = curl("--socks5-hostname", f"127.0.0.1:{proxy.port}", "--proxy-user", "ada:pw", origin.url("/hello"),
                timeout=20)
    assert also.stdout == HELLO, also.stderr
    wrong = curl("--socks5-hostname", f"ada:no@127.0.0.1:{proxy.port}", origin.url("/hello"), timeout=20)
    assert wrong.returncode != 0 and wrong.stdout == b""
    none = curl("--socks5-hostname", f"127.0.0.1:{proxy.port}", origin.url("/hello"), timeout=20)
    assert none.returncode != 0
    flows = [f for f in wait_flows_done(proxy, 2) if f.request.method == "GET"]
    assert [f.proxy_user for f in flows] == ["ada", "ada"] and len(origin.requests) == 2


def socks_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def test_bad_handshakes_get_reply_codes_and_a_close(make, origin) -> None:
    # Relaying: the proxy connects before it answers. (Intercepting, it answers
    # at once, as it does a CONNECT, and a later failure is the inner request's 502.)
    proxy = make(mode="socks5", intercept=False)
    greeting = encode_greeting()
    bind = bytes([5, 2, 0, 1, 127, 0, 0, 1]) + struct.pack("!H", 80)
    assert socks_exchange(proxy.port, greeting + bind)[2:4] == b"\x05\x07"  # command not supported
    bad_type = bytes([5, 1, 0, 9, 0, 0])
    assert socks_exchange(proxy.port, greeting + bad_type)[2:4] == b"\x05\x08"  # address type
    assert socks_exchange(proxy.port, b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00") == b""  # SOCKS4: closed
    unknown = socks_exchange(proxy.port, greeting + encode_connect("nowhere.test", 80))
    assert unknown[2:4] == b"\x05\x04"  # host unreachable: the resolver knows only origin.test
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]
    assert socks_exchange(proxy.port, greeting + encode_connect("127.0.0.1", free))[2:4] == b"\x05\x05"
    flows = wait_flows_done(proxy, 2)
    assert all(f.error for f in flows)


def _refused_port() -> int:
    """A loopback port nothing listens on (bound, never listening, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_curl_and_httpx_hear_connection_refused_from_the_socks5_reply(make) -> None:
    proxy = make(mode="socks5", intercept=False)
    port = _refused_port()
    result = curl("--socks5", f"127.0.0.1:{proxy.port}", f"http://127.0.0.1:{port}/hello", timeout=20)
    # curl names the REP byte it got: 5 is "connection refused" (RFC 1928).
    assert result.returncode == 97 and b"(5)" in result.stderr, result.stderr
    with httpx.Client(proxy=f"socks5://127.0.0.1:{proxy.port}", timeout=10, trust_env=False) as client, \
            pytest.raises(httpx.ProxyError, match="(?i)connection refused"):
        client.get(f"http://127.0.0.1:{port}/hello")
    flows = wait_flows_done(proxy, 2)
    assert len(flows) == 2 and all("Connection refused" in (f.error or "") for f in flows)


def test_a_blocking_hook_gets_not_allowed(make, origin) -> None:
    proxy = make(mode="socks5")
    proxy.on("tunnel", lambda flow: flow.respond(403, text="no"))
    answer = socks_exchange(proxy.port, encode_greeting() + encode_connect("origin.test", origin.port))
    assert answer[2:4] == b"\x05\x02" and origin.requests == []


def test_cli_socks5_with_auth_file(tmp_path: Path, origin) -> None:
    users = tmp_path / "users"
    users.write_text("# who may use it\nada:pw\n")
    process = subprocess.Popen(
        [__import__("sys").executable, "-m", "interceptkit", "--mode", "socks5", "--listen-port", "0",
         "--proxy-auth-file", str(users), "--confdir", str(tmp_path / "ca"), "--listen-host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    try:
        line = process.stdout.readline().decode()  # type: ignore[union-attr]
        assert "SOCKS5 proxy" in line, line
        port = int(line.split("socks5://127.0.0.1:")[1].split()[0])
        ok = curl("--socks5", f"ada:pw@127.0.0.1:{port}", f"http://127.0.0.1:{origin.port}/hello", timeout=20)
        assert ok.stdout == HELLO, ok.stderr
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("mode", ["forward", "socks5"])
def test_replay_passes_the_proxys_own_authentication(make, origin, tls_origin, mode) -> None:
    proxy = make(mode=mode, proxy_auth=("ada", "pw"))
    flag = "--proxy-user" if mode == "forward" else "--socks5-hostname"
    where = ["--proxy", proxy.url] if mode == "forward" else [f"ada:pw@127.0.0.1:{proxy.port}"]
    for url in (origin.url("/hello"), tls_origin.url("/hello")):
        args = (["--proxy-user", "ada:pw", *where] if mode == "forward" else [flag, *where])
        result = curl(*args, "--cacert", str(proxy.ca_cert_path), url, timeout=20)
        assert result.stdout == HELLO, result.stderr
    flows = [f for f in wait_flows_done(proxy, 2) if f.request.path == "/hello"]
    assert len(flows) == 2
    for flow in flows:
        again = flow.replay(timeout=10)
        assert again.response is not None and again.response.status == 200, again.error
        assert again.metadata["replay_of"] == flow.id and again.proxy_user == "interceptkit-replay"
    assert len(origin.requests) == 2 and len(tls_origin.requests) == 2
    assert all(r.header("Proxy-Authorization") is None for r in origin.requests + tls_origin.requests)
