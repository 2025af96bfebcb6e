"""Hooks through the sans-IO core: RunHook out, HookReturned in, no sockets.

A :class:`FakeRunner` stands where the transport and HookRunner stand in the
real proxy: it answers every ``RunHook`` by calling plain functions on the
flow and feeding ``HookReturned`` back, either at once or later (``hold``),
which is how an async hook looks to the core.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from helpers import (
    Driver,
    Split,
    body_of,
    chunked,
    closes_client,
    field_values,
    finished,
    ok,
    opened,
    status_of,
    to_client,
    to_upstream,
)

from interceptkit.core import commands as cmd
from interceptkit.core import events as ev
from interceptkit.core.config import ProxyConfig
from interceptkit.core.state import Phase
from interceptkit.flow import Flow

DATA_HOOKS = {"response_chunk", "websocket_message"}
GET = b"GET http://example.com/path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"

HookFn = Callable[..., Any]


class FakeRunner:
    """Runs hooks for a Driver: ``hooks`` maps a hook name to functions.

    The names in ``hooks`` are the live set the core consults, so adding or
    removing a name while an exchange is in flight works as in the proxy.
    With ``hold`` set, RunHook commands for those names wait in ``held``
    until :meth:`release` (an async hook that takes its time).
    """

    def __init__(self, hooks: dict[str, list[HookFn]] | None = None, *, split: Split = None,
                 hold: set[str] | None = None, **config: Any) -> None:
        self.hooks: dict[str, list[HookFn]] = dict(hooks or {})
        self.active: set[str] = set(self.hooks)
        self.d = Driver(ProxyConfig(hooks=self.active, **config), split=split)
        self.hold = hold or set()
        self.held: list[cmd.RunHook] = []
        self.calls: list[tuple[str, Any]] = []

    def add(self, name: str, fn: HookFn) -> None:
        self.hooks.setdefault(name, []).append(fn)
        self.active.add(name)

    def remove(self, name: str) -> None:
        self.hooks.pop(name, None)
        self.active.discard(name)

    def run(self, commands: list[cmd.Command]) -> list[cmd.Command]:
        out = list(commands)
        for c in commands:
            if isinstance(c, cmd.RunHook):
                self.calls.append((c.name, c.payload))
                if c.name in self.hold:
                    self.held.append(c)
                elif c.call is not None:
                    out += self.answer(c)
        return out

    def answer(self, c: cmd.RunHook) -> list[cmd.Command]:
        payload, error = c.payload, None
        for fn in self.hooks.get(c.name, []):
            try:
                result = fn(c.flow, payload) if c.name in DATA_HOOKS else fn(c.flow)
            except Exception as exc:  # noqa: BLE001 - the runner's contract: record, go on
                error = f"{c.name} hook failed: {exc!r}"
                continue
            if c.name in DATA_HOOKS and result is not None:
                payload = result
        return self.run(self.d.feed(ev.HookReturned, call=c.call, error=error, result=payload))

    def release(self) -> list[cmd.Command]:
        out: list[cmd.Command] = []
        while self.held:
            out += self.answer(self.held.pop(0))
        return out

    # -- shorthands ---------------------------------------------------------------

    def client(self, data: bytes) -> list[cmd.Command]:
        return self.run(self.d.client(data))

    def connected(self, upstream: int = 1) -> list[cmd.Command]:
        return self.run(self.d.connected(upstream))

    def upstream(self, data: bytes, upstream: int = 1) -> list[cmd.Command]:
        return self.run(self.d.upstream(data, upstream=upstream))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    @property
    def transcript(self) -> list[cmd.Command]:
        return self.d.transcript


def exchange(runner: FakeRunner, request: bytes = GET, response: bytes = ok(b"hello")) -> tuple[bytes, bytes]:
    """Run one forward-proxy exchange; return (what upstream got, what the client got)."""
    out = runner.client(request)
    if opened(out) or opened(runner.transcript):
        out += runner.connected(opened(runner.transcript)[-1].upstream)
        out += runner.upstream(response, upstream=opened(runner.transcript)[-1].upstream)
    return to_upstream(runner.transcript), to_client(runner.transcript)


# -- requests ------------------------------------------------------------------------


@pytest.mark.parametrize("split", [None, 1], ids=["whole", "byte-by-byte"])
def test_request_headers_hook_changes_method_url_and_headers(split: Split) -> None:
    def rewrite(flow: Flow) -> None:
        flow.request.method = "PUT"
        flow.request.url = "http://other.test:8080/new?x=2"
        flow.request.headers["X-Added"] = "yes"
        del flow.request.headers["Host"]

    r = FakeRunner({"request_headers": [rewrite]}, split=split)
    r.client(GET)
    [up] = opened(r.transcript)
    assert (up.host, up.port) == ("other.test", 8080)
    r.connected()
    sent = to_upstream(r.transcript)
    assert sent.startswith(b"PUT /new?x=2 HTTP/1.1\r\n")
    assert field_values(sent, b"Host") == [b"other.test:8080"]
    assert field_values(sent, b"X-Added") == [b"yes"]
    r.upstream(ok(b"done"))
    assert body_of(to_client(r.transcript)) == b"done"
    [flow] = finished(r.transcript)
    assert flow.request.url == "http://other.test:8080/new?x=2" and flow.error is None


@pytest.mark.parametrize("split", [None, 3], ids=["whole", "pieces"])
def test_request_hook_sees_the_whole_body_and_replaces_it(split: Split) -> None:
    seen: list[bytes] = []

    def rewrite(flow: Flow) -> None:
        seen.append(flow.request.content)
        flow.request.set_content(b'{"changed": true, "longer": "than before"}')
        flow.request.headers["Content-Type"] = "application/json"

    r = FakeRunner({"request": [rewrite]}, split=split)
    body = b"a=1&b=2"
    r.client(b"POST http://example.com/form HTTP/1.1\r\nHost: example.com\r\nContent-Length: %d\r\n\r\n%s"
             % (len(body), body))
    assert seen == [body]
    r.connected()
    sent = to_upstream(r.transcript)
    assert body_of(sent) == b'{"changed": true, "longer": "than before"}'
    assert field_values(sent, b"Content-Length") == [str(len(body_of(sent))).encode()]
    assert field_values(sent, b"Content-Type") == [b"application/json"]


def test_request_hook_on_a_chunked_body_sends_it_sized() -> None:
    r = FakeRunner({"request": [lambda flow: flow.request.set_content(flow.request.content.upper())]})
    r.client(b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
             + chunked(b"abc", b"def"))
    r.connected()
    sent = to_upstream(r.transcript)
    assert body_of(sent) == b"ABCDEF"
    assert field_values(sent, b"Content-Length") == [b"6"]
    assert field_values(sent, b"Transfer-Encoding") == []


def test_a_hook_that_makes_an_invalid_request_gets_a_502() -> None:
    def broken(flow: Flow) -> None:
        flow.request.headers["X-Bad"] = "line\r\nInjected: yes"

    r = FakeRunner({"request_headers": [broken]})
    r.client(GET)
    r.connected()
    answer = to_client(r.transcript)
    assert status_of(answer) == 502 and b"invalid request" in body_of(answer)
    assert b"Injected" not in to_upstream(r.transcript)


# -- responses -------------------------------------------------------------------------


def test_response_hook_changes_status_headers_and_body() -> None:
    def rewrite(flow: Flow) -> None:
        assert flow.response is not None and flow.response.content == b"hello"
        flow.response.status = 201
        flow.response.reason = "Made Up"
        flow.response.headers["X-Hooked"] = "1"
        flow.response.text = "a different, longer body"

    r = FakeRunner({"response": [rewrite]})
    _, answer = exchange(r)
    assert answer.startswith(b"HTTP/1.1 201 Made Up\r\n")
    assert field_values(answer, b"X-Hooked") == [b"1"]
    assert body_of(answer) == b"a different, longer body"
    assert field_values(answer, b"Content-Length") == [b"24"]


def test_response_hook_on_a_chunked_response() -> None:
    r = FakeRunner({"response": [lambda flow: flow.response.set_content(flow.response.content[::-1])]})
    _, answer = exchange(r, response=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + chunked(b"abc", b"def"))
    assert body_of(answer) == b"fedcba"
    assert field_values(answer, b"Content-Length") == [b"6"]


def test_response_headers_hook_changes_the_head_and_the_body_streams() -> None:
    def rewrite(flow: Flow) -> None:
        assert flow.response is not None
        flow.response.status = 299
        flow.response.headers["X-Head"] = "seen"

    r = FakeRunner({"response_headers": [rewrite]})
    r.client(GET)
    r.connected()
    out = r.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    first = to_client(out)
    assert status_of(first) == 299 and body_of(first) == b"01234"  # streamed before the end
    r.upstream(b"56789")
    assert body_of(to_client(r.transcript)) == b"0123456789"


def test_response_headers_hook_can_make_the_body_stream_past_the_response_hook() -> None:
    def stream(flow: Flow) -> None:
        assert flow.response is not None
        flow.response.stream = True

    response_hook_calls: list[Flow] = []
    r = FakeRunner({"response_headers": [stream], "response": [response_hook_calls.append]})
    r.client(GET)
    r.connected()
    out = r.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    assert body_of(to_client(out)) == b"01234"  # not held back for the response hook
    r.upstream(b"56789")
    assert response_hook_calls == []
    assert body_of(to_client(r.transcript)) == b"0123456789"
    assert finished(r.transcript)[0].error is None


def test_response_chunk_hook_transforms_drops_and_keeps_chunks() -> None:
    def transform(flow: Flow, data: bytes) -> bytes | None:
        if data == b"drop":
            return b""
        if data == b"keep":
            return None
        return bytes(data).upper() + b"!"

    r = FakeRunner({"response_chunk": [transform]})
    # All chunks in one read: each waits for its hook, order is kept.
    _, answer = exchange(r, response=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + chunked(b"abc", b"drop", b"keep", b"xyz"))
    assert [payload for name, payload in r.calls if name == "response_chunk"] == [b"abc", b"drop", b"keep",
                                                                                  b"xyz"]
    decoded = b"".join(part for part in _dechunk(body_of(answer)))
    assert decoded == b"ABC!keepXYZ!"
    assert not closes_client(r.transcript)


def test_response_chunk_hooks_run_in_order_on_each_others_output() -> None:
    r = FakeRunner({"response_chunk": [lambda f, d: bytes(d) + b"1", lambda f, d: bytes(d) + b"2"]})
    _, answer = exchange(r, response=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + chunked(b"a"))
    assert b"".join(_dechunk(body_of(answer))) == b"a12"


def test_response_chunk_hook_may_change_the_size_of_a_sized_body() -> None:
    r = FakeRunner({"response_chunk": [lambda flow, data: bytes(data) * 2]})
    _, answer = exchange(r, response=ok(b"hello"))
    assert not [c for c in r.transcript if isinstance(c, cmd.Log) and c.level == "error"]
    body = body_of(answer)
    if field_values(answer, b"Transfer-Encoding"):
        body = b"".join(_dechunk(body))
    assert body == b"hellohello"
    assert finished(r.transcript)[0].error is None


def _dechunk(body: bytes) -> list[bytes]:
    parts = []
    for _ in range(10_000):
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return parts
        parts.append(rest[:size])
        body = rest[size + 2:]
    raise AssertionError("runaway chunked body")


def test_a_hook_that_makes_an_invalid_response_gets_a_502() -> None:
    def broken(flow: Flow) -> None:
        assert flow.response is not None
        flow.response.headers["X-Bad"] = "line\r\nInjected: yes"

    r = FakeRunner({"response": [broken]})
    _, answer = exchange(r)
    assert finished(r.transcript)[0].error is not None
    assert status_of(answer) == 502 and b"invalid response" in body_of(answer)


# -- answering and killing ----------------------------------------------------------------


def test_respond_from_request_headers_never_contacts_the_upstream() -> None:
    r = FakeRunner({"request_headers": [lambda flow: flow.respond(json={"mocked": True, "n": 1})]})
    r.client(GET)
    assert opened(r.transcript) == []
    answer = to_client(r.transcript)
    assert status_of(answer) == 200
    assert json.loads(body_of(answer)) == {"mocked": True, "n": 1}
    assert field_values(answer, b"Content-Type") == [b"application/json"]
    [flow] = finished(r.transcript)
    assert flow.error is None and flow.metadata.get("mocked") is True
    # The connection stays usable: the next request is answered too.
    r.client(GET)
    assert len(finished(r.transcript)) == 2 and not closes_client(r.transcript)


def test_respond_waits_for_the_request_body_then_answers() -> None:
    r = FakeRunner({"request_headers": [lambda flow: flow.respond(404, text="nope")]})
    r.client(b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 6\r\n\r\nabc")
    assert to_client(r.transcript) == b""
    r.client(b"def")
    answer = to_client(r.transcript)
    assert status_of(answer) == 404 and body_of(answer) == b"nope"
    assert opened(r.transcript) == []
    assert finished(r.transcript)[0].request.content == b"abcdef"


def test_respond_from_the_request_hook() -> None:
    r = FakeRunner({"request": [lambda flow: flow.respond(202, content=flow.request.content[::-1])]})
    r.client(b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc")
    assert opened(r.transcript) == []
    assert body_of(to_client(r.transcript)) == b"cba"


def test_respond_from_response_headers_replaces_the_upstream_answer() -> None:
    r = FakeRunner({"response_headers": [lambda flow: flow.respond(503, text="replaced")]})
    _, answer = exchange(r, response=ok(b"the real body"))
    assert status_of(answer) == 503 and body_of(answer) == b"replaced"
    assert b"the real body" not in answer
    # The upstream answered completely, so its connection can serve the next request.
    r.client(GET)
    r.upstream(ok(b"second"))
    assert len(opened(r.transcript)) == 1


def test_kill_in_request_headers_closes_the_client() -> None:
    r = FakeRunner({"request_headers": [lambda flow: flow.kill()]})
    r.client(GET)
    assert closes_client(r.transcript) and to_client(r.transcript) == b""
    assert opened(r.transcript) == []
    [flow] = finished(r.transcript)
    assert flow.error == "killed by a hook" and flow.state == "error"


def test_kill_in_response_closes_the_client_without_an_answer() -> None:
    r = FakeRunner({"response": [lambda flow: flow.kill()]})
    _, answer = exchange(r)
    assert answer == b"" and closes_client(r.transcript)
    assert finished(r.transcript)[0].error == "killed by a hook"


def test_kill_in_response_chunk_closes_the_client() -> None:
    def kill(flow: Flow, data: bytes) -> None:
        flow.kill()

    r = FakeRunner({"response_chunk": [kill]})
    _, answer = exchange(r, response=ok(b"hello"))
    assert closes_client(r.transcript)
    assert body_of(answer) == b""
    assert finished(r.transcript)[0].error == "killed by a hook"


def resets_client(commands: list[cmd.Command]) -> bool:
    return any(isinstance(c, cmd.CloseClient) and c.reset for c in commands)


def test_kill_with_reset_asks_the_transport_for_a_reset() -> None:
    r = FakeRunner({"request_headers": [lambda flow: flow.kill(reset=True)]})
    r.client(GET)
    assert resets_client(r.transcript) and to_client(r.transcript) == b""
    assert finished(r.transcript)[0].error == "killed by a hook"


def test_kill_with_reset_in_the_body_comes_after_the_head() -> None:
    def reset(flow: Flow, data: bytes) -> None:
        flow.kill(reset=True)

    r = FakeRunner({"response_chunk": [reset]})
    _, answer = exchange(r, response=ok(b"hello"))
    assert status_of(answer) == 200 and body_of(answer) == b"" and resets_client(r.transcript)


def test_a_plain_kill_is_an_orderly_close() -> None:
    r = FakeRunner({"request_headers": [lambda flow: flow.kill()]})
    r.client(GET)
    assert closes_client(r.transcript) and not resets_client(r.transcript)


def _truncating(after: int, split: Split = None, **hooks: list[HookFn]) -> FakeRunner:
    def cut(flow: Flow) -> None:
        flow.truncate_after = after

    return FakeRunner({"response_headers": [cut], **hooks}, split=split)


@pytest.mark.parametrize("split", [None, 1], ids=["whole", "byte-by-byte"])
def test_truncate_after_sends_that_many_body_bytes_then_closes(split: Split) -> None:
    r = _truncating(4, split)
    _, answer = exchange(r, response=ok(b"hello world"))
    assert status_of(answer) == 200 and b"Content-Length: 11" in answer
    assert answer.endswith(b"\r\n\r\nhell") and closes_client(r.transcript)
    assert not resets_client(r.transcript)  # a short read, not a reset
    [flow] = finished(r.transcript)
    assert flow.state == "error" and "truncated after 4 bytes" in (flow.error or "")


def test_truncate_after_a_longer_body_than_sent_changes_nothing() -> None:
    r = _truncating(100)
    _, answer = exchange(r, response=ok(b"hello"))
    assert body_of(answer) == b"hello" and finished(r.transcript)[0].state == "done"


def test_truncate_cuts_a_mocked_answer_and_what_chunk_hooks_send() -> None:
    r = _truncating(3, response_chunk=[lambda flow, data: data.upper()])
    _, answer = exchange(r, response=ok(b"hello"))
    assert answer.endswith(b"\r\n\r\n3\r\nHEL\r\n") and closes_client(r.transcript)  # no last-chunk

    def mock(flow: Flow) -> None:
        flow.truncate_after = 2
        flow.respond(200, text="mocked")

    r = FakeRunner({"request_headers": [mock]})
    _, answer = exchange(r)
    assert answer.endswith(b"\r\n\r\nmo") and closes_client(r.transcript) and opened(r.transcript) == []


def _pacing(chunk: int, interval: float) -> FakeRunner:
    def pace(flow: Flow) -> None:
        flow.pace_body = (chunk, interval)

    return FakeRunner({"response_headers": [pace]})


def test_pace_body_sends_pieces_on_the_shape_timer_and_ends_after_the_last() -> None:
    r = _pacing(4, 0.5)
    _, answer = exchange(r, response=ok(b"hello world"))
    assert answer.endswith(b"\r\n\r\nhell") and r.d.timers["shape"] == r.d.now + 0.5
    assert finished(r.transcript) == []  # the rest waits for the timer, no sleeping
    r.run(r.d.fire("shape"))
    assert to_client(r.transcript).endswith(b"\r\n\r\nhello wo")
    r.run(r.d.fire("shape"))
    assert to_client(r.transcript).endswith(b"hello world") and finished(r.transcript) == []
    r.run(r.d.fire("shape"))  # the queue is empty: the message ends, the exchange completes
    [flow] = finished(r.transcript)
    assert flow.state == "done" and body_of(to_client(r.transcript)) == b"hello world"
    assert "shape" not in r.d.timers


def test_pace_body_pauses_the_upstream_while_pieces_wait() -> None:
    r = _pacing(2, 1.0)
    out = r.client(GET)
    out = r.connected(opened(r.transcript)[-1].upstream)
    out = r.upstream(ok(b"abcdef")[:-2])
    out += r.upstream(b"ef")
    assert any(isinstance(c, cmd.PauseUpstream) for c in out)
    for _ in range(3):
        out += r.run(r.d.fire("shape"))
    assert any(isinstance(c, cmd.ResumeUpstream) for c in out)
    assert body_of(to_client(r.transcript)) == b"abcdef" and finished(r.transcript)[0].state == "done"


def test_a_paced_body_slower_than_the_read_timeout_is_not_a_stalled_upstream() -> None:
    def pace(flow: Flow) -> None:
        flow.pace_body = (2, 3.0)

    r = FakeRunner({"response_headers": [pace]}, read_timeout=1.0)
    exchange(r, response=ok(b"abcdef"))
    for _ in range(3):
        r.run(r.d.fire("read"))  # the read timer comes due between the pieces
        r.run(r.d.fire("shape"))
    [flow] = finished(r.transcript)
    assert flow.state == "done" and body_of(to_client(r.transcript)) == b"abcdef"


def test_pace_and_cut_together_dribble_a_short_body() -> None:
    def shape(flow: Flow) -> None:
        flow.pace_body, flow.truncate_after = (3, 0.1), 5

    r = FakeRunner({"response_headers": [shape]})
    exchange(r, response=ok(b"hello world"))
    r.run(r.d.fire("shape"))
    assert to_client(r.transcript).endswith(b"\r\n\r\nhello") and closes_client(r.transcript)
    assert "truncated" in (finished(r.transcript)[0].error or "")


# -- waiting for hooks ------------------------------------------------------------------------


def test_the_exchange_waits_for_a_held_hook() -> None:
    r = FakeRunner({"request_headers": [lambda flow: flow.request.headers.__setitem__("X-Late", "1")]},
                   hold={"request_headers"})
    out = r.client(GET)
    assert opened(out) == [] and len(r.held) == 1
    r.client(GET)  # a pipelined second request waits too, and the client is not read meanwhile
    assert any(isinstance(c, cmd.PauseClient) for c in r.transcript)
    # A HookReturned for an unknown call changes nothing.
    assert r.run(r.d.feed(ev.HookReturned, call=999)) == []
    r.release()
    [up] = opened(r.transcript)
    r.connected(up.upstream)
    assert field_values(to_upstream(r.transcript), b"X-Late") == [b"1"]
    assert any(isinstance(c, cmd.ResumeClient) for c in r.transcript)


def test_upstream_bytes_wait_while_a_chunk_hook_runs() -> None:
    r = FakeRunner({"response_chunk": [lambda flow, data: bytes(data) + b"."]}, hold={"response_chunk"})
    r.client(GET)
    r.connected()
    r.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"a", b"b", b"c"))
    assert len(r.held) == 1
    assert any(isinstance(c, cmd.PauseUpstream) for c in r.transcript)
    for _ in range(3):
        r.release()
    assert r.held == []
    assert b"".join(_dechunk(body_of(to_client(r.transcript)))) == b"a.b.c."
    assert any(isinstance(c, cmd.ResumeUpstream) for c in r.transcript)


def test_a_hook_returning_after_the_client_left_is_ignored() -> None:
    r = FakeRunner({"request_headers": [lambda flow: flow.respond(text="late")]}, hold={"request_headers"})
    r.client(GET)
    r.run(r.d.client_closed(aborted=True))
    [flow] = finished(r.transcript)
    assert flow.error is not None
    assert r.release() == [] or to_client(r.transcript) == b""
    assert len(finished(r.transcript)) == 1


def test_a_failed_hook_leaves_the_exchange_going() -> None:
    def boom(flow: Flow) -> None:
        raise RuntimeError("user bug")

    r = FakeRunner({"request_headers": [boom], "response": [boom]})
    _, answer = exchange(r)
    assert status_of(answer) == 200 and body_of(answer) == b"hello"
    assert finished(r.transcript)[0].error is None
    assert r.names() == ["request_headers", "response"]


def test_hooks_added_and_removed_in_flight() -> None:
    r = FakeRunner()
    r.client(GET)
    r.connected()
    # The request went out without hooks; a response hook attached now still applies.
    r.add("response", lambda flow: flow.response.set_content(b"late hook"))
    r.upstream(ok(b"hello"))
    assert body_of(to_client(r.transcript)) == b"late hook"
    r.remove("response")
    before = len(r.calls)
    r.client(GET)
    r.upstream(ok(b"plain"))
    assert to_client(r.transcript).endswith(b"plain") and len(r.calls) == before


def test_no_hooks_no_run_hook_commands() -> None:
    r = FakeRunner()
    exchange(r)
    assert r.calls == []


def test_hook_names_follow_the_exchange() -> None:
    names = ["request_headers", "request", "response_headers", "response"]
    r = FakeRunner({name: [lambda flow: None] for name in names})
    exchange(r, request=b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nx")
    assert r.names() == names


# -- bodies over the hook limit -----------------------------------------------------------------


def test_request_body_over_the_hook_limit_streams_past_the_request_hook() -> None:
    request_hook: list[Flow] = []
    r = FakeRunner({"request": [request_hook.append]}, hook_body_limit=10)
    body = bytes(range(256)) * 4
    r.client(b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: %d\r\n\r\n"
             % len(body))
    assert opened(r.transcript) == []  # under the limit so far: held for the hook
    for i in range(0, len(body), 100):
        r.client(body[i:i + 100])
    [up] = opened(r.transcript)  # over it: the head went out, the body streams
    r.connected(up.upstream)
    assert request_hook == []
    assert body_of(to_upstream(r.transcript)) == body


def test_response_body_over_the_hook_limit_streams_past_the_response_hook() -> None:
    response_hook: list[Flow] = []
    r = FakeRunner({"response": [response_hook.append]}, hook_body_limit=10)
    r.client(GET)
    r.connected()
    body = bytes(range(256)) * 4
    r.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body[:5]))
    assert to_client(r.transcript) == b""  # still under the limit: held for the hook
    out = r.upstream(body[5:50])
    assert body_of(to_client(out)) == body[:50]  # over it: what was held goes out, then the rest streams
    r.upstream(body[50:])
    assert response_hook == []
    assert body_of(to_client(r.transcript)) == body
    assert finished(r.transcript)[0].error is None


def test_response_under_the_hook_limit_is_buffered_for_the_hook() -> None:
    r = FakeRunner({"response": [lambda flow: None]}, hook_body_limit=1000)
    r.client(GET)
    r.connected()
    out = r.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    assert to_client(out) == b""
    r.upstream(b"56789")
    assert body_of(to_client(r.transcript)) == b"0123456789"


def test_expect_100_continue_with_a_request_hook() -> None:
    r = FakeRunner({"request": [lambda flow: None]})
    r.client(b"POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n"
             b"Expect: 100-continue\r\n\r\n")
    assert to_client(r.transcript).startswith(b"HTTP/1.1 100 ")


# -- tunnels -------------------------------------------------------------------------------------


CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"


def _intercepting(**hooks: list[HookFn]) -> FakeRunner:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    return FakeRunner(hooks, intercept=True, server_context=lambda host, alpn=(): context)


def test_tunnel_hook_sees_the_connect() -> None:
    seen: list[tuple[str, int, str]] = []
    r = _intercepting(tunnel=[lambda flow: seen.append((flow.request.host, flow.request.port, flow.kind))])
    r.client(CONNECT)
    assert seen == [("example.com", 443, "tunnel")]
    assert status_of(to_client(r.transcript)) == 200 and r.d.conn.phase() is Phase.SNIFF


def test_tunnel_hook_intercept_false_relays_undecrypted() -> None:
    def no(flow: Flow) -> None:
        flow.intercept = False

    r = _intercepting(tunnel=[no])
    r.client(CONNECT)
    [up] = opened(r.transcript)
    assert (up.host, up.port, up.tls) == ("example.com", 443, False)
    assert to_client(r.transcript) == b""  # answered once the upstream is there
    r.connected()
    assert status_of(to_client(r.transcript)) == 200 and r.d.conn.phase() is Phase.TUNNEL
    hello = b"\x16\x03\x01\x00\x05hello"  # TLS-looking bytes pass unchanged
    r.client(hello)
    assert to_upstream(r.transcript) == hello


def test_tunnel_hook_intercept_true_overrides_ignore_hosts() -> None:
    def yes(flow: Flow) -> None:
        flow.intercept = True

    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    r = FakeRunner({"tunnel": [yes]}, intercept=True, server_context=lambda host, alpn=(): context,
                   ignore_host=lambda host, port: True)
    r.client(CONNECT)
    assert opened(r.transcript) == [] and r.d.conn.phase() is Phase.SNIFF


def test_tunnel_hook_respond_refuses_the_connect() -> None:
    r = _intercepting(tunnel=[lambda flow: flow.respond(403, text="blocked")])
    r.client(CONNECT)
    answer = to_client(r.transcript)
    assert status_of(answer) == 403 and body_of(answer) == b"blocked"
    assert opened(r.transcript) == [] and closes_client(r.transcript)
    [flow] = finished(r.transcript)
    assert flow.request.method == "CONNECT" and flow.response is not None and flow.response.status == 403


def test_tunnel_hook_kill_closes_without_an_answer() -> None:
    r = _intercepting(tunnel=[lambda flow: flow.kill()])
    r.client(CONNECT)
    assert to_client(r.transcript) == b"" and closes_client(r.transcript)
    assert finished(r.transcript)[0].error == "killed by a hook"


def test_tunnel_hook_kill_with_reset_resets_before_the_200() -> None:
    r = _intercepting(tunnel=[lambda flow: flow.kill(reset=True)])
    r.client(CONNECT)
    assert to_client(r.transcript) == b"" and resets_client(r.transcript)


def test_tunnel_hook_held_keeps_early_bytes() -> None:
    def no(flow: Flow) -> None:
        flow.intercept = False

    r = _intercepting(tunnel=[no])
    r.hold = {"tunnel"}
    r.client(CONNECT + b"early bytes")
    assert opened(r.transcript) == []
    r.release()
    r.connected()
    assert to_upstream(r.transcript) == b"early bytes"
