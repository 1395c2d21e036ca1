"""Log lines: one JSON object per line, whoever writes them (our events, library warnings, many threads)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, threading
import structlog
from mirror.log import configure_logging
configure_logging(json=True)
log = structlog.get_logger("t")
def work(n):
    for i in range(200):
        log.info("document.new", url=f"https://a.example/{n}/{i}", size=i)
        logging.getLogger("apscheduler.scheduler").warning("job %s skipped", i)
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
logging.getLogger("urllib3").info("below warning: not shown")
"""


def test_concurrent_events_and_library_warnings_are_each_one_json_line():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    events = [json.loads(line) for line in lines]  # fails on any interleaved line
    assert len(events) == 8 * 200 * 2
    library = [e for e in events if e["event"] == "library.log"]
    assert len(library) == 1600
    assert library[0]["logger"] == "apscheduler.scheduler"
    assert library[0]["level"] == "warning"
    assert library[0]["message"].startswith("job ")
    assert proc.stdout == ""


def test_library_info_lines_are_not_shown():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mirror.log import configure_logging\nconfigure_logging(json=True)\n"
            "import logging\nlogging.getLogger('apscheduler').info('Added job')",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stderr == ""


def test_a_password_in_any_url_of_a_log_line_is_masked():
    script = """
import logging, structlog
from mirror.log import configure_logging
configure_logging(json=True)
structlog.get_logger("t").warning("check.failed", url="https://a.example/", message="to http://u:s3cretPW@b/")
logging.getLogger("urllib3").warning("proxy http://u:s3cretPW@proxy:3128 refused")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stderr
    assert "s3cretPW" not in proc.stderr
    assert [json.loads(line)["message"] for line in proc.stderr.splitlines()] == [
        "to http://u:***@b/",
        "proxy http://u:***@proxy:3128 refused",
    ]


def test_a_hidden_secret_is_masked_in_every_log_line_whoever_writes_it():
    from mirror.log import hide, mask_secrets

    hide("json://user:hunter2@hooks.example.org/T0/tok3n-very-secret", "webhook-signing-key")
    line = mask_secrets(
        None,
        "warning",
        {
            "event": "library.log",
            "message": "failed to send to json://user:hunter2@hooks.example.org/T0/tok3n-very-secret",
            "detail": ["key webhook-signing-key used"],
        },
    )
    assert "tok3n" not in str(line) and "hunter2" not in str(line) and "webhook-signing-key" not in str(line)
    assert line["message"] == "failed to send to ***"
