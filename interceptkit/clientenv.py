"""Environment variables that send a child process through the proxy, trusting its CA.

``SSL_CERT_FILE`` and its cousins *replace* a client's trust store, so pointing
them at the interceptkit CA alone breaks every host the proxy passes through
unchanged (``ignore_hosts``) or that the child reaches directly. They point
at a combined bundle instead: the interceptkit CA plus whatever the parent
process trusts (``ssl.get_default_verify_paths()``, honouring an
``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` already set). The bundle lives in the
confdir and is rewritten whenever its content would change.
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

#: The bundle's file name in the confdir.
BUNDLE_NAME = "interceptkit-ca-bundle.pem"
#: Variables that replace a client's CA store: they get the combined bundle.
BUNDLE_VARIABLES = (
    "SSL_CERT_FILE",  # OpenSSL: Python (urllib, httpx), Ruby, many C tools
    "REQUESTS_CA_BUNDLE",  # requests
    "CURL_CA_BUNDLE",  # curl
    "PIP_CERT",  # pip (it ignores SSL_CERT_FILE: it uses certifi's bundle)
    "GIT_SSL_CAINFO",  # git over HTTPS
    "AWS_CA_BUNDLE",  # boto3 and the AWS CLI
    "CARGO_HTTP_CAINFO",  # cargo
    "DENO_CERT",  # deno
)
#: Node adds NODE_EXTRA_CA_CERTS to its own roots: the CA alone is right there.
EXTRA_CA_VARIABLES = ("NODE_EXTRA_CA_CERTS",)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_VARIABLES = ("NO_PROXY", "no_proxy")

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.S)
# OpenSSL looks certificates up in a CA directory by subject hash: "5ad8a5d6.0".
_HASHED_NAME = re.compile(r"^[0-9a-f]{8}\.\d+$")


def trusted_certificates(environ: Mapping[str, str], exclude: Path | None = None) -> list[bytes]:
    """The PEM certificates a process with ``environ`` trusts by default.

    The CA file and directory are OpenSSL's defaults, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set; ``exclude`` (our own bundle, when a shell
    already points ``SSL_CERT_FILE`` at it) is skipped for the defaults.
    """
    defaults = ssl.get_default_verify_paths()
    cafile = environ.get(defaults.openssl_cafile_env) or defaults.openssl_cafile
    capath = environ.get(defaults.openssl_capath_env) or defaults.openssl_capath
    if exclude is not None and _same_file(cafile, exclude):
        cafile = defaults.openssl_cafile
    found = _certificates_in(Path(cafile)) if cafile else []
    if capath and os.path.isdir(capath):
        for entry in sorted(os.listdir(capath)):
            if _HASHED_NAME.match(entry):
                found += _certificates_in(Path(capath, entry))
    return found


def _same_file(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _certificates_in(path: Path) -> list[bytes]:
    try:
        return _PEM_CERT.findall(path.read_bytes())
    except OSError:
        return []  # a missing or unreadable default is simply not trusted


def bundle_text(ca_pem: bytes, others: Iterable[bytes]) -> bytes:
    """Our CA first, then every other certificate once."""
    seen: set[bytes] = set()
    parts = []
    for cert in [*_PEM_CERT.findall(ca_pem), *others]:
        key = b"".join(cert.split())
        if key not in seen:
            seen.add(key)
            parts.append(cert.replace(b"\r\n", b"\n"))
    return b"\n".join(parts) + b"\n"


def write_bundle(confdir: Path, ca_pem: bytes, environ: Mapping[str, str] | None = None) -> Path:
    """Write (or refresh) the combined bundle in ``confdir``; return its path.

    Rewritten only when its content changes (the CA, or what the parent
    trusts), atomically, so a client reading it never sees half a file.
    """
    path = confdir / BUNDLE_NAME
    text = bundle_text(ca_pem, trusted_certificates(os.environ if environ is None else environ, path))
    try:
        if path.read_bytes() == text:
            return path
    except OSError:
        pass
    confdir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=confdir, prefix=".bundle-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(text)
        os.chmod(temporary, 0o644)  # public certificates: readable by the user's other tools
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return path


def client_environment(proxy_url: str, ca_path: Path, bundle_path: Path, *,
                       keep_no_proxy: bool = False) -> dict[str, str]:
    """The variables for a child process: proxies, the bundle, the CA, NO_PROXY emptied."""
    env = {name: proxy_url for name in PROXY_VARIABLES}
    env.update({name: str(bundle_path) for name in BUNDLE_VARIABLES})
    env.update({name: str(ca_path) for name in EXTRA_CA_VARIABLES})
    if not keep_no_proxy:
        # An inherited NO_PROXY (often "localhost,127.0.0.1,...") would send
        # exactly the traffic you want to see around the proxy.
        env.update({name: "" for name in NO_PROXY_VARIABLES})
    return env


# -- shells ----------------------------------------------------------------------------

SHELLS = ("sh", "fish", "powershell")


def shell_lines(env: Mapping[str, str], shell: str = "sh") -> str:
    """``env`` as lines a shell evaluates: ``eval "$(interceptkit env)"``."""
    if shell == "sh":
        return "".join(f"export {name}={_sh_quote(value)}\n" for name, value in env.items())
    if shell == "fish":
        return "".join(f"set -gx {name} {_fish_quote(value)};\n" for name, value in env.items())
    if shell == "powershell":
        return "".join(f"$env:{name} = '{value.replace(chr(39), chr(39) * 2)}'\n" for name, value in env.items())
    raise ValueError(f"unknown shell {shell!r}: use one of {', '.join(SHELLS)}")


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _fish_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
