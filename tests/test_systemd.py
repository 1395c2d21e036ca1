"""The shipped systemd units are valid and sandboxed (`systemd-analyze verify` and `security`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD = Path(__file__).parent.parent / "systemd"
UNITS = ("mirror.service", "mirror-verify.service", "mirror-verify.timer")
MAX_EXPOSURE = 2.5

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart exists: point it at this checkout's `mirror` for the check.
    mirror_bin = Path(sys.executable).parent / "mirror"
    assert mirror_bin.exists()
    for name in UNITS:
        text = (SYSTEMD / name).read_text().replace("/opt/mirror/.venv/bin/mirror", str(mirror_bin))
        (tmp_path / name).write_text(text)
    paths = [str(tmp_path / name) for name in UNITS]
    proc = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    problems = [line for line in proc.stderr.splitlines() if "mirror" in line]
    assert proc.returncode == 0, proc.stderr
    assert problems == []


@pytest.mark.parametrize("name", ["mirror.service", "mirror-verify.service"])
def test_the_service_exposure_is_at_most_2_5(name):
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(SYSTEMD / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_the_daemon_unit_is_type_notify_with_a_watchdog_and_restart():
    text = (SYSTEMD / "mirror.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "StateDirectory=mirror",
    ):
        assert line in text
    assert re.search(r"^WatchdogSec=\d+", text, re.M)


def test_a_broken_unit_fails_verify(tmp_path):
    # The check above can fail: a unit with a typo in a directive is refused.
    unit = tmp_path / "mirror.service"
    unit.write_text((SYSTEMD / "mirror.service").read_text().replace("Type=notify", "Type=notifyy"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "notifyy" in proc.stderr
