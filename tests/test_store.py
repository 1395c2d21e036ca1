"""The store on both backends: blobs, versions, checks, the event chain, targets and status."""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from structlog.testing import capture_logs

from mirror import blobs, ledger
from mirror.db import RetrySettings, run_in_transaction
from mirror.domain import Event, Outcome, OutcomeKind, Status, Target, TargetState
from mirror.errors import StoreError, TargetNotFound, UsageError, VersionNotFound
from mirror.events import (
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_NEW,
    DOCUMENT_REAPPEARED,
    STORE_RETRY,
)
from mirror.tables import metadata
from tests.fixtures_store import (
    HOUR,
    T0,
    fetched,
    record_check,
    save_failure,
    save_unchanged,
    save_version,
    sha,
    watch,
)

URL = "https://www.prisoncensorship.info/archive/etext/wim/cong/notefromchair092207.html"
OTHER = "https://www.prisoncensorship.info/archive/etext/wim/cong/copy.html"
MINUTE = timedelta(minutes=1)


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one()


def target_row(engine, url: str):
    targets = metadata.tables["targets"]
    with engine.connect() as conn:
        return conn.execute(select(targets).where(targets.c.url == url)).one()


# -- blobs -------------------------------------------------------------------------------------


def test_same_bytes_at_two_urls_are_stored_once(archive, engine):
    body = b"<html><body>Note from the chair</body></html>"
    watch(archive, URL, OTHER)

    save_version(archive, URL, body)
    save_version(archive, OTHER, body)

    assert count(engine, "blobs") == 1
    assert count(engine, "snapshots") == 2
    assert archive.version(URL).sha256 == archive.version(OTHER).sha256 == sha(body)
    assert archive.read(sha(body)) == body


def test_two_workers_storing_the_same_new_bytes_at_once_both_succeed(engine):
    body = b"the same newsletter fetched by two workers" * 100
    first = engine.connect()
    try:
        first.begin()
        blobs.put(first, body)  # not committed yet: the second put must wait, then find it
        results = []
        second = threading.Thread(
            target=lambda: results.append(run_in_transaction(engine, lambda c: blobs.put(c, body)))
        )
        second.start()
        time.sleep(0.2)
        first.commit()
    finally:
        first.close()
    second.join(10)

    assert results == [sha(body)]
    assert count(engine, "blobs") == 1


def test_a_blob_put_with_a_wrong_sha256_is_refused(engine):
    with pytest.raises(StoreError, match="hash to"):
        run_in_transaction(engine, lambda conn: blobs.put(conn, b"body", sha(b"other body")))
    assert count(engine, "blobs") == 0


def test_reading_a_missing_or_damaged_blob_is_a_store_error(archive, engine):
    watch(archive, URL)
    save_version(archive, URL, b"original bytes")
    with pytest.raises(StoreError, match="not in the store"):
        archive.read(sha(b"never stored"))

    table = metadata.tables["blobs"]
    with engine.begin() as conn:
        conn.execute(update(table).values(data=blobs.compress(b"tampered bytes")))
    with pytest.raises(StoreError, match="damaged"):
        archive.read(sha(b"original bytes"))


def test_blobs_are_compressed(archive, engine):
    body = b"<p>The same paragraph, again and again.</p>\n" * 2000
    watch(archive, URL)
    save_version(archive, URL, body)

    status = archive.status(T0)
    assert status.content_bytes == len(body)
    assert status.stored_bytes < len(body) // 20


# -- recording ---------------------------------------------------------------------------------


def test_a_new_version_writes_blob_snapshot_check_event_and_target_together(archive, engine):
    body = b"<html>first</html>"
    watch(archive, URL, interval=6 * HOUR)
    targets = metadata.tables["targets"]
    with engine.begin() as conn:  # as if the recording process ("test") had claimed it
        conn.execute(update(targets).values(lease_owner="test", lease_until=T0 + HOUR))

    (event,) = save_version(archive, URL, body, T0, etag='"v1"')

    assert [count(engine, t) for t in ("blobs", "snapshots", "checks", "events")] == [1, 1, 1, 1]
    assert event.kind == DOCUMENT_NEW
    assert event.seq == 1
    row = target_row(engine, URL)
    assert (row.status, row.current_version, row.current_sha256, row.etag) == ("ok", 1, sha(body), '"v1"')
    assert row.last_checked_at == T0
    assert row.next_check_at == T0 + 6 * HOUR
    assert (row.lease_owner, row.lease_until) == (None, None)
    with engine.connect() as conn:
        check = conn.execute(select(metadata.tables["checks"])).one()
    assert (check.outcome, check.http_status, check.bytes, check.worker) == ("new", 200, len(body), "test")
    assert check.duration_ms == 125
    state = archive.state_of(URL)
    assert state == TargetState(Status.OK, sha(body), 1, "text/html; charset=utf-8", 0, '"v1"')


def test_seeing_a_version_again_moves_its_last_seen_only(archive, engine):
    watch(archive, URL)
    save_version(archive, URL, b"stable page", T0)

    assert save_unchanged(archive, URL, T0 + HOUR) == []

    (version,) = archive.history(URL).versions
    assert (version.first_seen, version.last_seen) == (T0, T0 + HOUR)
    assert count(engine, "checks") == 2
    assert count(engine, "events") == 1


def test_a_failed_check_is_recorded_without_a_version(archive, engine):
    watch(archive, URL)
    save_failure(archive, URL, T0, status=None)

    state = archive.state_of(URL)
    assert (state.status, state.consecutive_failures, state.current_version) == (Status.FAILING, 1, 0)
    with engine.connect() as conn:
        check = conn.execute(select(metadata.tables["checks"])).one()
    assert (check.outcome, check.error_kind, check.bytes) == ("failed", "timeout", None)
    assert count(engine, "snapshots") == 0


def _boom(*args, **kwargs):
    raise RuntimeError("crash while appending to the ledger")


@pytest.mark.parametrize("fault", ["ledger append crashes", "event cannot be encoded"])
def test_a_failure_mid_record_leaves_no_blob_snapshot_check_or_event(archive, engine, monkeypatch, fault):
    watch(archive, URL)
    body = b"<html>never stored</html>"
    details: dict[str, object] = {"size": len(body)}
    if fault == "ledger append crashes":
        monkeypatch.setattr(ledger, "append", _boom)
    else:
        details["when"] = object()  # not JSON
    event = Event(DOCUMENT_NEW, URL, T0, new_sha256=sha(body), details=details)
    outcome = Outcome(OutcomeKind.NEW, TargetState(Status.OK, sha(body), 1), (event,), new_version=True)

    with pytest.raises((RuntimeError, TypeError)):
        record_check(archive, URL, fetched(URL, body), outcome, T0)

    assert [count(engine, t) for t in ("blobs", "snapshots", "checks", "events")] == [0, 0, 0, 0]
    assert archive.state_of(URL) == TargetState()
    with engine.connect() as conn:
        assert ledger.head(conn) == (0, ledger.GENESIS)


def test_recording_an_unknown_url_is_target_not_found(archive):
    with pytest.raises(TargetNotFound):
        save_failure(archive, "https://example.org/never-configured", T0)


# -- versions and history ----------------------------------------------------------------------


@pytest.fixture
def three_versions(archive):
    watch(archive, URL)
    bodies = [b"<p>one</p>", b"<p>two</p>", b"<p>three</p>"]
    for i, body in enumerate(bodies):
        save_version(archive, URL, body, T0 + i * HOUR)
    return bodies


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(None, 3), ("-1", 3), ("-2", 2), ("-3", 1), ("1", 1), ("3", 3), (" 2 ", 2)],
)
def test_a_version_is_found_by_number_or_counting_back_from_the_latest(
    archive, three_versions, spec, expected
):
    assert archive.version(URL, spec).number == expected


def test_a_version_is_found_by_sha256_prefix_in_any_case(archive, three_versions):
    digest = sha(three_versions[1])
    assert archive.version(URL, digest[:6]).number == 2
    assert archive.version(URL, digest.upper()).number == 2


@pytest.mark.parametrize("spec", ["0", "4", "-4", "ab", "xyz!", "ffffffff"])
def test_a_missing_version_is_version_not_found(archive, three_versions, spec):
    with pytest.raises(VersionNotFound):
        archive.version(URL, spec)


def test_a_version_is_found_by_time(archive, three_versions):
    assert archive.version(URL, at=T0 + 90 * MINUTE).number == 2
    assert archive.version(URL, at=T0 + 2 * HOUR).number == 3  # first seen exactly then
    assert archive.version(URL, at=T0 + 100 * HOUR).number == 3
    with pytest.raises(VersionNotFound, match="no version was stored by then"):
        archive.version(URL, at=T0 - MINUTE)
    with pytest.raises(UsageError):
        archive.version(URL, "1", at=T0)


def test_an_ambiguous_sha256_prefix_is_refused(archive):
    seen: dict[str, bytes] = {}
    for i in range(100_000):  # about 300 tries find two bodies sharing 4 hex digits
        body = f"page {i}".encode()
        if (prefix := sha(body)[:4]) in seen:
            break
        seen[prefix] = body
    watch(archive, URL)
    save_version(archive, URL, seen[prefix], T0)
    save_version(archive, URL, body, T0 + HOUR)

    with pytest.raises(VersionNotFound, match="ambiguous"):
        archive.version(URL, prefix)
    assert archive.version(URL, sha(body)[:12]).number == 2


def test_content_that_comes_back_is_a_new_version_on_the_same_blob(archive, engine):
    watch(archive, URL)
    for i, body in enumerate([b"A", b"B", b"A"]):
        save_version(archive, URL, body, T0 + i * HOUR)

    assert count(engine, "blobs") == 2
    assert archive.version(URL, sha(b"A")[:8]).number == 3  # the latest version with that content


def test_history_lists_versions_oldest_first_and_events_in_chain_order(archive):
    watch(archive, URL, OTHER)
    save_version(archive, URL, b"v1", T0)
    save_version(archive, OTHER, b"elsewhere", T0)
    save_version(archive, URL, b"v2", T0 + HOUR, diff="--- a\n+++ b\n-v1\n+v2\n")
    save_failure(archive, URL, T0 + 2 * HOUR, status=404)

    h = archive.history(URL)

    assert (h.url, h.status) == (URL, "gone")
    assert [v.number for v in h.versions] == [1, 2]
    assert [v.sha256 for v in h.versions] == [sha(b"v1"), sha(b"v2")]
    assert [e.kind for e in h.events] == [DOCUMENT_NEW, DOCUMENT_CHANGED, DOCUMENT_DISAPPEARED]
    assert [e.seq for e in h.events] == [1, 3, 4]
    assert h.events[1].diff == "--- a\n+++ b\n-v1\n+v2\n"
    assert h.events[0].diff is None
    assert h.events[2].details["status"] == 404
    with pytest.raises(TargetNotFound):
        archive.history("https://example.org/unknown")


# -- the event chain ---------------------------------------------------------------------------


def test_the_event_chain_links_every_event_to_the_previous_one_and_the_head_is_the_last(archive, engine):
    watch(archive, URL, OTHER)
    save_version(archive, URL, b"a1", T0)
    save_version(archive, OTHER, b"b1", T0 + MINUTE)
    save_version(archive, URL, b"a2", T0 + HOUR, diff="-a1\n+a2\n")
    save_failure(archive, OTHER, T0 + 2 * HOUR)
    recorded = save_version(
        archive, URL, "a3 \u00e9t\u00e9".encode(), T0 + 3 * HOUR, diff="-a2\n+a3 \u00e9t\u00e9\n"
    )

    with engine.connect() as conn:
        entries = list(ledger.walk(conn, batch=2))
        head = ledger.head(conn)

    assert [e.event.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == ledger.GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.event.hash
    for entry in entries:
        assert ledger.chain_hash(entry.prev_hash, entry.event) == entry.event.hash
    assert head == (5, entries[-1].event.hash) == (5, recorded[0].hash)


def test_changing_a_stored_event_breaks_its_link(archive, engine):
    watch(archive, URL)
    save_version(archive, URL, b"v1", T0)
    events = metadata.tables["events"]
    with engine.begin() as conn:
        conn.execute(update(events).where(events.c.seq == 1).values(details={"size": 999}))

    with engine.connect() as conn:
        (entry,) = ledger.walk(conn)
    assert ledger.chain_hash(entry.prev_hash, entry.event) != entry.event.hash


def test_two_threads_recording_at_once_both_succeed(archive):
    watch(archive, URL, OTHER)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(url: str) -> None:
        try:
            start.wait(5)
            for i in range(8):
                save_version(archive, url, f"{url} v{i}".encode(), T0 + i * MINUTE)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(u,)) for u in (URL, OTHER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert errors == []
    assert [len(archive.history(u).versions) for u in (URL, OTHER)] == [8, 8]
    seqs = sorted(e.seq for u in (URL, OTHER) for e in archive.history(u).events)
    assert seqs == list(range(1, 17))


def test_a_writer_waits_for_another_writers_lock_instead_of_failing(archive, engine):
    watch(archive, URL)
    holder = engine.connect()
    try:
        holder.begin()  # SQLite: BEGIN IMMEDIATE holds the file's write lock; PostgreSQL: the row's lock
        holder.execute(text("UPDATE targets SET etag = 'held'"))
        done = threading.Thread(target=save_version, args=(archive, URL, b"waited", T0))
        done.start()
        time.sleep(0.3)
        assert done.is_alive()  # queued on the lock, not failed
        started = time.perf_counter()
        assert archive.state_of(URL).current_version == 0  # readers do not wait for writers
        assert time.perf_counter() - started < 0.2
        holder.commit()
    finally:
        holder.close()
    done.join(10)
    assert archive.version(URL).sha256 == sha(b"waited")


# -- retries at the store edge -----------------------------------------------------------------

FAST = RetrySettings(attempts=4, wait=0.001)


def _locked() -> OperationalError:
    return OperationalError("INSERT INTO ...", {}, sqlite3.OperationalError("database is locked"))


def test_a_locked_database_is_retried_and_each_retry_logged(engine):
    calls = []

    def flaky(conn):
        calls.append(1)
        if len(calls) < 3:
            raise _locked()
        return "stored"

    with capture_logs() as logs:
        assert run_in_transaction(engine, flaky, retry=FAST) == "stored"
    assert [e["attempt"] for e in logs if e["event"] == STORE_RETRY] == [1, 2]


def test_retries_stop_after_the_last_attempt_with_a_one_line_store_error(engine):
    calls = []

    def always_locked(conn):
        calls.append(1)
        raise _locked()

    with pytest.raises(StoreError) as caught:
        run_in_transaction(engine, always_locked, retry=FAST)
    assert len(calls) == FAST.attempts
    assert "database is locked" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_error_that_a_retry_cannot_cure_is_not_retried(engine):
    calls = []

    def duplicate(conn):
        calls.append(1)
        raise IntegrityError(
            "INSERT ...", {}, sqlite3.IntegrityError("UNIQUE constraint failed: targets.url")
        )

    with pytest.raises(StoreError, match="UNIQUE constraint failed"):
        run_in_transaction(engine, duplicate, retry=FAST)
    assert len(calls) == 1


# -- targets -----------------------------------------------------------------------------------


def _urls(n: int, start: int = 0) -> list[str]:
    return [f"https://host{i % 50}.example.org/page/{i}.html" for i in range(start, start + n)]


def test_sync_adds_deactivates_and_reactivates_configured_targets(archive):
    a, b, c = _urls(3)
    report = archive.sync_targets([Target(a, HOUR), Target(b, HOUR)], T0)
    assert (report.added, report.removed, report.updated, report.total) == (2, 0, 0, 2)
    save_version(archive, a, b"a's page", T0)

    report = archive.sync_targets([Target(b, HOUR), Target(c, HOUR)], T0 + HOUR)
    assert (report.added, report.removed, report.updated, report.total) == (1, 1, 0, 2)
    assert [t.url for t in archive.active_targets()] == sorted([b, c])
    assert len(archive.history(a).versions) == 1  # history kept

    report = archive.sync_targets([Target(a, HOUR), Target(b, HOUR), Target(c, HOUR)], T0 + 2 * HOUR)
    assert (report.added, report.removed, report.updated, report.total) == (1, 0, 0, 3)
    assert archive.state_of(a).current_version == 1


def test_sync_saves_a_changed_interval_and_brings_the_next_check_forward(archive):
    (url,) = _urls(1)
    archive.sync_targets([Target(url, 24 * HOUR)], T0, random.Random(1))
    report = archive.sync_targets([Target(url, HOUR)], T0)

    assert (report.added, report.removed, report.updated) == (0, 0, 1)
    assert archive.active_targets() == [Target(url, HOUR)]
    (summary,) = archive.targets()
    assert T0 <= summary.next_check_at <= T0 + HOUR


def test_sync_spreads_first_checks_uniformly_over_the_interval(archive):
    interval = 6 * HOUR
    archive.sync_targets([Target(u, interval) for u in _urls(600)], T0, random.Random(42))

    offsets = [(t.next_check_at - T0) / interval for t in archive.targets()]
    assert all(0 <= x < 1 for x in offsets)
    buckets = [sum(1 for x in offsets if i / 6 <= x < (i + 1) / 6) for i in range(6)]
    assert min(buckets) > 60  # about 100 each; nothing piles up at start-up


def test_ten_thousand_targets_sync_in_a_few_seconds(archive, record_property):
    urls = _urls(10_000)
    started = time.perf_counter()
    first = archive.sync_targets([Target(u, HOUR) for u in urls], T0)
    fresh = time.perf_counter() - started

    started = time.perf_counter()
    second = archive.sync_targets([Target(u, 2 * HOUR) for u in urls[5000:] + _urls(5000, 10_000)], T0)
    changed = time.perf_counter() - started

    record_property("sync_10k_fresh_seconds", round(fresh, 3))
    record_property("sync_10k_half_changed_seconds", round(changed, 3))
    print(f"sync of 10,000 targets: {fresh:.2f}s fresh, {changed:.2f}s with 5,000 removed, added and changed")
    assert (first.added, first.total) == (10_000, 10_000)
    assert (second.added, second.removed, second.updated, second.total) == (5000, 5000, 5000, 10_000)
    # ~1-2 s each alone; the bound catches a row-at-a-time sync (minutes), not a busy machine
    assert fresh < 15
    assert changed < 15


def test_discovered_targets_are_added_once_and_survive_a_config_sync(archive):
    crawled = [Target(u, HOUR, "crawl") for u in _urls(2, 100)]
    assert archive.add_discovered(crawled, T0) == 2
    assert archive.add_discovered([*crawled, Target(_urls(1, 200)[0], HOUR, "sitemap")], T0) == 1

    archive.sync_targets([Target(_urls(1)[0], HOUR)], T0)

    sources = {t.url: t.source for t in archive.targets()}
    assert sorted(sources.values()) == ["config", "crawl", "crawl", "sitemap"]


def test_targets_are_looked_up_by_their_normalised_url(archive):
    watch(archive, "https://www.prisoncensorship.info/archive/")
    (found,) = archive.active_targets(["HTTPS://WWW.PrisonCensorship.info:443/archive/#top"])
    assert found.url == "https://www.prisoncensorship.info/archive/"
    with pytest.raises(TargetNotFound):
        archive.active_targets(["https://www.prisoncensorship.info/archive/", "https://example.org/"])
    with pytest.raises(TargetNotFound):
        archive.state_of("https://example.org/")


# -- status ------------------------------------------------------------------------------------


def test_status_counts_targets_by_state_versions_blobs_and_recent_checks(archive, database_url):
    a, b, c, d = _urls(4)
    watch(archive, a, b, c, d)
    watch(archive, a, b, c)  # d is no longer configured: it counts as unwatched only
    body = b"<html>ok</html>"
    save_version(archive, a, body, T0 + 10 * MINUTE)  # next check T0 + 70 min
    save_failure(archive, b, T0 + 20 * MINUTE, status=None)  # next check T0 + 80 min

    status = archive.status(T0 + 65 * MINUTE)

    assert {k: n for k, n in status.targets_by_status.items() if n} == {
        "ok": 1,
        "failing": 1,
        "new": 1,
        "unwatched": 1,
    }
    assert set(status.targets_by_status) >= {str(s) for s in Status}  # zero counts too
    assert status.targets == 3
    assert (status.versions, status.blobs, status.content_bytes) == (1, 1, len(body))
    assert status.stored_bytes > 0
    assert status.last_check_at == T0 + 20 * MINUTE
    assert T0 <= status.next_check_at < T0 + HOUR  # c, never checked
    assert status.overdue == 1  # c
    assert status.checks_last_hour == 2
    assert status.database.startswith(database_url.split(":")[0].split("+")[0])


def test_targets_lists_active_targets_by_url_and_filters_by_state(archive):
    a, b, c = _urls(3)
    watch(archive, a, b, c)
    save_version(archive, a, b"x", T0)
    save_version(archive, a, b"y", T0 + HOUR)
    save_failure(archive, b, T0, status=None)

    everything = archive.targets()
    assert [t.url for t in everything] == sorted([a, b, c])
    by_url = {t.url: t for t in everything}
    assert (by_url[a].status, by_url[a].versions, by_url[a].current_sha256) == ("ok", 2, sha(b"y"))
    assert (by_url[b].status, by_url[b].consecutive_failures) == ("failing", 1)
    assert [t.url for t in archive.targets("failing")] == [b]
    assert archive.targets("gone") == []


@pytest.mark.postgres
def test_a_postgresql_connection_killed_mid_transaction_is_retried_on_a_new_one(postgres_database):
    from mirror.db import open_engine

    postgres_database.reset()
    engine = open_engine(postgres_database.url)
    attempts = []

    def killed_once(conn):
        attempts.append(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        if len(attempts) == 1:
            conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return conn.execute(text("SELECT count(*) FROM targets")).scalar_one()

    try:
        with capture_logs() as logs:
            assert run_in_transaction(engine, killed_once, retry=FAST) == 0
        assert len(attempts) == 2
        assert attempts[0] != attempts[1]
        assert [e["attempt"] for e in logs if e["event"] == STORE_RETRY] == [1]
        assert engine.pool.checkedout() == 0
    finally:
        engine.dispose()


# -- the suspicious flag -----------------------------------------------------------------------


def save_change(archive, url: str, body: bytes, at, *, suspicious: str | None = None):
    """Record a new version of `url` that judge found suspicious (or not)."""
    state = archive.state_of(url)
    number = state.current_version + 1
    kind = DOCUMENT_NEW if number == 1 else DOCUMENT_CHANGED
    event = Event(kind, url, at, old_sha256=state.current_sha256, new_sha256=sha(body), status=200)
    new_state = TargetState(Status.OK, sha(body), number, "text/html", suspicious=suspicious)
    outcome = Outcome(
        OutcomeKind.NEW if number == 1 else OutcomeKind.CHANGED,
        new_state,
        (event,),
        new_version=True,
        diff_from=state.current_sha256,
    )
    return record_check(archive, url, fetched(url, body, at), outcome, at)


SHRANK = "text shrank by 91% (from 5200 to 460 characters)"


def test_a_suspicious_change_flags_the_target_from_then_until_an_ordinary_change(archive):
    watch(archive, URL, OTHER)
    save_change(archive, URL, b"<p>the whole statement</p>" * 200, T0)
    save_change(archive, OTHER, b"<p>another page</p>", T0)
    save_change(archive, URL, b"<p>Page removed.</p>", T0 + HOUR, suspicious=SHRANK)

    assert archive.state_of(URL).suspicious == SHRANK
    (flagged,) = archive.targets("suspicious")
    assert (flagged.url, flagged.suspicious, flagged.suspicious_since) == (URL, SHRANK, T0 + HOUR)
    assert archive.status(T0 + HOUR).suspicious == 1

    save_unchanged(archive, URL, T0 + 2 * HOUR)  # judge keeps the reason while nothing changes
    save_failure(archive, URL, T0 + 3 * HOUR, status=404)  # still flagged once gone, from the same time
    (flagged,) = archive.targets("suspicious")
    assert (flagged.status, flagged.suspicious_since) == ("gone", T0 + HOUR)
    assert archive.targets("gone") == [flagged]

    save_change(archive, URL, b"<p>the whole statement, restored</p>" * 200, T0 + 4 * HOUR)
    assert archive.state_of(URL).suspicious is None
    assert archive.targets("suspicious") == []
    assert {t.url: t.suspicious_since for t in archive.targets()} == {URL: None, OTHER: None}
    assert archive.status(T0 + 4 * HOUR).suspicious == 0


# -- a whole site at a time --------------------------------------------------------------------


def save_reappeared(archive, url: str, at) -> None:
    """Record a check that found a gone document back with the content it had."""
    state = archive.state_of(url)
    event = Event(DOCUMENT_REAPPEARED, url, at, new_sha256=state.current_sha256, status=200)
    outcome = Outcome(
        OutcomeKind.REAPPEARED,
        replace(state, status=Status.OK, consecutive_failures=0),
        (event,),
        seen_again=True,
    )
    body = archive.read(state.current_sha256)
    record_check(archive, url, fetched(url, body, at), outcome, at)


def site(archive, at, **kw) -> dict[str, tuple[int | None, object]]:
    return {e.url: (e.version.number if e.version else None, e.gone_since) for e in archive.site_at(at, **kw)}


def test_a_site_at_a_time_has_each_document_as_it_was_and_those_gone_by_then(archive):
    a, b, c, d, e = _urls(5)
    watch(archive, a, b, c, d, e)
    save_version(archive, a, b"a1", T0)
    save_version(archive, b, b"b1", T0 + HOUR)
    save_version(archive, d, b"d1", T0 + HOUR)
    save_version(archive, a, b"a2", T0 + 2 * HOUR)
    save_failure(archive, b, T0 + 3 * HOUR, status=404)  # disappeared
    watch(archive, a, b, c, e, now=T0 + 4 * HOUR)  # d no longer configured: its history still counts
    save_reappeared(archive, b, T0 + 5 * HOUR)
    save_version(archive, e, b"e1", T0 + 10 * HOUR)
    # c is never fetched: it has no version at any time

    assert site(archive, T0 - MINUTE) == {}
    assert site(archive, T0) == {a: (1, None)}
    assert site(archive, T0 + HOUR) == {a: (1, None), b: (1, None), d: (1, None)}
    assert site(archive, T0 + 3 * HOUR - MINUTE) == {a: (2, None), b: (1, None), d: (1, None)}
    assert site(archive, T0 + 3 * HOUR) == {a: (2, None), b: (1, T0 + 3 * HOUR), d: (1, None)}
    assert site(archive, T0 + 5 * HOUR) == {a: (2, None), b: (1, None), d: (1, None)}
    assert site(archive, T0 + 10 * HOUR) == {a: (2, None), b: (1, None), d: (1, None), e: (1, None)}
    (gone,) = [x for x in archive.site_at(T0 + 4 * HOUR) if x.gone_since is not None]
    assert (gone.url, gone.version.sha256, gone.version.first_seen) == (b, sha(b"b1"), T0 + HOUR)


def test_a_site_streams_in_batches_ordered_by_url(archive):
    urls = _urls(7)
    watch(archive, *urls)
    for i, url in enumerate(urls):
        save_version(archive, url, f"page {i}".encode(), T0)

    entries = archive.site_at(T0 + HOUR, batch=3)

    assert not isinstance(entries, list)
    assert [x.url for x in entries] == sorted(urls)
    assert [x.url for x in archive.site_at(T0, batch=7)] == sorted(urls)


# -- check retention ---------------------------------------------------------------------------


def test_pruning_checks_deletes_only_those_started_before_the_cut_in_batches(archive, engine):
    watch(archive, URL, OTHER)
    save_version(archive, URL, b"kept", T0)
    for i in range(1, 12):
        save_unchanged(archive, URL, T0 + i * MINUTE)
        save_failure(archive, OTHER, T0 + i * MINUTE, status=None)

    assert archive.prune_checks(T0 + 6 * MINUTE, batch=4) == 11  # T0, and minutes 1 to 5 of both

    checks = metadata.tables["checks"]
    with engine.connect() as conn:
        kept = conn.execute(select(checks.c.started_at)).scalars().all()
    assert len(kept) == 12
    assert min(kept) == T0 + 6 * MINUTE
    assert archive.prune_checks(T0 + 6 * MINUTE) == 0
    assert len(archive.history(URL).versions) == 1
    assert count(engine, "events") == 1


def test_a_follower_reads_the_events_after_its_last_sequence_number_in_chain_order(archive):
    watch(archive, URL, OTHER)
    save_version(archive, URL, b"<p>one</p>", T0)
    save_version(archive, OTHER, b"<p>other</p>", T0 + HOUR)
    save_version(archive, URL, b"<p>two</p>", T0 + 2 * HOUR)

    every = archive.events_after(0)
    page = archive.events_after(every[0].seq, limit=1)
    rest = archive.events_after(page[-1].seq)

    assert [(e.kind, e.url) for e in every] == [
        (DOCUMENT_NEW, URL),
        (DOCUMENT_NEW, OTHER),
        (DOCUMENT_CHANGED, URL),
    ]
    assert [e.seq for e in page + rest] == [e.seq for e in every[1:]]
    assert archive.events_after(every[-1].seq) == []


def test_a_snapshot_comes_back_with_the_response_headers_recorded_with_it(archive):
    watch(archive, URL)
    save_version(archive, URL, b"<p>one</p>", T0, etag='"v1"')
    save_version(archive, URL, b"<p>two</p>", T0 + HOUR, etag='"v2"')

    first = archive.snapshot(URL, "1")
    latest = archive.snapshot(URL)

    assert (first.version.number, first.headers["etag"]) == (1, '"v1"')
    assert (latest.version.number, latest.headers["etag"]) == (2, '"v2"')
    assert latest.headers["content-type"] == "text/html; charset=utf-8"
    with pytest.raises(UsageError):
        archive.snapshot(URL, "1", T0)
