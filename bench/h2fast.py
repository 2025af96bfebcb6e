"""A fast origin and a fast client for the download scenario of bench/h2load.py.

hypercorn (pure Python) manages ~160 MB/s on an h2 download here, and so does
the Python h2 client of h2load.py: a proxy faster than they are cannot show.
When the machine has them, the download runs between

  nginx   ``listen 127.0.0.1:<free port> ssl http2``, a config written into the
          run's temp folder, serving one generated file, with the leaf the
          hypercorn origin made (so the proxy's ``--upstream-ca`` trusts both)
  curl    ``curl --http2`` / ``--http1.1`` (with nghttp2), directly or through
          the proxy (``-x http://127.0.0.1:<proxy>``: CONNECT, then TLS with the
          proxy's CA), ``-o /dev/null``; MB/s is curl's ``%{speed_download}``

Only 127.0.0.1 is contacted (``--resolve`` pins ``localhost`` there for the
direct runs; through the proxy the proxy connects). Every curl run has
``--max-time``; nginx is a managed child stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

import procs

MB = 10**6
FILE = "bulk.bin"

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log error;
events {{ worker_connections 64; }}
http {{
  access_log off;
  default_type application/octet-stream;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 120s;
  client_body_temp_path {dir}/tmp/body; proxy_temp_path {dir}/tmp/proxy;
  fastcgi_temp_path {dir}/tmp/fastcgi; uwsgi_temp_path {dir}/tmp/uwsgi; scgi_temp_path {dir}/tmp/scgi;
  http2_chunk_size {chunk};
  server {{
    listen 127.0.0.1:{port} ssl http2;
    root {dir}/www;
    ssl_certificate {chain};
    ssl_certificate_key {key};
  }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.access(p, os.X_OK)), None)


def curl_with_http2() -> str | None:
    """curl, when it is there and was built with HTTP/2 (nghttp2)."""
    curl = shutil.which("curl")
    if curl is None:
        return None
    try:
        out = subprocess.run([curl, "-V"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    features = next((line for line in out.splitlines() if line.startswith("Features:")), "")
    return curl if "HTTP2" in features.split() else None


def write_file(path: str, nbytes: int) -> None:
    """``nbytes`` of random-looking bytes (one random MiB repeated: no compression anywhere to flatter)."""
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = nbytes
        while left:
            f.write(block[:min(left, len(block))])
            left -= min(left, len(block))


class Nginx:
    """nginx as the h2/HTTP/1.1 TLS origin of the download, on a free 127.0.0.1 port."""

    def __init__(self, binary: str, workdir: str, chain: str, key: str, nbytes: int, chunk: str = "64k") -> None:
        self.dir = os.path.join(workdir, "nginx")
        for sub in ("www", "tmp"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        write_file(os.path.join(self.dir, "www", FILE), nbytes)
        self.port = procs.free_port()
        self.chunk = chunk
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=self.dir, port=self.port, chain=chain, key=key, chunk=chunk))
        self.proc = procs.Managed([binary, "-c", conf, "-p", self.dir], "nginx", os.path.join(self.dir, "nginx.out"))
        if not procs.wait_listening(self.port, 15, self.proc):
            tail = self.proc.log_tail()
            self.proc.stop()
            raise RuntimeError(f"nginx did not listen: {tail}")

    @property
    def path(self) -> str:
        return "/" + FILE

    def stop(self) -> None:
        self.proc.stop()
        try:
            os.remove(os.path.join(self.dir, "www", FILE))  # 100 MB of temp space back
        except OSError:
            pass


def curl_download(curl: str, proto: str, port: int, path: str, proxy_port: int | None, cafile: str,
                  timeout: float) -> dict[str, Any]:
    """One ``curl -o /dev/null`` download of ``https://localhost:<port><path>``."""
    argv = [curl, "-sS", "--http2" if proto == "h2" else "--http1.1", "--cacert", cafile, "-o", "/dev/null",
            "--max-time", str(int(timeout)), "-w", "%{speed_download} %{http_version} %{size_download} %{http_code}"]
    if proxy_port:
        argv += ["-x", f"http://127.0.0.1:{proxy_port}"]
    else:
        argv += ["--noproxy", "*", "--resolve", f"localhost:{port}:127.0.0.1"]
    argv.append(f"https://localhost:{port}{path}")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    t0 = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10, env=env)
    except subprocess.TimeoutExpired:
        return {"proto": proto, "ok": False, "error": "curl timed out"}
    wall = time.monotonic() - t0
    try:
        speed, version, size, status = done.stdout.split()
    except ValueError:
        return {"proto": proto, "ok": False, "error": (done.stderr or done.stdout).strip()[:200]}
    alpn = {"2": "h2", "1.1": "http/1.1"}.get(version, version)
    nbytes = int(float(size))
    return {"proto": proto, "bytes": nbytes, "ok": status == "200" and done.returncode == 0,
            "mb_per_s": round(float(speed) / MB, 1), "seconds": round(wall, 2), "alpn": alpn,
            "error": done.stderr.strip()[:200] or None}
