"""Opening a store: the schema Alembic builds, migrating once, and clear errors when it cannot open."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError
from structlog.testing import capture_logs

from mirror import blobs, ledger, verify
from mirror.archive import Archive
from mirror.db import alembic_config, open_engine, run_in_transaction
from mirror.domain import Event, StoredEvent, Target
from mirror.errors import DatabaseUnavailable, StoreError
from mirror.events import DOCUMENT_NEW, STORE_MIGRATED
from mirror.tables import metadata
from tests.fixtures_store import T0, save_version, watch

HEAD = "0008"
URL = "https://www.prisoncensorship.info/archive/etext/wim/"


def schema_differences(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, metadata)


def revision(engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_the_migration_creates_exactly_the_schema_of_tables_py(engine):
    assert schema_differences(engine) == []
    assert revision(engine) == HEAD


def test_a_new_store_starts_its_event_chain_at_the_genesis_head(engine):
    with engine.connect() as conn:
        assert ledger.head(conn) == (0, ledger.GENESIS)


def test_opening_a_new_store_migrates_it_and_reopening_it_changes_nothing(database_url):
    from mirror.archive import Archive

    with capture_logs() as first_logs:
        engine = open_engine(database_url)
    try:
        watch(Archive(engine), URL)
        save_version(Archive(engine), URL, b"kept across upgrades", T0)
    finally:
        engine.dispose()

    with capture_logs() as second_logs:
        engine = open_engine(database_url)
    try:
        assert Archive(engine).version(URL).size == len(b"kept across upgrades")
        assert revision(engine) == HEAD
    finally:
        engine.dispose()

    migrated = [e for e in first_logs if e["event"] == STORE_MIGRATED]
    assert [(e["from_revision"], e["to_revision"]) for e in migrated] == [(None, HEAD)]
    assert [e for e in second_logs if e["event"] == STORE_MIGRATED] == []


OPEN_AND_CLOSE = "import sys; from mirror.db import open_engine; open_engine(sys.argv[1]).dispose()"


def test_three_processes_opening_a_new_store_at_once_migrate_it_once(database_url):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_CLOSE, database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    for p in processes:
        out, _ = p.communicate(timeout=60)
        outputs.append((p.returncode, out))

    assert [code for code, _ in outputs] == [0, 0, 0], outputs
    assert sum(out.count(STORE_MIGRATED) for _, out in outputs) == 1
    engine = open_engine(database_url, migrate=False)
    try:
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_a_store_migrated_by_a_newer_mirror_is_refused_in_one_line(engine, database_url):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    with pytest.raises(DatabaseUnavailable, match="cannot migrate the schema") as caught:
        open_engine(database_url)
    assert "9999" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_downgrade_to_nothing_and_upgrade_again_rebuilds_the_schema(engine):
    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "base")
    assert sorted(inspect(engine).get_table_names()) == ["alembic_version"]

    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), "head")
    assert schema_differences(engine) == []


def append_as_text(conn, target_id: int, event: Event, diff: str | None = None) -> None:
    """Append `event` to the chain as a mirror before 0008 did: its digests as hex text."""
    seq, prev = conn.execute(text("SELECT seq, hash FROM ledger_head")).one()
    seq += 1
    stored = StoredEvent(
        seq,
        event.kind,
        event.url,
        event.at,
        event.old_sha256,
        event.new_sha256,
        ledger.stored_details(event),
        diff,
        "",
    )
    digest = ledger.chain_hash(prev, stored)
    conn.execute(
        text(
            "INSERT INTO events (seq, target_id, url, at, kind, old_sha256, new_sha256, details, diff, "
            "prev_hash, hash) VALUES (:seq, :t, :url, :at, :kind, :old, :new, :details, :diff, :prev, :hash)"
        ),
        {
            "seq": seq,
            "t": target_id,
            "url": event.url,
            "at": event.at.replace(tzinfo=None),
            "kind": event.kind,
            "old": event.old_sha256,
            "new": event.new_sha256,
            "details": json.dumps(stored.details),
            "prev": prev,
            "hash": digest,
            "diff": None if diff is None else blobs.compress(diff.encode()),
        },
    )
    conn.execute(text("UPDATE ledger_head SET seq = :seq, hash = :hash"), {"seq": seq, "hash": digest})


def _store_at_0001(database_url):
    """Return an engine on a store migrated to 0001 only, holding one version recorded the 0001 way."""
    engine = open_engine(database_url, migrate=False)
    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), "0001")
    body = b"<html>stored before 0002</html>"
    digest, packed = hashlib.sha256(body).hexdigest(), blobs.compress(body)
    Archive(engine).sync_targets([Target(URL, timedelta(hours=1))], T0)

    def record(conn):
        conn.execute(
            text(
                "INSERT INTO blobs (sha256, size, stored_size, codec, chain_length, data, created_at) "
                "VALUES (:sha, :size, :stored, 'zstd', 0, :data, :at)"
            ),
            {"sha": digest, "size": len(body), "stored": len(packed), "data": packed, "at": T0},
        )
        target_id = conn.execute(text("SELECT id FROM targets")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO snapshots (target_id, version, sha256, size, first_seen, last_seen, "
                "http_status, headers) VALUES (:t, 1, :sha, :size, :at, :at, 200, '{}')"
            ),
            {"t": target_id, "sha": digest, "size": len(body), "at": T0},
        )
        conn.execute(
            text("UPDATE targets SET current_version = 1, current_sha256 = :sha, status = 'ok'"),
            {"sha": digest},
        )
        append_as_text(conn, target_id, Event(DOCUMENT_NEW, URL, T0, new_sha256=digest, status=200))

    run_in_transaction(engine, record)
    return engine, body


def test_upgrading_a_0001_store_keeps_its_data_and_new_versions_chain_onto_it(database_url):
    engine, body = _store_at_0001(database_url)
    try:
        with capture_logs() as logs:
            engine.dispose()
            engine = open_engine(database_url)
        assert [(e["from_revision"], e["to_revision"]) for e in logs if e["event"] == STORE_MIGRATED] == [
            ("0001", HEAD)
        ]
        assert schema_differences(engine) == []
        archive = Archive(engine)
        assert archive.read(archive.version(URL).sha256) == body
        assert archive.state_of(URL).suspicious is None
        assert archive.targets("suspicious") == []

        changed = body.replace(b"before", b"after")
        save_version(archive, URL, changed, T0 + timedelta(hours=1))
        with engine.connect() as conn:
            root, chained = conn.execute(
                text("SELECT root_sha256, base_sha256 FROM blobs ORDER BY chain_length")
            ).all()
        assert root == (
            hashlib.sha256(body).digest(),
            None,
        )  # the migration filled the root; binary since 0008
        assert chained == (root[0], root[0])  # the new version is a delta of the old one
        assert verify.run(engine).ok
    finally:
        engine.dispose()


def test_downgrading_to_0001_keeps_targets_and_versions(engine):
    watch(Archive(engine), URL)
    save_version(Archive(engine), URL, b"kept", T0)
    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "0001")
    assert revision(engine) == "0001"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT url FROM targets")).scalars().all() == [URL]
        assert conn.execute(text("SELECT count(*) FROM blobs")).scalar_one() == 1
    assert "suspicious" not in {c["name"] for c in inspect(engine).get_columns("targets")}


def test_a_snapshot_cannot_name_a_blob_that_is_not_stored(engine):
    snapshots = metadata.tables["snapshots"]
    targets = metadata.tables["targets"]

    def orphan(conn):
        target_id = conn.execute(
            targets.insert()
            .values(url=URL, host="x", interval_seconds=60, next_check_at=T0, created_at=T0)
            .returning(targets.c.id)
        ).scalar_one()
        conn.execute(
            snapshots.insert().values(
                target_id=target_id, version=1, sha256="0" * 64, size=1, first_seen=T0, last_seen=T0
            )
        )

    with pytest.raises(StoreError) as caught:
        run_in_transaction(engine, orphan)
    assert isinstance(caught.value.__cause__, IntegrityError)
    with engine.connect() as conn:
        assert conn.execute(select(targets.c.id)).all() == []


def test_the_engine_has_the_settings_of_its_backend(engine):
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            settings = [
                conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "foreign_keys")
            ]
            assert settings == ["wal", 1]
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        else:
            assert engine.dialect.driver == "psycopg"
            assert engine.pool._pre_ping
            assert conn.execute(text("SELECT 1")).scalar() == 1


def _unreachable(kind: str, tmp_path) -> str:
    if kind == "sqlite: folder is a file":
        (tmp_path / "plain-file").write_text("not a folder")
        return f"sqlite:///{tmp_path / 'plain-file' / 'mirror.db'}"
    if kind == "sqlite: database is a folder":
        (tmp_path / "a-folder").mkdir()
        return f"sqlite:///{tmp_path / 'a-folder'}"
    if kind == "postgresql: nothing listening":
        return "postgresql://mirror:s3cret-pass@127.0.0.1:1/archive"
    if kind == "not a URL":
        return "just some words"
    return "mysql://mirror:s3cret-pass@127.0.0.1/archive"


@pytest.mark.parametrize(
    "kind",
    [
        "sqlite: folder is a file",
        "sqlite: database is a folder",
        "postgresql: nothing listening",
        "not a URL",
        "unsupported backend",
    ],
)
def test_a_database_that_cannot_be_opened_is_database_unavailable_in_one_line(kind, tmp_path):
    url = _unreachable(kind, tmp_path)

    with pytest.raises(DatabaseUnavailable) as caught:
        open_engine(url)

    message = str(caught.value)
    assert "\n" not in message
    assert "s3cret-pass" not in message
    assert message.startswith("database ")
    assert len(message) < 400
    assert caught.value.__cause__ is None  # no SQLAlchemy traceback chained for the user


def test_the_head_revision_known_without_alembic_is_the_newest_migration():
    from alembic.script import ScriptDirectory

    from mirror.db import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_opening_a_migrated_store_does_not_import_alembic(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'm.db'}"
    code = (
        "import sys\nfrom mirror.db import open_engine\n"
        f"open_engine({url!r}).dispose()\n"
        "before = 'alembic' in sys.modules\n"
        "[sys.modules.pop(m) for m in list(sys.modules) if m.startswith('alembic')]\n"
        f"open_engine({url!r}).dispose()\n"
        "print(before, 'alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["True", "False"]


def test_upgrading_a_0002_store_gives_its_targets_the_states_and_counts_of_0003(database_url):
    engine = open_engine(database_url, migrate=False)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(alembic_config(conn), "0002")
        urls = [f"https://archive.example/{name}.html" for name in ("dropped", "never", "moved", "flaky")]
        Archive(engine).sync_targets([Target(u, timedelta(hours=1)) for u in urls], T0)
        checked = T0 + timedelta(hours=5)
        with engine.begin() as conn:
            for sql, url in [
                ("active = false, status = 'ok', current_version = 1, last_checked_at = :at", urls[0]),
                ("status = 'gone', consecutive_failures = 3", urls[1]),
                (
                    "status = 'moved', moved_to = :to, etag = '\"p\"', last_modified = 'Mon, 01 Jan 2024'",
                    urls[2],
                ),
                (
                    "status = 'failing', current_version = 1, consecutive_failures = 2, etag = '\"f\"'",
                    urls[3],
                ),
            ]:
                conn.execute(
                    text(f"UPDATE targets SET {sql} WHERE url = :url"),  # noqa: S608 - literals above
                    {"url": url, "at": checked, "to": "https://archive.example/q.html"},
                )
        engine.dispose()
        engine = open_engine(database_url)
        assert revision(engine) == HEAD
        assert schema_differences(engine) == []

        archive = Archive(engine)
        listed = {t.url: t for t in archive.targets()}
        assert [(listed[u].status, listed[u].unwatched_since) for u in urls] == [
            ("unwatched", checked),  # its last check is the last time we know it was watched
            ("unavailable", None),  # it never had a version: it did not disappear
            ("moved", None),
            ("failing", None),
        ]
        states = archive.states_of(urls)
        assert (states[urls[2]].etag, states[urls[2]].last_modified) == (None, None)  # asked afresh once
        assert (states[urls[3]].etag, states[urls[3]].missing_checks) == ('"f"', 2)
    finally:
        engine.dispose()


def test_downgrading_to_0002_keeps_targets_and_gives_unavailable_ones_the_old_state(engine):
    watch(Archive(engine), URL)
    with engine.begin() as conn:
        conn.execute(text("UPDATE targets SET status = 'unavailable', missing_checks = 2"))
    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT url, status FROM targets")).all() == [(URL, "gone")]
    assert "unwatched_since" not in {c["name"] for c in inspect(engine).get_columns("targets")}


def test_upgrading_a_0003_store_keeps_its_runs_and_checks_and_adds_their_new_columns(database_url):
    engine = open_engine(database_url)
    try:
        archive = Archive(engine)
        watch(archive, URL)
        save_version(archive, URL, b"kept across upgrades", T0)
        with engine.connect() as conn, conn.begin():
            command.downgrade(alembic_config(conn), "0003")  # a store as 0003 left it, with a check
        with engine.begin() as conn:
            conn.execute(text("UPDATE targets SET status = 'failing', missing_checks = 2"))
        engine.dispose()
        engine = open_engine(database_url)
        assert revision(engine) == HEAD
        assert schema_differences(engine) == []
        state = Archive(engine).states_of([URL])[URL]
        # The run goes on; its start was never recorded, so it counts from its next check.
        assert (state.status, state.missing_checks, state.missing_since) == ("failing", 2, None)
        with engine.connect() as conn:
            checks = conn.execute(text("SELECT outcome, evidence_sha256 FROM checks")).all()
        assert checks and all(row.evidence_sha256 is None for row in checks)
        assert Archive(engine).version(URL).size == len(b"kept across upgrades")
    finally:
        engine.dispose()


def test_downgrading_to_0003_gives_blocked_targets_the_states_a_wall_had_before(engine):
    watch(Archive(engine), URL, "https://archive.example/never.html")
    save_version(Archive(engine), URL, b"a version", T0)
    with engine.begin() as conn:
        conn.execute(text("UPDATE targets SET status = 'blocked', missing_since = created_at"))
    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "0003")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT url, status FROM targets ORDER BY url")).all()
    assert rows == [("https://archive.example/never.html", "unavailable"), (URL, "failing")]
    assert "missing_since" not in {c["name"] for c in inspect(engine).get_columns("targets")}
    assert "evidence_sha256" not in {c["name"] for c in inspect(engine).get_columns("checks")}


def test_the_event_chain_goes_to_binary_digests_and_back_and_still_verifies(engine):
    archive = Archive(engine)
    watch(archive, URL)
    save_version(archive, URL, b"<p>first</p>", T0)
    save_version(archive, URL, b"<p>second</p>", T0 + timedelta(hours=1), diff="-first\n+second\n")
    before = archive.history(URL).events
    head = verify.head(engine)
    raw = text(
        "SELECT e.old_sha256, e.new_sha256, e.prev_hash, e.hash, s.sha256, b.sha256, b.base_sha256, "
        "b.root_sha256, t.current_sha256 FROM events AS e JOIN snapshots AS s ON s.sha256 = e.new_sha256 "
        "JOIN blobs AS b ON b.sha256 = s.sha256 JOIN targets AS t ON t.id = s.target_id ORDER BY e.seq"
    )
    with engine.connect() as conn:
        stored = conn.execute(raw).all()
    assert len(stored) == 2
    assert {len(v) for row in stored for v in row if v is not None} == {32}  # bytes, not 64 hex digits

    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "0007")
    with engine.connect() as conn:
        hexed = conn.execute(raw).all()
        assert conn.execute(text("SELECT hash FROM ledger_head")).scalar_one() == head[1]
    assert hexed == [tuple(None if v is None else bytes(v).hex() for v in row) for row in stored]

    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), "head")
    assert schema_differences(engine) == []
    assert archive.history(URL).events == before
    assert verify.head(engine) == head
    report = verify.run(engine)
    assert report.ok, report.problems
    assert report.events == 2
