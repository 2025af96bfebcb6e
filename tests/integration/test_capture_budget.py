"""Capture memory bounded by bytes: the oldest flows' bodies are dropped first, the flows stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from origin import Origin, opener, pattern, wait_flows_done, wait_until

from interceptkit import FlowTable, Proxy

SIZE = 10_000


def fetch(proxy: Proxy, origin: Origin, count: int) -> None:
    client = opener(proxy)
    for i in range(count):
        assert client.open(origin.url(f"/bytes/{SIZE}?n={i}"), timeout=5).read() == pattern(SIZE)


def test_oldest_bodies_are_dropped_first_and_the_flows_stay(new_proxy: Any, origin: Origin) -> None:
    with new_proxy(max_capture_bytes=3 * SIZE + 100) as proxy:
        fetch(proxy, origin, 6)
        flows = wait_flows_done(proxy, 6)
    dropped, kept = flows[:3], flows[3:]
    for flow in dropped:
        response = flow.response
        assert response is not None and response.body_dropped and response.content == b""
        assert (response.status, response.body_size, flow.request.path) == (200, SIZE, flow.request.path)
    assert all(f.response.content == pattern(SIZE) and not f.response.body_dropped for f in kept)
    table = proxy.flows
    assert table.capture_bytes == 3 * SIZE <= table.max_capture_bytes and table.bodies_dropped == 3
    assert "3 older bodies dropped" in repr(table) and "of 30.1 kB (max_capture_bytes)" in repr(table)
    assert "body dropped to stay within max_capture_bytes" in dropped[0]._repr_html_()
    assert "not saved to a file" in dropped[0]._repr_html_()


def test_with_save_a_dropped_body_is_read_back_from_the_file(new_proxy: Any, origin: Origin,
                                                             tmp_path: Path) -> None:
    with new_proxy(max_capture_bytes=SIZE, save=tmp_path / "flows.jsonl") as proxy:
        fetch(proxy, origin, 4)
        flows = wait_flows_done(proxy, 4)
        assert wait_until(lambda: proxy.flows.bodies_dropped == 3)
        first = flows[0].response
        assert first is not None and first.body_dropped and first.content == pattern(SIZE)
        assert "read back from the save= file" in flows[0]._repr_html_()
    assert proxy.flows.capture_bytes == SIZE
    # Saving the table again writes the bodies in full (read back, not lost).
    proxy.flows.save(tmp_path / "copy.jsonl")
    assert [f.response.content for f in FlowTable.load(tmp_path / "copy.jsonl")] == [pattern(SIZE)] * 4


def test_flows_leaving_the_table_give_their_bytes_back(new_proxy: Any, origin: Origin) -> None:
    with new_proxy(max_flows=2, max_capture_bytes=10 * SIZE) as proxy:
        fetch(proxy, origin, 5)
        wait_flows_done(proxy, 2)
    assert len(proxy.flows) == 2 and proxy.flows.capture_bytes == 2 * SIZE and proxy.flows.bodies_dropped == 0


def test_flows_not_kept_at_all_are_not_counted(new_proxy: Any, origin: Origin) -> None:
    with new_proxy(max_flows=0) as proxy:  # as the CLI runs: nothing kept, nothing held
        fetch(proxy, origin, 3)
        assert len(proxy.flows) == 0 and proxy.flows.dropped == 3
    assert proxy.flows.capture_bytes == 0 and not proxy.flows._budget._held and not proxy.flows._budget._gone


def test_no_limit_and_bad_limits(new_proxy: Any, origin: Origin) -> None:
    with new_proxy(max_capture_bytes=None) as proxy:
        fetch(proxy, origin, 3)
        flows = wait_flows_done(proxy, 3)
    assert all(not f.response.body_dropped for f in flows) and "max_capture_bytes" not in repr(proxy.flows)
    with pytest.raises(ValueError, match="max_capture_bytes"):
        new_proxy(max_capture_bytes=-1)


def test_a_dropped_request_body_cannot_be_resent_without_a_file(new_proxy: Any, origin: Origin) -> None:
    with new_proxy(max_capture_bytes=10) as proxy:
        opener(proxy).open(origin.url("/echo"), data=b"x" * 100, timeout=5).read()
        [flow] = wait_flows_done(proxy, 1)
        assert wait_until(lambda: flow.request.body_dropped)  # counted once the proxy has finished it
        with pytest.raises(ValueError, match="dropped"):
            flow.to_curl()
        with pytest.raises(Exception, match="dropped"):
            flow.replay()
