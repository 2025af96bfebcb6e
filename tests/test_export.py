"""Export to curl, HTTPie, Python and raw bytes; the shell quoting is safe for any content.

The shell tests run the exported command in a real POSIX sh with ``curl``
replaced by a shell function that records its arguments and stdin, so any
header or body can be checked without a network; test_export in
tests/integration runs the real curl against an origin.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interceptkit import Flow, Headers, Request
from interceptkit.export import sh_quote

_SHIM = ('curl() { for a in "$@"; do printf "%s\\000" "$a"; done > "$ARGS"; '
         'if [ -n "$READS_STDIN" ]; then cat > "$STDIN"; fi; }; ')
DANGEROUS = ["'", '"', "$(touch pwned)", "`touch pwned`", "; touch pwned", "| touch pwned", "&& touch pwned",
             "\\", "%s%n", "\\000", "$HOME", "${IFS}", "*", "?", "~", "!", "#", "\t", "'\\''", "\xe9\xff"]


def make(method: str = "POST", path: str = "/", headers: list[tuple[bytes, bytes]] | None = None,
         body: bytes = b"") -> Flow:
    fields = [(b"Host", b"t.test")] + (headers or [])
    request = Request(method=method, scheme="http", host="t.test", port=80, path=path,
                      headers=Headers.from_wire(fields), content=body)
    return Flow(id=1, request=request)


def run_shim(command: str, tmp: Path) -> tuple[list[bytes], bytes]:
    args, stdin = tmp / "args", tmp / "stdin"
    for f in (args, stdin, tmp / "pwned"):
        f.unlink(missing_ok=True)
    env = {"ARGS": str(args), "STDIN": str(stdin), "PATH": "/usr/bin:/bin",
           "READS_STDIN": "1" if "@-" in command else ""}
    result = subprocess.run(["sh"], input=(_SHIM + command).encode("latin-1"), capture_output=True,
                            cwd=tmp, env=env, timeout=10)
    assert result.returncode == 0, result.stderr
    assert not (tmp / "pwned").exists(), "the command ran something"
    return args.read_bytes().split(b"\0")[:-1], stdin.read_bytes() if stdin.exists() else b""


def option_values(argv: list[bytes], option: bytes) -> list[bytes]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


_values = st.one_of(st.sampled_from(DANGEROUS),
                    st.text(st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters="\r\n"),
                            max_size=30)).map(lambda t: t.encode("latin-1"))
_names = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~",
                 min_size=1, max_size=12).map(str.encode)
_paths = st.text(st.characters(min_codepoint=0x21, max_codepoint=255), max_size=30).map(
    lambda t: ("/" + t).encode("latin-1").decode("latin-1"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.lists(st.tuples(_names, _values), max_size=4),
       body=st.one_of(st.binary(max_size=200), _values), path=_paths)
def test_curl_quoting_is_safe_for_any_header_and_body(tmp_path: Path, headers: list[tuple[bytes, bytes]],
                                                      body: bytes, path: str) -> None:
    headers = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"connection", b"host",
                                                                 b"transfer-encoding", b"te", b"trailer",
                                                                 b"keep-alive", b"upgrade", b"proxy-connection",
                                                                 b"proxy-authorization", b"proxy-authenticate")]
    flow = make(path=path, headers=headers, body=body)
    argv, stdin = run_shim(flow.to_curl(), tmp_path)
    sent = option_values(argv, b"-H")
    expected = [b"Host: t.test"] + [n + b": " + v if v else n + b";" for n, v in headers]
    assert sent[: len(expected)] == expected
    assert argv[-1] == flow.request.url.encode("latin-1")
    [data] = option_values(argv, b"--data-binary")
    assert (stdin if data == b"@-" else data) == body


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values)
def test_sh_quote_is_one_word_standing_for_the_bytes(tmp_path: Path, value: bytes) -> None:
    argv, _ = run_shim(f"curl {sh_quote(value)} end", tmp_path)
    assert argv == [value, b"end"]


def test_a_leading_dash_is_not_an_option_of_printf(tmp_path: Path) -> None:
    flow = make(headers=[(b"-", b"\t")], body=b"-n\x00")
    argv, stdin = run_shim(flow.to_curl(), tmp_path)
    assert b"-: \t" in option_values(argv, b"-H") and stdin == b"-n\x00"


def test_sh_quote_refuses_what_no_argument_can_carry() -> None:
    for bad in (b"a\x00b", b"line\nbreak"):
        with pytest.raises(ValueError, match="NUL or newline"):
            sh_quote(bad)


def test_curl_command_shape() -> None:
    assert make("GET", "/a").to_curl() == ("curl --http1.1 -H 'Host: t.test' -H 'User-Agent:' -H 'Accept:' "
                                           "'http://t.test/a'")
    command = make("POST", "/p", [(b"Content-Type", b"application/json")], b'{"a": 1}').to_curl()
    assert command.startswith("curl -X 'POST' ") and "--data-binary '{\"a\": 1}'" in command
    assert "-H 'Content-Type: application/json'" in command and "'Content-Type:'" not in command
    binary = make("PUT", "/b", body=b"\x00\xff").to_curl()
    assert binary.startswith("printf '\\000\\377' | curl -X 'PUT'") and "--data-binary @-" in binary
    assert "$'" not in binary  # no bash-only quoting
    assert "--globoff" in make("GET", "/x?a=[1]").to_curl()
    assert "--path-as-is" in make("GET", "/a/../b").to_curl()
    assert make("HEAD", "/").to_curl().startswith("curl --head ")


def test_httpie_command(tmp_path: Path) -> None:
    command = make("POST", "/p", [(b"X-A", b"it's"), (b"X-Empty", b"")], b"body").to_httpie()
    assert command == ("printf 'body' | http POST 'http://t.test/p' 'Host:t.test' 'X-A:it'\\''s' 'X-Empty;'")
    assert make("GET", "/").to_httpie() == "http --ignore-stdin GET 'http://t.test/' 'Host:t.test'"


def test_python_snippet_is_literal_python() -> None:
    code = make("POST", "/p", [(b"X-Q", b"'\"\\ $(x)")], b"\x00data").to_python()
    tree = ast.parse(code)
    call = tree.body[1].value  # type: ignore[attr-defined]
    assert all(isinstance(node, (ast.Constant, ast.Dict)) for node in call.args)
    values = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    assert values == {"headers": {"Host": "t.test", "X-Q": "'\"\\ $(x)"}, "data": b"\x00data"}
    assert [ast.literal_eval(a) for a in call.args] == ["POST", "http://t.test/p"]


def test_raw_is_origin_form_with_host() -> None:
    flow = make("POST", "/p?q=1", [(b"Connection", b"keep-alive, X-Hop"), (b"X-Hop", b"1"),
                                   (b"Proxy-Connection", b"keep-alive"), (b"X-End", b"2")], b"abc")
    assert flow.to_raw() == b"POST /p?q=1 HTTP/1.1\r\nHost: t.test\r\nX-End: 2\r\nContent-Length: 3\r\n\r\nabc"
    no_host = Flow(id=2, request=Request(method="GET", scheme="https", host="::1", port=8443, path="/"))
    assert no_host.to_raw() == b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"
