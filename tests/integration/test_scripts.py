"""Hook scripts: ``proxy.load_script`` with live reload, and the docs/examples files as written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from origin import curl, opener, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def fetch_headers(proxy, origin) -> dict[str, str]:
    """The request headers the origin received, through ``proxy``."""
    with opener(proxy).open(f"http://127.0.0.1:{origin.port}/headers", timeout=5) as response:
        return {name.lower(): value for name, value in json.loads(response.read())}


def write(path: Path, text: str) -> None:
    """Rewrite a script so its size or mtime changes even within one clock tick."""
    before = path.stat() if path.exists() else None
    path.write_text(text)
    if before is not None and path.stat().st_mtime_ns == before.st_mtime_ns:
        path.touch()


@pytest.fixture
def script(tmp_path, proxy):
    handles = []
    path = tmp_path / "hooks.py"

    def load(text: str, **kwargs):
        write(path, text)
        handle = proxy.load_script(path, **kwargs)
        handles.append(handle)
        return handle

    yield load
    for handle in handles:
        handle.remove()


def test_module_functions_named_like_hooks_are_attached(script, proxy, origin):
    script("def request(flow):\n    flow.request.headers['X-Script'] = 'v1'\n", reload=False)
    assert fetch_headers(proxy, origin)["x-script"] == "v1"


def test_handler_class_in_addons_and_on_style_names(script, proxy, origin):
    script(
        "class H:\n"
        "    def on_request_received(self, flow):\n"
        "        flow.request.headers['X-On'] = 'yes'\n"
        "    def request_headers(self, flow):\n"
        "        flow.request.headers['X-Hook-Name'] = 'yes'\n"
        "addons = [H()]\n", reload=False)
    seen = fetch_headers(proxy, origin)
    assert seen["x-on"] == "yes" and seen["x-hook-name"] == "yes"


def test_setup_gets_the_whole_api(script, proxy, origin):
    script("def setup(proxy):\n    proxy.mock('GET', '*/mocked', text='from setup')\n", reload=False)
    with opener(proxy).open(f"http://127.0.0.1:{origin.port}/mocked", timeout=5) as response:
        assert response.read() == b"from setup"
    assert origin.requests == []


def test_remove_detaches_everything_it_attached(script, proxy, origin):
    handle = script(
        "def request(flow):\n    flow.request.headers['X-A'] = '1'\n"
        "class H:\n    def request(self, flow):\n        flow.request.headers['X-B'] = '1'\n"
        "addons = [H()]\n"
        "def setup(proxy):\n"
        "    @proxy.on('request')\n"
        "    def c(flow):\n        flow.request.headers['X-C'] = '1'\n")
    seen = fetch_headers(proxy, origin)
    assert {"x-a", "x-b", "x-c"} <= seen.keys()
    handle.remove()
    assert not handle.active
    seen = fetch_headers(proxy, origin)
    assert not {"x-a", "x-b", "x-c"} & seen.keys()
    assert proxy.hooks.active == set()


def test_a_change_replaces_the_old_version_within_a_second(script, tmp_path, proxy, origin):
    handle = script("def request(flow):\n    flow.request.headers['X-Script'] = 'v1'\n")
    assert fetch_headers(proxy, origin)["x-script"] == "v1"
    started = time.monotonic()
    write(tmp_path / "hooks.py", "def request(flow):\n    flow.request.headers['X-Script'] = 'v2'\n")
    assert wait_until(lambda: handle.version == 2, timeout=1.5)
    assert time.monotonic() - started < 1.0
    assert fetch_headers(proxy, origin)["x-script"] == "v2"  # and only v2: the old one is gone
    assert len(proxy.hooks.get("request")) == 1


@pytest.mark.parametrize("broken", [
    "def request(flow:\n",  # does not compile
    "import no_such_module_anywhere\n",  # fails to import
    "def request(flow):\n    pass\ndef setup(proxy):\n    proxy.on('request', lambda f: None)\n"
    "    raise RuntimeError('setup broke')\n",  # raises in setup, after attaching something
])
def test_a_broken_version_is_reported_and_the_old_one_stays(script, tmp_path, proxy, origin, broken, caplog):
    handle = script("def request(flow):\n    flow.request.headers['X-Script'] = 'v1'\n")
    write(tmp_path / "hooks.py", broken)
    assert wait_until(lambda: handle.error is not None, timeout=2)
    assert "Traceback" in handle.error
    assert "hooks.py" in handle.error
    assert any("previous version stays attached" in r.getMessage() for r in caplog.records)
    assert fetch_headers(proxy, origin)["x-script"] == "v1"
    assert len(proxy.hooks.get("request")) == 1  # a half-attached setup was detached again
    write(tmp_path / "hooks.py", "def request(flow):\n    flow.request.headers['X-Script'] = 'fixed'\n")
    assert wait_until(lambda: handle.version == 2, timeout=2)
    assert handle.error is None
    assert fetch_headers(proxy, origin)["x-script"] == "fixed"


def test_a_script_broken_from_the_start_attaches_once_fixed(script, tmp_path, proxy, origin):
    handle = script("raise ValueError('not yet')\n")
    assert not handle.active and "ValueError: not yet" in handle.error
    write(tmp_path / "hooks.py", "def request(flow):\n    flow.request.headers['X-Script'] = 'now'\n")
    assert wait_until(lambda: handle.active, timeout=2)
    assert fetch_headers(proxy, origin)["x-script"] == "now"


def test_missing_file_raises(proxy, tmp_path):
    with pytest.raises(FileNotFoundError):
        proxy.load_script(tmp_path / "nope.py")


# -- docs/examples run as written ------------------------------------------------------


def test_example_modify_header(proxy, origin):
    handle = proxy.load_script(EXAMPLES / "modify_header.py", reload=False)
    try:
        result = curl("--include", f"http://127.0.0.1:{origin.port}/headers", proxy=proxy, check=True)
        head, _, body = result.stdout.partition(b"\r\n\r\n")
        assert b"X-Intercepted-By: interceptkit" in head
        assert ["X-Debug", "1"] in json.loads(body)
    finally:
        handle.remove()


def test_example_mock_endpoint(proxy, origin):
    handle = proxy.load_script(EXAMPLES / "mock_endpoint.py", reload=False)
    try:
        mocked = curl(f"http://127.0.0.1:{origin.port}/api/users/1", proxy=proxy, check=True)
        assert json.loads(mocked.stdout) == {"id": 1, "name": "Ada"}
        real = curl(f"http://127.0.0.1:{origin.port}/hello", proxy=proxy, check=True)
        assert real.stdout == b"hello, world\n"
        assert [r.path for r in origin.requests] == ["/hello"]
    finally:
        handle.remove()


def test_example_block_host(proxy, origin):
    handle = proxy.load_script(EXAMPLES / "block_host.py", reload=False)
    try:
        plain = curl("--write-out", "%{http_code}", "--output", "/dev/null", "http://ads.example/",
                     proxy=proxy)
        assert plain.stdout == b"403"
        tls = curl("--write-out", "%{http_code}", "--output", "/dev/null", "https://cdn.tracker.example/",
                   proxy=proxy)
        assert tls.returncode != 0  # the CONNECT itself was refused: no TLS, no request
        assert b"403" in tls.stderr or tls.stdout.startswith(b"403")
        assert curl(f"http://127.0.0.1:{origin.port}/hello", proxy=proxy, check=True).returncode == 0
    finally:
        handle.remove()


def test_example_count_statuses(proxy, origin):
    handle = proxy.load_script(EXAMPLES / "count_statuses.py", reload=False)
    try:
        for expected in ("1", "2"):
            result = curl("--include", f"http://127.0.0.1:{origin.port}/hello", proxy=proxy, check=True)
            assert f"X-Status-Count: {expected}".encode() in result.stdout
    finally:
        handle.remove()


def test_the_docs_show_each_example_file_as_it_is():
    doc = (EXAMPLES.parent / "scripts.md").read_text()
    files = sorted(EXAMPLES.glob("*.py"))
    assert len(files) == 4
    for path in files:
        assert f"```python\n{path.read_text().rstrip()}\n```" in doc, path.name


def test_a_handler_kept_in_an_imported_module_survives_reloads(script, tmp_path, proxy, origin, monkeypatch):
    (tmp_path / "shared_handlers.py").write_text(
        "class H:\n    def request(self, flow):\n        flow.request.headers['X-Shared'] = 'yes'\n"
        "INSTANCE = H()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    handle = script("import shared_handlers\naddons = [shared_handlers.INSTANCE]\n")
    assert fetch_headers(proxy, origin)["x-shared"] == "yes"
    write(tmp_path / "hooks.py", "import shared_handlers\naddons = [shared_handlers.INSTANCE]\n"
                                 "def setup(proxy):\n    raise RuntimeError('broken')\n")
    assert wait_until(lambda: handle.error is not None, timeout=2)
    assert fetch_headers(proxy, origin)["x-shared"] == "yes"  # given back to the old version
    write(tmp_path / "hooks.py", "import shared_handlers\naddons = [shared_handlers.INSTANCE]\n# v3\n")
    assert wait_until(lambda: handle.version == 2, timeout=2), handle.error
    assert fetch_headers(proxy, origin)["x-shared"] == "yes"
    handle.remove()
    assert "x-shared" not in fetch_headers(proxy, origin)
