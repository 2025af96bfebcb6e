"""Export: the curl command of a captured request, run with the real curl, reproduces it."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from origin import Origin, clean_env, opener, wait_flows_done

from interceptkit import Flow, FlowTable, Headers, Proxy, Request


def run(command: str, *extra: str, script: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run an exported command as ``sh -c`` would (or as a script read by sh), with curl options added."""
    if extra:
        command = command.replace("curl ", "curl " + " ".join(extra) + " ", 1)
    if script:  # one argument may not exceed 128 KiB on Linux: a long command is read as a script
        return subprocess.run(["sh"], input=command.encode("latin-1"), capture_output=True, timeout=20,
                              env=clean_env())
    return subprocess.run(command, shell=True, capture_output=True, timeout=20, env=clean_env())


def captured(proxy: Proxy, origin: Origin, path: str, body: bytes | None, headers: dict[str, str]) -> Flow:
    request = __import__("urllib.request").request.Request(origin.url(path), data=body, headers=headers)
    if body is not None:
        request.method = "PUT"
    opener(proxy).open(request, timeout=5).read()
    [flow] = wait_flows_done(proxy, 1)
    return flow


def seen(request: Any) -> tuple[str, str, list[tuple[str, str]], bytes]:
    return request.method, request.path, [(n.lower(), v) for n, v in request.headers], request.body


@pytest.mark.parametrize("body", [None, b"plain text body", b"\x00\x01binary\xff\xfe" * 10, b"@not-a-file",
                                  b"it's 100% $(true) `true` \\n"])
def test_curl_command_reproduces_the_request_at_the_origin(proxy: Proxy, origin: Origin,
                                                           body: bytes | None) -> None:
    headers = {"X-Quote": "it's \"quoted\" $(echo no) `no` ; | &", "X-Latin": "caf\xe9", "Accept": "*/*",
               "X-Empty": ""}
    flow = captured(proxy, origin, "/echo?q=a&b=[1]", body, headers)
    result = run(flow.to_curl(), "--silent", "--proxy", proxy.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (body or b"")
    original, again = origin.requests
    assert seen(again)[:2] == seen(original)[:2] and again.body == original.body
    # Same headers, same order, same values (urllib's Connection: close is connection-only).
    assert [h for h in seen(again)[2] if h[0] != "connection"] == \
        [h for h in seen(original)[2] if h[0] != "connection"]


def test_curl_command_of_a_head_and_a_big_binary_body(origin: Origin) -> None:
    big = bytes(range(256)) * 400  # 100 KiB: through stdin, several printf calls
    for method, body in (("HEAD", b""), ("POST", big)):
        request = Request(method=method, scheme="http", host="127.0.0.1", port=origin.port, path="/echo",
                          headers=Headers([("Host", f"127.0.0.1:{origin.port}"), ("Content-Type", "x/y")]),
                          content=body)
        result = run(Flow(id=1, request=request).to_curl(), "--silent", "--max-time", "10", script=True)
        assert result.returncode == 0, result.stderr
    head, post = origin.requests
    assert head.method == "HEAD" and post.body == big and post.header("Content-Type") == "x/y"


def test_table_to_curl_gives_one_command_per_flow(proxy: Proxy, origin: Origin) -> None:
    for path in ("/hello", "/echo"):
        opener(proxy).open(origin.url(path), timeout=5).read()
    wait_flows_done(proxy, 2)
    commands = proxy.flows.to_curl().splitlines()
    assert len(commands) == 2
    for command in commands:
        assert run(command, "--silent", "--proxy", proxy.url).returncode == 0
    assert [r.path for r in origin.requests] == ["/hello", "/echo", "/hello", "/echo"]
    assert FlowTable().to_curl() == ""


def test_truncated_body_cannot_be_exported(new_proxy: Any, origin: Origin) -> None:
    with new_proxy(body_capture_limit=10) as proxy:
        opener(proxy).open(origin.url("/echo"), data=b"x" * 100, timeout=5).read()
        [flow] = wait_flows_done(proxy, 1)
    with pytest.raises(ValueError, match="only 10 of the request body's 100 bytes"):
        flow.to_curl()
