"""The pytest plugin, run for real: small test files in pytester's folder, each run by pytest.

The inner tests talk to a loopback origin (``http.server`` on 127.0.0.1,
started by the inner conftest) through ``ik_proxy``; URLs use the name
origin.test, which the inner proxy resolves with a static resolver.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFTEST = '''
import os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import pytest
from interceptkit import static_resolver

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"origin says {self.path}\\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

@pytest.fixture(scope="session")
def ik_proxy_options():
    return {"resolver": static_resolver({"origin.test": "127.0.0.1"}), "max_flows": 50}

@pytest.fixture(scope="session")
def origin():
    if os.environ.get("IK_ORIGIN_DOWN"):
        yield "http://origin.test:9"  # nothing listens: only a replay can answer
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://origin.test:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
'''


#: Plugins the inner runs do not need (hypothesis's summary alone costs seconds per run).
QUIET = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")


def run(tester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return tester.runpytest(*QUIET, *args)


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("IK_ORIGIN_DOWN", raising=False)
    pytester.makeconftest(CONFTEST)
    return pytester


def test_each_test_sees_its_own_flows_and_its_mocks_go_away(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_inner_views='''
        import urllib.request

        def get(url):
            opener = urllib.request.build_opener()  # built after ik_env: it reads the variables now
            return opener.open(url, timeout=5).read()

        def test_first(ik_proxy, ik_env, origin):
            ik_proxy.mock("GET", origin + "/mocked", text="from the mock")
            assert get(origin + "/mocked") == b"from the mock"
            assert [f.request.path for f in ik_proxy.flows] == ["/mocked"]

        def test_second(ik_proxy, ik_env, origin):
            assert get(origin + "/mocked") == b"origin says /mocked\\n"  # the mock was removed
            assert len(ik_proxy.flows) == 1
            assert ik_proxy.proxy.flows.max_flows == 50  # ik_proxy_options from conftest.py

        def test_env(ik_proxy, ik_env):
            import os
            assert os.environ["HTTPS_PROXY"] == ik_proxy.url == os.environ["http_proxy"]
            assert os.environ["NO_PROXY"] == "" and os.environ["no_proxy"] == ""
            # the CA variables name one bundle: the proxy's CA plus the roots this process trusts
            assert os.environ["SSL_CERT_FILE"] == os.environ["CURL_CA_BUNDLE"]
            with open(os.environ["SSL_CERT_FILE"]) as bundle, open(ik_proxy.ca_cert_path) as ca:
                assert ca.read().strip() in bundle.read()
    ''')
    run(inner).assert_outcomes(passed=3)


def test_command_line_options_reach_the_proxy_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner_options='''
        def test_options(ik_proxy_options):
            assert ik_proxy_options == {"upstream_ca": "/tmp/ca.pem", "ssl_insecure": True}
    ''')
    run(pytester, "--ik-upstream-ca", "/tmp/ca.pem", "--ik-ssl-insecure").assert_outcomes(passed=1)


CASSETTE_TEST = '''
    import pytest, urllib.request

    @pytest.mark.cassette(match_on=("method", "host", "path"))
    def test_recorded(ik_proxy, ik_env, origin):
        body = urllib.request.build_opener().open(origin + "/data", timeout=5).read()
        assert body == b"origin says /data\\n"
'''


def test_cassette_marker_records_then_replays_with_the_origin_down(inner: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    inner.makepyfile(test_inner_tape=CASSETTE_TEST)
    run(inner, "--record-mode=once").assert_outcomes(passed=1)
    path = Path(inner.path) / "cassettes" / "test_inner_tape" / "test_recorded.har"
    assert json.loads(path.read_text())["log"]["entries"][0]["request"]["url"].endswith("/data")
    monkeypatch.setenv("IK_ORIGIN_DOWN", "1")
    run(inner, "--record-mode=none").assert_outcomes(passed=1)


def test_mode_none_without_a_file_names_the_path_and_ci_means_none(inner: pytest.Pytester,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    inner.makepyfile(test_inner_tape=CASSETTE_TEST)
    result = run(inner, "--record-mode=none")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cassettes/test_inner_tape/test_recorded.har does not exist*"])
    monkeypatch.setenv("CI", "true")  # on CI the default is none: nothing is recorded by accident
    run(inner).assert_outcomes(errors=1)
    assert not (Path(inner.path) / "cassettes" / "test_inner_tape" / "test_recorded.har").exists()


def test_a_failing_test_reports_its_flows_and_a_har_file(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_inner_fails='''
        import urllib.request

        def test_broken(ik_proxy, ik_env, origin):
            urllib.request.build_opener().open(origin + "/seen?token=abc", timeout=5).read()
            assert False, "the test's own failure"
    ''')
    result = run(inner)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*interceptkit flows*", "*GET*/seen?token=abc*200*upstream*", "HAR file: *.har"])
    har = Path(result.stdout.str().split("HAR file: ", 1)[1].split()[0])
    assert json.loads(har.read_text())["log"]["entries"][0]["response"]["status"] == 200


def test_strict_misses_fail_the_test_at_teardown(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_inner_strict='''
        import urllib.error, urllib.request

        def test_misses(ik_proxy, ik_env, origin):
            ik_proxy.strict()
            ik_proxy.mock("GET", origin + "/known", text="ok")
            try:
                urllib.request.build_opener().open(origin + "/unknown", timeout=5)
            except urllib.error.HTTPError as exc:
                assert exc.code == 599  # the code under test may swallow this: teardown still fails
    ''')
    result = run(inner)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*1 request(s) matched no mock or recording (strict mode)*",
                                 "*GET*/unknown*599*unmatched*"])


HTTPS_CONFTEST = '''
import sys
from pathlib import Path
import pytest
from interceptkit import static_resolver
sys.path.insert(0, {integration!r})
from tls_origin import OriginPKI, TLSOrigin

@pytest.fixture(scope="session")
def ik_proxy_options(ik_proxy_options):  # extends what the command line gave
    return {{**ik_proxy_options, "resolver": static_resolver({{"origin.test": "127.0.0.1"}})}}

@pytest.fixture(scope="session")
def tls_origin():
    pki = OriginPKI(Path({ca!r}), Path({chain!r}), Path({key!r}), None)
    server = TLSOrigin(pki).start()
    yield server
    server.stop()
'''


def test_https_through_ik_env_with_the_upstream_ca_option(pytester: pytest.Pytester, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    integration = Path(__file__).resolve().parent / "integration"
    monkeypatch.syspath_prepend(str(integration))
    from tls_origin import make_pki  # the suite's TLS origin, with its own CA

    pki = make_pki(tmp_path / "pki")
    pytester.makeconftest(HTTPS_CONFTEST.format(integration=str(integration), ca=str(pki.ca_path),
                                                chain=str(pki.chain_path), key=str(pki.key_path)))
    pytester.makepyfile(test_inner_https_via_env='''
        import subprocess

        def test_curl_subprocess(ik_proxy, ik_env, tls_origin):
            url = tls_origin.url("/json")
            out = subprocess.run(["curl", "--silent", "--show-error", "--max-time", "10", url],
                                 capture_output=True, timeout=20)
            assert out.returncode == 0, out.stderr
            assert b'"origin": "tls"' in out.stdout
            assert [f.request.url for f in ik_proxy.flows if f.request.method == "GET"] == [url]
    ''')
    run(pytester).assert_outcomes(failed=1)  # without the origin's CA the proxy refuses it (502)
    run(pytester, "--ik-upstream-ca", str(pki.ca_path)).assert_outcomes(passed=1)
