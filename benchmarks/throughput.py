"""Figures 1-5: check throughput per round, correctness, peak memory of `mirror check`, bytes on disk.

Each round of `mirror check` runs right after the reference client (the bare client:
`requests` with 16 threads and SHA-256, storing nothing) fetched the same URLs, so both
see the same machine, the same nginx and the same page cache. After round 1, `mirror gc`
re-packs the store; every store is verified at the end (`mirror verify`).

The memory of `mirror check` is the peak of the summed PSS of its process and every
process it starts (the text helper, worker processes), polled (`mirrorcli.MemoryWatch`);
its own `VmHWM` is in the notes. The reference's is its own peak (`VmHWM`): one process.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import corpus, nginx
from benchmarks.mirrorcli import (
    CONCURRENCY,
    Mirror,
    Timed,
    installed_env,
    run_measured,
    table_note,
    write_config,
)
from benchmarks.table import Row

MIN_RATIO = 0.8  # round 1 and the mutated round: at least this share of the reference's pages per second
UNCHANGED_RATIO = 1.3  # the unchanged round (304s carry no body): clearly faster than the reference
MAX_STORAGE_RATIO = 1.0  # after `mirror gc`: smaller than the corpus as one zstd -3 stream
MEMORY_LIMIT_MB = 100.0  # peak summed PSS of `mirror check` and its child processes (any round)


@dataclass
class Report:
    """Rows for the table and notes (context figures) for below it."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def reference_round(urls_file: Path) -> tuple[Timed, dict[str, Any]]:
    """Run the reference client as its own process; return it timed (wall, peak RSS) and its JSON result.

    Raises:
        RuntimeError: the reference client failed.
    """
    argv = [sys.executable, "-m", "benchmarks.reference", str(urls_file), "--concurrency", str(CONCURRENCY)]
    done = run_measured(argv, env=installed_env(), stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise RuntimeError(f"reference client failed (exit {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout)
    return done, result


def _speed_row(name: str, n: int, mirror_s: float, ref_s: float, *, faster: bool) -> Row:
    ours, theirs = n / mirror_s, n / ref_s
    ratio = ours / theirs
    least = UNCHANGED_RATIO if faster else MIN_RATIO
    return Row(name, f"{ours:.0f} pages/s", f"{theirs:.0f} pages/s", ratio, f">= {least}", ratio >= least)


def _outcomes(document: dict[str, Any], base: str) -> dict[str, str]:
    prefix = base + "/"
    return {t["url"].removeprefix(prefix): t["outcome"] for t in document["targets"]}


def _seconds(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _mib(values: Iterable[int]) -> str:
    return ", ".join(f"{v / 1024:.0f}" for v in values)


def run(n: int, work: Path, report: Report, *, storage: bool, repeats: int = 1) -> None:
    """Build a corpus of `n` pages, run three rounds of mirror and of the reference; add rows to `report`.

    Each round is run `repeats` times, the reference and mirror interleaved, mirror's store
    restored before each; the table has the medians (the issue's harness: medians of
    interleaved runs), the notes every run.
    """
    site = work / f"site-{n}"
    built = corpus.build(site, n)
    stream = corpus.zstd_stream_size(built.file(p) for p in built.paths)
    report.notes.append(
        f"N={n}: corpus {built.total_bytes / 1e6:.1f} MB in {n} pages "
        f"({sum(p.endswith('.pdf') for p in built.paths)} PDFs); zstd -3 as one stream {stream / 1e6:.1f} MB"
    )
    with nginx.serve(site, work / f"nginx-{n}") as base:
        urls = built.urls(base)
        urls_file = work / f"urls-{n}.txt"
        urls_file.write_text("".join(f"{u}\n" for u in urls))
        folder = work / f"mirror-{n}"
        mirror = Mirror(folder, write_config(folder, urls))

        rounds: dict[str, tuple[float, float, dict[str, Any]]] = {}
        mutation: corpus.Mutation | None = None
        disk: dict[str, int] = {}
        # round: (mirror check's summed PSS, the reference's VmHWM), KiB, medians of the repeats
        peaks: dict[str, tuple[int, int]] = {}
        documents: dict[str, list[dict[str, Any]]] = {}  # every repeat's --json document
        for name in ("round 1", "unchanged", "mutated"):
            if name == "mutated":
                mutation = corpus.mutate(built)
            before = work / f"store-before-{name.replace(' ', '-')}-{n}"
            shutil.copytree(mirror.store, before)  # each repeat starts from the same store
            runs: list[tuple[Timed, Timed, dict[str, Any]]] = []
            for repeat in range(repeats):
                if repeat:
                    shutil.rmtree(mirror.store)
                    shutil.copytree(before, mirror.store)
                ref_done, ref = reference_round(urls_file)
                # exit 3 when a check crashed: the round's JSON is still printed, and the crashes counted
                done = mirror.run("check", "--json", check=False)
                if not done.stdout.strip():
                    raise RuntimeError(
                        f"mirror check printed nothing (exit {done.returncode}); see {mirror.log}"
                    )
                runs.append((done, ref_done, ref))
            shutil.rmtree(before)
            documents[name] = [done.json() for done, _, _ in runs]
            mirror_s = statistics.median(done.seconds for done, _, _ in runs)
            ref_s = statistics.median(ref_done.seconds for _, ref_done, _ in runs)
            rounds[name] = (mirror_s, ref_s, documents[name][-1])
            peaks[name] = (
                int(statistics.median(done.pss_kb for done, _, _ in runs)),
                int(statistics.median(ref_done.peak_kb for _, ref_done, _ in runs)),
            )
            disk[name] = mirror.disk_bytes()
            if name == "round 1" and storage:
                gc = mirror.run("gc", "--json")
                disk["gc"] = mirror.disk_bytes()
                report.notes.append(
                    f"N={n} mirror gc after round 1: {gc.seconds:.1f} s, {gc.json()['repacked']} blobs "
                    f"re-packed, store {disk[name] / 1e6:.1f} -> {disk['gc'] / 1e6:.1f} MB, "
                    f"peak RSS {gc.peak_kb / 1024:.0f} MiB"
                )
            done, ref_done, ref = runs[-1]
            doc = documents[name][-1]
            statuses = Counter(str(t["http_status"]) for t in doc["targets"])
            outcomes = {kind: count for kind, count in sorted(doc["outcomes"].items()) if count}
            runs_said = f"{repeats} interleaved runs (medians in the table)" if repeats > 1 else "one run"
            report.notes.append(
                f"N={n} {name}, {runs_said}: mirror "
                f"{_seconds(d.seconds for d, _, _ in runs)} s wall, reference "
                f"{_seconds(r.seconds for _, r, _ in runs)} s wall; mirror's summed PSS "
                f"{_mib(d.pss_kb for d, _, _ in runs)} MiB. The last run: mirror "
                f"{doc['elapsed_seconds']:.2f} s in its round, outcomes {outcomes}, crashed "
                f"{len(doc['crashed'])}, HTTP {dict(sorted(statuses.items()))}; reference "
                f"{ref['seconds']:.2f} s fetching, HTTP {ref['statuses']}; memory: mirror "
                f"{done.processes} processes (its own VmHWM {done.peak_kb / 1024:.0f} MiB), "
                f"reference VmHWM {ref_done.peak_kb / 1024:.0f} MiB"
            )
        intact = mirror.verify()
        if storage:
            report.notes.append(f"N={n} store after 3 rounds, by table: {table_note(mirror.table_bytes())}")

    for name, label in (
        ("round 1", "round 1"),
        ("unchanged", "unchanged round"),
        ("mutated", "mutated round"),
    ):
        mirror_s, ref_s, _ = rounds[name]
        report.rows.append(
            _speed_row(f"check {label}, N={n}", n, mirror_s, ref_s, faster=name == "unchanged")
        )

    worst = max(peaks, key=lambda r: peaks[r][0])
    mib, ref_mib = peaks[worst][0] / 1024, peaks[worst][1] / 1024
    report.rows.append(
        Row(
            f"peak memory of mirror check with its child processes (summed PSS), N={n} "
            f"(its largest round: {worst})",
            f"{mib:.0f} MiB",
            f"{ref_mib:.0f} MiB (the reference's own peak, same round)",
            mib / ref_mib,
            f"<= {MEMORY_LIMIT_MB:.0f} MiB",
            mib <= MEMORY_LIMIT_MB,
        )
    )
    report.rows.append(
        Row(
            f"mirror verify of the store after 3 rounds, N={n}",
            "intact" if intact else "DAMAGED",
            "-",
            None,
            "intact",
            intact,
        )
    )
    assert mutation is not None
    expected = {p: "changed" for p in mutation.changed} | {p: "disappeared" for p in mutation.deleted}
    extra = missed = 0
    complete = True
    for document in documents["mutated"]:  # every repeat must report exactly the mutations
        got = _outcomes(document, base)
        reported = {p: o for p, o in got.items() if o != "unchanged"}
        extra = max(extra, sum(1 for p, o in reported.items() if expected.get(p) != o))
        missed = max(missed, sum(1 for p, o in expected.items() if reported.get(p) != o))
        complete = complete and len(got) == n
    counts = Counter(reported.values())
    report.rows.append(
        Row(
            f"mutated round reports exactly the mutations, N={n}",
            f"{counts['changed']} changed + {counts['disappeared']} disappeared; "
            f"{extra} wrong, {missed} missed" + (f" (in each of {repeats} runs)" if repeats > 1 else ""),
            f"{len(mutation.changed)} changed + {len(mutation.deleted)} deleted",
            None,
            "exact",
            extra == 0 and missed == 0 and complete,
        )
    )
    first = {o for document in documents["round 1"] for o in _outcomes(document, base).values()}
    unchanged = {o for document in documents["unchanged"] for o in _outcomes(document, base).values()}
    if first != {"new"} or unchanged != {"unchanged"}:
        report.notes.append(f"N={n}: UNEXPECTED outcomes: round 1 {first}, unchanged round {unchanged}")

    if storage:
        report.rows.append(
            Row(
                f"bytes on disk after round 1 (as checks stored it), N={n}",
                f"{disk['round 1'] / 1e6:.1f} MB",
                f"{stream / 1e6:.1f} MB (zstd -3 stream)",
                disk["round 1"] / stream,
                "(context)",
                None,
            )
        )
        ratio = disk["gc"] / stream
        report.rows.append(
            Row(
                f"bytes on disk after round 1 and mirror gc, N={n}",
                f"{disk['gc'] / 1e6:.1f} MB",
                f"{stream / 1e6:.1f} MB (zstd -3 stream)",
                ratio,
                f"<= {MAX_STORAGE_RATIO}",
                ratio <= MAX_STORAGE_RATIO,
            )
        )
        added = (disk["mutated"] - disk["unchanged"]) / max(1, len(mutation.changed))
        compressed = sum(corpus.zstd_size(built.file(p).read_bytes()) for p in mutation.changed)
        one = compressed / max(1, len(mutation.changed))
        report.rows.append(
            Row(
                f"bytes added per changed page, N={n}",
                f"{added / 1e3:.1f} KB",
                f"{one / 1e3:.1f} KB (the page, zstd -3)",
                added / one,
                "(context)",
                None,
            )
        )
    corpus.remove(site)
