"""Checks recorded in batches: one transaction per batch, one writer thread, states loaded at once."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from mirror import blobs, ledger, recording
from mirror.blobs import DeltaBase
from mirror.check import Checker
from mirror.dictionaries import HostBases
from mirror.diff import TEXTS
from mirror.domain import (
    DetectPolicy,
    Event,
    FetchFailure,
    FetchLimits,
    Outcome,
    OutcomeKind,
    Status,
    Target,
    TargetState,
)
from mirror.errors import StoreError, TargetNotFound
from mirror.events import (
    CHECK_SUPERSEDED,
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_MOVED,
    DOCUMENT_NEW,
)
from mirror.packing import Packer
from mirror.politeness import HostGate
from mirror.rounds import run_round
from mirror.tables import metadata
from mirror.writer import BatchWriter
from tests.fixtures_store import (
    HOUR,
    T0,
    fetched,
    pack_check,
    record_check,
    save_failure,
    save_version,
    sha,
    watch,
)
from tests.test_store import count

URL = "https://archive.example.org/etext/a.html"
OTHER = "https://archive.example.org/etext/b.html"


def new_version(archive, url: str, body: bytes, number: int, at: datetime = T0):
    """Return a prepared check that found `body` as version `number` of `url` (judged from a stale state)."""
    state = TargetState(Status.OK, sha(body), number, "text/html")
    event = Event(DOCUMENT_NEW if number == 1 else DOCUMENT_CHANGED, url, at, new_sha256=sha(body))
    outcome = Outcome(OutcomeKind.NEW, state, (event,), new_version=True)
    return pack_check(archive, url, fetched(url, body, at), outcome, at, worker="test")


def test_states_of_many_targets_come_back_in_one_call_as_state_of_gives_them(archive):
    watch(archive, URL, OTHER, "https://archive.example.org/never-checked.html")
    save_version(archive, URL, b"<p>one</p>", T0)
    save_failure(archive, OTHER, T0, status=None)

    states = archive.states_of([URL, OTHER, "https://archive.example.org/never-checked.html"])

    assert states == {u: archive.state_of(u) for u in states}
    assert states[URL].current_version == 1 and states[URL].content_type == "text/html; charset=utf-8"
    assert states[OTHER].consecutive_failures == 1
    with pytest.raises(TargetNotFound):
        archive.states_of([URL, "https://archive.example.org/not-a-target.html"])


def test_a_batch_is_one_transaction_with_every_check_its_events_chained_in_order(archive, engine):
    watch(archive, URL, OTHER)
    records = [new_version(archive, URL, b"<p>a</p>", 1), new_version(archive, OTHER, b"<p>b</p>", 1)]

    stored = archive.record_many(records)

    assert [[e.seq for e in events] for events in stored] == [[1], [2]]
    assert [count(engine, t) for t in ("blobs", "snapshots", "checks", "events")] == [2, 2, 2, 2]
    with engine.connect() as conn:
        entries = list(ledger.walk(conn))
        assert ledger.head(conn) == (2, entries[-1].event.hash)
    assert all(ledger.chain_hash(e.prev_hash, e.event) == e.event.hash for e in entries)


def test_a_check_judged_against_a_state_the_store_has_moved_past_records_nothing(archive, engine):
    watch(archive, URL)
    # Both were judged against the same state (no version yet), as two processes would:
    # the first is version 1; the second, in the same batch or a later one, is superseded.
    first, second, third = (new_version(archive, URL, f"<p>{n}</p>".encode(), 1) for n in range(3))
    in_one = archive.record_many([first, second])
    later = archive.record_many([third])

    assert (len(in_one[0]), in_one[1], later) == (1, None, [None])
    h = archive.history(URL)
    assert [(v.number, v.sha256) for v in h.versions] == [(1, sha(b"<p>0</p>"))]
    assert [e.kind for e in h.events] == [DOCUMENT_NEW]
    assert (count(engine, "checks"), count(engine, "snapshots")) == (1, 1)


def test_the_writer_logs_each_superseded_check_with_the_version_it_was_judged_against(archive):
    watch(archive, URL)
    first, second, third = (new_version(archive, URL, f"<p>{n}</p>".encode(), 1) for n in range(3))
    written: list[object] = []
    with capture_logs() as logs, BatchWriter(archive, max_wait=5.0) as writer:
        writer.submit(first, written.append)
        writer.submit(second, written.append)
        writer.flush()  # one batch: the first is version 1, the second superseded within it
        writer.submit(third, written.append)
        writer.flush()

    assert [events is None for events in written] == [False, True, True]
    superseded = [e for e in logs if e["event"] == CHECK_SUPERSEDED]
    assert [(e["url"], e["outcome"], e["judged_version"]) for e in superseded] == [(URL, "new", 0)] * 2
    assert [e["log_level"] for e in superseded] == ["warning"] * 2


def test_content_equal_to_the_latest_version_is_never_recorded_as_a_new_one(archive):
    watch(archive, URL)
    save_version(archive, URL, b"<p>one</p>")
    # A check that says "changed" to the very content the store holds now (judged from a
    # state whose sha256 was not the store's): no version 2, no `document.changed`.
    (stored,) = archive.record_many([new_version(archive, URL, b"<p>one</p>", 2)])

    assert stored is None
    assert [v.number for v in archive.history(URL).versions] == [1]
    assert [e.kind for e in archive.history(URL).events] == [DOCUMENT_NEW]


def test_two_checks_judged_from_one_state_make_a_document_disappear_once(archive):
    watch(archive, URL)
    save_version(archive, URL, b"<p>one</p>")
    state = archive.state_of(URL)
    event = Event(DOCUMENT_DISAPPEARED, URL, T0, old_sha256=state.current_sha256, status=404)
    outcome = Outcome(
        OutcomeKind.DISAPPEARED, replace(state, status=Status.GONE, consecutive_failures=1), (event,)
    )
    result = fetched(URL, None, T0, status=404, error=FetchFailure("http", "HTTP 404"))
    first, second = (
        pack_check(archive, URL, result, outcome, T0, worker=w, judged=state) for w in ("a", "b")
    )

    assert archive.record_many([first]) != [None]
    assert archive.record_many([second]) == [None]  # no version changed, but the state it read did
    assert [e.kind for e in archive.history(URL).events] == [DOCUMENT_NEW, DOCUMENT_DISAPPEARED]
    assert archive.state_of(URL).consecutive_failures == 1


def test_processes_recording_one_target_from_one_state_at_once_write_one_version(archive):
    watch(archive, URL)
    records = [new_version(archive, URL, f"<p>writer {n}</p>".encode(), 1) for n in range(4)]
    start = threading.Barrier(len(records))
    results: list[object] = []

    def write(record) -> None:
        start.wait(5)
        try:
            results.extend(archive.record_many([record]))
        except Exception as exc:  # a unique-constraint error on PostgreSQL, before the fix
            results.append(exc)

    threads = [threading.Thread(target=write, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert [r for r in results if not isinstance(r, list)] == [None, None, None]  # superseded
    assert [v.number for v in archive.history(URL).versions] == [1]
    assert archive.state_of(URL).current_version == 1


def test_recording_frees_only_the_lease_its_own_process_holds(archive, engine):
    watch(archive, URL, OTHER)
    now = datetime.now(UTC)
    (mine,) = archive.claim("me", [URL], now, HOUR)
    (theirs,) = archive.claim("them", [OTHER], now, HOUR)
    records = [
        pack_check(
            archive,
            u,
            fetched(u, b"<p>x</p>"),
            new_version(archive, u, b"<p>x</p>", 1).outcome,
            T0,
            worker="me",
        )
        for u in (URL, OTHER)
    ]
    archive.record_many(records)

    with engine.connect() as conn:
        leases = dict(
            conn.execute(
                select(metadata.tables["targets"].c.url, metadata.tables["targets"].c.lease_owner)
            ).all()
        )
    assert leases == {URL: None, OTHER: "them"}
    assert (mine.url, theirs.url) == (URL, OTHER)


def test_the_same_new_bytes_in_one_batch_are_one_blob(archive, engine):
    watch(archive, URL, OTHER)
    archive.record_many([new_version(archive, u, b"<p>same</p>", 1) for u in (URL, OTHER)])
    assert (count(engine, "blobs"), count(engine, "snapshots")) == (1, 2)


def test_a_failure_mid_batch_leaves_nothing_of_the_batch(archive, engine, monkeypatch):
    watch(archive, URL, OTHER)
    records = [new_version(archive, u, f"<p>{u}</p>".encode(), 1) for u in (URL, OTHER)]

    def boom(*args, **kwargs):
        raise RuntimeError("crash while appending to the ledger")

    monkeypatch.setattr(ledger, "append", boom)
    with pytest.raises(RuntimeError):
        archive.record_many(records)

    assert [count(engine, t) for t in ("blobs", "snapshots", "checks", "events")] == [0, 0, 0, 0]
    assert archive.state_of(URL) == archive.state_of(OTHER) == TargetState()


def test_the_writer_commits_batches_and_tells_each_check_after_its_commit(archive, engine):
    watch(archive, URL, OTHER)
    told: list[tuple[str, int | None]] = []

    def done(url):
        return lambda stored: told.append((url, None if stored is None else len(stored)))

    with BatchWriter(archive, max_batch=10, max_wait=5.0) as writer:
        for url in (URL, OTHER):
            writer.submit(new_version(archive, url, f"<p>{url}</p>".encode(), 1), done(url))
        writer.flush()  # does not wait for max_wait
        assert sorted(told) == [(URL, 1), (OTHER, 1)]
        assert writer.written == 2
    assert count(engine, "checks") == 2


def test_a_check_that_cannot_be_written_spoils_only_itself(archive, engine):
    watch(archive, URL)
    told: dict[str, object] = {}
    stranger = "https://archive.example.org/not-a-target.html"
    good = new_version(archive, URL, b"<p>good</p>", 1)
    bad = recording.CheckRecord(
        stranger, fetched(stranger, None), Outcome(OutcomeKind.FAILED, TargetState()), T0
    )

    with capture_logs() as logs, BatchWriter(archive, max_wait=5.0) as writer:
        writer.submit(bad, lambda stored: told.setdefault("bad", stored))
        writer.submit(good, lambda stored: told.setdefault("good", stored))
        writer.flush()

    assert told["bad"] is None and len(told["good"]) == 1
    assert count(engine, "checks") == 1
    assert [e["url"] for e in logs if e["event"] == "check.crashed"] == [stranger]


def test_a_store_error_stops_the_writer_and_every_later_submit_says_so(archive, monkeypatch):
    watch(archive, URL)
    stopped: list[StoreError] = []

    def unavailable(records):
        raise StoreError("database went away")

    monkeypatch.setattr(archive, "record_many", unavailable)
    writer = BatchWriter(archive, max_wait=0.01, on_error=stopped.append)
    writer.start()
    try:
        writer.submit(new_version(archive, URL, b"<p>lost</p>", 1))
        with pytest.raises(StoreError):
            writer.flush()
        with pytest.raises(StoreError):
            writer.submit(new_version(archive, URL, b"<p>also lost</p>", 1))
    finally:
        writer.close()
    assert [str(e) for e in stopped] == ["database went away"]


def test_a_round_records_every_check_and_logs_events_after_their_batch(site, archive):
    paths = [f"/etext/round/{i}.html" for i in range(40)]
    for path in paths:
        site.put(path, f"<html><body><p>{path}</p></body></html>".encode())
    targets = [Target(site.url(p), HOUR) for p in paths]
    archive.sync_targets(targets, datetime.now(UTC))
    checker = Checker(archive, FetchLimits(timeout=5.0, retries=0), DetectPolicy(), HostGate(8, 0.0))
    try:
        with capture_logs() as logs:
            report = run_round(checker, archive.active_targets(), 8)
    finally:
        checker.close()

    assert report.counts == {"new": 40}
    assert sorted(e["url"] for e in logs if e["event"] == DOCUMENT_NEW) == sorted(t.url for t in targets)
    assert archive.status(datetime.now(UTC)).versions == 40
    assert all(archive.state_of(t.url).current_version == 1 for t in targets)


def test_a_store_error_in_the_writer_stops_the_round(site, archive, monkeypatch):
    site.put("/etext/stop.html", b"<html><body><p>stop</p></body></html>")
    archive.sync_targets([Target(site.url("/etext/stop.html"), HOUR)], datetime.now(UTC))
    checker = Checker(archive, FetchLimits(timeout=5.0, retries=0), DetectPolicy(), HostGate(8, 0.0))

    def unavailable(records):
        raise StoreError("disk full")

    monkeypatch.setattr(archive, "record_many", unavailable)
    try:
        with pytest.raises(StoreError, match="disk full"):
            run_round(checker, archive.active_targets(), 2)
    finally:
        checker.close()


def test_the_second_change_of_a_page_renders_only_its_new_body(site, archive):
    url = site.url("/etext/twice.html")
    (target,) = [Target(url, HOUR)]
    archive.sync_targets([target], datetime.now(UTC))
    checker = Checker(archive, FetchLimits(timeout=5.0, retries=0), DetectPolicy(), HostGate(4, 0.0))
    outcomes = []
    try:
        for words in ("first words", "second words", "third words"):
            site.put("/etext/twice.html", f"<html><body><p>{words}</p><p>menu</p></body></html>".encode())
            hits = TEXTS.hits
            outcomes.append((checker.check_one(target).outcome, TEXTS.hits - hits))
    finally:
        checker.close()
    # The first change renders both sides; the second finds the old side's text kept.
    assert outcomes == [("new", 0), ("changed", 0), ("changed", 1)]


def test_threads_submitting_at_once_all_get_written(archive):
    urls = [f"https://archive.example.org/etext/t{i}.html" for i in range(30)]
    watch(archive, *urls)
    with BatchWriter(archive, max_batch=7) as writer:
        threads = [
            threading.Thread(target=writer.submit, args=(new_version(archive, u, u.encode(), 1),))
            for u in urls
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        writer.flush()
        assert writer.written == 30
    assert all(archive.state_of(u).current_version == 1 for u in urls)


def test_a_new_page_is_stored_as_a_delta_against_a_page_of_its_site_and_reads_back_exact(
    site, archive, engine
):
    menu = "".join(
        f"<li><a href='/etext/{i}.html'>Issue {i} of the archive newsletter</a></li>" for i in range(300)
    )
    page = "<html><body><ul>{}</ul><p>{}: own words.</p></body></html>"
    bodies = {f"/etext/site/{n}.html": page.format(menu, n).encode() for n in ("first", "second", "third")}
    for path, body in bodies.items():
        site.put(path, body)
    targets = [Target(site.url(p), HOUR) for p in bodies]
    archive.sync_targets(targets, datetime.now(UTC))
    checker = Checker(archive, FetchLimits(timeout=5.0, retries=0), DetectPolicy(), HostGate(4, 0.0))
    try:
        for target in targets:  # one at a time: a base serves only once it is committed
            checker.check_one(target)
    finally:
        checker.close()

    blobs_table = metadata.tables["blobs"]
    with engine.connect() as conn:
        rows = {r.sha256: r for r in conn.execute(select(blobs_table))}
    first, *others = [rows[sha(b)] for b in bodies.values()]
    assert first.codec == "zstd"
    assert all(
        r.codec == "zstd-delta" and r.base_sha256 == first.sha256 and r.chain_length == 1 for r in others
    )
    assert all(r.stored_size < first.stored_size / 4 for r in others)  # the menu is stored once
    assert [archive.read(sha(b)) for b in bodies.values()] == list(bodies.values())


def test_a_page_whose_shared_base_was_never_written_is_stored_with_its_base(archive, engine):
    # A site's base is offered once queued; should its own check never be written (superseded),
    # the page packed against it carries the base's whole blob, and the store writes it first.
    watch(archive, URL)
    never = b"<html><body><ul>" + b"<li>menu entry</li>" * 500 + b"</ul></body></html>"
    body = never.replace(b"</ul>", b"</ul><p>its own words</p>")
    bases = HostBases()
    bases.offer("https://archive.example.org/other", "text/html", blobs.pack(never), never)
    state = TargetState(Status.OK, sha(body), 1, "text/html")
    outcome = Outcome(OutcomeKind.NEW, state, (Event(DOCUMENT_NEW, URL, T0, new_sha256=sha(body)),), True)
    record = Packer(archive, bases).record(URL, fetched(URL, body), outcome, T0)
    assert record.blob is not None and record.blob.codec == blobs.ZSTD_DELTA

    archive.record_many([record])

    blobs_table = metadata.tables["blobs"]
    with engine.connect() as conn:
        rows = {
            r.sha256: r
            for r in conn.execute(
                select(blobs_table.c.sha256, blobs_table.c.codec, blobs_table.c.base_sha256)
            )
        }
    assert (rows[sha(never)].codec, rows[sha(never)].base_sha256) == (blobs.ZSTD, None)
    assert (rows[sha(body)].codec, rows[sha(body)].base_sha256) == (blobs.ZSTD_DELTA, sha(never))
    assert archive.read(sha(body)) == body


def test_the_store_refuses_a_delta_whose_base_it_has_not_got_and_writes_nothing(archive, engine):
    # The store stores, it never packs: a delta against a base neither stored, nor in the
    # batch, nor carried with it cannot be read back, so the batch is refused whole.
    watch(archive, URL)
    never = b"<html><body><ul>" + b"<li>menu entry</li>" * 500 + b"</ul></body></html>"
    body = never.replace(b"</ul>", b"</ul><p>its own words</p>")
    base = DeltaBase(sha(never), len(never), 0, sha(never), level=blobs.ZSTD_LEVEL)
    state = TargetState(Status.OK, sha(body), 1, "text/html")
    outcome = Outcome(OutcomeKind.NEW, state, (Event(DOCUMENT_NEW, URL, T0, new_sha256=sha(body)),), True)
    packed = blobs.pack(body, base=base, base_bytes=never)
    assert packed.base_sha256 == sha(never)
    record = recording.CheckRecord(URL, fetched(URL, body), outcome, T0, blob=packed)

    with pytest.raises(StoreError, match=r"its delta base \w+ is not stored"):
        archive.record_many([record])

    assert archive.history(URL).versions == []
    assert count(engine, "blobs") == 0


def test_a_copy_of_a_pdf_under_another_folder_costs_bytes_and_another_pdf_is_not_a_delta_of_it(
    site, archive, engine
):
    report = b"%PDF-1.4\n" + bytes(range(256)) * 200 + b"\n%%EOF\n"  # 51 KB, barely compressible
    other = b"%PDF-1.4\n" + bytes(reversed(range(256))) * 150 + b"\n%%EOF\n"
    bodies = {
        "/2019/report.pdf": report,
        "/archive/report.pdf": report + b"%re-uploaded\n",  # the same file with a new trailer
        "/archive/minutes.pdf": other,
    }
    for path, body in bodies.items():
        site.put(path, body, content_type="application/pdf")
    targets = [Target(site.url(p), HOUR) for p in bodies]
    archive.sync_targets(targets, datetime.now(UTC))
    checker = Checker(archive, FetchLimits(timeout=5.0, retries=0), DetectPolicy(), HostGate(4, 0.0))
    try:
        for target in targets:
            checker.check_one(target)
    finally:
        checker.close()

    blobs_table = metadata.tables["blobs"]
    with engine.connect() as conn:
        rows = {r.sha256: r for r in conn.execute(select(blobs_table))}
    first, copy, minutes = (rows[sha(b)] for b in bodies.values())
    assert (first.codec, copy.codec, copy.base_sha256) == ("zstd", "zstd-delta", first.sha256)
    assert copy.stored_size < 100
    assert (minutes.codec, minutes.base_sha256) == ("zstd", None)  # tried against nothing
    assert [archive.read(sha(b)) for b in bodies.values()] == list(bodies.values())


def test_binaries_kept_as_bases_by_name_stay_within_their_memory_budget():
    bases = HostBases(named_budget=100_000)
    for n in range(10):
        body = bytes([n]) * 30_000
        packed = blobs.pack(body)
        bases.offer(f"https://archive.example.org/{n}/scan-{n}.pdf", "application/pdf", packed, body)

    kept = [n for n in range(10) if bases.base_for(f"https://x.org/{n}/scan-{n}.pdf", "application/pdf")]
    found = [
        n
        for n in range(10)
        if bases.base_for(f"https://archive.example.org/copy/scan-{n}.pdf", "application/pdf")
    ]
    assert kept == []  # another host
    assert found == [7, 8, 9]  # the three most recent fit in 100,000 bytes


def test_each_version_event_announces_the_number_and_snapshot_the_store_gave_it(archive, engine):
    from mirror import verify

    watch(archive, URL)
    save_version(archive, URL, b"<p>one</p>", T0)
    # Two checks judged against the same state (v1) both say "version 2": the store makes v2 from the
    # first; the second is superseded (judged against a state the store has moved past) and writes nothing.
    records = []
    for body in (b"<p>two</p>", b"<p>three</p>"):
        event = Event(DOCUMENT_CHANGED, URL, T0, new_sha256=sha(body), status=200, details={"version": 2})
        judged = TargetState(Status.OK, sha(body), 2, "text/html")
        outcome = Outcome(OutcomeKind.CHANGED, judged, (event,), new_version=True)
        records.append(pack_check(archive, URL, fetched(URL, body, T0), outcome, T0 + HOUR, worker="test"))

    assert [r is None for r in archive.record_many(records)] == [False, True]

    history = archive.history(URL)
    for version, event in zip(history.versions, history.events, strict=True):
        assert event.new_sha256 == version.sha256
        assert event.details["version"] == version.number
        assert event.details["size"] == version.size
        assert event.details["first_seen"] == ledger.iso_time(version.first_seen)
        assert event.details["http_status"] == version.status
        assert event.details["content_type"] == version.content_type
        assert event.details["final_url"] == version.final_url
    assert [e.details["version"] for e in history.events] == [1, 2]
    assert [v.sha256 for v in history.versions] == [sha(b"<p>one</p>"), sha(b"<p>two</p>")]
    assert verify.run(engine).ok


def test_a_check_judged_before_another_made_a_version_leaves_the_latest_content_alone(archive, engine):
    from mirror import verify

    watch(archive, URL)
    save_version(archive, URL, b"<p>one</p>", T0)
    judged = archive.state_of(URL)  # an unchanged check judged now, written after v2
    save_version(archive, URL, b"<p>two</p>", T0 + HOUR)
    outcome = Outcome(OutcomeKind.UNCHANGED, judged, seen_again=True)
    record_check(archive, URL, fetched(URL, b"<p>one</p>", T0), outcome, T0 + 2 * HOUR, worker="test")

    assert archive.state_of(URL).current_sha256 == sha(b"<p>two</p>")
    assert verify.run(engine).ok


def test_a_version_made_by_a_move_alone_is_announced_by_the_move(archive, engine):
    from mirror import verify

    watch(archive, URL)
    save_version(archive, URL, b"<p>one</p>", T0)
    body = b"<p>served elsewhere now</p>"
    moved = Event(DOCUMENT_MOVED, URL, T0 + HOUR, new_sha256=sha(body), details={"to": OTHER})
    outcome = Outcome(OutcomeKind.MOVED, TargetState(Status.MOVED, sha(body), 2), (moved,), new_version=True)
    record_check(archive, URL, fetched(URL, body, T0 + HOUR), outcome, T0 + HOUR, worker="test")

    event = archive.history(URL).events[-1]
    assert (event.kind, event.details["version"], event.details["size"]) == (DOCUMENT_MOVED, 2, len(body))
    assert verify.run(engine).ok


CEST = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("at", "written"),
    [
        (datetime(2026, 12, 3, 11, 40, 17, 218780, tzinfo=UTC), "2026-12-03T11:40:17.218780Z"),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-01T00:00:00.000000Z"),
        (
            datetime(2026, 3, 29, 2, 30, 0, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-03-29T00:30:00.000005Z",
        ),
        (datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), "999-12-31T23:59:59.000000Z"),
    ],
)
def test_the_chain_writes_times_as_it_always_has(at, written):
    # The hash of every stored event covers this text: verify recomputes it from the row's time.
    assert ledger.iso_time(at) == written
