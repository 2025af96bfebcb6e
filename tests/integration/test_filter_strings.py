"""Filter expressions where hooks and tables take filters, with real loopback traffic."""

from __future__ import annotations

import pytest
from origin import HELLO, Origin, opener, wait_flows_done

from interceptkit import Flow, Proxy


def test_hook_where_string_sees_only_matching_flows(proxy: Proxy, origin: Origin) -> None:
    seen: list[str] = []
    proxy.on("request", lambda flow: seen.append(flow.request.path), where="~m POST & ~u /echo")
    client = opener(proxy)
    assert client.open(origin.url("/hello"), timeout=5).read() == HELLO
    client.open(origin.url("/echo"), data=b"x", timeout=5).read()
    wait_flows_done(proxy, 2)
    assert seen == ["/echo"]
    assert [f.request.path for f in proxy.flows.where("~c 200 & !~m POST")] == ["/hello"]


def test_decorator_with_where_string(proxy: Proxy, origin: Origin) -> None:
    @proxy.on("response", where="~d origin.test & ~c 404")
    def tag(flow: Flow) -> None:
        flow.response.headers["X-Missing"] = "yes"

    client = opener(proxy)
    with pytest.raises(Exception) as info:
        client.open(origin.url("/nowhere"), timeout=5)
    assert info.value.headers["X-Missing"] == "yes"  # type: ignore[attr-defined]


def test_bad_where_string_fails_when_attached(proxy: Proxy) -> None:
    with pytest.raises(ValueError, match=r"(?s)unknown operator '~zz'.*\n  ~m GET & ~zz\n {11}\^"):
        proxy.on("request", lambda flow: None, where="~m GET & ~zz")
    assert "request" not in proxy.hooks.active
