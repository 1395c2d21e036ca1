"""Figures 3b and 5: one page with many versions, built through the `Checker` API against nginx.

Storage: 100 versions of a ~100 KB page, each changed by one paragraph, against
one copy of the page compressed with zstd -3. History: `mirror history` and
`mirror diff` of a page with 1,000 versions, timed as commands, against
`mirror status` on the same store.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import corpus, nginx
from benchmarks.mirrorcli import Mirror, table_note, write_config
from benchmarks.table import Row

DELTA_VERSIONS = 100
DELTA_PAGE_BYTES = 100_000
MAX_DELTA_RATIO = 5.0
HISTORY_VERSIONS = 1000
HISTORY_PAGE_BYTES = 50_000  # the corpus's median page
MAX_HISTORY_RATIO = 5.0
REPEATS = 5


def build_versions(
    work: Path, name: str, source: Path, versions: int, progress: Callable[[int], None] | None = None
) -> tuple[Mirror, str, bytes, int]:
    """Serve one page, change one paragraph of it `versions - 1` times, checking it after each write.

    Returns the store, the page's URL, its first version and the store's bytes on disk before the page.

    Raises:
        RuntimeError: a check did not record the new version.
    """
    from mirror.archive import Archive
    from mirror.check import Checker
    from mirror.config import load_config
    from mirror.db import open_engine
    from mirror.log import configure_logging
    from mirror.politeness import HostGate

    configure_logging(json=True, level="warning")
    site = work / f"site-{name}"
    page = site / "page.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    first = source.read_bytes()
    rng = random.Random(corpus.SEED)
    with nginx.serve(site, work / f"nginx-{name}") as base:
        url = f"{base}/page.html"
        folder = work / f"mirror-{name}"
        config_file = write_config(folder, [url], concurrency=1)
        mirror = Mirror(folder, config_file)
        config = load_config(config_file, mirror.env)
        open_engine(config.storage.database).dispose()  # migrated, closed: the empty store's bytes
        empty = mirror.disk_bytes()
        archive = Archive(open_engine(config.storage.database))
        try:
            archive.sync_targets(config.targets, datetime.now(UTC))
            (target,) = archive.active_targets()
            checker = Checker(archive, config.fetch.limits(), config.detect.policy(), HostGate(1, 0.0))
            try:
                data = first
                for number in range(1, versions + 1):
                    if number > 1:
                        changed = corpus.change_paragraph(data, rng)
                        assert changed is not None
                        data = changed
                    corpus.write_bumped(page, data)
                    report = checker.check_one(target)
                    if report.version != number:
                        got = f"{report.outcome} v{report.version}"
                        raise RuntimeError(f"{url}: check {number} recorded {got}")
                    if progress is not None:
                        progress(number)
            finally:
                checker.close()
        finally:
            archive.close()
    return mirror, url, first, empty


def storage(work: Path, sources: list[Path], versions: int = DELTA_VERSIONS) -> tuple[list[Row], str]:
    """Return rows for `versions` versions of a ~100 KB page against one compressed copy, and a note.

    Two rows: the store's growth on disk (blobs, rows and indexes), and the blobs alone
    (`stored_bytes` of `mirror status --json`).
    """
    source = corpus.pick_page(sources, DELTA_PAGE_BYTES)
    mirror, _url, first, empty = build_versions(work, "delta", source, versions)
    added = mirror.disk_bytes() - empty
    blobs = int(mirror.run("status", "--json").json()["stored_bytes"])
    one = corpus.zstd_size(first)
    reference = f"{one / 1e3:.1f} KB (one copy, zstd -3)"
    rows = [
        Row(
            f"{versions} versions of a {len(first) / 1e3:.0f} KB page, {what}",
            f"{size / 1e3:.0f} KB",
            reference,
            size / one,
            f"<= {MAX_DELTA_RATIO:g}",
            size / one <= MAX_DELTA_RATIO,
        )
        for what, size in (("store growth on disk", added), ("blob bytes only", blobs))
    ]
    note = (
        f"{versions} versions of {source.name}: the store grew {added / 1e3:.0f} KB on disk, of which "
        f"blobs {blobs / 1e3:.0f} KB; the rest is rows (snapshots, events with their diffs, checks) "
        f"and indexes; by table: {table_note(mirror.table_bytes())}"
    )
    return rows, note


def _median_seconds(mirror: Mirror, repeats: int, *args: str) -> float:
    return statistics.median(mirror.run(*args).seconds for _ in range(repeats))


def history(
    work: Path, sources: list[Path], versions: int = HISTORY_VERSIONS, repeats: int = REPEATS
) -> tuple[list[Row], list[str]]:
    """Return rows timing `mirror history` and `mirror diff` of a page with `versions` versions, and notes."""
    source = corpus.pick_page(sources, HISTORY_PAGE_BYTES)
    mirror, url, first, _ = build_versions(work, "history", source, versions)
    status = _median_seconds(mirror, repeats, "status")
    rows = []
    timed = {
        "mirror history URL": ("history", url),
        "mirror diff URL (last two versions)": ("diff", url),
        f"mirror diff URL --from 1 --to {versions}": ("diff", url, "--from", "1", "--to", str(versions)),
    }
    for name, args in timed.items():
        seconds = _median_seconds(mirror, repeats, *args)
        ratio = seconds / status
        rows.append(
            Row(
                f"{name}, {versions} versions",
                f"{seconds:.2f} s",
                f"{status:.2f} s (mirror status)",
                ratio,
                f"<= {MAX_HISTORY_RATIO:g}",
                ratio <= MAX_HISTORY_RATIO,
            )
        )
    notes = [f"history page: {source.name} ({len(first) / 1e3:.0f} KB), median of {repeats} runs per command"]
    return rows, notes
