"""Parsing of the network flags, the ones ``interceptkit --help`` offers, and the exposure warning."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from interceptkit import cli
from interceptkit.cli_network import add_network_options, exposure_warning, is_loopback, network_options


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_network_options(parser)
    return network_options(parser.parse_args(list(argv)))


def test_proxy_auth_flag():
    options = parse("--proxy-auth", "ada:se:cret")
    assert options.credentials is not None and options.credentials.check("ada", "se:cret")
    assert options.upstream_proxy is None and options.bypass is None


def test_proxy_auth_file(tmp_path):
    path = tmp_path / "users"
    path.write_text("ada:one\nbob:two\n")
    options = parse("--proxy-auth-file", str(path))
    assert options.credentials is not None and options.credentials.check("bob", "two")


@pytest.mark.parametrize("argv, message", [
    (["--proxy-auth", "ada"], "--proxy-auth: want USER:PASSWORD"),
    (["--proxy-auth", "a:b", "--proxy-auth-file", "x"], "not both"),
    (["--proxy-auth-file", "/nonexistent/users"], "--proxy-auth-file /nonexistent/users: No such file"),
    (["--upstream-proxy", "socks5://127.0.0.1:1080"], "only http://"),
    (["--upstream-proxy-bypass", "*.corp"], "needs --upstream-proxy"),
    (["--upstream-proxy", "http://127.0.0.1:3128", "--upstream-proxy-bypass", "(unclosed"],
     "--upstream-proxy-bypass: invalid"),
])
def test_bad_values_name_the_flag(argv, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse(*argv)


def test_upstream_proxy_and_bypass():
    options = parse("--upstream-proxy", "http://u:p@127.0.0.1:3128", "--upstream-proxy-bypass", "*.corp.test",
                    "--upstream-proxy-bypass", "localhost")
    assert options.upstream_proxy is not None and options.upstream_proxy.user == "u"
    assert options.bypass is not None
    assert options.bypass("intranet.corp.test", 443) and options.bypass("localhost", 80)
    assert not options.bypass("example.test", 443)


def test_loopback_and_the_warning():
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host) and exposure_warning(host, 8080, authenticated=False) is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "proxy.lan"):
        assert not is_loopback(host)
    text = exposure_warning("0.0.0.0", 8080, authenticated=False)
    assert text is not None and "anyone who can reach this port can use the proxy" in text
    assert "decrypts HTTPS" in text and "listen on 127.0.0.1" in text
    assert "--proxy-auth" in (exposure_warning("0.0.0.0", 1, authenticated=False, auth_available=True) or "")
    assert exposure_warning("0.0.0.0", 8080, authenticated=True) is None


def test_the_cli_prints_the_warning_for_a_non_loopback_address(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: listening fails at
    # once, after the warning, and nothing is ever sent anywhere.
    result = subprocess.run([sys.executable, "-m", "interceptkit", "--listen-host", "192.0.2.1",
                             "--listen-port", "0", "--confdir", str(tmp_path)],
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 1
    assert b"warning: listening on 192.0.2.1:0 without authentication" in result.stderr
    assert b"Traceback" not in result.stderr


def test_the_upstream_proxy_flags_are_offered():
    text = cli.build_parser().format_help()
    # The upstream proxy is wired: offered.
    assert "--upstream-proxy URL" in text and "--upstream-proxy-bypass PATTERN" in text


def test_the_cli_offers_auth_and_socks5_and_passes_them_on(tmp_path):
    text = cli.build_parser().format_help()
    assert "--proxy-auth USER:PASS" in text and "--proxy-auth-file FILE" in text and "socks5" in text
    args = cli.build_parser().parse_args(["--mode", "socks5", "--proxy-auth", "ada:pw", "--confdir", str(tmp_path)])
    proxy = cli._make_proxy(args)
    assert proxy.mode == "socks5" and proxy.url.startswith("socks5://")
    args = cli.build_parser().parse_args(["--mode", "reverse", "--route", "/=http://127.0.0.1:1",
                                          "--proxy-auth", "ada:pw"])
    with pytest.raises(ValueError, match="not reverse"):
        cli._make_proxy(args)


def test_no_warning_with_auth_and_the_warning_says_how_to_add_it(tmp_path):
    users = tmp_path / "users"
    users.write_text("ada:pw\n")
    for extra, warned in (([], True), (["--proxy-auth", "ada:pw"], False), (["--proxy-auth-file", str(users)], False)):
        result = subprocess.run([sys.executable, "-m", "interceptkit", "--listen-host", "192.0.2.1",
                                 "--listen-port", "0", "--confdir", str(tmp_path), *extra],
                                capture_output=True, timeout=30, check=False)
        assert result.returncode == 1, result.stderr
        assert (b"without authentication" in result.stderr) is warned
        if warned:
            assert b"--proxy-auth USER:PASS" in result.stderr
