"""The result table: each figure beside its reference, their ratio, the target and pass or miss."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.nginx import NGINX

HEADER = ("figure", "mirror", "reference", "ratio", "target", "result")


@dataclass(frozen=True, slots=True)
class Row:
    """One figure. `ok` is None for a figure reported for context, with no target."""

    figure: str
    mirror: str
    reference: str
    ratio: float | None
    target: str
    ok: bool | None

    def cells(self) -> tuple[str, ...]:
        """Return the row's cells as text."""
        ratio = "-" if self.ratio is None else f"{self.ratio:.3g}"
        result = {True: "pass", False: "MISS", None: "-"}[self.ok]
        return (self.figure, self.mirror, self.reference, ratio, self.target, result)


def render(rows: Sequence[Row]) -> str:
    """Return the rows as an aligned plain-text table."""
    cells = [HEADER, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(rows: Sequence[Row]) -> str:
    """Return the rows as a Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def cpu_model() -> str:
    """Return the CPU model name and the number of cores."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def machine() -> list[str]:
    """Return lines describing this machine: date, `uname -a`, CPU, memory, Python and nginx versions."""
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False).stdout.strip()
    nginx = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False).stderr.strip()
    memory = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- `uname -a`: `{uname}`",
        f"- CPU: {cpu_model()}; memory: {memory}",
        f"- Python: {sys.version.split()[0]} ({platform.python_implementation()}); {nginx}",
    ]
