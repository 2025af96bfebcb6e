"""The shell syntax of ``interceptkit env`` and the bundle's contents (no sockets)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from interceptkit.clientenv import bundle_text, shell_lines, trusted_certificates

CERT_A = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
CERT_B = b"-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"
TRICKY = {"A_VAR": "it's $HOME `x` \\ \"q\""}


def test_sh_lines_survive_a_real_shell():
    script = shell_lines(TRICKY, "sh") + 'printf "%s" "$A_VAR"'
    result = subprocess.run(["sh", "-c", script], capture_output=True, timeout=10, check=True)
    assert result.stdout.decode() == TRICKY["A_VAR"]


def test_fish_and_powershell_quoting():
    assert shell_lines(TRICKY, "fish") == "set -gx A_VAR 'it\\'s $HOME `x` \\\\ \"q\"';\n"
    assert shell_lines(TRICKY, "powershell") == "$env:A_VAR = 'it''s $HOME `x` \\ \"q\"'\n"
    with pytest.raises(ValueError):
        shell_lines(TRICKY, "tcsh")


def test_bundle_puts_our_ca_first_and_each_certificate_once():
    text = bundle_text(CERT_A + b"\n", [CERT_B, CERT_A.replace(b"\n", b"\r\n"), CERT_B])
    assert text == CERT_A + b"\n" + CERT_B + b"\n"


def test_trusted_certificates_honour_ssl_cert_file_and_hashed_dir(tmp_path: Path):
    (tmp_path / "file.pem").write_bytes(CERT_A + b"\n")
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "0123abcd.0").write_bytes(CERT_B)
    (folder / "README").write_bytes(CERT_A.replace(b"AAAA", b"CCCC"))  # not a hashed name: not looked up
    found = trusted_certificates({"SSL_CERT_FILE": str(tmp_path / "file.pem"), "SSL_CERT_DIR": str(folder)})
    assert found == [CERT_A, CERT_B]
