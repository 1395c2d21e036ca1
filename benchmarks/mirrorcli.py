"""`mirror` run as users run it: a subprocess with a config file and `$MIRROR_DATABASE_URL`.

Each store lives in a folder of its own, so its bytes on disk are the sizes of
the files in that folder (the SQLite file, and its WAL while a process has it open).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONCURRENCY = 16  # mirror's threads and the bare client's, as the harness


@dataclass(frozen=True, slots=True)
class Timed:
    """A finished command: wall seconds and what it printed on stdout."""

    seconds: float
    stdout: str
    returncode: int = 0
    peak_kb: int = 0  # the process's peak resident set size (its own, from wait4)

    def json(self) -> Any:
        """Return stdout parsed as the command's one JSON document."""
        return json.loads(self.stdout)


def write_config(
    folder: Path,
    urls: Sequence[str],
    *,
    interval: str = "6h",
    tick: str = "5s",
    concurrency: int = CONCURRENCY,
) -> Path:
    """Write `mirror.toml` (politeness off) and `targets.txt` (`urls`) in `folder`; return the config file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "targets.txt").write_text("".join(f"{u}\n" for u in urls))
    config = folder / "mirror.toml"
    config.write_text(
        'targets_file = "targets.txt"\n\n'
        f'[storage]\ndatabase = "sqlite:///{folder / "store" / "mirror.db"}"\n\n'
        f'[schedule]\ninterval = "{interval}"\ntick = "{tick}"\n\n'
        f'[fetch]\nconcurrency = {concurrency}\nper_host_concurrency = {concurrency}\nper_host_delay = "0"\n'
        'timeout = "60s"\n'
    )
    return config


def run_measured(argv: Sequence[str], *, env: dict[str, str] | None = None, stderr: Any = None) -> Timed:
    """Run `argv`, reading its stdout; return its wall time, stdout, exit code and its own peak RSS.

    The peak is the process's `VmHWM`, read from /proc every 20 ms while it runs: not
    `ru_maxrss` from `wait4`, which Linux carries across fork and exec from the parent
    (this benchmark, which may hold a million URLs), so a small child would report the parent's peak.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv), env=env, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL
    )
    peak = [0]
    watcher = threading.Thread(target=_watch_peak, args=(process, peak), daemon=True)
    watcher.start()
    assert process.stdout is not None
    out = process.stdout.read()
    process.stdout.close()
    returncode = process.wait()
    seconds = time.perf_counter() - started
    watcher.join()
    return Timed(seconds, out.decode(), returncode, peak[0])


def _watch_peak(process: subprocess.Popen[bytes], peak: list[int]) -> None:
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)


def installed_env() -> dict[str, str]:
    """Return this environment for a command run as installed: its bytecode written once and reused.

    pip writes the bytecode of what it installs; a `PYTHONDONTWRITEBYTECODE` set around the
    benchmark would make every command compile mirror's modules (an editable install) again,
    ~80 ms a command that no installed `mirror` pays.
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


class Mirror:
    """One store and one config, driven through the `mirror` command line."""

    def __init__(self, folder: Path, config: Path, database: str | None = None) -> None:
        self.folder = folder
        self.store = folder / "store"
        self.store.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.database = database or f"sqlite:///{self.store / 'mirror.db'}"
        self.log = folder / "mirror.log"
        self.env = {
            **installed_env(),
            "MIRROR_DATABASE_URL": self.database,
            "MIRROR_CONFIG": str(config),
            "XDG_CACHE_HOME": str(folder / "cache"),  # the config memo (mirror.config_cache), not the user's
        }

    def argv(self, *args: str) -> list[str]:
        """Return the command line of `mirror ARGS` with this config, logs as JSON lines."""
        return [sys.executable, "-m", "mirror", "--config", str(self.config), "--log-format", "json", *args]

    def run(self, *args: str, check: bool = True) -> Timed:
        """Run `mirror ARGS`, its logs appended to `mirror.log`; return its wall time and stdout.

        Raises:
            RuntimeError: it exited non-zero (with `check`); the log's tail is in the message.
        """
        with self.log.open("ab") as log:
            done = run_measured(self.argv(*args), env=self.env, stderr=log)
        if check and done.returncode != 0:
            tail = [line[:300] for line in self.log.read_text(errors="replace").splitlines()[-5:]]
            raise RuntimeError(f"mirror {' '.join(args)} exited {done.returncode}: {' | '.join(tail)}")
        return done

    def verify(self) -> bool:
        """Return whether `mirror verify` finds this store intact (exit 0)."""
        return self.run("verify", "--json", check=False).returncode == 0

    def disk_bytes(self) -> int:
        """Return the bytes of every file of the store on disk."""
        return sum(p.stat().st_size for p in self.store.iterdir() if p.is_file() and p.suffix != ".lock")

    def table_bytes(self) -> dict[str, tuple[int, int]]:
        """Return, per table of the SQLite store, the bytes of its pages and of its indexes' pages.

        Measured with SQLite's `dbstat` table (pages, not payload: what the file holds).
        """
        path = self.database.removeprefix("sqlite:///")
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT m.tbl_name, m.type, sum(d.pgsize) FROM dbstat AS d "
                "JOIN sqlite_schema AS m ON m.name = d.name GROUP BY m.tbl_name, m.type"
            ).fetchall()
        out: dict[str, tuple[int, int]] = {}
        for table, kind, size in rows:
            own, indexes = out.get(table, (0, 0))
            out[table] = (own + size, indexes) if kind == "table" else (own, indexes + size)
        return out


def table_note(tables: dict[str, tuple[int, int]], *, at_least: int = 10_000) -> str:
    """Return `tables` (`Mirror.table_bytes`) as `events 106 KB (+2 KB indexes), ...`, largest first."""
    ranked = sorted(tables.items(), key=lambda item: -sum(item[1]))
    parts = [
        f"{name} {own / 1e3:,.0f} KB" + (f" (+{indexes / 1e3:,.0f} KB indexes)" if indexes else "")
        for name, (own, indexes) in ranked
        if own + indexes >= at_least
    ]
    return ", ".join(parts)
