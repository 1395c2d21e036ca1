"""Start-up: `mirror status`, `history URL`, `targets` and `--help` on a small store, as a person types them.

The reference is `python -c pass` with the same interpreter, in the same run, the commands
interleaved. The target is the issue's: well under 0.3 s of wall time for `status` and `history`.
Bytecode is written on a warm-up run first (an installed package has it; `PYTHONDONTWRITEBYTECODE`
would make every run compile mirror's modules again).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

from benchmarks.mirrorcli import Mirror, run_measured, write_config
from benchmarks.table import Row

TARGETS = 20  # a small store: targets on a closed port, each checked once (an error state)
LIMIT_SECONDS = 0.3


def run(work: Path, repeats: int = 11) -> tuple[list[Row], list[str]]:
    """Return a row per command (median wall time against `python -c pass`) and a note."""
    folder = work / "startup"
    urls = [f"http://127.0.0.1:9/page-{i}.html" for i in range(TARGETS)]
    mirror = Mirror(folder, write_config(folder, urls))
    mirror.run("check", "--json", check=False)  # every target answers "connection refused": exit 0 or 3
    env = {k: v for k, v in mirror.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    commands = {
        "mirror status": mirror.argv("status"),
        "mirror history URL": mirror.argv("history", urls[0]),
        "mirror targets": mirror.argv("targets"),
        "mirror --help": [sys.executable, "-m", "mirror", "--help"],
    }
    bare = [sys.executable, "-c", "pass"]
    seconds: dict[str, list[float]] = {name: [] for name in ["python -c pass", *commands]}
    with open(os.devnull, "w") as devnull:
        for argv in [bare, *commands.values()]:  # warm-up: bytecode written, files in the page cache
            run_measured(argv, env=env, stderr=devnull)
        for _ in range(repeats):
            seconds["python -c pass"].append(run_measured(bare, env=env).seconds)
            for name, argv in commands.items():
                done = run_measured(argv, env=env, stderr=devnull)
                if done.returncode != 0:
                    raise RuntimeError(f"{name} exited {done.returncode}")
                seconds[name].append(done.seconds)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    reference = median["python -c pass"]
    rows = []
    for name in commands:
        timed = name in ("mirror status", "mirror history URL")
        rows.append(
            Row(
                f"start-up: {name}, a store of {TARGETS} targets (median of {repeats})",
                f"{median[name]:.3f} s",
                f"{reference:.3f} s (python -c pass)",
                median[name] / reference,
                f"< {LIMIT_SECONDS:g} s" if timed else "(context)",
                median[name] < LIMIT_SECONDS if timed else None,
            )
        )
    spread = ", ".join(f"{n}: {min(v):.3f}-{max(v):.3f} s" for n, v in seconds.items())
    return rows, [f"start-up, interleaved runs, fastest to slowest: {spread}"]


if __name__ == "__main__":
    import tempfile

    from benchmarks.table import render

    with tempfile.TemporaryDirectory(prefix="mirror-startup-") as tmp:
        table, notes = run(Path(tmp))
    print(render(table))
    print("\n".join(f"- {n}" for n in notes))
