"""`python -m benchmarks`: measure mirror against references in the same run; print the table.

    .venv/bin/python -m benchmarks            # full run (~10-15 min on 2 cores), writes benchmarks/RESULTS.md
    .venv/bin/python -m benchmarks --quick    # small sizes, a smoke test in about a minute, writes nothing

Installs Debian's nginx and the documentation packages of the corpus with
apt-get when they are missing (as root). Everything else lives in a temporary
folder that is deleted at the end (`--keep` keeps it, for the logs).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from benchmarks import (
    corpus,
    depth,
    memory,
    mirrorcli,
    nginx,
    notify,
    scale,
    startup,
    stores,
    throughput,
    web,
)
from benchmarks.table import Row, machine, markdown, render

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ANALYSIS_MARKER = "<!-- analysis: text below this line is kept when the results are rewritten -->"


@dataclass(frozen=True, slots=True)
class Plan:
    """The sizes of one run."""

    pages: tuple[int, ...]
    storage_pages: int  # the N whose store gives the storage figures
    memory_targets: tuple[int, ...]
    memory_served: int
    memory_observe: float
    delta_versions: int
    history_versions: int
    repeats: int
    web_targets: int = web.TARGETS
    web_versions: int = web.VERSIONS
    notify_checks: int = 500
    notify_repeats: int = 5
    million: int = 0  # targets of the scale figures (`--million`); 0: left out
    round_repeats: int = 3  # interleaved runs of each check round (the table has their medians)


FULL = Plan(
    (2000, 10000),
    2000,
    (10_000, 30_000, 100_000),
    2000,
    memory.OBSERVE_SECONDS,
    depth.DELTA_VERSIONS,
    depth.HISTORY_VERSIONS,
    depth.REPEATS,
)
QUICK = Plan((200,), 200, (500, 1500), 200, 3.0, 10, 20, 1, 2000, 100, 100, 1, round_repeats=1)


def _step(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(plan: Plan, work: Path) -> tuple[list[Row], list[str]]:
    """Run every benchmark of `plan` in `work`; return the table's rows and the notes."""
    nginx.ensure_nginx()
    html, _pdfs = corpus.source_files()
    _step("installing mirror in an environment of its own, as the README's first command does")
    mirrorcli.install_as_user(work)
    report = throughput.Report()
    for n in plan.pages:
        _step(f"check throughput, correctness and storage, N={n}")
        throughput.run(n, work, report, storage=n == plan.storage_pages, repeats=plan.round_repeats)

    _step(f"storage of {plan.delta_versions} versions of one page")
    rows, note = depth.storage(work, html, plan.delta_versions)
    report.rows.extend(rows)
    report.notes.append(note)

    _step(f"memory of mirror run with {', '.join(map(str, plan.memory_targets))} targets")
    report.rows.extend(memory_rows(plan, work, report.notes))

    _step("start-up of status, history, targets and --help on a small store")
    rows, notes = startup.run(work, 3 * plan.repeats)
    report.rows.extend(rows)
    report.notes.extend(notes)

    _step(f"history and diff of a page with {plan.history_versions} versions")
    rows, notes = depth.history(work, html, plan.history_versions, plan.repeats)
    report.rows.extend(rows)
    report.notes.extend(notes)

    _step(f"mirror serve with {plan.web_targets} targets and a document of {plan.web_versions} versions")
    rows, notes = web.run(work, plan.web_targets, plan.web_versions, max(plan.repeats, 3))
    report.rows.extend(rows)
    report.notes.extend(notes)

    _step(f"a round of {plan.notify_checks} checks by mirror run, its webhook receiver hanging, and without")
    row, note = notify.run(work, plan.notify_checks, plan.notify_repeats)
    report.rows.append(row)
    report.notes.append(note)

    if plan.million:
        _step(f"scale: mirror run, status, targets --json and claims with {plan.million:,} targets")
        site = work / "site-scale"
        built = corpus.build(site, plan.memory_served)
        with nginx.serve(site, work / "nginx-scale") as base:
            rows, notes = scale.run(work, built.urls(base), base, plan.million)
        corpus.remove(site)
        report.rows.extend(rows)
        report.notes.extend(notes)

    _step("mirror verify of every store the run made")
    row, note = stores.verify_all(work)
    report.rows.append(row)
    report.notes.append(note)
    return report.rows, report.notes


def memory_rows(plan: Plan, work: Path, notes: list[str]) -> list[Row]:
    """Measure `mirror run` at each size of `plan`; return the peak-RSS and growth rows."""
    site = work / "site-memory"
    built = corpus.build(site, plan.memory_served)
    results: list[memory.DaemonMemory] = []
    with nginx.serve(site, work / "nginx-memory") as base:
        for count in plan.memory_targets:
            urls = memory.target_urls(built.urls(base), base, count)
            done = memory.measure_daemon(work / f"mirror-run-{count}", urls, observe=plan.memory_observe)
            results.append(done)
            notes.append(
                f"mirror run, {count} targets: peak RSS {done.peak_kb / 1024:.0f} MiB "
                f"(summed PSS with its child processes {done.pss_kb / 1024:.0f} MiB), "
                f"started in {done.start_seconds:.1f} s, {done.checks} checks recorded and {done.crashed} "
                f"crashed in the first {plan.memory_observe:.0f} s"
            )
    corpus.remove(site)
    largest, smallest = results[-1], results[0]
    urls_file = work / f"mirror-run-{largest.targets}" / "targets.txt"
    floor = memory.floor_kb(urls_file)
    mib = largest.peak_kb / 1024
    rows = [
        Row(
            f"peak RSS of mirror run, {largest.targets} targets",
            f"{mib:.0f} MiB",
            f"{floor / 1024:.0f} MiB (python + imports + URL list)",
            largest.peak_kb / floor,
            f"< {memory.RSS_LIMIT_MB:.0f} MiB",
            mib < memory.RSS_LIMIT_MB,
        )
    ]
    growth = largest.peak_kb / smallest.peak_kb
    scale = largest.targets / smallest.targets
    per_target = (largest.peak_kb - smallest.peak_kb) * 1024 / (largest.targets - smallest.targets)
    middle = ", ".join(f"{r.targets}: {r.peak_kb / 1024:.0f} MiB" for r in results)
    rows.append(
        Row(
            f"RSS growth {smallest.targets} -> {largest.targets} targets "
            f"({middle}; {per_target:.0f} B/target)",
            f"x{growth:.2f}",
            f"x{scale:.0f} (targets)",
            growth / scale,
            "< 1 (sublinear)",
            growth < scale,
        )
    )
    return rows


def write_results(rows: Sequence[Row], notes: Sequence[str], command: str, seconds: float) -> None:
    """Write RESULTS.md: date, machine, the table and the notes; keep the analysis below the marker."""
    kept = ""
    if RESULTS.exists():
        text = RESULTS.read_text()
        if ANALYSIS_MARKER in text:
            kept = text.split(ANALYSIS_MARKER, 1)[1]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` in {seconds / 60:.1f} min. Ratios are the result (mirror against a "
        "reference measured in the same run on the same machine); absolute figures are context.",
        "",
        *machine(),
        "",
        markdown(rows),
        "",
        "## Notes from the run",
        "",
        *(f"- {n}" for n in notes),
        "",
        ANALYSIS_MARKER,
    ]
    RESULTS.write_text("\n".join(lines) + (kept if kept else "\n"))


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and print the table; return 0, or with `--strict` 1 when a figure missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke test, writes no RESULTS.md"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (stores, logs)")
    parser.add_argument("--no-results", action="store_true", help="do not write benchmarks/RESULTS.md")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a figure missed its target")
    parser.add_argument(
        "--million",
        action="store_true",
        help="add the 1,000,000-target figures on SQLite and PostgreSQL (~10 more minutes)",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so nginx and the daemons are stopped and the temporary folder removed.
    signal.signal(signal.SIGTERM, _terminate)
    plan = QUICK if args.quick else FULL
    if args.million:
        plan = replace(plan, million=20_000 if args.quick else 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="mirror-bench-"))
    started = time.perf_counter()
    try:
        rows, notes = run(plan, work)
    finally:
        if args.keep:
            _step(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    print(render(rows))
    print()
    print("\n".join(f"- {n}" for n in notes))
    print(
        f"\n{sum(r.ok is True for r in rows)} passed, {sum(r.ok is False for r in rows)} missed "
        f"in {seconds / 60:.1f} min"
    )
    if not args.quick and not args.no_results:
        write_results(rows, notes, ".venv/bin/python -m benchmarks", seconds)
        _step(f"wrote {RESULTS}")
    return 1 if args.strict and any(r.ok is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
