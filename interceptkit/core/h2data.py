"""The bulk DATA path of the HTTP/2 layers: held body bytes framed as DATA, fast.

A download spends its time here: every held piece becomes DATA frames of the
peer's maximum size. h2's ``send_data`` does per frame what is the same for
every frame of a run (state checks, a ``DataFrame`` built and serialised);
``send_run`` lets h2 frame what changes state (the first frame when a state
could refuse it, and the one carrying END_STREAM) and frames the rest itself,
with h2's window arithmetic (tests/core/test_http2_layers.py compares the bytes
and windows with h2's own). It reads and writes h2 internals (its output
buffer, the outbound windows, the state machines' states): a new h2 release
must pass those tests (h2 is pinned below 5).
"""

from __future__ import annotations

import struct
from collections import deque

import h2.connection
import h2.stream

__all__ = ["data_is_a_no_op", "send_run", "take"]

#: A frame header: 24-bit length (as 16 + 8 bits), type, flags, stream id (RFC 9113 4.1; hyperframe's layout).
_DATA_HEADER = struct.Struct(">HBBBL")
#: The states in which h2 sends DATA without changing state (its transition tables).
_SENDING_CONNECTION = frozenset({h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionState.SERVER_OPEN})
_SENDING_STREAM = frozenset({h2.stream.StreamState.OPEN, h2.stream.StreamState.HALF_CLOSED_REMOTE})


def take(out: deque[memoryview], n: int) -> memoryview:
    """The first ``n`` held bytes of ``out`` (a slice when one piece holds them, else joined once)."""
    head = out[0]
    if len(head) >= n:
        if len(head) == n:
            out.popleft()
        else:
            out[0] = head[n:]
        return head[:n]
    parts: list[memoryview] = []
    while n:
        head = out[0]
        if len(head) <= n:
            parts.append(out.popleft())
            n -= len(head)
        else:
            parts.append(head[:n])
            out[0] = head[n:]
            n = 0
    return memoryview(b"".join(parts))


def send_run(conn: h2.connection.H2Connection, sid: int, run: memoryview, end_stream: bool) -> None:
    """Frame ``run`` (within both windows) as DATA frames of the peer's maximum size.

    h2's ``send_data`` frames a last frame that carries END_STREAM (h2
    moves the stream's state), and every frame when the connection or the
    stream is in a state where h2 would refuse DATA or change state (h2
    raises there, as it should). Otherwise ``_frame_more`` frames them.
    """
    size = conn.max_outbound_frame_size
    tail = run[:0]
    if end_stream:
        cut = (len(run) - 1) // size * size
        run, tail = run[:cut], run[cut:]
    if run and not data_is_a_no_op(conn, sid):
        conn.send_data(sid, run[:size])
        run = run[size:]
    if run:
        _frame_more(conn, sid, run, size)
    if tail:
        conn.send_data(sid, tail, end_stream=True)


def data_is_a_no_op(conn: h2.connection.H2Connection, sid: int) -> bool:
    """True when SEND_DATA changes neither h2's connection state nor the stream's
    (both open for sending: h2's transition tables map them to themselves, with no action)."""
    stream = conn.streams.get(sid)
    return (stream is not None and conn.state_machine.state in _SENDING_CONNECTION
            and stream.state_machine.state in _SENDING_STREAM)


def _frame_more(conn: h2.connection.H2Connection, sid: int, view: memoryview, size: int) -> None:
    """DATA frames on ``sid`` without END_STREAM: what ``h2.send_data`` does per frame, without its per-frame cost.

    For each frame, h2 checks the windows and the frame size, feeds SEND_DATA
    to the connection's and the stream's state machines, builds and serialises
    a ``DataFrame``, appends it to its output and takes its length off both
    windows. Here: the caller took no more than the windows allow, frames are
    at most ``size`` (the peer's MAX_FRAME_SIZE), SEND_DATA changes neither
    state (``data_is_a_no_op`` held, or h2 accepted a frame on this stream a
    moment ago, in the same call), and the same bytes go to h2's output (a
    9-byte header: length, type 0, no flags, stream id; then the payload) with
    the same window arithmetic. h2's own path cost a third of the proxy's CPU
    on a download to a client whose frames are 16 KiB (curl, browsers).
    """
    out = conn._data_to_send
    full = _DATA_HEADER.pack(size >> 8, size & 0xFF, 0, 0, sid)
    for at in range(0, len(view), size):
        piece = view[at:at + size]
        out += full if len(piece) == size else _DATA_HEADER.pack(len(piece) >> 8, len(piece) & 0xFF, 0, 0, sid)
        out += piece
    conn.outbound_flow_control_window -= len(view)
    conn.streams[sid].outbound_flow_control_window -= len(view)
