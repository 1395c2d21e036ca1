"""pywb (GPL-3.0, heavy pinned dependencies) in a virtual environment of its own, run as a process.

It is never imported: the tests start `wb-manager` and `wayback` from `.cache/pywb-venv/` in the
checkout, created on first use (about 30 s with a warm pip cache) and kept for later runs.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

PYWB = "pywb==2.10.0"
HOME = Path(__file__).resolve().parent.parent / ".cache" / "pywb-venv"


def pywb_bin() -> Path:
    """Return the `bin` folder of a virtual environment with pywb, creating it when missing."""
    bin_dir = HOME / "bin"
    marker = HOME / f".{PYWB}"
    if not marker.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(HOME)
        subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", PYWB], check=True, timeout=600)
        marker.touch()
    return bin_dir


if __name__ == "__main__":  # `python -m tests.pywb_env`: prepare it ahead of a test run
    sys.stdout.write(f"{pywb_bin()}\n")
