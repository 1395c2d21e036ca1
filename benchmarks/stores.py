"""Every store a benchmark run made, proved with `mirror verify` at the end of the run.

Each figure's own code verifies the stores it reads figures from (the three rounds of
`throughput`, the million targets of `scale`); this sweep covers the rest too (the daemons'
stores, the 100 versions of one page, the web store, the notify rounds, the start-up and
history stores), so a benchmark that left a store `verify` rejects cannot go unnoticed.
PostgreSQL stores are dropped by the figure that made them, after its own verify.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from benchmarks.mirrorcli import Mirror
from benchmarks.table import Row

_CONFIG = "targets = []\n"  # verify reads the store named by $MIRROR_DATABASE_URL, nothing else


def sqlite_stores(work: Path) -> Iterator[Path]:
    """Yield every SQLite store under `work` (a file that starts with SQLite's header), in name order."""
    for path in sorted(work.rglob("*.db")):
        if path.is_file():
            with path.open("rb") as file:
                if file.read(16) == b"SQLite format 3\x00":
                    yield path


def verify_all(work: Path) -> tuple[Row, str]:
    """Run `mirror verify` on every SQLite store under `work`; return the row and a note naming them."""
    folder = work / "verify-sweep"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mirror.toml"
    config.write_text(_CONFIG)
    intact: list[str] = []
    damaged: list[str] = []
    for store in sqlite_stores(work):
        name = str(store.relative_to(work))
        mirror = Mirror(folder, config, f"sqlite:///{store}")
        (intact if mirror.verify() else damaged).append(name)
    total = len(intact) + len(damaged)
    result = f"{len(intact)} of {total} intact" + (f"; DAMAGED: {', '.join(damaged)}" if damaged else "")
    row = Row(
        f"mirror verify of every SQLite store the run made ({total})",
        result,
        "-",
        None,
        "all intact",
        total > 0 and not damaged,
    )
    return row, f"stores verified at the end of the run: {', '.join(intact + damaged) or 'none'}"
