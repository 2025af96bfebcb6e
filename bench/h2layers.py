#!/usr/bin/env python3
"""What do the HTTP/2 layers alone cost? In memory, no sockets, one process.

An origin (a plain h2 server connection) sends a body through
H2UpstreamLayer -> relay -> H2ClientLayer to a client (a plain h2 client
connection that acknowledges at once): the relay is the one the exchange
logic will use (``consumed`` only what the other layer framed, plus
``DataSent``). Prints MB/s and CPU ms per MB for the layers and the two h2
peers together, and small-request exchanges per second.

  python bench/h2layers.py                 # 100 MB and 5,000 small requests
  python bench/h2layers.py --mb 20 --requests 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from interceptkit.core.layers import DataReceived, DataSent, HeadReceived, MessageEnded, RequestHead, ResponseHead
from interceptkit.core.http2 import H2ClientLayer, H2UpstreamLayer

MB = 10**6
PIECE = bytes(16384)


def peer(client_side: bool) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side, header_encoding=None))
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 << 20, h2.settings.SettingCodes.ENABLE_PUSH: 0})
    conn.initiate_connection()
    conn.increment_flow_control_window(16 << 20)
    return conn


class Rig:
    def __init__(self) -> None:
        self.client, self.origin = peer(True), peer(False)
        self.down, self.up = H2ClientLayer(), H2UpstreamLayer()
        self.received = 0
        self.ended = 0
        self.pump()

    def pump(self) -> None:
        for _ in range(1000):
            moved = False
            if data := self.client.data_to_send():
                self.on_down(self.down.receive_data(data)); moved = True
            if data := self.down.bytes_to_send():
                self.on_client(self.client.receive_data(data)); moved = True
            if data := self.origin.data_to_send():
                self.on_up(self.up.receive_data(data)); moved = True
            if data := self.up.bytes_to_send():
                self.origin.receive_data(data); moved = True
            if not moved:
                return

    def on_down(self, events: list) -> None:
        for e in events:
            if isinstance(e, HeadReceived) and isinstance(e.head, RequestHead):
                self.up.send_head(e.xid, e.head, end_stream=e.end_stream)
            elif isinstance(e, DataSent):
                self.up.consumed(e.xid, e.n)

    def on_up(self, events: list) -> None:
        for e in events:
            if isinstance(e, HeadReceived) and isinstance(e.head, ResponseHead):
                self.down.send_head(e.xid, e.head, end_stream=e.end_stream)
            elif isinstance(e, DataReceived):
                self.up.consumed(e.xid, self.down.send_data(e.xid, e.data))
            elif isinstance(e, MessageEnded):
                self.down.end(e.xid)

    def on_client(self, events: list) -> None:
        for e in events:
            if isinstance(e, h2.events.DataReceived):
                self.received += len(e.data)
                self.client.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded):
                self.ended += 1


def request(rig: Rig, sid: int) -> None:
    rig.client.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"o"),
                                  (b":path", b"/")], end_stream=True)


def download(nbytes: int) -> tuple[float, float]:
    rig = Rig()
    request(rig, 1)
    rig.pump()
    rig.origin.send_headers(1, [(b":status", b"200")])
    sent = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while rig.received < nbytes:
        while sent < nbytes and rig.origin.local_flow_control_window(1) >= len(PIECE):
            rig.origin.send_data(1, PIECE)
            sent += len(PIECE)
        rig.pump()
    return time.perf_counter() - t0, time.process_time() - c0


def small(n: int) -> tuple[float, float]:
    rig = Rig()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        sid = 2 * i + 1
        request(rig, sid)
        rig.pump()
        rig.origin.send_headers(sid, [(b":status", b"200"), (b"content-length", b"13")])
        rig.origin.send_data(sid, b"hello, world\n", end_stream=True)
        rig.pump()
    assert rig.ended == n and rig.down.active == 0 and rig.up.active == 0
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--requests", type=int, default=5000)
    a = ap.parse_args()
    wall, cpu = download(a.mb * MB)
    print(f"download {a.mb} MB through both layers: {a.mb / wall:.0f} MB/s, {1000 * cpu / a.mb:.2f} CPU ms/MB "
          f"(layers + both h2 peers)")
    wall, cpu = small(a.requests)
    print(f"{a.requests} small exchanges through both layers: {a.requests / wall:.0f}/s, "
          f"{1000 * cpu / a.requests:.3f} CPU ms each (layers + both h2 peers)")


if __name__ == "__main__":
    main()
