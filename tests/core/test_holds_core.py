"""Holds, paced uploads, resets at accept and streamed mock bodies in the sans-IO core.

No sockets and no sleeping: a hook asks on the flow (``flow.hold``,
``flow.pace_upload``, ``flow.respond(body=...)``), and time or the body's
pieces arrive as events (``TimerFired`` with its key, ``HoldReleased``,
``BodyPiece``), exactly as the transport would feed them.
"""

from __future__ import annotations

from pathlib import Path

from helpers import CLIENT, body_of, closes_client, field_values, finished, of_type, ok, opened, status_of, \
    to_client, to_upstream
from test_hooks_core import GET, FakeRunner

from interceptkit.core import commands as cmd
from interceptkit.core import events as ev
from interceptkit.flow import Flow

POST = (b"POST http://example.com/up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\n")


def timers(commands: list[cmd.Command], name: str) -> list[cmd.StartTimer]:
    return [c for c in of_type(commands, cmd.StartTimer) if c.name == name]


def fire(r: FakeRunner, name: str, key: int, after: float = 0.0) -> list[cmd.Command]:
    r.d.advance(after)
    return r.run(r.d.feed(ev.TimerFired, timer=name, key=key))


def holding(seconds: float | None) -> FakeRunner:
    return FakeRunner({"request_headers": [lambda flow: flow.hold(seconds)]})


# -- timers with keys, holds ------------------------------------------------------------


def test_a_hold_starts_a_timer_keyed_by_the_exchange_and_the_exchange_moves_on_when_it_fires() -> None:
    r = holding(1.5)
    out = r.client(GET)
    [timer] = timers(out, "hold")
    assert timer.delay == 1.5 and not opened(out)  # held: the upstream is not asked yet
    assert not opened(fire(r, "hold", timer.key + 1))  # another exchange's timer: nothing moves
    assert not opened(fire(r, "idle", timer.key))  # another timer of this key: nothing moves either
    moved = fire(r, "hold", timer.key, after=1.5)
    assert opened(moved)
    assert to_upstream(r.connected(1)).startswith(b"GET /path?q=1 HTTP/1.1")
    answered = r.upstream(ok(b"late"))
    assert body_of(to_client(answered)) == b"late"
    [flow] = finished(answered)
    assert flow.error is None and flow.hold_for is None


def test_timer_fired_without_a_key_is_key_zero() -> None:
    assert ev.TimerFired(time=0.0, timer="read").key == 0
    assert cmd.StartTimer(name="read", delay=1.0).key == 0


def test_what_arrives_while_held_waits_in_the_inbox_and_follows_in_order() -> None:
    r = holding(2.0)
    out = r.client(POST)
    [timer] = timers(out, "hold")
    out += r.client(b"0123456789")  # the body arrives during the hold
    assert of_type(out, cmd.PauseClient) and not to_upstream(r.transcript)
    fire(r, "hold", timer.key, after=2.0)
    r.connected(1)
    sent = to_upstream(r.transcript)
    assert sent.startswith(b"POST /up HTTP/1.1") and sent.endswith(b"\r\n\r\n0123456789")
    assert of_type(r.transcript, cmd.ResumeClient)


def test_a_hold_delays_a_mock_made_by_the_same_hook() -> None:
    def slow_mock(flow: Flow) -> None:
        flow.hold(0.75)
        flow.respond(418, text="teapot")

    r = FakeRunner({"request_headers": [slow_mock]})
    out = r.client(GET)
    assert to_client(out) == b""
    [timer] = timers(out, "hold")
    answered = fire(r, "hold", timer.key, after=0.75)
    assert status_of(to_client(answered)) == 418 and body_of(to_client(answered)) == b"teapot"


def test_a_release_ends_a_timed_hold_early() -> None:
    r = holding(60.0)
    out = r.client(GET)
    flow = of_type(out, cmd.RunHook)[0].flow
    assert not opened(r.run(r.d.feed(ev.HoldReleased, flow_id=flow.id + 100)))  # not ours: ignored
    moved = r.run(r.d.feed(ev.HoldReleased, flow_id=flow.id))
    assert opened(moved)
    [timer] = timers(out, "hold")
    assert fire(r, "hold", timer.key, after=60.0) == []  # the stale timer finds nothing held


def test_a_hang_has_no_timer_and_ends_when_the_client_goes_away() -> None:
    r = holding(None)
    out = r.client(GET)
    assert timers(out, "hold") == [] and not opened(out)
    r.d.advance(3600)
    gone = r.run(r.d.client_closed())  # an orderly EOF: a hang will never answer, so let go
    [flow] = finished(gone)
    assert closes_client(gone) and "held" in (flow.error or "")
    assert not opened(r.transcript)


def test_a_long_hang_is_not_the_client_being_idle() -> None:
    r = FakeRunner({"request_headers": [lambda flow: flow.hold()]}, idle_timeout=1.0)
    r.client(GET)
    out = r.run(r.d.fire("idle", at=r.d.now + 30.0))
    assert status_of(to_client(out)) == 0 and not finished(out) and timers(out, "idle")


def test_a_hang_aborted_by_the_client_ends_the_flow() -> None:
    r = holding(None)
    r.client(GET)
    gone = r.run(r.d.client_closed(aborted=True))
    assert finished(gone) and closes_client(gone)


def test_a_killed_hang_released_by_the_policy_closes_the_connection() -> None:
    r = holding(None)
    out = r.client(GET)
    flow = of_type(out, cmd.RunHook)[0].flow
    flow.kill()
    released = r.run(r.d.feed(ev.HoldReleased, flow_id=flow.id))
    assert closes_client(released) and finished(released)[0].error == "killed by a hook"
    assert not opened(r.transcript)


def test_a_hold_with_a_timed_hook_does_not_count_against_the_read_timeout() -> None:
    r = FakeRunner({"response_headers": [lambda flow: flow.hold(5.0)]}, read_timeout=1.0)
    r.client(GET)
    r.connected(1)
    out = r.upstream(ok(b"body"))
    [timer] = timers(out, "hold")
    read = r.run(r.d.fire("read", at=r.d.now + 2.0))  # the upstream answered: a hold is not its delay
    assert status_of(to_client(read)) == 0 and not finished(read)
    done = fire(r, "hold", timer.key, after=3.0)
    assert body_of(to_client(done)) == b"body" and finished(done)[0].error is None


def test_a_hold_asked_in_a_tunnel_hook_is_ignored_with_a_warning() -> None:
    r = FakeRunner({"tunnel": [lambda flow: flow.hold(5.0)]})
    out = r.client(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert timers(out, "hold") == [] and opened(out)  # the tunnel goes on at once
    assert any(isinstance(c, cmd.Log) and "hold()" in c.message for c in out)


# -- paced uploads ------------------------------------------------------------------------


def test_a_paced_upload_goes_upstream_one_piece_per_tick_and_ends_after_the_last() -> None:
    def pace(flow: Flow) -> None:
        flow.pace_upload = (4, 0.5)

    r = FakeRunner({"request_headers": [pace]})
    r.client(POST)
    r.connected(1)
    out = r.client(b"0123456789")
    sent = to_upstream(r.transcript)
    assert sent.endswith(b"\r\n\r\n0123") and of_type(out, cmd.PauseClient)
    [tick] = timers(out, "upload")
    assert tick.delay == 0.5
    assert to_upstream(fire(r, "upload", tick.key, after=0.5)) == b"4567"
    assert to_upstream(fire(r, "upload", tick.key, after=0.5)) == b"89"
    last = fire(r, "upload", tick.key, after=0.5)  # nothing queued: the request ends, the client is read again
    assert of_type(last, cmd.ResumeClient) and timers(last, "upload") == []
    done = r.upstream(ok(b"stored"))
    assert body_of(to_client(done)) == b"stored"


# -- a reset at accept ---------------------------------------------------------------------


def test_the_policy_resets_a_connection_at_accept() -> None:
    asked: list[tuple[str, int] | None] = []

    def refuse(address: tuple[str, int] | None) -> bool:
        asked.append(address)
        return True

    r = FakeRunner(reset_at_connect=refuse)
    [close] = of_type(r.transcript, cmd.CloseClient)
    assert close.reset and asked == [CLIENT]
    assert r.client(GET) == []  # nothing is read after it


def test_a_policy_that_says_no_or_raises_lets_the_client_in() -> None:
    def broken(address: tuple[str, int] | None) -> bool:
        raise RuntimeError("bug")

    for policy in (lambda address: False, broken):
        r = FakeRunner(reset_at_connect=policy)
        assert not closes_client(r.transcript)
        assert opened(r.client(GET))


# -- streamed mock bodies -------------------------------------------------------------------


def streamed(body: object, request: bytes = GET) -> tuple[FakeRunner, list[cmd.Command]]:
    r = FakeRunner({"request_headers": [lambda flow: flow.respond(200, body=body)]})
    return r, r.client(request)


def test_a_streamed_mock_is_pulled_piece_by_piece() -> None:
    source = iter([b"ab", b"cd"])
    r, out = streamed(source)
    head = to_client(out)
    assert status_of(head) == 200 and body_of(head) == b""  # the head, then one pull at a time
    [pull] = of_type(out, cmd.PullBody)
    assert pull.source is source and not pull.stop and not finished(out)
    first = r.run(r.d.feed(ev.BodyPiece, xid=pull.xid, data=b"ab"))
    assert to_client(first) == b"2\r\nab\r\n" and len(of_type(first, cmd.PullBody)) == 1
    second = r.run(r.d.feed(ev.BodyPiece, xid=pull.xid, data=b"cd"))
    assert to_client(second) == b"2\r\ncd\r\n"
    end = r.run(r.d.feed(ev.BodyPiece, xid=pull.xid, end=True))
    assert to_client(end) == b"0\r\n\r\n" and of_type(end, cmd.PullBody) == []
    [flow] = finished(end)
    assert flow.error is None and flow.response is not None and flow.response.body_size == 4
    assert field_values(head, b"transfer-encoding") == [b"chunked"]


def test_a_streamed_path_is_framed_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "body.bin"
    path.write_bytes(b"x" * 5000)
    r, out = streamed(path)
    assert field_values(to_client(out), b"content-length") == [b"5000"]
    [pull] = of_type(out, cmd.PullBody)
    assert pull.source == path
    end = r.run(r.d.feed(ev.BodyPiece, xid=pull.xid, data=b"x" * 5000, end=True))
    assert to_client(end) == b"x" * 5000 and finished(end)[0].error is None


def test_a_failed_read_cuts_the_answer_short() -> None:
    r, out = streamed(iter([b"never"]))
    [pull] = of_type(out, cmd.PullBody)
    failed = r.run(r.d.feed(ev.BodyPiece, xid=pull.xid, error="OSError: disk gone"))
    assert closes_client(failed) and "disk gone" in (finished(failed)[0].error or "")


def test_a_streamed_mock_to_a_head_request_pulls_nothing() -> None:
    r, out = streamed(iter([b"body"]), GET.replace(b"GET", b"HEAD", 1))
    assert of_type(out, cmd.PullBody) == [] and finished(out)[0].error is None


def test_a_cut_streamed_body_stops_the_source() -> None:
    def cut_mock(flow: Flow) -> None:
        flow.truncate_after = 3
        flow.respond(200, body=iter([b"abcdef"]))

    r = FakeRunner({"request_headers": [cut_mock]})
    out = r.client(GET)
    [pull] = of_type(out, cmd.PullBody)
    cut = r.run(r.d.feed(ev.BodyPiece, xid=pull.xid, data=b"abcdef"))
    assert [c.stop for c in of_type(cut, cmd.PullBody)] == [True] and closes_client(cut)
