"""Start-up: the commands a person types to look at the record load only what they need.

Not a timing test (timings belong to the benchmarks: `benchmarks/startup.py`): each command runs
under `python -X importtime`, which names every module the process imports, and the heavy
libraries of the other commands must not be among them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Fetching, scheduling, serving, notifying, WARC, migrations, PostgreSQL, HTML and logging's extras.
NEVER = {
    "requests",
    "urllib3",
    "charset_normalizer",
    "lxml",
    "resiliparse",
    "cssselect",
    "w3lib",
    "protego",
    "apscheduler",
    "flask",
    "werkzeug",
    "jinja2",
    "waitress",
    "apprise",
    "warcio",
    "alembic",
    "psycopg",
    "tqdm",
    "structlog",
    "rich",
}
# No blob is decoded (counts, and a history without diffs), and a config file checked before is not
# checked again (`mirror.config_cache`): the `store` fixture's first `status` checked it.
READ_ONLY = NEVER | {"zstandard", "pydantic"}


def imported(argv: list[str], cwd: Path) -> set[str]:
    """Return the top-level packages `python -X importtime -m mirror ARGV` imports; it must exit 0."""
    env = {k: v for k, v in os.environ.items() if k not in ("MIRROR_CONFIG", "MIRROR_DATABASE_URL")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mirror", "--config", "mirror.toml", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", proc.stderr, re.MULTILINE)
    assert "mirror.cli" in names  # the report is there: an empty set would prove nothing
    return {name.split(".")[0] for name in names}


@pytest.fixture(scope="module")
def store(tmp_path_factory, archive_server):
    """A SQLite store with one page checked once, its config checked by a `status`; the folder and URL."""
    folder = tmp_path_factory.mktemp("startup")
    archive_server.put("/startup.html", b"<html><body><p>One version, no diff.</p></body></html>")
    url = archive_server.url("/startup.html")
    (folder / "mirror.toml").write_text(
        f'targets = ["{url}"]\n\n[storage]\ndatabase = "sqlite:///{folder / "mirror.db"}"\n\n'
        '[fetch]\nper_host_delay = "0"\nretries = 0\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mirror", "--config", "mirror.toml", "check"],
        capture_output=True,
        cwd=folder,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pydantic" in imported(["status"], folder)  # a person's first look checks the config file
    return folder, url


@pytest.mark.parametrize(
    ("argv", "forbidden"),
    [
        (["status"], READ_ONLY),
        (["status", "--json"], READ_ONLY),
        (["history", "URL"], READ_ONLY),
        (["targets"], READ_ONLY),
        (["show", "URL"], NEVER),
        (["--help"], NEVER | {"sqlalchemy", "pydantic", "zstandard"}),
        (["--version"], NEVER | {"sqlalchemy", "pydantic", "zstandard"}),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_commands_that_read_the_record_load_none_of_the_heavy_libraries(store, argv, forbidden):
    folder, url = store
    loaded = imported([url if a == "URL" else a for a in argv], folder)

    assert loaded & forbidden == set()


_COLLECTOR = """
import gc, sys
import mirror.app
seen = []
real = mirror.app.started
def started():
    seen.append(gc.isenabled())  # off until the command has started
    real()
    seen.append((gc.isenabled(), gc.get_freeze_count() > 0))
mirror.app.started = started
import mirror.cli
how, sys.argv[1:] = sys.argv[1], sys.argv[2:]
try:
    mirror.cli.main() if how == "program" else mirror.cli.main(sys.argv[1:])
except SystemExit:
    pass
print("collector:", seen[:2], gc.isenabled())
"""


@pytest.mark.parametrize("how", ["program", "in a caller's process"])
def test_the_collector_is_off_during_start_up_and_on_after_only_for_the_program(
    how: str, store: tuple[Path, str]
) -> None:
    folder, _url = store
    argv = ["--config", "mirror.toml", "status"]
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECTOR, "program" if how == "program" else "caller", *argv],
        capture_output=True,
        text=True,
        cwd=folder,
        env={k: v for k, v in os.environ.items() if k not in ("MIRROR_CONFIG", "MIRROR_DATABASE_URL")},
        timeout=60,
    )
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("collector:")]
    if how == "program":  # sys.argv is the program's: main() reads it
        assert line == "collector: [False, (True, True)] True", proc.stderr[-2000:]
    else:  # a caller's own collector is left alone, and nothing of it is frozen
        assert line == "collector: [True, (True, False)] True", proc.stderr[-2000:]


_LOADED = """
import sys
import mirror.cli
try:
    mirror.cli.main()
except SystemExit as exc:
    assert not exc.code, exc.code
names = ("warcio", "mirror.importing", "mirror.repack", "mirror.mending")
print("loaded:", [m for m in names if sys.modules.get(m)])
"""


def test_a_check_loads_neither_the_warc_import_nor_the_repacker_nor_the_mending(
    store: tuple[Path, str],
) -> None:
    folder, _url = store
    proc = subprocess.run(
        [sys.executable, "-c", _LOADED, "--config", "mirror.toml", "--log-format", "json", "check"],
        capture_output=True,
        text=True,
        cwd=folder,
        env={k: v for k, v in os.environ.items() if k not in ("MIRROR_CONFIG", "MIRROR_DATABASE_URL")},
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "loaded: []"
