"""Store figures: what a page's history costs with delta storage, and how fast `verify` re-hashes a store.

    .venv/bin/python benchmarks/store_figures.py           # full: a store of 1 GiB of content (~5 min)
    .venv/bin/python benchmarks/store_figures.py --quick   # 64 MiB, a smoke test in well under a minute

(a) Storage: 100 versions of a ~100 KB HTML page, each with one paragraph rewritten, recorded
    through `Archive.record` (so each version is a delta of the one before); bytes stored
    against one zstd-compressed copy (level `blobs.ZSTD_LEVEL`). Also for other chain
    bounds, with the time to read a version, which is how `blobs.MAX_CHAIN` was chosen.
(b) Verify: a SQLite store built through `Archive.record` from real HTML (one document in 20
    with a history of 5 to 40 one-paragraph changes, the others fetched once: about half the
    content in whole blobs, half in deltas), then `verify.run` in a fresh process: MB/s of
    content re-hashed, and that process's peak RSS (VmHWM) at 1/8, 1/2 and all of the store, to show
    memory does not grow with the store (the reader's cache is bounded at 64 MiB).

The HTML is Debian's Python documentation (`python3.X-doc`) when installed, else generated.
Everything is written under a temporary folder, deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import zstandard

from mirror import blobs
from mirror.archive import Archive
from mirror.db import open_engine
from mirror.domain import Event, FetchResult, Outcome, OutcomeKind, Status, Target, TargetState
from mirror.events import DOCUMENT_CHANGED, DOCUMENT_NEW
from mirror.log import configure_logging
from mirror.packing import pack_alone

DOCS = Path(f"/usr/share/doc/python{sys.version_info.major}.{sys.version_info.minor}/html")
PAGE_SIZE = 100_000
VERSIONS = 100
CHAIN_CANDIDATES = (8, 16, 32, 64)
HISTORY_EVERY = 20  # documents in the verify store that have a history (the others are fetched once)
T0 = datetime(2025, 3, 1, tzinfo=UTC)
_PARAGRAPH = re.compile(rb"<p>(.{40,}?)</p>", re.DOTALL)
_WORD = re.compile(rb"[A-Za-z]{2,}")

# Peak RSS is this process's VmHWM: `getrusage(RUSAGE_SELF).ru_maxrss` would not do, as Linux
# carries the parent's peak across fork and exec into it (the parent holds the store builder).
VERIFY_CHILD = """
import json, sys, time
from mirror import verify
from mirror.db import open_engine
engine = open_engine(sys.argv[1], migrate=False)
started = time.perf_counter()
report = verify.run(engine) if sys.argv[2] == "verify" else None
seconds = time.perf_counter() - started
engine.dispose()
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({
    "seconds": seconds,
    "blobs": report.blobs if report else 0,
    "bytes": report.blob_bytes if report else 0,
    "ok": report.ok if report else True,
    "maxrss_kb": peak,
}))
"""


# -- data --------------------------------------------------------------------------------------


def html_pages() -> list[bytes]:
    """Return real HTML pages (the Python docs) when installed, else generated ones."""
    files = sorted(DOCS.rglob("*.html")) if DOCS.is_dir() else []
    pages = [f.read_bytes() for f in files]
    pages = [p for p in pages if len(_PARAGRAPH.findall(p)) >= 5]
    if pages:
        return pages
    rng = random.Random(1)
    words = [bytes(rng.choices(b"etaoinshrdlucmfwyp", k=rng.randint(2, 9))) for _ in range(3000)]
    return [
        b"<html><body>\n"
        + b"\n".join(
            b"<p>" + b" ".join(rng.choices(words, k=80)) + b".</p>" for _ in range(rng.randint(20, 200))
        )
        + b"\n</body></html>\n"
        for _ in range(300)
    ]


def page_near(pages: Sequence[bytes], size: int) -> bytes:
    """Return the page whose size is closest to `size`."""
    return min(pages, key=lambda p: abs(len(p) - size))


def rewrite_one_paragraph(page: bytes, rng: random.Random) -> bytes:
    """Return `page` with one paragraph's text replaced by new words of the page's own vocabulary."""
    paragraphs = list(_PARAGRAPH.finditer(page))
    chosen = rng.choice(paragraphs)
    words = _WORD.findall(page) or [b"word"]
    new = b" ".join(rng.choice(words) for _ in range(max(8, len(chosen.group(1)) // 7)))
    return page[: chosen.start(1)] + new + page[chosen.end(1) :]


def history_of(page: bytes, versions: int, rng: random.Random) -> list[bytes]:
    """Return `versions` versions of `page`, each with one paragraph rewritten from the one before."""
    out = [page]
    while len(out) < versions:
        out.append(rewrite_one_paragraph(out[-1], rng))
    return out


def record_version(archive: Archive, url: str, body: bytes, at: datetime) -> None:
    """Record a check of `url` that found `body` as its next version, as `check.check_one` would."""
    state = archive.state_of(url)
    digest = hashlib.sha256(body).hexdigest()
    number = state.current_version + 1
    kind, event_kind = (
        (OutcomeKind.NEW, DOCUMENT_NEW) if number == 1 else (OutcomeKind.CHANGED, DOCUMENT_CHANGED)
    )
    event = Event(event_kind, url, at, old_sha256=state.current_sha256, new_sha256=digest, status=200)
    result = FetchResult(url, url, 200, {"content-type": "text/html"}, body, digest, None, at, 0.1)
    outcome = Outcome(
        kind,
        TargetState(Status.OK, digest, number, "text/html"),
        (event,),
        new_version=True,
        diff_from=state.current_sha256,
    )
    archive.record_many([pack_alone(archive, archive.state_of, url, result, outcome, at)])


def new_store(folder: Path, name: str) -> tuple[str, Archive]:
    url = f"sqlite:///{folder / name / 'mirror.db'}"
    return url, Archive(open_engine(url))


def stored_bytes(archive: Archive) -> tuple[int, int]:
    """Return (content bytes, stored bytes) of the whole store."""
    status = archive.status(T0)
    return status.content_bytes, status.stored_bytes


# -- (a) storage -------------------------------------------------------------------------------


def storage_figures(folder: Path, pages: Sequence[bytes]) -> list[str]:
    page = page_near(pages, PAGE_SIZE)
    versions = history_of(page, VERSIONS, random.Random(2))
    one_copy = len(zstandard.ZstdCompressor(level=blobs.ZSTD_LEVEL).compress(page))
    lines = [
        f"(a) {VERSIONS} versions of a {len(page):,}-byte HTML page, one paragraph rewritten each time",
        f"    one zstd copy (level {blobs.ZSTD_LEVEL}): {one_copy:,} bytes; "
        f"{VERSIONS} whole copies: {VERSIONS * one_copy:,} bytes",
        "",
        "    MAX_CHAIN  stored bytes  x one copy  read mean  read max",
    ]
    chosen = blobs.MAX_CHAIN
    try:
        for bound in sorted({*CHAIN_CANDIDATES, chosen}):
            blobs.MAX_CHAIN = bound
            _, archive = new_store(folder, f"chain-{bound}")
            try:
                target = "https://archive.example/page.html"
                archive.sync_targets([Target(target, timedelta(hours=6))], T0)
                for i, body in enumerate(versions):
                    record_version(archive, target, body, T0 + i * timedelta(hours=6))
                _, stored = stored_bytes(archive)
                shas = [v.sha256 for v in archive.history(target).versions]
                times = []
                for sha in shas:
                    started = time.perf_counter()
                    archive.read(sha)
                    times.append(time.perf_counter() - started)
            finally:
                archive.close()
            mark = "  <- blobs.MAX_CHAIN" if bound == chosen else ""
            lines.append(
                f"    {bound:>9}  {stored:>12,}  {stored / one_copy:>10.2f}  "
                f"{statistics.mean(times) * 1000:>6.2f} ms  {max(times) * 1000:>5.2f} ms{mark}"
            )
    finally:
        blobs.MAX_CHAIN = chosen
    return lines


# -- (b) verify --------------------------------------------------------------------------------


class StoreBuilder:
    """Records distinct documents into a store: one in `HISTORY_EVERY` with a history, the others once.

    With histories of 5 to 40 versions, about half the content is in whole blobs and half in deltas.
    """

    def __init__(self, archive: Archive, pages: Sequence[bytes], rng: random.Random) -> None:
        self.archive, self.pages, self.rng = archive, pages, rng
        self.documents = self.versions = self.content = 0

    def fill(self, content: int) -> None:
        """Record documents until the store holds `content` bytes of content."""
        while self.content < content:
            n = self.documents
            # a marker keeps every document distinct: identical bytes would be stored once, flattering us
            page = self.pages[n % len(self.pages)].replace(b"<head>", f"<head><!-- doc {n} -->".encode(), 1)
            count = self.rng.randint(5, 40) if n % HISTORY_EVERY == 0 else 1
            url = f"https://archive.example/doc/{n}.html"
            self.archive.add_discovered([Target(url, timedelta(hours=6))], T0)
            for i, body in enumerate(history_of(page, count, self.rng)):
                record_version(self.archive, url, body, T0 + i * timedelta(hours=6))
                self.content += len(body)
                self.versions += 1
                if self.content >= content:
                    break
            self.documents += 1


def run_child(url: str, what: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", VERIFY_CHILD, url, what], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def verify_figures(folder: Path, pages: Sequence[bytes], content: int) -> list[str]:
    url, archive = new_store(folder, "verify")
    lines = [
        "(b) verify.run on a SQLite store built by Archive.record (a fresh process each; warm page cache)",
        "    content      stored    blobs  deltas   seconds   MB/s  peak RSS",
    ]
    floor = run_child(url, "open")["maxrss_kb"]
    builder = StoreBuilder(archive, pages, random.Random(3))
    try:
        for share in (8, 2, 1):
            started = time.perf_counter()
            builder.fill(content // share)
            build_seconds = time.perf_counter() - started
            content_bytes, stored = stored_bytes(archive)
            with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as raw:
                deltas = raw.execute("SELECT count(*) FROM blobs WHERE codec = 'zstd-delta'").fetchone()[0]
            result = run_child(url, "verify")
            if not result["ok"]:
                raise SystemExit("verify found damage in a freshly built store")
            mbps = result["bytes"] / 1e6 / result["seconds"]
            rss, blob_count = result["maxrss_kb"] / 1024, int(result["blobs"])
            lines.append(
                f"    {content_bytes / 2**20:>7.0f} MiB {stored / 2**20:>7.0f} MiB {blob_count:>7,} "
                f"{deltas:>7,} {result['seconds']:>9.1f} {mbps:>6.0f}  {rss:>5.0f} MiB"
                f"   (store built in {build_seconds:.0f} s: {builder.documents:,} documents, "
                f"{builder.versions:,} versions)"
            )
    finally:
        archive.close()
    lines.append(
        f"    peak RSS of the same process opening the store without verifying: {floor / 1024:.0f} MiB"
    )
    return lines


# -- main --------------------------------------------------------------------------------------


def machine() -> list[str]:
    cpu = "unknown"
    memory = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        memory = f"{kib // 1024} MiB"
    except (OSError, StopIteration):
        pass
    versions = f"SQLite {sqlite3.sqlite_version}, zstandard {zstandard.__version__}"
    return [
        f"machine: {cpu}, {os.cpu_count()} cores, {memory}; {platform.platform()}",
        f"python {platform.python_version()}, {versions}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a 64 MiB store instead of 1 GiB")
    args = parser.parse_args(argv)
    content = (64 if args.quick else 1024) * 2**20
    configure_logging(json=False, level="warning")  # no store.migrated line per store
    pages = html_pages()
    print("\n".join(machine()), flush=True)
    source = f"{len(pages)} pages of {DOCS}" if DOCS.is_dir() else f"{len(pages)} generated pages"
    print(f"HTML: {source}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="mirror-store-figures-") as folder:
        print("\n".join(storage_figures(Path(folder), pages)), flush=True)
        print()
        print("\n".join(verify_figures(Path(folder), pages, content)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
