"""The benchmark's quick mode runs end to end and prints every figure (not part of the unit suite).

Run: .venv/bin/pytest benchmarks/test_quick.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIGURES = (
    "check round 1",
    "check unchanged round",
    "check mutated round",
    "mutated round reports exactly the mutations",
    "peak memory of mirror check with its child processes",
    "mirror verify of the store after 3 rounds",
    "mirror verify of every SQLite store the run made",
    "bytes on disk after round 1 (as checks stored it)",
    "bytes on disk after round 1 and mirror gc",
    "bytes added per changed page",
    "versions of a",
    "peak RSS of mirror run",
    "RSS growth",
    "start-up: mirror status",
    "start-up: mirror history URL",
    "mirror history URL",
    "mirror diff URL",
    "mirror serve: index",
    "mirror serve: document",
    "mirror serve: TimeMap",
    "while the webhook receiver hangs",
)


def test_quick_run_prints_a_row_for_every_figure_and_the_mutations_are_reported_exactly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for figure in FIGURES:
        assert figure in done.stdout, figure
    exact = [line for line in done.stdout.splitlines() if line.startswith("mutated round reports exactly")]
    assert exact and all(line.rstrip().endswith("pass") for line in exact), exact
    verified = [line for line in done.stdout.splitlines() if line.startswith("mirror verify")]
    assert verified and all(line.rstrip().endswith("pass") for line in verified), verified
