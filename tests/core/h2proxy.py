"""An h2 client driving a whole ProxyConnection in memory, and the transport around it.

A plain reverse listener serves a client that starts with the HTTP/2
preface as h2 (prior knowledge), so the proxy core can be driven over h2
with no TLS at all. :class:`H2ProxyRun` stands where the transport and the
hook runner stand in the real proxy: it feeds client bytes (holding them
while the core says ``PauseClient``, as a transport stops reading), answers
``OpenUpstream`` with ``UpstreamConnected``, plays HTTP/1 origins, fires the
timers the core started and answers ``RunHook`` calls. Every command goes
through :meth:`H2ProxyRun.take`, which checks what must hold for any input:
no error logged (an internal error is logged at that level), no flow
finished twice or before it started, nothing sent to a closed client.
Nothing here opens a socket.
"""

from __future__ import annotations

from collections.abc import Iterable

import hpack
from helpers import Driver
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

from interceptkit.core import commands as cmd
from interceptkit.core import events as ev
from interceptkit.core.config import ProxyConfig, Route
from interceptkit.flow import Flow

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: The client's opening: the preface and a valid (empty) SETTINGS.
OPENING = PREFACE + SettingsFrame(0).serialize()
ORIGIN = Route(prefix="/", scheme="http", host="127.0.0.1", port=8080)
ALL_HOOKS = frozenset({"request_headers", "request", "response_headers", "response_chunk", "response"})

Fields = list[tuple[bytes, bytes]]


def reverse_h2_config(hooks: Iterable[str] = (), **extra: object) -> ProxyConfig:
    """A plain reverse listener with HTTP/2 on: prior-knowledge h2c, HTTP/1 origin."""
    return ProxyConfig(mode="reverse", routes=(ORIGIN,), http2=True, hooks=frozenset(hooks),
                       read_timeout=5, idle_timeout=10, **extra)  # type: ignore[arg-type]


def request_fields(path: bytes = b"/", method: bytes = b"GET", extra: Fields | None = None) -> Fields:
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"a.test"), (b":path", path),
            *(extra or [])]


def block(fields: Fields) -> bytes:
    """An HPACK block from a fresh encoder: it never refers to a table entry the proxy lacks."""
    return bytes(hpack.Encoder().encode(fields))


def headers(sid: int, fields: Fields, *, end_stream: bool = False, end_headers: bool = True) -> bytes:
    flags = (["END_HEADERS"] if end_headers else []) + (["END_STREAM"] if end_stream else [])
    return HeadersFrame(sid, data=block(fields), flags=flags).serialize()


def data(sid: int, payload: bytes, *, end_stream: bool = False) -> bytes:
    return DataFrame(sid, data=payload, flags=["END_STREAM"] if end_stream else []).serialize()


def raw_frame(kind: int, sid: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """A frame header written by hand: hyperframe refuses to build some invalid frames (DATA on 0)."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def parse_frames(sent: bytes) -> list[Frame]:
    """The frames the proxy sent the client (it sends no preface), parsed with hyperframe.

    Raises if the bytes are not a whole sequence of well-formed frames.
    """
    frames, at = [], 0
    while at < len(sent):
        frame, length = Frame.parse_frame_header(memoryview(sent[at:at + 9]))
        body = sent[at + 9:at + 9 + length]
        assert len(body) == length, "a frame cut short in what the proxy sent"
        frame.parse_body(memoryview(body))
        frames.append(frame)
        at += 9 + length
    return frames


class H2ProxyRun:
    """One h2 client connection to the proxy core and everything around it.

    ``owed`` counts, per upstream, the HTTP/1 requests sent there and not
    yet answered (an origin answers only what it was asked). ``hooks``
    holds the ``RunHook`` calls not yet answered, oldest first.
    """

    def __init__(self, config: ProxyConfig) -> None:
        self.d = Driver(config)
        self.started: dict[int, Flow] = {}
        self.finished: dict[int, Flow] = {}
        self.sent = bytearray()
        self.closed = False
        self.paused = False
        self.held = bytearray()
        self.delivered = 0  # client bytes the core has been given
        self.delivered_at_close: int | None = None
        self.pending_opens: list[int] = []
        self.connected: set[int] = set()
        self.owed: dict[int, int] = {}
        self.hooks: list[cmd.RunHook] = []
        self.blocked = False  # the transport's buffer towards the client is full
        self.take(self.d.transcript)

    # -- what every command must satisfy -------------------------------------------

    def take(self, commands: list[cmd.Command]) -> list[cmd.Command]:
        for c in commands:
            self._check(c)
        return commands

    def _check(self, c: cmd.Command) -> None:
        if isinstance(c, cmd.Log):
            assert c.level != "error", c.message  # an internal error is logged at this level
        elif isinstance(c, cmd.FlowStarted):
            assert c.flow.id not in self.started, "a flow started twice"
            self.started[c.flow.id] = c.flow
        elif isinstance(c, cmd.FlowFinished):
            assert c.flow.id in self.started, "a flow finished that never started"
            assert c.flow.id not in self.finished, "a flow finished twice"
            assert c.flow.state in ("done", "error"), c.flow.state
            self.finished[c.flow.id] = c.flow
        elif isinstance(c, cmd.SendToClient):
            assert not self.closed, "bytes sent to a client after CloseClient"
            self.sent += c.data
        elif isinstance(c, cmd.CloseClient):
            self.closed = True
            self.delivered_at_close = self.delivered
        else:
            self._check_transport(c)

    def _check_transport(self, c: cmd.Command) -> None:
        if isinstance(c, cmd.OpenUpstream):
            self.pending_opens.append(c.upstream)
        elif isinstance(c, cmd.SendToUpstream):
            assert c.upstream in self.connected, "bytes sent to an upstream that is not connected"
            if c.data.startswith((b"GET ", b"POST ", b"PUT ", b"HEAD ")):
                self.owed[c.upstream] = self.owed.get(c.upstream, 0) + 1
        elif isinstance(c, cmd.CloseUpstream):
            self._forget_upstream(c.upstream)
        elif isinstance(c, cmd.PauseClient):
            self.paused = True
        elif isinstance(c, cmd.ResumeClient):
            self.paused = False
        elif isinstance(c, cmd.RunHook) and c.call is not None:
            self.hooks.append(c)

    def _forget_upstream(self, upstream: int) -> None:
        self.connected.discard(upstream)
        self.owed.pop(upstream, None)
        if upstream in self.pending_opens:
            self.pending_opens.remove(upstream)

    # -- the client ------------------------------------------------------------------

    def client(self, payload: bytes, cuts: Iterable[int] = ()) -> None:
        """Client bytes cut at ``cuts``; held while the core has paused the client."""
        self.held += payload
        self._deliver(sorted({c for c in cuts if 0 < c < len(payload)}), len(payload))

    def _deliver(self, cuts: Iterable[int] = (), size: int = 0) -> None:
        # Cut offsets are relative to the bytes just added at the end of ``held``.
        base = len(self.held) - size
        bounds = [0, *(base + c for c in cuts), len(self.held)]
        at = 0
        for end in bounds[1:]:
            while at < end and not self.paused:
                piece = bytes(self.held[at:end])
                at = end
                self.delivered += len(piece)
                self.take(self.d.feed(ev.ClientDataReceived, data=piece))
        del self.held[:at]

    def resume_held(self) -> None:
        if self.held and not self.paused:
            self._deliver()

    def eof(self, aborted: bool = False) -> None:
        self.take(self.d.feed(ev.ConnectionClosed, upstream=None, aborted=aborted))

    # -- the transport and the origins ---------------------------------------------

    def connect(self, pick: int, fail: bool = False) -> None:
        if not self.pending_opens:
            return
        upstream = self.pending_opens.pop(pick % len(self.pending_opens))
        if fail:
            self.take(self.d.connect_failed(upstream))
            return
        self.connected.add(upstream)
        self.take(self.d.connected(upstream, address=("127.0.0.1", 8080)))

    def respond(self, pick: int, answer: bytes, cuts: Iterable[int] = (), *, close: bool = False) -> None:
        """An HTTP/1 answer from an upstream that owes one (``close``: then its EOF)."""
        owing = sorted(u for u, n in self.owed.items() if n and u in self.connected)
        if not owing:
            return
        upstream = owing[pick % len(owing)]
        self.owed[upstream] -= 1
        bounds = [0, *sorted({c for c in cuts if 0 < c < len(answer)}), len(answer)]
        for a, b in zip(bounds, bounds[1:], strict=False):
            if upstream in self.connected:
                self.take(self.d.upstream(answer[a:b], upstream))
        if close and upstream in self.connected:
            self.upstream_closed(upstream)

    def upstream_closed(self, upstream: int, aborted: bool = False) -> None:
        self._forget_upstream(upstream)
        self.take(self.d.upstream_closed(upstream, aborted=aborted))

    def close_some_upstream(self, pick: int, aborted: bool) -> None:
        if self.connected:
            self.upstream_closed(sorted(self.connected)[pick % len(self.connected)], aborted)

    def fire_timer(self) -> None:
        """The timer due first fires (the clock moves to it), as the transport's loop would."""
        if self.d.timers:
            self.take(self.d.fire(min(self.d.timers, key=lambda name: (self.d.timers[name], name))))

    def wait_out(self, rounds: int = 40) -> None:
        """Hooks return, then nobody else says a word: only the timers the core started fire
        (and connects time out, as the transport's connect timeout makes them). The client
        reads what it was sent (a client that never reads is not what this checks)."""
        if self.blocked:
            self.backpressure(False)
        for _ in range(rounds):
            while self.hooks:
                self.answer_hook()
            while self.pending_opens:
                self.take(self.d.connect_failed(self.pending_opens.pop(0), "timed out", timeout=True))
            if not self.d.timers:
                return
            self.fire_timer()

    def answer_hook(self, kill: bool = False) -> None:
        """The oldest pending hook returns (after ``flow.kill()`` when ``kill``)."""
        if not self.hooks:
            return
        call = self.hooks.pop(0)
        if kill:
            call.flow.kill()
        assert call.call is not None
        self.take(self.d.feed(ev.HookReturned, call=call.call, result=call.payload))

    def backpressure(self, blocked: bool) -> None:
        self.blocked = blocked
        self.take(self.d.feed(ev.ClientBackpressure, blocked=blocked))

    # -- the end -----------------------------------------------------------------------

    def settle(self, answer: bytes, rounds: int = 30) -> None:
        """Let everything in flight finish: hooks answered, upstreams connected and answering."""
        for _ in range(rounds):
            before = len(self.d.transcript)
            while self.hooks:
                self.answer_hook()
            while self.pending_opens:
                self.connect(0)
            for upstream in sorted(u for u, n in self.owed.items() if n):
                self.respond(list(sorted(u for u, n in self.owed.items() if n)).index(upstream), answer)
            self.resume_held()
            if len(self.d.transcript) == before:
                return

    def frames(self) -> list[Frame]:
        return parse_frames(bytes(self.sent))

    def goaways(self) -> list[GoAwayFrame]:
        return [f for f in self.frames() if isinstance(f, GoAwayFrame)]

    def resets(self) -> dict[int, int]:
        """Stream id -> the error code of the RST_STREAM the proxy sent on it."""
        return {f.stream_id: f.error_code for f in self.frames() if isinstance(f, RstStreamFrame)}

    def response_ended(self, sid: int) -> bool:
        """The proxy ended its answer on ``sid`` (END_STREAM on HEADERS or DATA)."""
        return any(isinstance(f, HeadersFrame | DataFrame) and f.stream_id == sid and "END_STREAM" in f.flags
                   for f in self.frames())

    def check_output(self) -> None:
        """What the proxy sent the client is valid HTTP/2 that a client can follow.

        Whole frames; header blocks that one HPACK decoder reads in order (the
        proxy's encoder never got ahead of what it sent); answers only on
        streams the client opened (odd ids); nothing on a stream after the
        proxy reset it; nothing but GOAWAY after a GOAWAY with an error code.
        """
        decoder = hpack.Decoder()
        decoder.max_allowed_table_size = 1 << 32  # the client may have raised it in SETTINGS
        reset: set[int] = set()
        failed = False
        pending: list[bytes] = []
        for frame in self.frames():
            assert not failed or isinstance(frame, GoAwayFrame), f"{frame!r} after a GOAWAY with an error"
            if isinstance(frame, GoAwayFrame):
                failed = failed or frame.error_code != 0
            if frame.stream_id:
                assert frame.stream_id % 2 == 1, f"{frame!r} on a stream the client did not open"
                # h2 answers a frame the client had in flight on a stream the
                # proxy reset with another RST_STREAM (STREAM_CLOSED), where
                # RFC 9113 5.1 says to ignore it; never with an answer, though.
                assert frame.stream_id not in reset or isinstance(frame, RstStreamFrame), \
                    f"{frame!r} after the proxy reset that stream"
            if isinstance(frame, RstStreamFrame):
                reset.add(frame.stream_id)
            elif isinstance(frame, HeadersFrame | ContinuationFrame):
                pending.append(frame.data)
                if "END_HEADERS" in frame.flags:
                    fields = decoder.decode(b"".join(pending), raw=True)
                    pending = []
                    assert fields, "an empty header block"
        assert not pending, "a header block never ended"

    def unfinished(self) -> list[Flow]:
        return [f for i, f in self.started.items() if i not in self.finished]


__all__ = ["H2ProxyRun", "OPENING", "PREFACE", "block", "data", "headers",
           "parse_frames", "raw_frame", "request_fields", "reverse_h2_config"]
