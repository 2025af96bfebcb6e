"""HTTP/2 bad input through the whole proxy core (issue 10, item 7), no sockets.

``tests/core/test_http2_fuzz.py`` fuzzes the layers alone; here an h2 client
speaks to a whole :class:`ProxyConnection` (a plain reverse listener, prior
knowledge h2c) while the transport around it connects HTTP/1 origins that
answer, fires timers and returns hooks (``h2proxy.H2ProxyRun``). Whatever
the client sends, and in whatever pieces:

- the core never raises and never logs an error (an internal error is one);
- every flow that starts finishes once, ``done`` or ``error``;
- a protocol error is a GOAWAY with a non-zero code, then ``CloseClient``;
- a request the core had fully read before the error (in an earlier read,
  or in the same read on a stream below the failing frame's) has its flow,
  and that flow completed or ended with an error;
- what the proxy sent the client is valid HTTP/2 a client can follow
  (``H2ProxyRun.check_output``);
- when nobody but the core's timers acts (a "silent" ending), every flow
  whose request the client finished ends by those timers.

The deterministic examples at the end pin the single cases down.
``INTERCEPTKIT_FUZZ_EXAMPLES=2000`` runs the fuzz longer (the suite uses 60).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from h2proxy import (
    ALL_HOOKS,
    OPENING,
    PREFACE,
    H2ProxyRun,
    block,
    data,
    headers,
    parse_frames,
    raw_frame,
    request_fields,
    reverse_h2_config,
)
from helpers import chunked, ok
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hyperframe.frame import (
    ContinuationFrame,
    ExtensionFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from interceptkit.core.http2 import FrameBounds, H2ClientLayer, H2UpstreamLayer
from interceptkit.core.layers import LayerFailed

PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, CANCEL = 0x1, 0x3, 0x6, 0x8
MAX_FRAME_SIZE = 1 << 16  # what the proxy announces (core/h2settings.py)
FUZZ = settings(max_examples=int(os.environ.get("INTERCEPTKIT_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: What the HTTP/1 origins answer: whole, chunked with trailers, bodiless, 1xx first, cut, garbage.
ANSWERS = [
    ok(b"hi"),
    ok(b""),
    chunked(b"ab", b"cd", trailers=b"x-t: 1\r\n"),
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after 100"),
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
    b"HTTP/1.0 200 OK\r\n\r\nuntil close",
    b"\x00not http\r\n\r\n",
]


# -- what the client sends: operations on a stateful builder -----------------------------


@dataclass
class ClientStream:
    """The client's bytes, with where each valid request and each certain protocol error ends.

    ``requests`` maps a path to the offset just past its HEADERS; ``fatal``
    is the offset past the first frame that is a connection error whatever
    came before it, as long as the framing before it is whole (no raw
    garbage, ``clean``) and the connection is still open.
    """

    next_sid: int = 1
    open: list[int] = field(default_factory=list)
    out: bytearray = field(default_factory=bytearray)
    requests: dict[str, int] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)  # streams the client ended (END_STREAM) or reset
    fatal: int | None = None
    clean: bool = True

    def add(self, frame: bytes, *, fatal: bool = False) -> None:
        self.out += frame
        if fatal and self.clean and self.fatal is None:
            self.fatal = len(self.out)

    def fresh(self) -> int:
        sid, self.next_sid = self.next_sid, self.next_sid + 2
        return sid

    def pick(self, n: int) -> int:
        """One of the streams the client opened and has not ended (or a fresh id when none is)."""
        return self.open[n % len(self.open)] if self.open else self.next_sid


def _request(s: ClientStream, op: tuple[Any, ...]) -> None:
    _, end, method = op
    sid = s.fresh()
    path = f"/s{sid}"
    s.add(headers(sid, request_fields(path.encode(), method), end_stream=end))
    s.requests[path] = len(s.out)
    if end:
        s.ended.add(sid)
    else:
        s.open.append(sid)


def _data(s: ClientStream, op: tuple[Any, ...]) -> None:
    _, n, size, end, trailers = op
    sid = s.pick(n)
    if trailers:
        s.add(headers(sid, [(b"x-trailer", b"1")], end_stream=True))
    else:
        s.add(data(sid, b"d" * size, end_stream=end))
    if (end or trailers) and sid in s.open:
        s.open.remove(sid)
        s.ended.add(sid)


def _control(s: ClientStream, op: tuple[Any, ...]) -> None:
    _, kind, n, value = op
    sid = s.pick(n)
    frame: Frame
    if kind == "rst":
        frame = RstStreamFrame(sid, error_code=value % 14)
        s.open = [o for o in s.open if o != sid]
        s.ended.add(sid)
    elif kind == "window":
        frame = WindowUpdateFrame(sid if value % 2 else 0, window_increment=1 + value)
    elif kind == "ping":
        frame = PingFrame(0, opaque_data=value.to_bytes(8, "big"), flags=["ACK"] if value % 2 else [])
    elif kind == "priority":
        frame = PriorityFrame(sid, depends_on=value % 7, stream_weight=value % 256)
    elif kind == "settings":
        frame = SettingsFrame(0, settings={1 + value % 6: value}) if value % 3 else SettingsFrame(0, flags=["ACK"])
    elif kind == "goaway":
        frame = GoAwayFrame(0, last_stream_id=value % 8, error_code=value % 3)
    else:
        frame = ExtensionFrame(0x20 + value % 0xD0, sid if value % 2 else 0, value % 256, b"ext")
    s.add(frame.serialize())


def _continuation(s: ClientStream, op: tuple[Any, ...]) -> None:
    """A request head split over HEADERS and CONTINUATION frames (valid)."""
    _, cut = op
    sid = s.fresh()
    path = f"/s{sid}"
    whole = block(request_fields(path.encode()))
    cut %= len(whole)
    s.add(HeadersFrame(sid, data=whole[:cut], flags=["END_STREAM"]).serialize())
    s.add(ContinuationFrame(sid, data=whole[cut:], flags=["END_HEADERS"]).serialize())
    s.requests[path] = len(s.out)
    s.ended.add(sid)


def _bad(s: ClientStream, op: tuple[Any, ...]) -> None:
    """Frames that are a connection error whatever came before (RFC 9113 6.1, 6.10, 8.2.1)."""
    _, kind = op
    if kind == "uppercase":
        s.add(headers(s.fresh(), request_fields(b"/bad", extra=[(b"X-Upper", b"1")]), end_stream=True), fatal=True)
    elif kind == "data0":
        s.add(raw_frame(0x0, 0, b"zero"), fatal=True)
    else:
        s.add(raw_frame(0x9, 0, b"", flags=0x4), fatal=True)  # CONTINUATION on stream 0


def _raw(s: ClientStream, op: tuple[Any, ...]) -> None:
    s.add(op[1])
    s.clean = s.clean and not op[1]  # the framing after garbage is anyone's guess


BUILDERS = {"req": _request, "data": _data, "ctl": _control, "cont": _continuation, "bad": _bad, "raw": _raw}

small = st.integers(0, 2**16)
client_ops = st.one_of(
    st.tuples(st.just("req"), st.booleans(), st.sampled_from([b"GET", b"POST", b"HEAD"])),
    st.tuples(st.just("data"), small, st.integers(0, 300), st.booleans(), st.booleans()),
    st.tuples(st.just("ctl"), st.sampled_from(["rst", "window", "ping", "priority", "settings", "goaway", "ext"]),
              small, small),
    st.tuples(st.just("cont"), small),
    st.tuples(st.just("bad"), st.sampled_from(["uppercase", "data0", "cont0"])),
    st.tuples(st.just("raw"), st.binary(max_size=24)),
)
transport_ops = st.one_of(
    st.tuples(st.just("connect"), small, st.booleans()),
    st.tuples(st.just("answer"), small, st.sampled_from(range(len(ANSWERS))), st.lists(small, max_size=3),
              st.booleans()),
    st.tuples(st.just("upclose"), small, st.booleans()),
    st.tuples(st.just("timer")),
    st.tuples(st.just("hook"), st.booleans()),
    st.tuples(st.just("backpressure"), st.booleans()),
)
#: A step: client frames (then the cut offsets of their bytes), or something from the transport.
steps = st.lists(st.one_of(st.tuples(st.just("client"), st.lists(client_ops, min_size=1, max_size=4),
                                     st.lists(small, max_size=4)), transport_ops), max_size=20)


def _transport(run: H2ProxyRun, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "connect":
        run.connect(op[1], fail=op[2] and op[1] % 4 == 0)  # a failed connect now and then
    elif kind == "answer":
        answer = ANSWERS[op[2]]
        run.respond(op[1], answer, [c % (len(answer) + 1) for c in op[3]], close=op[4])
    elif kind == "upclose":
        run.close_some_upstream(op[1], op[2])
    elif kind == "timer":
        run.fire_timer()
    elif kind == "hook":
        run.answer_hook(kill=op[1])
    else:
        run.backpressure(op[1])
    run.resume_held()


def play(stream: ClientStream, sequence: list[tuple[Any, ...]], hooked: bool, bytewise: bool = False,
         silent: bool = False) -> H2ProxyRun:
    """Run the sequence, let what is in flight end, and check the invariants at the end.

    Client bytes are cut where each step says, or (``bytewise``) fed one byte
    at a time. Then the origins answer what they owe (``settle``), or
    (``silent``) nobody says a word and the core's own timers must end every
    flow; then the client's EOF.
    """
    run = H2ProxyRun(reverse_h2_config(ALL_HOOKS if hooked else ()))
    run.client(OPENING)
    error_read: int | None = None  # delivered bytes before the read that failed the connection
    for step in sequence:
        if step[0] != "client":
            _transport(run, step)
            continue
        start = len(stream.out)
        for op in step[1]:
            BUILDERS[op[0]](stream, op)
        before, failed = run.delivered, bool(_errors(run))
        size = len(stream.out) - start
        run.client(bytes(stream.out[start:]), range(size) if bytewise else [c % (size + 1) for c in step[2]])
        if error_read is None and not failed and _errors(run):
            error_read = before
    if silent:
        run.wait_out()
        # Only a request the client never finished may outlive the timers: with
        # HTTP/2 one idle timeout ends one such stream (the core's "current"
        # exchange) and is not armed again, so the others wait for the EOF.
        waiting = [f.request.path for f in run.unfinished()]
        assert all(int(p[2:]) not in stream.ended for p in waiting), f"the core's timers never ended {waiting}"
    else:
        run.settle(ok(b"settled"))
    check(run, stream, error_read)
    run.check_output()
    run.eof()
    assert not run.unfinished(), f"flows never finished: {run.unfinished()}"
    _label(run, stream)
    return run


def _label(run: H2ProxyRun, stream: ClientStream) -> None:
    """What the example reached (``--hypothesis-show-statistics``): the fuzz must reach all of these."""
    states = {f.state for f in run.finished.values()}
    event(f"flows done: {'done' in states}, errored: {'error' in states}")
    event(f"GOAWAY with an error: {bool(_errors(run))}, certain error sent: {stream.fatal is not None}")
    event(f"streams reset by the proxy: {bool(run.resets())}")


def _errors(run: H2ProxyRun) -> list[GoAwayFrame]:
    return [g for g in run.goaways() if g.error_code != 0]


def check(run: H2ProxyRun, stream: ClientStream, error_read: int | None) -> None:
    """The properties that hold after any client input (see the module docstring)."""
    open_until = run.delivered if run.delivered_at_close is None else run.delivered_at_close
    if stream.fatal is not None and stream.fatal + len(OPENING) <= open_until:
        assert _errors(run), "a protocol error the core read got no GOAWAY with an error code"
    if _errors(run):
        assert run.closed, "a GOAWAY with an error code but the client connection stays open"
    by_path = {f.request.path: f for f in run.started.values()}
    read_before = open_until if error_read is None else error_read
    for path, end in stream.requests.items():
        if stream.clean and end + len(OPENING) <= read_before:
            assert path in by_path, f"the request for {path} was read but has no flow"
            flow = by_path[path]
            assert flow.id not in run.finished or run.finished[flow.id].state in ("done", "error")
    # h2 is fed one frame at a time: a request below the failing frame's stream has its flow
    # even when both came in the same read (GOAWAY's last stream id is the highest h2 took).
    errors = _errors(run)
    if errors and stream.clean:
        for path, end in stream.requests.items():
            if int(path[2:]) < errors[0].last_stream_id and end + len(OPENING) <= open_until:
                assert path in by_path, f"the request for {path}, before the failing frame, has no flow"


#: Two streams open before the fuzzed steps (one answered at once, one with its body still coming),
#: so most examples have flows in flight when the bad input comes.
LEAD = [("client", [("req", True, b"GET"), ("req", False, b"POST")], []), ("connect", 0, False)]


@FUZZ
@given(st.booleans(), steps, st.booleans(), st.booleans(), st.booleans())
def test_any_frame_sequence_through_the_proxy_core(lead: bool, sequence: list[tuple[Any, ...]],
                                                   hooked: bool, bytewise: bool, silent: bool) -> None:
    play(ClientStream(), LEAD * lead + sequence, hooked, bytewise, silent)


@FUZZ
@given(st.booleans(), st.binary(max_size=400), st.lists(small, max_size=6), st.lists(transport_ops, max_size=8),
       st.booleans())
def test_arbitrary_bytes_after_the_preface_through_the_proxy_core(
        lead: bool, garbage: bytes, cuts: list[int], transport: list[tuple[Any, ...]], hooked: bool) -> None:
    stream = ClientStream()
    steps_: list[tuple[Any, ...]] = []
    if lead:  # a live stream waiting for its answer when the garbage comes
        steps_ += [("client", [("req", False, b"POST"), ("data", 0, 10, False, False)], [])]
        steps_ += [("connect", 0, False)]
    steps_ += [("client", [("raw", garbage)], cuts), *transport]
    run = play(stream, steps_, hooked)
    if len(garbage) >= 9 and int.from_bytes(garbage[:3], "big") > MAX_FRAME_SIZE:
        # Refused from the header alone, never buffered until the announced body arrives
        # (PROTOCOL_ERROR when the header is also wrong otherwise, e.g. DATA on stream 0).
        assert [g.error_code for g in run.goaways()][:1] in ([FRAME_SIZE_ERROR], [PROTOCOL_ERROR])
    if lead:
        [flow] = [f for f in run.started.values() if f.request.path == "/s1"]
        assert flow.state in ("done", "error")


# -- deterministic examples -----------------------------------------------------------------


def test_a_malformed_head_is_goaway_protocol_error_and_the_other_streams_flows_error() -> None:
    run = H2ProxyRun(reverse_h2_config())
    run.client(OPENING + headers(1, request_fields(b"/one"), end_stream=True)
               + headers(3, request_fields(b"/two", b"POST")))
    run.connect(0)
    run.connect(0)
    run.client(headers(5, request_fields(b"/bad", extra=[(b"X-Upper", b"1")]), end_stream=True))
    [goaway, *_] = run.goaways()
    assert goaway.error_code == PROTOCOL_ERROR
    assert goaway.last_stream_id == 5
    assert run.closed
    assert sorted(f.request.path for f in run.started.values()) == ["/one", "/two"]
    for flow in run.started.values():
        assert flow.state == "error"
        assert "uppercase header name" in (flow.error or "")
    assert not run.unfinished()


def test_a_client_reset_on_one_of_two_streams_errors_that_flow_and_the_other_completes() -> None:
    run = H2ProxyRun(reverse_h2_config())
    run.client(OPENING + headers(1, request_fields(b"/reset", b"POST"))
               + headers(3, request_fields(b"/kept"), end_stream=True))
    run.connect(0)
    run.connect(0)
    run.client(RstStreamFrame(1, error_code=CANCEL).serialize())
    run.respond(0, ok(b"kept body"))
    flows = {f.request.path: f for f in run.started.values()}
    assert flows["/reset"].state == "error"
    assert "reset the stream" in (flows["/reset"].error or "")
    assert flows["/kept"].state == "done"
    assert flows["/kept"].response is not None and flows["/kept"].response.status == 200
    assert run.response_ended(3)
    assert not run.goaways() and not run.closed


def test_data_beyond_the_stream_window_is_goaway_flow_control_error() -> None:
    # The proxy keeps reading (a pending limit above the window): the overrun reaches h2.
    run = H2ProxyRun(reverse_h2_config(pending_limit=8 * 2**20))
    run.client(OPENING + SettingsFrame(0, flags=["ACK"]).serialize()
               + headers(1, request_fields(b"/upload", b"POST")))
    run.client(b"".join(data(1, b"x" * 65536) for _ in range(17)))  # 1 MiB + 64 KiB > 1 MiB window
    assert [g.error_code for g in run.goaways()][:1] == [FLOW_CONTROL_ERROR]
    assert run.closed
    [flow] = run.started.values()
    assert flow.state == "error" and "window" in (flow.error or "").lower()


def test_a_kill_hook_on_one_stream_resets_it_with_cancel_and_the_other_completes() -> None:
    run = H2ProxyRun(reverse_h2_config({"request_headers"}))
    run.client(OPENING + headers(1, request_fields(b"/killed"), end_stream=True)
               + headers(3, request_fields(b"/kept"), end_stream=True))
    killed = {call.flow.request.path: call for call in run.hooks}
    assert set(killed) == {"/killed", "/kept"}
    while run.hooks:
        run.answer_hook(kill=run.hooks[0].flow.request.path == "/killed")
    run.connect(0)
    run.respond(0, ok(b"kept body"))
    assert run.resets() == {1: CANCEL}
    flows = {f.request.path: f for f in run.started.values()}
    assert flows["/killed"].state == "error" and flows["/killed"].error == "killed by a hook"
    assert flows["/kept"].state == "done" and run.response_ended(3)
    assert not run.goaways() and not run.closed


def test_a_request_read_with_a_bad_frame_behind_it_still_becomes_a_flow_that_errors() -> None:
    # One read: h2 raises for the bad frame and used to drop the events of the
    # frames before it, so the request on stream 1 was never shown nor answered.
    run = H2ProxyRun(reverse_h2_config())
    run.client(OPENING + headers(1, request_fields(b"/first"), end_stream=True)
               + headers(3, request_fields(b"/bad", extra=[(b"X-Upper", b"1")]), end_stream=True))
    assert [(g.error_code, g.last_stream_id) for g in run.goaways()][:1] == [(PROTOCOL_ERROR, 3)]
    [flow] = run.started.values()
    assert flow.request.path == "/first"
    assert flow.state == "error" and "uppercase header name" in (flow.error or "")
    assert run.closed and not run.unfinished()


def test_an_overlong_frame_header_is_refused_at_once_not_buffered() -> None:
    # A header announcing 1 MiB (the proxy allows 64 KiB): FRAME_SIZE_ERROR as
    # soon as its 9 bytes are read, before any of the announced body arrives.
    run = H2ProxyRun(reverse_h2_config())
    run.client(OPENING + headers(1, request_fields(b"/live", b"POST")))
    data_header = (1 << 20).to_bytes(3, "big") + bytes([0x0, 0x0]) + (1).to_bytes(4, "big")  # DATA on stream 1
    run.client(data_header + b"only the start of the body")
    assert [g.error_code for g in run.goaways()][:1] == [FRAME_SIZE_ERROR]
    assert run.closed
    [flow] = run.started.values()
    assert flow.state == "error" and "over the maximum" in (flow.error or "")


def test_both_layers_refuse_an_overlong_frame_header_from_the_header_alone() -> None:
    overlong = (MAX_FRAME_SIZE + 1).to_bytes(3, "big") + bytes([0x0, 0x0]) + (1).to_bytes(4, "big")
    for layer, opening in ((H2ClientLayer(), OPENING), (H2UpstreamLayer(), SettingsFrame(0).serialize())):
        assert layer.receive_data(opening) == []
        [failed] = layer.receive_data(overlong + b"x")
        assert isinstance(failed, LayerFailed) and "over the maximum" in failed.reason
        out = layer.bytes_to_send().removeprefix(PREFACE)  # the upstream layer is the one that sends it
        sent = [f for f in parse_frames(out) if isinstance(f, GoAwayFrame)]
        assert sent and sent[0].error_code == FRAME_SIZE_ERROR


@FUZZ
@given(st.booleans(), st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=8),
       st.lists(st.integers(0, 3000), max_size=6))
def test_frame_bounds_cut_exactly_at_frame_ends(preface: bool, frames: list[tuple[int, bytes]],
                                                cuts: list[int]) -> None:
    """The layers feed h2 one frame at a time: every piece ends where a frame (or the preface) ends."""
    wire = (PREFACE if preface else b"") + b"".join(raw_frame(kind, 1, body) for kind, body in frames)
    ends, at = ({len(PREFACE)} if preface else set()), len(PREFACE) if preface else 0
    for _, body in frames:
        at += 9 + len(body)
        ends.add(at)
    bounds = FrameBounds(len(PREFACE) if preface else 0, MAX_FRAME_SIZE)
    edges = [0, *sorted({c for c in cuts if 0 < c < len(wire)}), len(wire)]
    fed = 0
    for a, b in zip(edges, edges[1:], strict=False):
        pieces, overlong = bounds.cut(wire[a:b])
        assert overlong is None and b"".join(pieces) == wire[a:b]
        for piece in pieces[:-1]:
            fed += len(piece)
            assert fed in ends, "a piece ends inside a frame"
        fed += len(pieces[-1]) if pieces else 0
        assert {e for e in ends if a < e < b} <= {a + sum(map(len, pieces[:i + 1])) for i in range(len(pieces))}
