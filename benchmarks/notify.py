"""A round of checks by `mirror run` while its notifications receiver hangs, against the same round without.

Both daemons check the same N pages served by nginx, on a store that `mirror check` filled
(round 1: N `document.new` events); then every target is made due and `mirror run` starts.
With `[[notify]]`, the webhook's receiver accepts the connection and never answers, so the
daemon's first delivery hangs for its whole `fetch.timeout` (60 s) with N events waiting,
while the round runs. The figure is the time from `service.started` to the N-th check of
the round, best of `repeats` runs each, the two kinds alternating.

    .venv/bin/python -m benchmarks.notify [N]
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks import nginx
from benchmarks.memory import count_checks, running_daemon
from benchmarks.mirrorcli import Mirror, write_config
from benchmarks.table import Row

TARGET_RATIO = 1.1  # "no longer than without", within the noise of best-of-5 runs
ROUND_TIMEOUT = 300.0
SECRET_ENV = "MIRROR_BENCH_WEBHOOK_SECRET"  # noqa: S105 -- the name of the variable, not a secret


class HungReceiver:
    """A webhook receiver that reads each POST and never answers (until `close`)."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.posts += 1
                receiver.released.wait(ROUND_TIMEOUT)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def round_seconds(folder: Path, urls: list[str], webhook: str | None) -> float:
    """Return the seconds `mirror run` takes for a round of `urls` (all due), with a webhook or without."""
    config = write_config(folder, urls, interval="6h", tick="1s")
    if webhook is not None:
        with config.open("a") as file:
            file.write(f'\n[[notify]]\nname = "hook"\nwebhook = "{webhook}"\nsecret_env = "{SECRET_ENV}"\n')
    mirror = Mirror(folder, config)
    mirror.env[SECRET_ENV] = "benchmark"
    mirror.run("check")  # round 1: the store, and N events the receiver is owed
    database = mirror.store / "mirror.db"
    with closing(sqlite3.connect(database)) as conn, conn:
        conn.execute("UPDATE targets SET next_check_at = '2000-01-01 00:00:00.000000'")
    before = count_checks(database)
    with running_daemon(mirror) as (process, _start_seconds):
        ready = time.perf_counter()
        while count_checks(database) < before + len(urls):
            if time.perf_counter() - ready > ROUND_TIMEOUT or process.poll() is not None:
                raise RuntimeError(f"mirror run did not finish its round; see {mirror.log}")
            time.sleep(0.02)
        return time.perf_counter() - ready


def run(work: Path, n: int, repeats: int = 5) -> tuple[Row, str]:
    """Measure the round with a hanging receiver and without notifications; return the row and a note."""
    site = work / "site-notify"
    site.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (site / f"p{i:05d}.html").write_text(
            f"<html><body><h1>Page {i}</h1><p>{'text ' * 200}</p></body></html>"
        )
    receiver = HungReceiver()
    times: dict[str, list[float]] = {"with": [], "without": []}
    try:
        with nginx.serve(site, work / "nginx-notify") as base:
            urls = [f"{base}/p{i:05d}.html" for i in range(n)]
            for attempt in range(repeats):
                for kind in ("without", "with"):
                    folder = work / f"notify-{kind}-{attempt}"
                    times[kind].append(round_seconds(folder, urls, receiver.url if kind == "with" else None))
    finally:
        receiver.close()
    best_with, best_without = min(times["with"]), min(times["without"])
    ratio = best_with / best_without
    row = Row(
        f"round of {n} checks by mirror run while the webhook receiver hangs",
        f"{best_with:.2f} s",
        f"{best_without:.2f} s (no [[notify]])",
        ratio,
        f"<= {TARGET_RATIO}",
        ratio <= TARGET_RATIO,
    )
    runs = ", ".join(f"{kind} {', '.join(f'{s:.2f}' for s in values)} s" for kind, values in times.items())
    note = (
        f"notify, {n} checks from service.started: {runs}; "
        f"the receiver got {receiver.posts} POSTs, none answered"
    )
    return row, note


if __name__ == "__main__":
    import tempfile

    from benchmarks.table import render

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    with tempfile.TemporaryDirectory(prefix="mirror-bench-notify-") as tmp:
        figure, text = run(Path(tmp), count)
    print(render([figure]))
    print(text)
