"""Debian's nginx on loopback, with a config of its own in a temporary folder.

The benchmark's HTTP server must not be the bottleneck and must behave like the
static hosts `mirror` watches: `etag on` (nginx's strong `"mtime-size"` ETag, so an
unchanged file answers 304 to a conditional GET), keep-alive, no access log.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.debian import ensure_packages

NGINX = "/usr/sbin/nginx"

_CONFIG = """\
worker_processes 2;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{
        text/html html;
        application/pdf pdf;
    }}
    default_type application/octet-stream;
    charset_types text/html;
    sendfile on;
    tcp_nopush on;
    etag on;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_nginx() -> str:
    """Return the path of Debian's nginx binary, installing `nginx` with apt-get when it is missing."""
    if not Path(NGINX).exists() and shutil.which("nginx") is None:
        ensure_packages(["nginx"])
    return NGINX if Path(NGINX).exists() else str(shutil.which("nginx"))


def _make_readable(path: Path) -> None:
    # nginx workers run as `nobody` when started by root: every folder up to the
    # served root must be searchable (mkdtemp makes them 0700).
    for part in (path, *path.parents):
        if part == Path(tempfile.gettempdir()) or part == part.parent:
            break
        mode = part.stat().st_mode
        if mode & 0o005 != 0o005:
            part.chmod(mode | 0o055)


@contextmanager
def serve(root: Path, workdir: Path) -> Iterator[str]:
    """Serve `root` with nginx on 127.0.0.1 until the block ends; yield the base URL (no trailing slash).

    Raises:
        RuntimeError: nginx did not start (its error log is in the message).
    """
    binary = ensure_nginx()
    workdir.mkdir(parents=True, exist_ok=True)
    _make_readable(root)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(_CONFIG.format(tmp=workdir, port=port, root=root))
    # -p: the prefix for relative paths; -e: the startup error log before the config is read.
    args = [binary, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(port, process, workdir / "error.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()  # SIGTERM: nginx's fast shutdown
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{port} within 10 s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-5:])
    except OSError:
        return "(no error log)"
