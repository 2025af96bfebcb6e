"""Replay: a captured request sent again through the same proxy, its hooks, and into the table.

Loopback only: local origins on 127.0.0.1 (one of them TLS, with its own CA),
names pinned by static_resolver.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from interceptkit import Flow, FlowTable, Headers, Proxy, ReplayError, Request, static_resolver
from interceptkit.certs import CertStore


class _Origin(BaseHTTPRequestHandler):
    """Answers with what it received, and records it."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        record = {"method": self.command, "path": self.path, "body": body, "headers": dict(self.headers.items())}
        with self.lock:
            self.seen.append(record)
        answer = json.dumps({"method": self.command, "path": self.path, "body": body.decode("latin-1"),
                             "headers": record["headers"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = _handle

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def origin_ca(tmp_path_factory: pytest.TempPathFactory) -> CertStore:
    return CertStore.load_or_create(tmp_path_factory.mktemp("origin-ca"))


@pytest.fixture(scope="module")
def ports(origin_ca: CertStore) -> Iterator[tuple[int, int]]:
    plain = _serve(ThreadingHTTPServer(("127.0.0.1", 0), _Origin))
    secure = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    secure.socket = origin_ca.server_context("secure.test").wrap_socket(secure.socket, server_side=True)
    _serve(secure)
    yield plain.server_address[1], secure.server_address[1]
    for server in (plain, secure):
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(tmp_path_factory: pytest.TempPathFactory, origin_ca: CertStore,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    _Origin.seen.clear()
    p = Proxy(port=0, resolver=static_resolver({"shop.test": "127.0.0.1", "secure.test": "127.0.0.1"}),
              confdir=tmp_path_factory.getbasetemp() / "proxy-ca", upstream_ca=origin_ca.ca_cert_path,
              read_timeout=10)
    with p:
        yield p


def send(proxy: Proxy, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
    context = ssl.create_default_context(cafile=str(proxy.ca_cert_path))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url, "https": proxy.url}),
                                         urllib.request.HTTPSHandler(context=context))
    with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=10) as response:
        return response.read()


def last_exchange(proxy: Proxy) -> Flow:
    return proxy.flows.where(lambda f: f.request.method != "CONNECT" and f.state != "open")[-1]


# -- the basics ---------------------------------------------------------------------------


def test_replay_sends_the_request_again_and_records_a_new_flow(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/cart?x=1", data=b'{"sku": 7}',
         headers={"Content-Type": "application/json", "X-Token": "t1"})
    original = last_exchange(proxy)
    new = original.replay()
    assert new is not original and new.id > original.id and new in proxy.flows
    assert new.state == "done" and new.metadata["replay_of"] == original.id
    assert (new.request.method, new.request.url) == (original.request.method, original.request.url)
    assert new.response is not None and new.response.status == 200
    first, second = _Origin.seen
    assert first["body"] == second["body"] == b'{"sku": 7}'
    assert second["path"] == "/cart?x=1" and second["headers"]["X-Token"] == "t1"
    assert second["headers"]["Content-Type"] == "application/json"
    assert "X-Interceptkit" not in json.dumps(second["headers"])  # nothing added to mark it


def test_replay_goes_through_the_hooks(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/hooked")
    original = last_exchange(proxy)
    proxy.on("request", lambda flow: flow.request.headers.add("X-Hooked", "yes"))
    assert original.replay().response.json()["headers"]["X-Hooked"] == "yes"  # type: ignore[union-attr]
    mock = proxy.mock("GET", "*/hooked", json={"mocked": True})
    mocked = original.replay()
    assert mocked.response is not None and mocked.response.json() == {"mocked": True}
    assert mock.calls == 1 and len(_Origin.seen) == 2  # the mock answered; the origin saw nothing new


def test_replay_of_https_through_the_interception(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"https://secure.test:{ports[1]}/secret", data=b"pin=1234")
    original = last_exchange(proxy)
    new = original.replay()
    assert new.request.url == f"https://secure.test:{ports[1]}/secret"
    assert new.response is not None and new.response.json()["body"] == "pin=1234"
    assert new.metadata["replay_of"] == original.id and new.server_tls is not None
    assert [s["path"] for s in _Origin.seen] == ["/secret", "/secret"]


def test_replay_finds_its_own_flow_among_concurrent_traffic(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/target")
    original = last_exchange(proxy)
    noise = [threading.Thread(target=send, args=(proxy, f"http://shop.test:{ports[0]}/noise{i}"))
             for i in range(12)]
    for thread in noise:
        thread.start()
    replays = [original.replay() for _ in range(3)]
    for thread in noise:
        thread.join(10)
    assert [r.request.path for r in replays] == ["/target"] * 3
    assert len({r.id for r in replays}) == 3
    tagged = proxy.flows.where(lambda f: f.metadata.get("replay_of") == original.id)
    assert sorted(f.id for f in tagged) == sorted(r.id for r in replays)


# -- when it cannot -----------------------------------------------------------------------


def test_replay_errors_are_clear(proxy: Proxy, ports: tuple[int, int], tmp_path: Path) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/x", data=b"0123456789")
    original = last_exchange(proxy)
    proxy.flows.save(tmp_path / "flows.jsonl")
    loaded = FlowTable.load(tmp_path / "flows.jsonl").where(path="/x")[0]
    with pytest.raises(ReplayError, match="pass one"):
        loaded.replay()
    assert loaded.replay(proxy=proxy).response.status == 200  # type: ignore[union-attr]
    loaded.request.truncated = True
    with pytest.raises(ReplayError, match="body"):
        loaded.replay(proxy=proxy)
    stopped = Proxy(port=0, confdir=tmp_path / "ca")
    with pytest.raises(ReplayError, match="not running"):
        original.replay(proxy=stopped)


def test_a_killed_replay_comes_back_as_a_flow_with_its_error(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/doomed")
    original = last_exchange(proxy)
    proxy.on("request", lambda flow: flow.kill(), path="/doomed")
    new = original.replay(timeout=5)
    assert new.error and new.state == "error" and new.metadata["replay_of"] == original.id


def test_a_blocked_https_host_gives_back_the_refused_connect(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"https://secure.test:{ports[1]}/later")
    original = last_exchange(proxy)
    proxy.block("secure.test")
    new = original.replay(timeout=5)
    assert new.request.method == "CONNECT" and new.response is not None and new.response.status == 403


# -- from event loops -------------------------------------------------------------------------


def test_replay_sync_and_async_inside_a_running_loop(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/loop")
    original = last_exchange(proxy)

    async def cell() -> list[Flow]:
        blocking = original.replay()  # a notebook cell blocking its loop: the proxy has its own
        together = await asyncio.gather(*(original.replay_async() for _ in range(3)))
        return [blocking, *together]

    flows = asyncio.run(cell())
    assert [f.response.status for f in flows] == [200] * 4  # type: ignore[union-attr]
    assert len({f.id for f in flows}) == 4


def test_replay_from_inside_hooks(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/seed")
    original = last_exchange(proxy)
    results: list[Any] = []
    done = threading.Event()

    async def async_hook(flow: Flow) -> None:  # on the proxy's loop: must not block it
        results.append(await original.replay_async())
        done.set()

    proxy.on("done", async_hook, path="/trigger")
    proxy.on("request", lambda flow: flow.metadata.setdefault("tried", _try_sync(original, results)),
             path="/trigger")
    send(proxy, f"http://shop.test:{ports[0]}/trigger")
    assert done.wait(10)
    error, replayed = results
    assert isinstance(error, ReplayError) and "replay_async" in str(error)
    assert isinstance(replayed, Flow) and replayed.request.path == "/seed" and replayed.response is not None


def _try_sync(flow: Flow, results: list[Any]) -> bool:
    try:
        flow.replay()
    except ReplayError as exc:
        results.append(exc)
    return True


# -- the "record and replay" recipe (docs/recipes.md) -------------------------------------------


def test_record_then_serve_the_recording_offline(proxy: Proxy, ports: tuple[int, int], tmp_path: Path,
                                                 origin_ca: CertStore) -> None:
    path = tmp_path / "capture.jsonl"
    recorder = Proxy(port=0, resolver=static_resolver({"shop.test": "127.0.0.1"}), confdir=tmp_path / "ca",
                     save=path)
    with recorder:
        send(recorder, f"http://shop.test:{ports[0]}/catalog?page=1")
    recorded = FlowTable.load(path)
    answers = {(f.request.method, f.request.url): f.response for f in recorded if f.response is not None}

    def from_recording(flow: Flow) -> None:
        saved = answers.get((flow.request.method, flow.request.url))
        if saved is not None:
            headers = [(n, v) for n, v in saved.headers.items()
                       if n.lower() not in ("content-length", "transfer-encoding")]
            flow.respond(saved.status, content=saved.content, headers=headers, reason=saved.reason)

    proxy.on("request_headers", from_recording)
    seen_before = len(_Origin.seen)
    body = send(proxy, f"http://shop.test:{ports[0]}/catalog?page=1")
    assert json.loads(body)["path"] == "/catalog?page=1"
    assert len(_Origin.seen) == seen_before  # answered from the recording
    assert recorded[0].replay(proxy=proxy).metadata["mocked"] is True


# -- edit and resend --------------------------------------------------------------------------


def test_copy_is_unsent_until_replayed_and_edits_stay_on_the_copy(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/orders", data=b'{"qty": 1}')
    original = last_exchange(proxy)
    copy = original.copy()
    copy.request.method = "PUT"
    copy.request.set_content(b'{"qty": 5}')
    copy.request.headers["X-Edited"] = "1"
    copy.request.url = f"http://shop.test:{ports[0]}/orders/42"
    assert len(_Origin.seen) == 1 and copy not in proxy.flows and copy.state == "unsent"
    new = copy.replay()
    assert new.metadata["replay_of"] == original.id and new in proxy.flows
    seen = _Origin.seen[-1]
    assert (seen["method"], seen["path"], seen["body"]) == ("PUT", "/orders/42", b'{"qty": 5}')
    assert seen["headers"]["X-Edited"] == "1"
    assert original.request.method == "POST" and original.request.content == b'{"qty": 1}'
    assert "X-Edited" not in original.request.headers


def test_replay_with_modify_edits_a_copy_in_place(proxy: Proxy, ports: tuple[int, int]) -> None:
    send(proxy, f"http://shop.test:{ports[0]}/search?q=shoes", headers={"Authorization": "Bearer old"})
    original = last_exchange(proxy)

    def fresh_token(request: Any) -> None:
        request.headers["Authorization"] = "Bearer new"
        request.path = "/search?q=boots"

    new = original.replay(modify=fresh_token)
    assert _Origin.seen[-1]["path"] == "/search?q=boots"
    assert _Origin.seen[-1]["headers"]["Authorization"] == "Bearer new"
    assert new.request.headers["Authorization"] == "Bearer new"
    assert original.request.headers["Authorization"] == "Bearer old"


def test_copy_of_a_loaded_flow_needs_a_proxy(proxy: Proxy, ports: tuple[int, int]) -> None:
    loaded = Flow.from_dict(_sent_flow(proxy, ports).to_dict())
    with pytest.raises(ReplayError, match="pass one"):
        loaded.copy().replay()
    assert loaded.copy().replay(proxy=proxy).response.status == 200  # type: ignore[union-attr]


def _sent_flow(proxy: Proxy, ports: tuple[int, int]) -> Flow:
    send(proxy, f"http://shop.test:{ports[0]}/loaded")
    return last_exchange(proxy)


@pytest.mark.parametrize("routes, client_path, upstream_path", [
    ({"/api": {"strip": True}}, "/api/items?page=2", "/items?page=2"),
    ({"/": {}}, "/items", "/items"),
    ({"/svc": {"path": "/base", "strip": True}, "/": {}}, "/svc/x", "/base/x"),
    ({"/keep": {"path": "/base"}}, "/keep/y", "/base/keep/y"),
])
def test_replay_in_reverse_mode(ports: tuple[int, int], tmp_path: Path, routes: dict[str, Any],
                                client_path: str, upstream_path: str) -> None:
    _Origin.seen.clear()
    table = {prefix: {"url": f"http://shop.test:{ports[0]}{spec.get('path', '')}", "strip": spec.get("strip", False)}
             for prefix, spec in routes.items()}
    with Proxy(port=0, mode="reverse", routes=table, confdir=tmp_path / "ca",
               resolver=static_resolver({"shop.test": "127.0.0.1"})) as reverse:
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the environment
        with direct.open(f"{reverse.url}{client_path}", data=b"once", timeout=10) as response:
            response.read()
        original = reverse.flows.where(lambda f: f.state != "open")[-1]
        new = original.replay(modify=lambda request: request.set_content(b"twice"))
    assert new.metadata["replay_of"] == original.id and new.response.status == 200  # type: ignore[union-attr]
    assert [(s["path"], s["body"]) for s in _Origin.seen] == [(upstream_path, b"once"), (upstream_path, b"twice")]


# -- flows the client made over HTTP/2 ------------------------------------------------------------


def _h2_flow(scheme: str, port: int, *, method: str = "GET", body: bytes = b"") -> Flow:
    """A flow as the proxy records an h2 request: lower-case names, no Host, split cookies, ``te``."""
    fields = [("user-agent", "grpc-python/1.6"), ("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2"),
              ("te", "trailers"), (":authority", f"shop.test:{port}")]
    if body:
        fields.append(("content-type", "application/grpc"))
    host = "secure.test" if scheme == "https" else "shop.test"
    request = Request(method=method, scheme=scheme, host=host, port=port, path="/h2/echo?x=1",
                      http_version="HTTP/2", headers=Headers(fields), content=body)
    return Flow(id=900, request=request, state="done")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_replay_of_an_http2_flow_goes_over_http1(proxy: Proxy, ports: tuple[int, int], scheme: str) -> None:
    port = ports[0] if scheme == "http" else ports[1]
    new = _h2_flow(scheme, port, method="POST", body=b"\x00\x00\x00\x00\x02hi").replay(proxy=proxy)
    assert new.error is None and new.response is not None and new.response.status == 200
    assert new.request.http_version == "HTTP/1.1"  # said so in the flow: the replay client speaks HTTP/1.1
    seen = _Origin.seen[-1]
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/h2/echo?x=1", b"\x00\x00\x00\x00\x02hi")
    headers = seen["headers"]
    assert headers["Host"] == f"{'secure' if scheme == 'https' else 'shop'}.test:{port}"
    assert headers["cookie"] == "a=1; b=2"  # joined into one field, as HTTP/1.1 wants
    assert headers["user-agent"] == "grpc-python/1.6" and headers["Content-Length"] == "7"
    assert not any(name.startswith(":") for name in headers) and "te" not in {n.lower() for n in headers}
