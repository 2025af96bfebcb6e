"""HAR 1.2 out and in: files a browser's developer tools would load, and files they write.

The validator below checks what HAR 1.2 requires (and what Chromium's importer
insists on: numbers where numbers belong, strings where strings belong). The
fixture is shaped like a Chromium export, quirks included.
"""

from __future__ import annotations

import base64
import gzip
import json
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from interceptkit import Flow, FlowTable, Headers, Proxy, Redact, Request, Response, static_resolver
from interceptkit.certs import CertStore
from interceptkit.flow import Timings

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
ENTRY_FIELDS = {"pageref", "startedDateTime", "time", "request", "response", "cache", "timings",
                "serverIPAddress", "connection", "comment"}


# -- a HAR 1.2 validator ---------------------------------------------------------------------


def _pairs(items: Any, where: str) -> None:
    assert isinstance(items, list), where
    for item in items:
        assert isinstance(item["name"], str) and isinstance(item["value"], str), (where, item)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_har(document: dict[str, Any]) -> None:
    """Raise AssertionError unless ``document`` has the HAR 1.2 structure."""
    log = document["log"]
    assert log["version"] == "1.2"
    assert isinstance(log["creator"]["name"], str) and isinstance(log["creator"]["version"], str)
    assert isinstance(log.get("pages", []), list) and isinstance(log["entries"], list)
    for entry in log["entries"]:
        assert all(k in ENTRY_FIELDS or k.startswith("_") for k in entry), sorted(entry)
        started = datetime.fromisoformat(entry["startedDateTime"].replace("Z", "+00:00"))
        assert started.tzinfo is not None
        assert _number(entry["time"]) and entry["time"] >= 0
        assert isinstance(entry["cache"], dict)
        _validate_request(entry["request"])
        _validate_response(entry["response"])
        _validate_timings(entry["timings"], entry["time"])


def _validate_request(request: dict[str, Any]) -> None:
    assert isinstance(request["method"], str) and request["url"].startswith(("http://", "https://", "ws://", "wss://"))
    assert isinstance(request["httpVersion"], str)
    for key in ("cookies", "headers", "queryString"):
        _pairs(request[key], key)
    assert isinstance(request["headersSize"], int) and isinstance(request["bodySize"], int)
    if "postData" in request:
        assert isinstance(request["postData"]["mimeType"], str) and isinstance(request["postData"]["text"], str)


def _validate_response(response: dict[str, Any]) -> None:
    assert isinstance(response["status"], int) and isinstance(response["statusText"], str)
    assert isinstance(response["httpVersion"], str) and isinstance(response["redirectURL"], str)
    _pairs(response["cookies"], "cookies")
    _pairs(response["headers"], "headers")
    content = response["content"]
    assert _number(content["size"]) and isinstance(content["mimeType"], str)
    assert isinstance(content.get("text", ""), str) and content.get("encoding") in (None, "base64")
    if content.get("encoding") == "base64":
        base64.b64decode(content["text"], validate=True)
    assert isinstance(response["headersSize"], int) and isinstance(response["bodySize"], int)


def _validate_timings(timings: dict[str, Any], total: float) -> None:
    for key in ("send", "wait", "receive"):
        assert _number(timings[key]) and timings[key] >= 0, (key, timings)
    for key in ("blocked", "dns", "connect", "ssl"):
        assert key not in timings or (_number(timings[key]) and timings[key] >= -1), (key, timings)
    # "time" is the sum of the timings available (ssl is included in connect).
    parts = sum(v for k, v in timings.items() if k in ("blocked", "dns", "connect", "send", "wait", "receive")
                and v > 0)
    assert total == pytest.approx(parts, abs=0.01)


# -- synthetic flows -----------------------------------------------------------------------


def make_flow(id: int, url: str, *, method: str = "GET", body: bytes = b"", status: int | None = 200,
              response_body: bytes = b"ok", headers: list[tuple[str, str]] | None = None,
              response_headers: list[tuple[str, str]] | None = None, error: str | None = None) -> Flow:
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    request = Request(method=method, scheme=scheme, host=authority, port=443 if scheme == "https" else 80,
                      path=slash + path, headers=Headers([("Host", authority), *(headers or [])]), content=body)
    flow = Flow(id=id, request=request, client_address=("127.0.0.1", 41000 + id),
                server_address=("192.0.2.1", request.port), error=error, state="error" if error else "done")
    if status is not None:
        flow.response = Response(status=status, reason="OK", content=response_body,
                                 headers=Headers(response_headers or [("Content-Type", "text/plain")]))
    t = 1_714_557_600.0 + id
    flow.timings = Timings(start=t, connect_start=t + 0.001, connect_end=t + 0.003, tls_end=t + 0.006,
                           request_sent=t + 0.007, response_start=t + 0.027, end=t + 0.030)
    return flow


def test_export_has_the_har_structure_and_the_details(tmp_path: Path) -> None:
    zipped = gzip.compress(b'{"a": 1}' * 50)
    flows = FlowTable([
        make_flow(1, "https://shop.test/search?q=red+shoes&page=2",
                  headers=[("Cookie", "sid=abc; theme=dark")],
                  response_headers=[("Content-Type", "text/html; charset=utf-8"),
                                    ("Set-Cookie", ("sid=xyz; Path=/; HttpOnly; Secure; SameSite=Lax; "
                                                    "Expires=Wed, 21 Oct 2026 07:28:00 GMT"))],
                  response_body="<p>héllo</p>".encode()),
        make_flow(2, "http://shop.test/logo.png", response_headers=[("Content-Type", "image/png")],
                  response_body=PNG),
        make_flow(3, "http://shop.test/api", method="POST", body=b"a=1&b=two+words",
                  headers=[("Content-Type", "application/x-www-form-urlencoded")], status=302,
                  response_headers=[("Location", "/done"), ("Content-Type", "application/json"),
                                    ("Content-Encoding", "gzip")], response_body=zipped),
        make_flow(4, "http://nowhere.test/", status=None, error="cannot resolve nowhere.test"),
        make_flow(5, "http://shop.test/upload", method="PUT", body=b"\x00\xff\x10",
                  headers=[("Content-Type", "application/octet-stream")]),
    ], redact=Redact(headers=()))  # cookies kept: this test checks how they are parsed
    in_flight = make_flow(6, "http://shop.test/slow")
    in_flight.state = "open"
    tunnel = make_flow(7, "https://shop.test/")
    tunnel.request.method, tunnel.kind = "CONNECT", "tunnel"
    flows._add(in_flight)
    flows._add(tunnel)

    document = flows.to_har(tmp_path / "out.har")
    assert json.loads((tmp_path / "out.har").read_text(encoding="utf-8")) == document
    validate_har(document)
    html, png, post, failed, put = document["log"]["entries"]  # no in-flight flow, no CONNECT

    assert html["startedDateTime"] == "2024-05-01T10:00:01.000Z"
    assert html["timings"] == {"blocked": 1.0, "dns": -1.0, "connect": 5.0, "ssl": 3.0, "send": 1.0,
                               "wait": 20.0, "receive": 3.0}
    assert html["time"] == pytest.approx(30.0)
    assert html["request"]["queryString"] == [{"name": "q", "value": "red shoes"}, {"name": "page", "value": "2"}]
    assert html["request"]["cookies"] == [{"name": "sid", "value": "abc"}, {"name": "theme", "value": "dark"}]
    [cookie] = html["response"]["cookies"]
    assert cookie["name"] == "sid" and cookie["httpOnly"] and cookie["secure"] and cookie["path"] == "/"
    assert cookie["expires"].startswith("2026-10-21T07:28:00")
    assert html["response"]["content"]["text"] == "<p>héllo</p>"
    assert html["serverIPAddress"] == "192.0.2.1"
    assert png["response"]["headersSize"] == len(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n")

    assert png["response"]["content"]["encoding"] == "base64"
    assert base64.b64decode(png["response"]["content"]["text"]) == PNG

    assert post["request"]["postData"]["text"] == "a=1&b=two+words"
    assert post["request"]["postData"]["params"][1] == {"name": "b", "value": "two words"}
    assert post["response"]["redirectURL"] == "/done"
    content = post["response"]["content"]
    assert content["text"] == '{"a": 1}' * 50 and content["size"] == 400  # decoded, as HAR wants
    assert post["response"]["bodySize"] == len(zipped) and content["compression"] == 400 - len(zipped)

    assert failed["response"]["status"] == 0 and failed["response"]["_error"] == "cannot resolve nowhere.test"
    assert put["request"]["postData"]["_encoding"] == "base64"
    assert base64.b64decode(put["request"]["postData"]["text"]) == b"\x00\xff\x10"


def test_truncated_bodies_are_marked() -> None:
    flow = make_flow(1, "http://shop.test/big", response_body=b"x" * 100)
    assert flow.response is not None
    flow.response.body_size, flow.response.truncated = 5000, True
    [entry] = FlowTable([flow]).to_har()["log"]["entries"]
    content = entry["response"]["content"]
    assert content["text"] == "x" * 100 and content["size"] == 5000 and "first 100 of 5000" in content["comment"]
    [again] = FlowTable.from_har({"log": {"entries": [entry]}})
    assert again.response is not None and again.response.truncated and again.response.body_size == 5000


# -- Chromium and Firefox exports ------------------------------------------------------------


def chromium_har() -> dict[str, Any]:
    return {"log": {
        "version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"},
        "pages": [{"startedDateTime": "2024-05-01T10:00:00.000Z", "id": "page_1", "title": "https://shop.test/",
                   "pageTimings": {"onContentLoad": 120.5, "onLoad": 240.1}}],
        "entries": [
            {"_initiator": {"type": "other"}, "_priority": "VeryHigh", "_resourceType": "document",
             "cache": {}, "connection": "1234", "pageref": "page_1",
             "request": {"method": "GET", "url": "https://shop.test/?q=shoes&page=2", "httpVersion": "http/2.0",
                         "headers": [{"name": ":authority", "value": "shop.test"},
                                     {"name": ":method", "value": "GET"}, {"name": ":path", "value": "/?q=shoes&page=2"},
                                     {"name": ":scheme", "value": "https"}, {"name": "accept", "value": "text/html"},
                                     {"name": "cookie", "value": "sid=abc"}],
                         "queryString": [{"name": "q", "value": "shoes"}, {"name": "page", "value": "2"}],
                         "cookies": [{"name": "sid", "value": "abc", "path": "/", "domain": "shop.test",
                                      "expires": "2025-05-01T10:00:00.000Z", "httpOnly": True, "secure": True}],
                         "headersSize": -1, "bodySize": 0},
             "response": {"status": 200, "statusText": "", "httpVersion": "http/2.0",
                          "headers": [{"name": "content-type", "value": "text/html; charset=utf-8"},
                                      {"name": "content-encoding", "value": "br"}],
                          "cookies": [], "content": {"size": 26, "mimeType": "text/html", "compression": 6,
                                                     "text": "<!doctype html><p>héllo</p>"},
                          "redirectURL": "", "headersSize": -1, "bodySize": 20, "_transferSize": 300,
                          "_error": None},
             "serverIPAddress": "192.0.2.10", "startedDateTime": "2024-05-01T10:00:00.123Z", "time": 85.3,
             "timings": {"blocked": 2.1, "dns": 10.0, "ssl": 15.0, "connect": 30.0, "send": 0.2, "wait": 40.0,
                         "receive": 3.0, "_blocked_queueing": 1.5}},
            {"_resourceType": "image", "cache": {}, "pageref": "page_1",
             "request": {"method": "GET", "url": "https://cdn.shop.test/logo.png", "httpVersion": "h3",
                         "headers": [], "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0},
             "response": {"status": 200, "statusText": "", "httpVersion": "h3",
                          "headers": [{"name": "content-type", "value": "image/png"}], "cookies": [],
                          "content": {"size": len(PNG), "mimeType": "image/png",
                                      "text": base64.b64encode(PNG).decode(), "encoding": "base64"},
                          "redirectURL": "", "headersSize": -1, "bodySize": len(PNG)},
             "startedDateTime": "2024-05-01T10:00:00.300Z", "time": 5.5,
             "timings": {"blocked": -1, "dns": -1, "ssl": -1, "connect": -1, "send": 0.5, "wait": 4.0, "receive": 1.0}},
            {"_resourceType": "fetch", "cache": {},
             "request": {"method": "POST", "url": "https://shop.test/api/cart", "httpVersion": "http/2.0",
                         "headers": [{"name": "content-type", "value": "application/json"}],
                         "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 9,
                         "postData": {"mimeType": "application/json", "text": "{\"sku\":7}"}},
             "response": {"status": 201, "statusText": "", "httpVersion": "http/2.0",
                          "headers": [{"name": "content-type", "value": "application/json"}], "cookies": [],
                          "content": {"size": 11, "mimeType": "application/json", "text": "{\"ok\":true}"},
                          "redirectURL": "", "headersSize": -1, "bodySize": 11},
             "startedDateTime": "2024-05-01T10:00:00.400Z", "time": 12,
             "timings": {"blocked": 1, "dns": -1, "ssl": -1, "connect": -1, "send": 1, "wait": 9, "receive": 1}},
            {"_resourceType": "document", "cache": {},
             "request": {"method": "POST", "url": "http://shop.test/login", "httpVersion": "HTTP/1.1",
                         "headers": [{"name": "Content-Type", "value": "application/x-www-form-urlencoded"}],
                         "queryString": [], "cookies": [], "headersSize": 200, "bodySize": 15,
                         "postData": {"mimeType": "application/x-www-form-urlencoded",
                                      "params": [{"name": "a", "value": "1"}, {"name": "b", "value": "two words"}]}},
             "response": {"status": 0, "statusText": "", "httpVersion": "", "headers": [], "cookies": [],
                          "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
                          "headersSize": -1, "bodySize": -1, "_transferSize": 0,
                          "_error": "net::ERR_CONNECTION_REFUSED"},
             "startedDateTime": "2024-05-01T10:00:00.500Z", "time": 3.2,
             "timings": {"blocked": 3.2, "dns": -1, "ssl": -1, "connect": -1, "send": 0, "wait": 0, "receive": 0}},
            {"_resourceType": "image", "cache": {},
             "request": {"method": "GET", "url": "data:image/png;base64,iVBORw0KGgo=", "httpVersion": "",
                         "headers": [], "queryString": [], "cookies": [], "headersSize": -1, "bodySize": 0},
             "response": {"status": 200, "statusText": "OK", "httpVersion": "", "headers": [], "cookies": [],
                          "content": {"size": 8, "mimeType": "image/png"}, "redirectURL": "",
                          "headersSize": -1, "bodySize": 0},
             "startedDateTime": "2024-05-01T10:00:00.600Z", "time": 0,
             "timings": {"send": 0, "wait": 0, "receive": 0}},
            {"_resourceType": "websocket", "cache": {},
             "request": {"method": "GET", "url": "wss://shop.test/live", "httpVersion": "HTTP/1.1",
                         "headers": [{"name": "Upgrade", "value": "websocket"}], "queryString": [], "cookies": [],
                         "headersSize": -1, "bodySize": 0},
             "response": {"status": 101, "statusText": "Switching Protocols", "httpVersion": "HTTP/1.1",
                          "headers": [{"name": "Upgrade", "value": "websocket"}], "cookies": [],
                          "content": {"size": 0, "mimeType": "x-unknown"}, "redirectURL": "",
                          "headersSize": -1, "bodySize": 0},
             "_webSocketMessages": [{"type": "send", "time": 1714557600.7, "opcode": 1, "data": "hi"}],
             "startedDateTime": "2024-05-01T10:00:00.700Z", "time": 20,
             "timings": {"blocked": -1, "dns": -1, "ssl": -1, "connect": -1, "send": 0, "wait": 20, "receive": 0}},
        ]}}


def test_from_har_reads_a_chromium_export(tmp_path: Path) -> None:
    path = tmp_path / "chromium.har"
    path.write_text(json.dumps(chromium_har()), encoding="utf-8")
    table = FlowTable.from_har(path)
    assert [f.request.method for f in table] == ["GET", "GET", "POST", "POST", "GET"]  # data: URL skipped
    page, logo, cart, login, live = table

    assert (page.request.scheme, page.request.host, page.request.port, page.request.path) == \
        ("https", "shop.test", 443, "/?q=shoes&page=2")
    assert page.request.http_version == "HTTP/2" and logo.request.http_version == "HTTP/3"
    assert page.request.headers.keys() == ["accept", "cookie"]  # no HTTP/2 pseudo-headers
    assert page.response is not None and page.response.status == 200
    assert page.response.text == "<!doctype html><p>héllo</p>"
    assert "content-encoding" not in page.response.headers and page.metadata["har_content_encoding"] == "br"
    assert page.response.body_size == 20 and not page.response.truncated
    assert page.server_address == ("192.0.2.10", 443)
    assert page.metadata["pageref"] == "page_1" and page.metadata["resourceType"] == "document"
    assert datetime.fromtimestamp(page.timings.start, timezone.utc) == \
        datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)
    phases = page.timings.phases()
    ms = 1e-6  # epoch floats carry about a microsecond
    assert page.duration == pytest.approx(0.0853, abs=ms)
    assert phases["connect"] == pytest.approx(0.015, abs=ms) and phases["tls"] == pytest.approx(0.015, abs=ms)
    assert phases["wait"] == pytest.approx(0.040, abs=ms) and phases["receive"] == pytest.approx(0.003, abs=ms)

    assert logo.response is not None and logo.response.content == PNG
    assert cart.request.content == b'{"sku":7}' and cart.response is not None and cart.response.json() == {"ok": True}
    assert login.response is None and login.state == "error" and login.error == "net::ERR_CONNECTION_REFUSED"
    assert login.request.content == b"a=1&b=two+words"
    assert live.request.scheme == "wss" and live.response is not None and live.response.status == 101

    assert [f.id for f in table.where(status=range(200, 300))] == [1, 2, 3]
    assert "net::ERR_CONNECTION_REFUSED" in table._repr_html_()
    validate_har(table.to_har())  # and it can be exported again


def test_from_har_reads_firefox_style_files_with_a_bom(tmp_path: Path) -> None:
    document = {"log": {"version": "1.2", "creator": {"name": "Firefox", "version": "125.0"}, "entries": [{
        "startedDateTime": "2024-05-01T12:00:00.1+02:00", "time": 10,
        "request": {"method": "GET", "url": "http://shop.test:8080/a", "httpVersion": "HTTP/1.1",
                    "headers": [{"name": "Host", "value": "shop.test:8080"}], "cookies": [], "queryString": [],
                    "headersSize": 50, "bodySize": -1},
        "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                     "headers": [{"name": "Content-Type", "value": "text/plain"}], "cookies": [],
                     "content": {"mimeType": "text/plain", "size": 1234}, "redirectURL": "",
                     "headersSize": 80, "bodySize": 1234},
        "cache": {}, "timings": {"blocked": 0, "dns": 0, "connect": 0, "ssl": 0, "send": 0, "wait": 9, "receive": 1},
    }]}}
    path = tmp_path / "firefox.har"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(document).encode())
    [flow] = FlowTable.from_har(path)
    assert flow.request.port == 8080 and flow.request.body_size == 0
    assert flow.timings.start == datetime(2024, 5, 1, 10, 0, 0, 100000, tzinfo=timezone.utc).timestamp()
    assert flow.response is not None and flow.response.truncated and flow.response.body_size == 1234


def test_from_har_refuses_what_is_not_har(tmp_path: Path) -> None:
    path = tmp_path / "not.har"
    path.write_text('{"hello": "world"}')
    with pytest.raises(ValueError, match="log.entries"):
        FlowTable.from_har(path)


# -- round trip through a real proxy ----------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: bytes, ctype: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/logo.png":
            self._answer(200, PNG, "image/png")
        elif self.path == "/zipped":
            self._answer(200, gzip.compress(b'{"zipped": true}'), "application/json",
                         (("Content-Encoding", "gzip"),))
        else:
            self._answer(200, json.dumps({"path": self.path}).encode(), "application/json",
                         (("Set-Cookie", "sid=1; Path=/"),))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(201, body, "application/octet-stream")

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, CertStore]]:
    origin_ca = CertStore.load_or_create(tmp_path_factory.mktemp("origin-ca"))
    plain = _serve(ThreadingHTTPServer(("127.0.0.1", 0), _Handler))
    secure = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    secure.socket = origin_ca.server_context("secure.test").wrap_socket(secure.socket, server_side=True)
    _serve(secure)
    yield plain.server_address[1], secure.server_address[1], origin_ca
    for server in (plain, secure):
        server.shutdown()
        server.server_close()


def test_round_trip_of_a_real_capture(servers: tuple[int, int, CertStore], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    plain, secure, origin_ca = servers
    proxy = Proxy(port=0, resolver=static_resolver({"shop.test": "127.0.0.1", "secure.test": "127.0.0.1"}),
                  confdir=tmp_path / "ca", upstream_ca=origin_ca.ca_cert_path)
    with proxy:
        context = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": proxy.url, "https": proxy.url}),
            urllib.request.HTTPSHandler(context=context))
        for url, data in [(f"http://shop.test:{plain}/items?page=2", None),
                          (f"http://shop.test:{plain}/logo.png", None),
                          (f"http://shop.test:{plain}/zipped", None),
                          (f"http://shop.test:{plain}/upload", b"\x00\x01binary\xff"),
                          (f"https://secure.test:{secure}/private", None)]:
            with opener.open(urllib.request.Request(url, data=data), timeout=10) as response:
                response.read()
        captured = proxy.flows.where(lambda f: f.request.method != "CONNECT")
        document = captured.to_har(tmp_path / "capture.har")
    validate_har(document)
    assert len(document["log"]["entries"]) == 5
    secure_entry = document["log"]["entries"][-1]
    assert secure_entry["timings"]["ssl"] > 0 and secure_entry["timings"]["connect"] >= secure_entry["timings"]["ssl"]

    loaded = FlowTable.from_har(tmp_path / "capture.har")
    assert len(loaded) == len(captured)
    for before, after in zip(captured, loaded):
        assert before.response is not None and after.response is not None
        assert (after.id, after.request.method, after.request.url) == (before.id, before.request.method,
                                                                      before.request.url)
        assert after.request.headers.items() == before.request.headers.items()
        assert after.request.content == before.request.content
        assert after.response.status == before.response.status
        assert after.response.decoded_content() == before.response.decoded_content()
        assert after.duration == pytest.approx(before.duration, abs=1e-5)
        for name, value in after.timings.phases().items():
            expected = FlowTable([before])[name][0]
            assert (value or 0.0) == pytest.approx(expected or 0.0, abs=1e-5), name
    assert loaded.where(path="/logo.png")[0].response.content == PNG  # type: ignore[union-attr]


def test_exported_flows_come_back_from_a_har_dict() -> None:
    flows = [make_flow(1, "http://shop.test/a"), make_flow(2, "http://shop.test/b", status=None, error="boom")]
    loaded = FlowTable.from_har(FlowTable(flows).to_har())
    assert [(f.id, f.request.path, f.error) for f in loaded] == [(1, "/a", None), (2, "/b", "boom")]
