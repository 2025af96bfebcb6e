"""client_env(): a child process goes through the proxy and still trusts what its parent trusts.

The parent's ``SSL_CERT_FILE`` is set to the TLS origin's own CA, standing for
the system roots: a host the proxy relays unchanged (``ignore_hosts``) then
presents a certificate only that CA signed.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from origin import HELLO, clean_env
from tls_origin import OriginPKI, make_pki

from interceptkit import Proxy
from interceptkit.clientenv import BUNDLE_VARIABLES

FETCH = ("import sys, urllib.request\n"
         "for url in sys.argv[1:]:\n"
         "    sys.stdout.buffer.write(urllib.request.urlopen(url, timeout=10).read())\n")


@pytest.fixture
def parent_trusts_origin_ca(monkeypatch: pytest.MonkeyPatch, origin_pki: OriginPKI) -> Path:
    """The parent's trust store is the origin's CA, and nothing in the environment points elsewhere."""
    for name in (*BUNDLE_VARIABLES, "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(origin_pki.ca_path))
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")  # no system roots: only what the test gave
    return origin_pki.ca_path


def child_env(proxy: Proxy, **kwargs: bool) -> dict[str, str]:
    """The parent's environment plus client_env(), and nothing else."""
    return {**clean_env(), **proxy.client_env(**kwargs)}


def run(command: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, timeout=timeout, env=env, check=False)


def test_child_reaches_an_intercepted_origin_and_an_ignored_host(parent_trusts_origin_ca, make, tls_origin):
    proxy = make(ignore_hosts=["localhost"])
    intercepted, relayed = tls_origin.url("/hello"), tls_origin.url("/hello", host="localhost")
    env = child_env(proxy)
    result = run([sys.executable, "-c", FETCH, intercepted, relayed], env)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == HELLO * 2
    curl = run(["curl", "--silent", "--show-error", "--max-time", "10", intercepted, relayed], env, timeout=20)
    assert curl.returncode == 0, curl.stderr.decode()
    assert curl.stdout == HELLO * 2
    # Both really went through the proxy: one decrypted, one relayed.
    decrypted = [f for f in proxy.flows if f.request.method != "CONNECT"]
    assert len(decrypted) == 2 and all(f.request.host == "origin.test" for f in decrypted)
    tunnels = [f for f in proxy.flows if f.kind == "tunnel"]
    assert [f.request.host for f in tunnels] == ["localhost", "localhost"]


def test_the_ca_alone_is_what_breaks_an_ignored_host(parent_trusts_origin_ca, make, tls_origin):
    # Why the bundle exists: with the CA alone the relayed host's certificate
    # cannot be verified (the old client_env did this).
    proxy = make(ignore_hosts=["localhost"])
    env = {**child_env(proxy), "SSL_CERT_FILE": str(proxy.ca_cert_path)}
    result = run([sys.executable, "-c", FETCH, tls_origin.url("/hello", host="localhost")], env)
    assert result.returncode != 0
    assert b"CERTIFICATE_VERIFY_FAILED" in result.stderr


def test_variables_and_no_proxy(parent_trusts_origin_ca, make):
    proxy = make()
    env = proxy.client_env()
    bundle = Path(env["SSL_CERT_FILE"])
    assert bundle.parent == proxy.confdir
    for name in BUNDLE_VARIABLES:
        assert env[name] == str(bundle)
    assert env["NODE_EXTRA_CA_CERTS"] == str(proxy.ca_cert_path)
    assert env["HTTP_PROXY"] == env["https_proxy"] == proxy.url
    assert env["NO_PROXY"] == env["no_proxy"] == ""
    kept = proxy.client_env(keep_no_proxy=True)
    assert "NO_PROXY" not in kept and "no_proxy" not in kept


def test_bundle_is_refreshed_when_what_the_parent_trusts_changes(parent_trusts_origin_ca, make, tmp_path,
                                                                 monkeypatch):
    proxy = make()
    bundle = Path(proxy.client_env()["SSL_CERT_FILE"])
    first = bundle.read_text()
    assert first.count("BEGIN CERTIFICATE") == 2  # the interceptkit CA and the parent's one
    assert first.startswith(proxy.ca_cert_path.read_text())
    other = make_pki(tmp_path / "other")
    combined = tmp_path / "roots.pem"
    combined.write_bytes(parent_trusts_origin_ca.read_bytes() + other.ca_path.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(combined))
    assert Path(proxy.client_env()["SSL_CERT_FILE"]) == bundle
    assert bundle.read_text().count("BEGIN CERTIFICATE") == 3
    assert other.ca_path.read_text() in bundle.read_text()
    # A shell that already points SSL_CERT_FILE at the bundle does not feed it into itself.
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    proxy.client_env()
    assert other.ca_path.read_text() not in bundle.read_text()


# -- pip through the intercepting proxy ---------------------------------------------------


def build_wheel(folder: Path, name: str = "tinypkg", version: str = "0.1") -> Path:
    """A minimal valid wheel: one module, METADATA, WHEEL and RECORD."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": b"VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},sha256={_digest(d)},{len(d)}\n" for n, d in files.items()) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for n, d in files.items():
            wheel.writestr(n, d)
        wheel.writestr(f"{info}/RECORD", record)
    return path


def _digest(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_pip_download_through_the_intercepting_proxy(parent_trusts_origin_ca, make, tls_origin, tmp_path):
    files = tmp_path / "files"
    wheel = build_wheel(files / "packages")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (files / "simple" / "tinypkg").mkdir(parents=True)
    (files / "simple" / "tinypkg" / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="/files/packages/{wheel.name}#sha256={sha}">{wheel.name}</a>'
        "</body></html>\n")
    proxy = make()
    env = {k: v for k, v in child_env(proxy).items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull  # no site config: no other index, no find-links
    out = tmp_path / "downloaded"
    result = run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                  "--disable-pip-version-check", "--index-url", tls_origin.url("/files/simple/"),
                  "--dest", str(out), "tinypkg"], env, timeout=120)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert (out / wheel.name).read_bytes() == wheel.read_bytes()
    paths = [f.request.path for f in proxy.flows if f.request.method != "CONNECT"]
    assert "/files/simple/tinypkg/" in paths and f"/files/packages/{wheel.name}" in paths


# -- interceptkit env / interceptkit run ------------------------------------------------------


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "interceptkit", *args]


def test_eval_interceptkit_env_sends_a_shells_curl_through_the_proxy(parent_trusts_origin_ca, make, tls_origin):
    proxy = make(ignore_hosts=["localhost"])
    env_command = " ".join(cli("env", "--listen-port", str(proxy.port), "--confdir", str(proxy.confdir)))
    script = (f'eval "$({env_command})" && curl --silent --show-error --max-time 10 '
              f'{tls_origin.url("/hello")} {tls_origin.url("/hello", host="localhost")}')
    result = run(["sh", "-c", script], clean_env(), timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == HELLO * 2
    assert b"warning" not in result.stderr  # the proxy was listening
    assert [f.request.path for f in proxy.flows if f.request.method != "CONNECT"] == ["/hello"]


def test_run_gives_the_command_the_variables_and_returns_its_status(parent_trusts_origin_ca, make, tls_origin):
    proxy = make()
    options = ["--listen-port", str(proxy.port), "--confdir", str(proxy.confdir)]
    fetched = run(cli("run", *options, "--", sys.executable, "-c", FETCH, tls_origin.url("/hello")), clean_env())
    assert fetched.returncode == 0, fetched.stderr.decode()
    assert fetched.stdout == HELLO
    assert len([f for f in proxy.flows if f.request.method != "CONNECT"]) == 1
    failed = run(cli("run", *options, "--", sys.executable, "-c", "import sys; sys.exit(3)"), clean_env())
    assert failed.returncode == 3
    missing = run(cli("run", *options, "--", "no-such-command-anywhere"), clean_env())
    assert missing.returncode == 127 and b"cannot run no-such-command-anywhere" in missing.stderr


def test_env_warns_when_no_proxy_listens(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening
        result = run(cli("env", "--listen-port", str(port), "--confdir", str(tmp_path / "ca")), clean_env())
    assert result.returncode == 0
    assert f"nothing listens on 127.0.0.1:{port}".encode() in result.stderr
    assert f"export HTTPS_PROXY='http://127.0.0.1:{port}'".encode() in result.stdout.splitlines()
