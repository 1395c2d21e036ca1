"""Figure 6: `mirror serve` on a large store: time to first byte of its pages against `mirror status`.

The store: 100,000 targets (1% of them with a version), and one document with 10,000
versions, each a one-line change of a 4 KB page. It is written in-process through the
store's write side as the daemon's writer writes (`Packer` packs each version against the
one before, `Archive.record_many` records 200 checks per transaction), because fetching
10,000 versions over HTTP would take longer than the rest of the benchmarks together.
Then `mirror serve` runs as a process on loopback; each page is asked for after one
warm-up request, and its time to first byte (request sent to the first byte of the body
read) is the median of `REPEATS`. The reference is `mirror status` as a command on the
same store, median of `REPEATS`: what a user waits for today to see the same store's state.
"""

from __future__ import annotations

import http.client
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from benchmarks.mirrorcli import Mirror, write_config
from benchmarks.table import Row

TARGETS = 100_000
VERSIONS = 10_000
WITH_VERSION = 0.01  # share of the targets with one version (the index shows their last change)
BATCH = 200  # checks per transaction, as the writer batches them
REPEATS = 5
MAX_RATIO = 1.0  # a page must answer before `mirror status` has run


def _page(line: int) -> bytes:
    paragraphs = "".join(f"<p>Paragraph {i} of the report, as it stood.</p>\n" for i in range(80))
    return f"<html><body><h1>Report</h1>\n{paragraphs}<p>revision {line}</p></body></html>".encode()


def build(folder: Path, targets: int, versions: int) -> tuple[Mirror, str]:
    """Write the store; return it and the URL of the document with `versions` versions."""
    from mirror.archive import Archive, CheckRecord
    from mirror.domain import Event, FetchResult, Outcome, OutcomeKind, Status, Target, TargetState
    from mirror.events import DOCUMENT_CHANGED, DOCUMENT_NEW
    from mirror.packing import Packer

    base = "http://archive.example/etext"
    urls = [f"{base}/{i:06d}.html" for i in range(targets)]
    deep = urls[0]
    config = write_config(folder, [])
    mirror = Mirror(folder, config)
    archive = Archive.open(mirror.database)
    try:
        archive.sync_targets([Target(u, timedelta(hours=6)) for u in urls], datetime.now(UTC))
        packer = Packer(archive)
        start = datetime.now(UTC) - timedelta(days=3)

        def check(url: str, state: TargetState, body: bytes, at: datetime) -> tuple[CheckRecord, TargetState]:
            import hashlib

            digest = hashlib.sha256(body).hexdigest()
            number = state.current_version + 1
            kind = DOCUMENT_NEW if number == 1 else DOCUMENT_CHANGED
            details = {"version": number, "size": len(body), "significance": 0.05, "lines_added": 1}
            event = Event(kind, url, at, state.current_sha256, digest, 200, details=details)
            result = FetchResult(
                url, url, 200, {"content-type": "text/html; charset=utf-8"}, body, digest, None, at, 0.01
            )
            new = replace(
                state,
                status=Status.OK,
                current_sha256=digest,
                current_version=number,
                content_type="text/html",
            )
            outcome = Outcome(
                OutcomeKind.NEW if number == 1 else OutcomeKind.CHANGED,
                new,
                (event,),
                new_version=True,
                diff_from=state.current_sha256,
            )
            return packer.record(url, result, outcome, at, state=state), new

        state = archive.state_of(deep)
        pending: list[CheckRecord] = []
        for n in range(versions):
            record, state = check(deep, state, _page(n), start + timedelta(seconds=20 * n))
            pending.append(record)
            if len(pending) == BATCH:
                archive.record_many(pending)
                pending = []
        some = urls[1 :: max(1, round(1 / WITH_VERSION))]
        for url in some:
            record, _ = check(url, archive.state_of(url), _page(-1) + url.encode(), start)
            pending.append(record)
            if len(pending) == BATCH:
                archive.record_many(pending)
                pending = []
        if pending:
            archive.record_many(pending)
    finally:
        archive.close()
    return mirror, deep


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ttfb(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read(1)
        seconds = time.perf_counter() - started
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {answer.status}")
        answer.read()
        return seconds
    finally:
        conn.close()


def run(
    work: Path, targets: int = TARGETS, versions: int = VERSIONS, repeats: int = REPEATS
) -> tuple[list[Row], list[str]]:
    """Return rows for the time to first byte of `mirror serve`'s pages on a large store, and notes."""
    started = time.perf_counter()
    mirror, deep = build(work / "mirror-web", targets, versions)
    built = time.perf_counter() - started
    status = statistics.median(mirror.run("status", "--json").seconds for _ in range(repeats))
    port = _free_port()
    server = subprocess.Popen(
        mirror.argv("serve", "--bind", f"127.0.0.1:{port}"),
        env=mirror.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pages = {
        f"index, {targets} targets": "/",
        f"index filtered: changed in 7 days, {targets} targets": "/?state=changed",
        f"index filtered: URL prefix, {targets} targets": "/?prefix="
        + quote(deep.rsplit("/", 1)[0] + "/0999"),
        f"document, {versions} versions (first page)": "/doc?url=" + quote(deep, safe=""),
        f"diff of its last two versions, {versions} versions": "/diff?url=" + quote(deep, safe=""),
        f"TimeGate, {versions} versions": "/timegate/" + deep,
        f"TimeMap, {versions} versions (first byte)": "/timemap/link/" + deep,
    }
    rows, notes = [], []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _ttfb(port, "/static/mirror.css")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("mirror serve did not answer") from None
                time.sleep(0.1)
        for name, path in pages.items():
            if path.startswith("/timegate/"):
                seconds = statistics.median(_timegate(port, path) for _ in range(repeats + 1))
            else:
                _ttfb(port, path)  # warm-up
                seconds = statistics.median(_ttfb(port, path) for _ in range(repeats))
            ratio = seconds / status
            rows.append(
                Row(
                    f"mirror serve: {name}, time to first byte",
                    f"{seconds * 1000:.0f} ms",
                    f"{status:.2f} s (mirror status)",
                    ratio,
                    f"<= {MAX_RATIO:g}",
                    ratio <= MAX_RATIO,
                )
            )
    finally:
        server.terminate()
        server.wait(10)
    notes.append(
        f"web store: {targets} targets ({round(targets * WITH_VERSION)} with a version), one with {versions} "
        f"versions; written in {built:.0f} s; median of {repeats} requests per page after a warm-up, "
        f"and of {repeats} runs of mirror status"
    )
    return rows, notes


def _timegate(port: int, path: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        started = time.perf_counter()
        conn.request("GET", path, headers={"Accept-Datetime": "Mon, 01 Jan 2024 00:00:00 GMT"})
        answer = conn.getresponse()
        answer.read()
        if answer.status != 302:
            raise RuntimeError(f"GET {path}: HTTP {answer.status}")
        return time.perf_counter() - started
    finally:
        conn.close()


if __name__ == "__main__":  # a quick look: python -m benchmarks.web [TARGETS VERSIONS]
    import tempfile

    sizes = [int(a) for a in sys.argv[1:3]] or [2000, 200]
    with tempfile.TemporaryDirectory() as tmp:
        table_rows, table_notes = run(Path(tmp), *sizes)
    for row in table_rows:
        print(" | ".join(row.cells()))
    print("\n".join(table_notes), file=sys.stderr if os.environ.get("QUIET") else sys.stdout)
