"""Figure 4: peak RSS of `mirror run` with many configured targets, over its first dispatch rounds.

The targets are the corpus's pages on nginx (served) followed by paths that
answer 404 (not served), so the daemon's first rounds record real checks of
both kinds. Peak RSS is the kernel's high-water mark (`VmHWM`), read from
/proc while the daemon runs. The reference is the floor any Python daemon
pays for the same job: an interpreter that imports everything `mirror run`
imports and holds the target URLs as a list of strings.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.mirrorcli import MemoryWatch, Mirror, python, write_config

RSS_LIMIT_MB = 300.0
INTERVAL = "10m"  # first checks spread over 10 minutes: the first rounds have due targets at once
TICK = "1s"
OBSERVE_SECONDS = 20.0  # dispatch ticks observed after the daemon said `service.started`
START_TIMEOUT = 300.0

_FLOOR = """\
import resource, sys
import mirror.cli, mirror.service, mirror.check, mirror.archive, mirror.config, mirror.fetch
urls = open(sys.argv[1]).read().splitlines()
print(len(urls))
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]))
"""


@dataclass(frozen=True, slots=True)
class DaemonMemory:
    """What one `mirror run` did: its peak RSS, how long it took to start, how many checks it made."""

    targets: int
    peak_kb: int  # its own `VmHWM`
    start_seconds: float
    checks: int
    crashed: int  # `check.crashed` events in its log
    pss_kb: int = 0  # the peak of the summed PSS of it and its child processes (text helper, workers)


def measure_daemon(
    folder: Path, urls: Sequence[str], observe: float = OBSERVE_SECONDS, database: str | None = None
) -> DaemonMemory:
    """Start `mirror run` on `urls`, watch it through its first dispatch rounds, stop it; return its memory.

    Raises:
        RuntimeError: the daemon exited early or did not start within the timeout.
    """
    mirror = Mirror(folder, write_config(folder, urls, interval=INTERVAL, tick=TICK), database)
    with running_daemon(mirror) as (process, start_seconds):
        watch = MemoryWatch(process, interval=0.2)
        deadline = time.perf_counter() + observe
        while time.perf_counter() < deadline and process.poll() is None:
            watch.poll()
            time.sleep(0.2)
        watch.poll()
    crashed = sum(1 for line in mirror.log.open(errors="replace") if '"check.crashed"' in line)
    checks = count_checks(mirror.store / "mirror.db") if database is None else -1
    return DaemonMemory(len(urls), watch.hwm_kb, start_seconds, checks, crashed, watch.pss_kb)


def count_checks(database: Path) -> int:
    """Return the number of rows in the store's `checks` table (one per fetch attempt)."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT count(*) FROM checks").fetchone()
        return int(row[0])


@contextmanager
def running_daemon(mirror: Mirror) -> Iterator[tuple[subprocess.Popen[bytes], float]]:
    """Start `mirror run`, wait for `service.started`; yield the process and its start-up seconds;
    stop it with SIGTERM (SIGKILL after a minute).

    Raises:
        RuntimeError: the daemon exited early or did not start within the timeout.
    """
    with mirror.log.open("ab") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            mirror.argv("run"),
            env=mirror.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield process, _wait_started(process, mirror.log, started)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_started(process: subprocess.Popen[bytes], log: Path, started: float) -> float:
    while time.perf_counter() - started < START_TIMEOUT:
        if process.poll() is not None:
            tail = [line[:300] for line in log.read_text(errors="replace").splitlines()[-3:]]
            raise RuntimeError(f"mirror run exited {process.returncode}: {' | '.join(tail)}")
        if "service.started" in log.read_text(errors="replace"):
            return time.perf_counter() - started
        time.sleep(0.2)
    raise RuntimeError(f"mirror run did not start within {START_TIMEOUT:.0f} s; see {log}")


def floor_kb(urls_file: Path) -> int:
    """Return the peak RSS (KiB) of a Python process that imports mirror and holds the URLs of `urls_file`.

    Raises:
        RuntimeError: the process failed.
    """
    done = subprocess.run(
        [python(), "-c", _FLOOR, str(urls_file)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference process failed: {done.stderr.strip()[-500:]}")
    return int(done.stdout.split()[1])


def target_urls(served: Sequence[str], base: str, count: int) -> list[str]:
    """Return `count` URLs: the served pages first, then paths on the same host that answer 404."""
    urls = list(served[:count])
    urls += [f"{base}/missing/{i:07d}.html" for i in range(count - len(urls))]
    return urls
