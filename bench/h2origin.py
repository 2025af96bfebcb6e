#!/usr/bin/env python3
"""The HTTP/2 benchmark origin: hypercorn on 127.0.0.1 over TLS, ALPN h2 and http/1.1
(``--http1-only``: http/1.1 alone, the upstream of the h2->h1 pairing).

The same server answers both protocols, so h2 and HTTP/1.1 figures compare the
protocol, not two servers. It makes its own throw-away CA and leaf in
``--dir`` (``ca.pem`` is what a client or the proxy's ``--upstream-ca`` must
trust), then prints ``PORT <n>`` once it listens.

  /small       a 13-byte body
  /bytes/N     N bytes, streamed in 256 KiB pieces
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import os
import socket
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config

SMALL = b"hello, world\n"
PIECE = bytes(256 * 1024)


def make_cert(folder: str) -> tuple[str, str, str]:
    """(ca.pem, chain.pem, key.pem) in ``folder``: a CA and a leaf for localhost/127.0.0.1."""
    now = dt.datetime.now(dt.timezone.utc)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    valid = lambda b: b.not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=7))  # noqa: E731
    ca = valid(x509.CertificateBuilder().subject_name(name("bench h2 CA")).issuer_name(name("bench h2 CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)).sign(ca_key, hashes.SHA256())
    sans = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    leaf = valid(x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
                 .public_key(key.public_key()).serial_number(x509.random_serial_number())
                 .add_extension(sans, critical=False)).sign(ca_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    paths = tuple(os.path.join(folder, f) for f in ("ca.pem", "chain.pem", "key.pem"))
    for path, data in zip(paths, (ca.public_bytes(pem), leaf.public_bytes(pem) + ca.public_bytes(pem),
                                  key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))):
        with open(path, "wb") as f:
            f.write(data)
    os.chmod(paths[2], 0o600)
    return paths  # type: ignore[return-value]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path.startswith("/bytes/"):
        n = int(path.split("/")[2])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % n)]})
        sent = 0
        while sent < n:
            piece = PIECE[:min(len(PIECE), n - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < n})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(SMALL)), (b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": SMALL})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", required=True, help="folder for the throw-away CA, leaf and key")
    ap.add_argument("--http1-only", action="store_true",
                    help="ALPN http/1.1 only (an HTTP/1.1 origin for the h2->h1 pairing); reuses --dir's CA if there")
    args = ap.parse_args()
    if args.http1_only and os.path.exists(os.path.join(args.dir, "chain.pem")):
        chain, key = os.path.join(args.dir, "chain.pem"), os.path.join(args.dir, "key.pem")
    else:
        _, chain, key = make_cert(args.dir)
    sock = socket.create_server(("127.0.0.1", 0), backlog=256)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the descriptor from here
    config.certfile, config.keyfile = chain, key
    config.alpn_protocols = ["http/1.1"] if args.http1_only else ["h2", "http/1.1"]
    config.accesslog = config.errorlog = None
    config.h2_max_concurrent_streams = 100
    config.keep_alive_max_requests = 10**9  # hypercorn closes a connection after 1,000 requests by default
    print(f"PORT {port}", flush=True)
    asyncio.run(serve(app, config))  # type: ignore[arg-type]  # ended by SIGTERM from run.py / h2load.py


if __name__ == "__main__":
    sys.exit(main())
