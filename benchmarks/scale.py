"""The 1,000,000-target figures (`python -m benchmarks --million`) on SQLite and PostgreSQL, and their growth.

For each backend: `mirror run` on a config of N targets (the corpus's pages, then paths that
answer 404): its start-up (config, sync of N new targets) and peak RSS over its first dispatch
ticks; then, on the store it made, the cost of one claim of due targets (100 at a time, as a
round claims them), `mirror status` and `mirror targets --json` as a person runs them, and `mirror run`
restarted on the store it made (its sync reads every stored target):
wall time, time to the first byte of output, bytes and peak RSS. Each is measured at a tenth
of N too: a growth row per backend shows any figure that grows worse than linearly.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import memory
from benchmarks.mirrorcli import Mirror, python
from benchmarks.table import Row

PG_URL = "postgresql+psycopg://{user}@127.0.0.1:5432/{name}"
PG_USERS = ("postgres", "root")
PG_ADMIN_DATABASE = "postgres"
CLAIM = 100
CLAIMS = 7
RESTART_OBSERVE_SECONDS = 5.0  # a restart's peak is its sync of the stored targets, at start-up

_CLAIM_CHILD = """
import json, sys, time
from datetime import UTC, datetime, timedelta
from mirror.archive import Archive
archive = Archive.open(sys.argv[1], existing=True)
far = datetime(2100, 1, 1, tzinfo=UTC)
times = []
for n in range(int(sys.argv[2])):
    started = time.perf_counter()
    claimed = archive.claim_due(f"bench-{n}", far, int(sys.argv[3]), timedelta(minutes=5))
    times.append(time.perf_counter() - started)
    archive.release_leases(f"bench-{n}")
archive.close()
print(json.dumps({"seconds": times, "claimed": len(claimed)}))
"""


@dataclass(frozen=True, slots=True)
class Command:
    """One command's wall time, time to its first byte of output, bytes of output and peak RSS."""

    seconds: float
    first_byte: float
    size: int
    peak_kb: int


def run_command(mirror: Mirror, *args: str) -> Command:
    """Run `mirror ARGS` reading its output as it comes; return its figures (peak RSS: its `VmHWM`).

    Raises:
        RuntimeError: it exited non-zero.
    """
    import time

    from benchmarks.mirrorcli import MemoryWatch

    started = time.perf_counter()
    process = subprocess.Popen(
        mirror.argv(*args), env=mirror.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    first, size = 0.0, 0
    with MemoryWatch(process) as watch:
        while chunk := process.stdout.read(1 << 16):
            first = first or time.perf_counter() - started
            size += len(chunk)
        code = process.wait()
    if code != 0:
        raise RuntimeError(f"mirror {' '.join(args)} exited {code}")
    return Command(time.perf_counter() - started, first, size, watch.hwm_kb)


def claim_ms(database: str) -> float:
    """Return the median milliseconds of one claim of `CLAIM` due targets on the store at `database`."""
    out = subprocess.run(
        [python(), "-c", _CLAIM_CHILD, database, str(CLAIMS), str(CLAIM)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(statistics.median(json.loads(out)["seconds"])) * 1000


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """Yield the URL of a new PostgreSQL database (dropped at the end), or None when none is reachable."""
    try:
        import psycopg
    except ImportError:
        yield None
        return
    for user in PG_USERS:
        try:
            admin = psycopg.connect(
                host="127.0.0.1", user=user, dbname=PG_ADMIN_DATABASE, autocommit=True, connect_timeout=3
            )
        except psycopg.Error:
            continue
        name = f"mirror_bench_{uuid.uuid4().hex[:10]}"
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_URL.format(user=user, name=name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()
        return
    yield None


@dataclass(frozen=True, slots=True)
class Scale:
    """One backend at one size: the daemon's start-up and peak, one claim, `status`, `targets --json`."""

    targets: int
    backend: str
    daemon: memory.DaemonMemory
    restart: memory.DaemonMemory  # the same daemon started again on the store it made
    claim_ms: float
    status: Command
    listing: Command
    intact: bool


def measure(work: Path, urls: Sequence[str], backend: str, database: str | None) -> Scale:
    """Measure the daemon and the commands on `urls` with one backend; verify the store it made."""
    folder = work / f"scale-{backend}-{len(urls)}"
    daemon = memory.measure_daemon(folder, urls, observe=memory.OBSERVE_SECONDS, database=database)
    mirror = Mirror(folder, folder / "mirror.toml", database)
    status = run_command(mirror, "status", "--json")
    listing = run_command(mirror, "targets", "--json")
    claim = claim_ms(mirror.database)
    # A log of its own: the first start's `service.started` would end the restart's wait at once.
    (folder / "mirror.log").rename(folder / "mirror-first-start.log")
    restart = memory.measure_daemon(folder, urls, observe=RESTART_OBSERVE_SECONDS, database=database)
    return Scale(len(urls), backend, daemon, restart, claim, status, listing, mirror.verify())


def rows_of(done: Scale) -> tuple[list[Row], str]:
    """Return the rows and the note of one measured size."""
    label = f"{done.targets:,} targets, {done.backend}"
    daemon, status, listing = done.daemon, done.status, done.listing
    rows = [
        Row(
            f"mirror run start-up (sync of new targets), {label}",
            f"{daemon.start_seconds:.0f} s",
            "-",
            None,
            "(context)",
            None,
        ),
        Row(
            f"peak RSS of mirror run, {label}",
            f"{daemon.peak_kb / 1024:.0f} MiB",
            "-",
            None,
            f"< {memory.RSS_LIMIT_MB:.0f} MiB",
            daemon.peak_kb / 1024 < memory.RSS_LIMIT_MB,
        ),
        Row(
            f"peak RSS of mirror run restarted on its store, {label}",
            f"{done.restart.peak_kb / 1024:.0f} MiB (started in {done.restart.start_seconds:.0f} s)",
            "-",
            None,
            f"< {memory.RSS_LIMIT_MB:.0f} MiB",
            done.restart.peak_kb / 1024 < memory.RSS_LIMIT_MB,
        ),
        Row(
            f"claim of {CLAIM} due targets, {label}", f"{done.claim_ms:.1f} ms", "-", None, "(context)", None
        ),
        Row(
            f"mirror status, {label}",
            f"{status.seconds:.2f} s, {status.peak_kb / 1024:.0f} MiB",
            "-",
            None,
            "(context)",
            None,
        ),
        Row(
            f"mirror targets --json, {label}",
            f"{listing.seconds:.1f} s (first byte {listing.first_byte:.1f} s), "
            f"{listing.peak_kb / 1024:.0f} MiB",
            "-",
            None,
            "(context)",
            None,
        ),
        Row(
            f"mirror verify, {label}",
            "intact" if done.intact else "DAMAGED",
            "-",
            None,
            "intact",
            done.intact,
        ),
    ]
    note = (
        f"{label}: mirror run started in {daemon.start_seconds:.1f} s, "
        f"peak RSS {daemon.peak_kb / 1024:.0f} MiB, {daemon.crashed} checks crashed "
        f"in its first {memory.OBSERVE_SECONDS:.0f} s; restarted in {done.restart.start_seconds:.1f} s "
        f"at peak RSS {done.restart.peak_kb / 1024:.0f} MiB; status {status.seconds:.2f} s; "
        f"targets --json wrote {listing.size / 1e6:.0f} MB in {listing.seconds:.1f} s"
    )
    return rows, note


def growth_row(small: Scale, large: Scale) -> Row:
    """Return how each figure grew from `small` to `large` targets, against the growth of the targets.

    The ratio is the worst figure's growth over the targets' growth: at most 1 when nothing
    grows worse than linearly.
    """
    grew = {
        "start-up": large.daemon.start_seconds / small.daemon.start_seconds,
        "peak RSS": large.daemon.peak_kb / small.daemon.peak_kb,
        "claim": large.claim_ms / small.claim_ms,
        "status": large.status.seconds / small.status.seconds,
        "targets --json": large.listing.seconds / small.listing.seconds,
    }
    times = large.targets / small.targets
    worst = max(grew.values()) / times
    return Row(
        f"growth {small.targets:,} -> {large.targets:,} targets, {large.backend} "
        f"({', '.join(f'{name} x{value:.1f}' for name, value in grew.items())})",
        f"x{max(grew.values()):.1f} (worst)",
        f"x{times:.0f} (targets)",
        worst,
        "<= 1 (linear or better)",
        worst <= 1,
    )


def run(work: Path, served: Sequence[str], base: str, n: int) -> tuple[list[Row], list[str]]:
    """Measure `n / 10` and `n` targets on SQLite, then on PostgreSQL if reachable; return rows and notes.

    The smaller size gives each figure's growth: what grows worse than linearly shows there.
    """
    urls = memory.target_urls(served, base, n)
    rows: list[Row] = []
    notes: list[str] = []

    def sizes(backend: str, small_database: str | None, large_database: str | None) -> None:
        small = measure(work, urls[: n // 10], backend, small_database)
        large = measure(work, urls, backend, large_database)
        for done in (small, large):
            more, note = rows_of(done)
            rows.extend(more)
            notes.append(note)
        rows.append(growth_row(small, large))

    sizes("sqlite", None, None)
    with postgres_database() as small_url, postgres_database() as large_url:
        if small_url is None or large_url is None:
            notes.append("PostgreSQL: not reachable on 127.0.0.1:5432 (trust auth), its figures are left out")
        else:
            sizes("postgresql", small_url, large_url)
    return rows, notes
