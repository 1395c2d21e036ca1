"""`mirror` run as users run it: a subprocess with a config file and `$MIRROR_DATABASE_URL`.

Each store lives in a folder of its own, so its bytes on disk are the sizes of
the files in that folder (the SQLite file, and its WAL while a process has it open).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
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
ROOT = Path(__file__).resolve().parent.parent
# The interpreter that runs `mirror` (and the probes that import it): this one until
# `install_as_user` gives mirror an environment of its own.
_python = sys.executable


def python() -> str:
    """Return the interpreter that `mirror` commands run in."""
    return _python


def install_as_user(work: Path) -> str:
    """Install mirror in an environment of its own as the README's first command does, and use it from now on.

    `pip install -e .` without the test tools: the development environment also holds `rich`
    (import-linter needs it), which structlog loads with its console renderer when it is
    there, ~4.5 MiB and ~30 ms more in every command, which no user's `mirror` pays.
    Returns the environment's interpreter.
    """
    global _python
    venv = work / "user-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    interpreter = str(venv / "bin" / "python")
    subprocess.run(
        [interpreter, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", str(ROOT)],
        check=True,
        env=installed_env(),
    )
    _python = interpreter
    return interpreter


@dataclass(frozen=True, slots=True)
class Timed:
    """A finished command: wall seconds and what it printed on stdout."""

    seconds: float
    stdout: str
    returncode: int = 0
    peak_kb: int = 0  # the process's own peak resident set size (`VmHWM`), KiB
    pss_kb: int = 0  # the peak of the summed PSS of the process and all its descendants, KiB
    processes: int = 1  # the most processes of its tree seen at once

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
    """Run `argv`, reading its stdout; return its wall time, stdout, exit code and its memory.

    Its memory is polled from /proc every 20 ms while it runs (`MemoryWatch`): its own
    `VmHWM`, and the peak of the summed PSS of it and every process it started.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv), env=env, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL
    )
    with MemoryWatch(process) as watch:
        assert process.stdout is not None
        out = process.stdout.read()
        process.stdout.close()
        returncode = process.wait()
        seconds = time.perf_counter() - started
    return Timed(seconds, out.decode(), returncode, watch.hwm_kb, watch.pss_kb, watch.processes)


def status_kb(pid: int, key: str) -> int:
    """Return a KiB figure of /proc/PID/status (`VmHWM`, `VmRSS`); 0 once the process has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Return the proportional set size of process `pid` in KiB (0 once it has exited).

    PSS counts each page a process maps divided by how many processes map it, so the PSS
    of a parent and its children adds up to the memory they take together: the libraries
    and interpreter pages they share are counted once, not once per process as RSS would.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


_SYS_KCMP = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
_KCMP_VM = 1
_LIBC = ctypes.CDLL(None)  # the C library this interpreter runs on: its `syscall`


def shares_memory(pid: int, other: int) -> bool:
    """Return whether two processes run in one address space (kcmp(2) `KCMP_VM`); False when unknown.

    A child started with vfork (as `subprocess` and multiprocessing's spawn start theirs)
    runs in its parent's memory until it executes its program: its PSS is the parent's,
    and adding both would count that memory twice.
    """
    if _SYS_KCMP is None:
        return False
    return int(_LIBC.syscall(_SYS_KCMP, pid, other, _KCMP_VM, 0, 0)) == 0


def descendants(pid: int) -> list[int]:
    """Return the ids of every living process below `pid` (children, their children, ...).

    A child still in its parent's memory (vforked, not yet executing its program) is left out.
    """
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = [int(child) for child in children.read().split()]
            except (OSError, ValueError):
                continue
            kids = [kid for kid in kids if not shares_memory(parent, kid)]
            found += kids
            todo += kids
    return found


class MemoryWatch:
    """Polls a running process's memory from /proc until it exits (or the block ends).

    `hwm_kb` is the process's own `VmHWM` (the kernel's high-water mark of its RSS: exact,
    but blind to its child processes); `pss_kb` the largest sum, over one poll, of the
    PSS of the process and all its descendants (the memory the command takes with its
    helpers and workers; a peak shorter than the interval can be missed); `processes` the
    most processes of the tree seen at once. Not `ru_maxrss` from `wait4`, which Linux
    carries across fork and exec from the parent (this benchmark, which may hold a million
    URLs), so a small child would report the parent's peak.
    """

    def __init__(self, process: subprocess.Popen[bytes], interval: float = 0.02) -> None:
        self.process = process
        self.interval = interval
        self.hwm_kb = 0
        self.pss_kb = 0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def poll(self) -> None:
        """Read the figures once and keep the peaks."""
        pid = self.process.pid
        tree = [pid, *descendants(pid)]
        total = sum(pss_kb(p) for p in tree)
        hwm = status_kb(pid, "VmHWM")  # after the tree: the process may have exited meanwhile
        if hwm:
            self.hwm_kb = max(self.hwm_kb, hwm)
            self.pss_kb = max(self.pss_kb, total)
            self.processes = max(self.processes, len(tree))

    def _run(self) -> None:
        while self.process.poll() is None and not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)


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
        return [_python, "-m", "mirror", "--config", str(self.config), "--log-format", "json", *args]

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
