"""Several processes checking one store at once: two `mirror check` and a `mirror run`, real processes.

Every way of checking claims its targets with a lease before it fetches them, so a target
is checked by one process at a time: each real change is one version, whatever runs at once.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from mirror.archive import Archive
from mirror.db import open_engine
from tests.test_service import all_due_now, wait_for, write_config

pytestmark = pytest.mark.slow

PAGES = 500


def page(i: int, edition: int) -> bytes:
    return f"<html><body><h1>Page {i}</h1><p>Edition {edition} of page {i}.</p></body></html>".encode()


def start_mirror(config: Path, database_url: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """Start `mirror ARGS` on the store; stdout is a pipe for `check --json`, log lines go to `log`."""
    env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
    env.pop("NOTIFY_SOCKET", None)
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mirror", "--config", str(config), "--log-format", "json", *args],
            stdout=subprocess.PIPE if "--json" in args else subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=config.parent,
        )


def settled(store: Archive) -> bool:
    """Return whether nothing is due and no lease is held: every process has done its work."""
    status = store.status(datetime.now(UTC))
    return status.overdue == 0 and status.checking == 0


def two_checks_at_once(config: Path, database_url: str, tmp_path: Path, name: str) -> list[dict]:
    procs = [
        start_mirror(config, database_url, "check", "--json", log=tmp_path / f"{name}-{n}.log")
        for n in range(2)
    ]
    documents = []
    for n, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=180)
        err = (tmp_path / f"{name}-{n}.log").read_text()
        assert proc.returncode == 0, f"mirror check exited {proc.returncode}:\n{err[-3000:]}"
        documents.append(json.loads(out))
    return documents


def test_two_checks_and_a_daemon_at_once_record_one_version_per_change(site, tmp_path, database_url):
    paths = [f"/many/{i}.html" for i in range(PAGES)]
    for i, path in enumerate(paths):
        site.put(path, page(i, 1))
    config = write_config(tmp_path / "mirror.toml", [site.url(p) for p in paths], extra="concurrency = 8")
    engine = open_engine(database_url)
    daemon = None
    try:
        store = Archive(engine)
        all_due_now(store, config)
        daemon = start_mirror(config, database_url, "run", log=tmp_path / "daemon.log")
        first = two_checks_at_once(config, database_url, tmp_path, "first")
        wait_for(lambda: settled(store), timeout=60, what="the first round to settle")

        changed = set(range(0, PAGES, 2))  # half of the pages change between the rounds
        for i in changed:
            site.put(paths[i], page(i, 2))
        all_due_now(store, config)  # the daemon claims them again too
        then = two_checks_at_once(config, database_url, tmp_path, "then")
        wait_for(lambda: settled(store), timeout=60, what="the second round to settle")

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0, (tmp_path / "daemon.log").read_text()[-3000:]

        with engine.connect() as conn:
            versions = conn.execute(
                text(
                    "SELECT t.url, s.version, s.sha256 FROM snapshots s"
                    " JOIN targets t ON t.id = s.target_id ORDER BY t.url, s.version"
                )
            ).all()
            events = conn.execute(text("SELECT url, kind, details FROM events ORDER BY seq")).all()
        by_url: dict[str, list[str]] = defaultdict(list)
        for url, number, digest in versions:
            assert number == len(by_url[url]) + 1
            by_url[url].append(digest)
        doubled = {u: shas for u, shas in by_url.items() if any(a == b for a, b in itertools.pairwise(shas))}
        assert not doubled, f"{len(doubled)} targets with two consecutive versions of one content"
        expected = {site.url(p): 2 if i in changed else 1 for i, p in enumerate(paths)}
        assert {u: len(shas) for u, shas in by_url.items()} == expected

        kinds = Counter(kind for _, kind, _ in events)
        assert (kinds["document.new"], kinds["document.changed"]) == (PAGES, len(changed))
        announced = Counter(
            (url, (json.loads(d) if isinstance(d, str) else d)["version"])
            for url, kind, d in events
            if kind == "document.changed"
        )
        assert max(announced.values()) == 1

        verify = subprocess.run(
            [sys.executable, "-m", "mirror", "--config", str(config), "verify"],
            env={**os.environ, "MIRROR_DATABASE_URL": database_url},
            capture_output=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()

        # Each check checked what it could claim and says how many it left to another process.
        for document in first + then:
            assert document["checked"] + document["skipped_claimed"] == PAGES
        assert sum(d["skipped_claimed"] for d in first + then) > 0
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        engine.dispose()
    print(f"skipped by the checks: {[d['skipped_claimed'] for d in first + then]}")


def test_check_url_skips_a_target_a_daemon_holds_and_says_so(site, tmp_path, database_url):
    site.put("/busy.html", b"<p>busy</p>")
    site.put("/free.html", b"<p>free</p>")
    urls = [site.url("/busy.html"), site.url("/free.html")]
    config = write_config(tmp_path / "mirror.toml", urls)
    engine = open_engine(database_url)
    try:
        store = Archive(engine)
        all_due_now(store, config)
        store.claim("otherhost:4242:abcdef", urls[:1], datetime.now(UTC), timedelta(hours=1))
        env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
        run = [sys.executable, "-m", "mirror", "--config", str(config), "--log-format", "json", "check"]
        as_json = subprocess.run(
            [*run, *urls, "--json"], env=env, capture_output=True, cwd=tmp_path, timeout=60
        )
        as_text = subprocess.run(run + urls[:1], env=env, capture_output=True, cwd=tmp_path, timeout=60)
    finally:
        engine.dispose()

    assert as_json.returncode == 0, as_json.stderr.decode()
    document = json.loads(as_json.stdout)
    assert document["skipped_claimed"] == 1
    assert [t["url"] for t in document["targets"]] == urls[1:]
    assert site.hits("/busy.html") == 0
    logged = [json.loads(line) for line in as_json.stderr.decode().splitlines() if line.startswith("{")]
    assert [e["skipped_claimed"] for e in logged if e["event"] == "round.skipped_claimed"] == [1]
    assert as_text.returncode == 0
    assert "skipped 1 being checked by another process" in as_text.stdout.decode()


def test_a_check_stopped_with_ctrl_c_leaves_no_lease_behind(site, tmp_path, database_url):
    urls = [site.url(f"/slow?seconds=0.5&n={i}") for i in range(30)]
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 2")
    env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirror", "--config", str(config), "check"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
        # Python installs its Ctrl-C handler only when SIGINT is not ignored (a background job's is)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(lambda: site.hits("/slow") >= 3, what="the first checks")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            held = conn.execute(text("SELECT count(*) FROM targets WHERE lease_owner IS NOT NULL")).scalar()
            checked = conn.execute(text("SELECT count(*) FROM checks")).scalar()
    finally:
        engine.dispose()
    assert held == 0
    assert 1 <= checked < len(urls)
