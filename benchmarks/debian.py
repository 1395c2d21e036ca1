"""Debian packages the benchmark needs, installed with apt-get when missing (as root)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


def installed(package: str) -> bool:
    """Return True when dpkg says `package` is installed."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    # "unknown ok not-installed" also ends with "installed": compare the last word.
    return done.returncode == 0 and done.stdout.split()[-1:] == ["installed"]


def ensure_packages(packages: Sequence[str]) -> None:
    """Install the missing ones of `packages` with apt-get (after `apt-get update`).

    Raises:
        RuntimeError: a package is missing and apt-get cannot install it (not root, no network).
    """
    missing = [p for p in packages if not installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        names = " ".join(missing)
        raise RuntimeError(f"missing Debian packages: run `sudo apt-get install -y {names}`")
    print(f"installing Debian packages: {' '.join(missing)}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()[-500:]}")
