"""The daemon as systemd runs it: a real `mirror run` process, real signals, a real store."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from mirror.archive import Archive
from mirror.db import open_engine
from mirror.verify import run as verify_store
from tests.fixtures_store import engine_of

pytestmark = pytest.mark.slow


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_config(path: Path, urls: list[str], *, interval: str = "1h", extra: str = "") -> Path:
    lines = ["targets = [", *(f'  "{u}",' for u in urls), "]", ""]
    lines += ["[schedule]", f'interval = "{interval}"', 'tick = "200ms"', ""]
    lines += [
        "[fetch]",
        'timeout = "5s"',
        'per_host_delay = "0"',
        "per_host_concurrency = 8",
        "retries = 0",
        extra,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class Daemon:
    """A `mirror run` subprocess whose JSON log lines are kept in a file."""

    def __init__(self, config: Path, database_url: str, log_path: Path) -> None:
        self.log_path = log_path
        env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
        env.pop("NOTIFY_SOCKET", None)
        self.log_file = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mirror", "--config", str(config), "--log-level", "debug", "run"],
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
            env=env,
            cwd=config.parent,
        )

    def events(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def named(self, name: str) -> list[dict]:
        return [e for e in self.events() if e["event"] == name]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_file.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log_file.close()


@pytest.fixture
def daemons(tmp_path):
    started: list[Daemon] = []

    def start(config: Path, database_url: str) -> Daemon:
        daemon = Daemon(config, database_url, tmp_path / f"daemon-{len(started)}.log")
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def store(database_url):
    engine = open_engine(database_url)
    yield Archive(engine)
    engine.dispose()


def all_due_now(archive: Archive, config: Path, env: dict[str, str] | None = None) -> None:
    """Store the config's targets and make every one due now (new targets are otherwise spread
    over their interval), so that a test sees one whole round at once."""
    from mirror.config import load_config

    archive.sync_targets(load_config(config, env or {}).targets, datetime.now(UTC))
    with engine_of(archive).begin() as conn:
        conn.execute(
            text("UPDATE targets SET next_check_at = :now"),
            {
                "now": datetime.now(UTC).replace(tzinfo=None)
                if engine_of(archive).dialect.name == "sqlite"
                else datetime.now(UTC)
            },
        )


def checks_of(archive: Archive) -> dict[str, int]:
    with engine_of(archive).connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.url, count(c.id) FROM targets t"
                " LEFT JOIN checks c ON c.target_id = t.id GROUP BY t.url"
            )
        ).all()
    return {url: n for url, n in rows}


def test_the_daemon_checks_when_due_reloads_on_sighup_and_stops_cleanly_on_sigterm(
    site, tmp_path, database_url, daemons, store
):
    for name in ("a", "b", "c"):
        site.put(f"/{name}.html", f"<p>page {name}</p>".encode())
    config = write_config(tmp_path / "mirror.toml", [site.url("/a.html"), site.url("/b.html")], interval="1s")
    daemon = daemons(config, database_url)

    wait_for(
        lambda: all(n >= 2 for n in checks_of(store).values()) and len(checks_of(store)) == 2,
        what="each target checked twice",
    )
    assert {e["url"] for e in daemon.named("document.new")} == {site.url("/a.html"), site.url("/b.html")}

    # A new target in the config, then SIGHUP: checked without a restart.
    write_config(config, [site.url("/a.html"), site.url("/b.html"), site.url("/c.html")], interval="1s")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: checks_of(store).get(site.url("/c.html"), 0) >= 1, what="the new target checked")
    assert daemon.named("config.loaded")

    # A broken config on SIGHUP is refused; the daemon goes on with the old one.
    config.write_text("[fetch]\ntimeout = 'soon'\n")
    daemon.proc.send_signal(signal.SIGHUP)
    (rejected,) = wait_for(lambda: daemon.named("config.rejected"), what="config.rejected")
    assert rejected["key"] == "fetch.timeout"
    before = checks_of(store)[site.url("/c.html")]
    wait_for(
        lambda: checks_of(store)[site.url("/c.html")] > before, what="checks going on after a bad reload"
    )

    assert daemon.stop(signal.SIGTERM) == 0
    assert daemon.named("service.stopped")
    report = verify_store(engine_of(store))
    assert report.ok, report.problems
    with engine_of(store).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM targets WHERE lease_owner IS NOT NULL")).scalar() == 0


def test_sigterm_mid_round_lets_checks_finish_and_leaves_a_consistent_store(
    site, tmp_path, database_url, daemons, store
):
    urls = [site.url(f"/slow?seconds=1&page={i}") for i in range(12)]
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 4")
    all_due_now(store, config)
    daemon = daemons(config, database_url)
    wait_for(lambda: sum(checks_of(store).values()) >= 1, what="the first checks")
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    stopped = daemon.named("service.stopped")[0]
    assert stopped["unfinished"] == 0

    report = verify_store(engine_of(store))
    assert report.ok, report.problems
    with engine_of(store).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM targets WHERE lease_owner IS NOT NULL")).scalar() == 0
        versions = conn.execute(text("SELECT count(*) FROM snapshots")).scalar()
        checked = conn.execute(
            text("SELECT count(*) FROM targets WHERE last_checked_at IS NOT NULL")
        ).scalar()
    assert 1 <= checked < len(urls)  # stopped mid-round
    assert versions == checked  # every recorded check of a new page has its version, no more


def test_a_second_daemon_on_the_same_sqlite_file_is_refused(site, tmp_path, daemons):
    database_url = f"sqlite:///{tmp_path / 'mirror.db'}"
    site.put("/one.html", b"<p>one</p>")
    config = write_config(tmp_path / "mirror.toml", [site.url("/one.html")])
    first = daemons(config, database_url)
    wait_for(lambda: first.named("service.started"), what="the first daemon")
    second = daemons(config, database_url)
    assert second.proc.wait(30) == 3
    err = second.log_path.read_text().strip().splitlines()
    assert "another `mirror run`" in err[-1]
    assert first.proc.poll() is None
    assert first.stop() == 0


@pytest.mark.postgres
@pytest.mark.parametrize("count", [1, 2])
def test_daemons_on_postgresql_check_each_of_500_targets_exactly_once(
    site, tmp_path, daemons, postgres_database, count
):
    postgres_database.reset()
    database_url = postgres_database.url
    urls = [site.url(f"/status/200?n={i}") for i in range(500)]
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 8")
    engine = open_engine(database_url)
    try:
        store = Archive(engine)
        all_due_now(store, config)
        running = [daemons(config, database_url) for _ in range(count)]
        started = time.monotonic()
        wait_for(
            lambda: len(checks_of(store)) == 500 and min(checks_of(store).values()) >= 1,
            timeout=120,
            what="all 500 targets checked",
        )
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # a double check would show up now
        counts = checks_of(store)
        assert set(counts.values()) == {1}, {u: n for u, n in counts.items() if n != 1}
        done = [len(d.named("check.done")) for d in running]
        assert sum(done) == 500
        if count == 2:
            assert min(done) > 0, f"one daemon did all the work: {done}"
        for d in running:
            assert d.stop() == 0
        report = verify_store(engine)  # 500 events appended by concurrent daemons: one intact chain
        assert report.ok, report.problems
        assert report.events == 500
        print(f"500 targets, {count} daemon(s): {elapsed:.1f}s (checks per daemon {done})")
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_killed_daemons_targets_are_taken_over_after_its_lease_expires(
    site, tmp_path, daemons, postgres_database
):
    postgres_database.reset()
    database_url = postgres_database.url
    urls = [site.url(f"/slow?seconds=1&n={i}") for i in range(40)]
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 4")
    config.write_text(config.read_text().replace('tick = "200ms"', 'tick = "200ms"\nlease = "3s"'))
    engine = open_engine(database_url)
    try:
        store = Archive(engine)
        all_due_now(store, config)
        doomed, survivor = daemons(config, database_url), daemons(config, database_url)
        wait_for(lambda: doomed.named("check.done"), what="the first daemon's first check")
        with engine.connect() as conn:
            held = set(
                conn.execute(
                    text(
                        "SELECT url FROM targets WHERE lease_owner IS NOT NULL AND last_checked_at IS NULL"
                        " AND lease_owner LIKE :pid"
                    ),
                    {"pid": f"%:{doomed.proc.pid}:%"},
                ).scalars()
            )
        doomed.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        doomed.kill()
        assert held, "the killed daemon held no leases"
        wait_for(
            lambda: all(checks_of(store).get(u, 0) >= 1 for u in held),
            timeout=60,
            what="the killed daemon's targets checked by the other",
        )
        takeover = time.monotonic() - killed_at
        wait_for(
            lambda: all(checks_of(store).get(u, 0) >= 1 for u in urls),
            timeout=90,
            what="every target checked after the kill",
        )
        takeover = time.monotonic() - killed_at
        counts = checks_of(store)
        assert set(counts.values()) == {1}, {u: n for u, n in counts.items() if n != 1}
        assert survivor.stop() == 0
        print(f"takeover after kill -9: {takeover:.1f}s for {len(held)} leased targets (lease 3s)")
    finally:
        engine.dispose()


def test_the_daemon_tells_systemd_it_is_ready_alive_and_stopping(site, tmp_path, database_url):
    import socket

    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify_path))
        listener.settimeout(20)
        site.put("/n.html", b"<p>n</p>")
        config = write_config(tmp_path / "mirror.toml", [site.url("/n.html")])
        config.write_text(config.read_text().replace('tick = "200ms"', 'tick = "200ms"\nsummary = "1s"'))
        env = {**os.environ, "MIRROR_DATABASE_URL": database_url, "NOTIFY_SOCKET": str(notify_path)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mirror", "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            messages = [listener.recv(4096).decode()]
            while "WATCHDOG=1" not in messages[-1] or not any(
                "STATUS=" in m and "next" in m for m in messages
            ):
                messages.append(listener.recv(4096).decode())
            proc.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in messages[-1]:
                messages.append(listener.recv(4096).decode())
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert messages[0].startswith("READY=1")
    assert any("WATCHDOG=1" in m for m in messages)
    assert "STOPPING=1" in messages[-1]
    # `systemctl status mirror` shows the latest summary
    (status,) = [m for m in messages if m.startswith("STATUS=") and "next" in m][:1]
    assert re.fullmatch(
        r"STATUS=\d+ checks in the last \d+s \(\d+ changed, \d+ failed\); next due .+", status
    )


def test_a_store_failing_under_the_writer_stops_the_daemon_with_exit_3(
    site, tmp_path, database_url, daemons, store
):
    urls = [site.url(f"/slow?seconds=0.3&page={i}") for i in range(12)]
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 2")
    all_due_now(store, config)
    daemon = daemons(config, database_url)
    wait_for(lambda: sum(checks_of(store).values()) >= 1, what="the first checks")
    with engine_of(store).begin() as conn:
        conn.execute(text("DROP TABLE checks"))  # every later batch fails: not a transient error

    assert daemon.proc.wait(30) == 3
    (failed,) = daemon.named("store.failed")
    assert "checks" in failed["error"]
    assert daemon.named("service.stopped")


def test_the_daemon_says_when_the_first_check_is_due_and_sums_up_what_it_did_every_period(
    site, tmp_path, database_url, daemons, store
):
    site.put("/alive.html", b"<p>alive</p>")
    site.put("/broken.html", b"")
    site.fail("/broken.html", 500)
    urls = [site.url("/alive.html"), site.url("/broken.html"), site.url("/later.html")]
    config = write_config(tmp_path / "mirror.toml", urls, interval="1h")
    config.write_text(config.read_text().replace('tick = "200ms"', 'tick = "200ms"\nsummary = "1s"'))
    all_due_now(store, config)
    with engine_of(store).begin() as conn:  # one target is due only in 50 minutes
        conn.execute(
            text("UPDATE targets SET next_check_at = :later WHERE url = :url"),
            {"later": later(store, minutes=50), "url": urls[2]},
        )
    daemon = daemons(config, database_url)
    (started,) = wait_for(lambda: daemon.named("service.started"), what="service.started")
    assert started["first_check_in"] == "now"
    assert started["level"] == "info"

    def summed(field: str) -> int:
        return sum(s[field] for s in daemon.named("service.summary"))

    wait_for(lambda: summed("checks") == 2, what="summaries of the two due checks")
    time.sleep(1.5)  # one more period: nothing else was due
    assert daemon.stop() == 0
    summaries = daemon.named("service.summary")
    assert all(s["level"] == "info" for s in summaries)
    assert (summed("checks"), summed("changed"), summed("failed"), summed("crashed")) == (2, 1, 1, 0)
    assert re.fullmatch(r"in (49|50)m\d+s", summaries[-1]["next_check_in"])
    assert (summaries[-1]["due"], summaries[-1]["checks"]) == (0, 0)
    assert summaries[-1]["next_check_at"].startswith(str(datetime.now(UTC).year))


def later(store: Archive, minutes: int) -> datetime:
    value = datetime.now(UTC) + timedelta(minutes=minutes, seconds=30)
    return value.replace(tzinfo=None) if engine_of(store).dialect.name == "sqlite" else value


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(-30, "now"), (0, "now"), (0.2, "in 1s"), (45, "in 45s"), (300, "in 5m"), (5400, "in 1h30m"),
     (3 * 86400 + 6 * 3600 + 59, "in 3d6h"), (None, "never (no targets)")],
)  # fmt: skip
def test_when_the_next_check_is_due_is_said_in_words(seconds, words):
    from mirror.service import in_words

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert in_words(None if seconds is None else now + timedelta(seconds=seconds), now) == words
