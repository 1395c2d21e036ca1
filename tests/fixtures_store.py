"""Store fixtures: one test body per backend (SQLite file, throwaway PostgreSQL database).

`database_url` is parametrised over `sqlite` (a file in `tmp_path`) and `postgresql`
(marked `postgres`): a database of its own for the test session, created on
127.0.0.1:5432 and dropped at the end, with a clean schema for every test. When
PostgreSQL is unreachable those cases skip with the reason, or fail under CI=true.

Helpers at the bottom record checks the way `check.check_one` does, so store
tests read as a document's life: `save_version`, `save_unchanged`, `save_failure`.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import Engine

from mirror.archive import Archive, CheckRecord
from mirror.db import open_engine
from mirror.domain import (
    ChangeDiff,
    Event,
    FetchFailure,
    FetchResult,
    Outcome,
    OutcomeKind,
    Status,
    StoredEvent,
    Target,
    TargetState,
)
from mirror.events import DOCUMENT_CHANGED, DOCUMENT_DISAPPEARED, DOCUMENT_NEW
from mirror.packing import Packer, pack_alone
from mirror.reader import Reader

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_USERS = ("postgres", "root")
PG_ADMIN_DATABASE = "test"  # exists on the test machines; we only create and drop beside it

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class PostgresDatabase:
    user: str
    name: str

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@{PG_HOST}:{PG_PORT}/{self.name}"

    def connect(self, dbname: str | None = None) -> psycopg.Connection:
        return psycopg.connect(
            host=PG_HOST,
            port=PG_PORT,
            user=self.user,
            dbname=dbname or self.name,
            autocommit=True,
            connect_timeout=5,
        )

    def reset(self) -> None:
        """Empty the database. Measured: reset and migrate ~50 ms; a database per test ~80 ms more."""
        with self.connect() as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")


def _admin_connection() -> tuple[str, psycopg.Connection]:
    problems = []
    for user in PG_USERS:
        try:
            conn = psycopg.connect(
                host=PG_HOST,
                port=PG_PORT,
                user=user,
                dbname=PG_ADMIN_DATABASE,
                autocommit=True,
                connect_timeout=3,
            )
        except psycopg.Error as exc:
            problems.append(f"as {user}: {' '.join(str(exc).split())}")
            continue
        return user, conn
    reason = f"PostgreSQL unreachable on {PG_HOST}:{PG_PORT} ({'; '.join(problems)})"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """A throwaway database for this test session, dropped (WITH (FORCE)) at its end."""
    user, admin = _admin_connection()
    database = PostgresDatabase(user, f"mirror_test_{uuid.uuid4().hex[:12]}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database.name)))
    try:
        yield database
    finally:
        with database.connect(PG_ADMIN_DATABASE) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database.name))
            )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL of an empty store: a SQLite file in tmp_path, or a clean PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'mirror.db'}"
    database: PostgresDatabase = request.getfixturevalue("postgres_database")
    database.reset()
    return database.url


@pytest.fixture
def engine(database_url):
    """A migrated engine; the test must give every connection back."""
    engine = open_engine(database_url)
    try:
        yield engine
        assert engine.pool.checkedout() == 0, "a connection was not returned to the pool"
    finally:
        engine.dispose()


@pytest.fixture
def archive(engine) -> Archive:
    return Archive(engine)


# -- recording checks the way check.check_one does -----------------------------------------------


def engine_of(store: Reader) -> Engine:
    """Return the engine inside a store: for tests that tamper with rows in SQL, and only them."""
    return store._engine


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key(digest: str) -> bytes:
    """Return a hex SHA-256 as the store keeps it in its rows (its 32 bytes), for tests that write SQL."""
    return bytes.fromhex(digest)


def watch(archive: Archive, *urls: str, interval: timedelta = HOUR, now: datetime = T0) -> list[str]:
    """Configure `urls` as targets; return them."""
    archive.sync_targets([Target(u, interval) for u in urls], now)
    return list(urls)


def fetched(
    url: str,
    body: bytes | None,
    at: datetime = T0,
    *,
    status: int | None = 200,
    content_type: str = "text/html; charset=utf-8",
    error: FetchFailure | None = None,
    etag: str | None = None,
) -> FetchResult:
    headers = {"content-type": content_type} if body is not None else {}
    if etag:
        headers["etag"] = etag
    return FetchResult(
        url=url,
        final_url=url,
        status=status,
        headers=headers,
        body=body,
        body_sha256=sha(body) if body is not None else None,
        error=error,
        started_at=at,
        elapsed=0.125,
    )


def save_version(
    archive: Archive,
    url: str,
    body: bytes,
    at: datetime = T0,
    *,
    diff: str = "",
    etag: str | None = None,
    content_type: str = "text/html; charset=utf-8",
    details: dict[str, Any] | None = None,
    suspicious: str | None = None,
) -> list[StoredEvent]:
    """Record a check that found `body` as the next version of `url` (document.new or document.changed).

    `details` are added to a `document.changed` event's (a `significance`, `suspicious`).
    """
    state = archive.state_of(url)
    result = fetched(url, body, at, etag=etag, content_type=content_type)
    number = state.current_version + 1
    if state.current_version == 0:
        kind = OutcomeKind.NEW
        event = Event(DOCUMENT_NEW, url, at, new_sha256=sha(body), status=200, details={"size": len(body)})
    else:
        kind = OutcomeKind.CHANGED
        event = Event(
            DOCUMENT_CHANGED,
            url,
            at,
            old_sha256=state.current_sha256,
            new_sha256=sha(body),
            status=200,
            details={"version": number, "lines_added": 1, "lines_removed": 1, **(details or {})},
        )
    new_state = TargetState(
        status=Status.OK,
        current_sha256=sha(body),
        current_version=number,
        content_type=result.content_type,
        etag=etag,
        suspicious=suspicious,
    )
    changed = ChangeDiff(0, len(body), True, 1, 1, diff) if diff else None
    outcome = Outcome(
        kind, new_state, (event,), new_version=True, diff_from=state.current_sha256, diff=changed
    )
    return record_check(archive, url, result, outcome, at, worker="test")


def record_check(
    archive: Archive,
    url: str,
    result: FetchResult,
    outcome: Outcome,
    at: datetime,
    *,
    worker: str | None = None,
    next_check_in: timedelta | None = None,
) -> list[StoredEvent]:
    """Record one check alone, packed as the checker packs it; return its events (none when superseded)."""
    record = pack_alone(
        archive, archive.state_of, url, result, outcome, at, worker=worker, next_check_in=next_check_in
    )
    return archive.record_many([record])[0] or []


def pack_check(
    archive: Archive, url: str, result: FetchResult, outcome: Outcome, at: datetime, **kw: Any
) -> CheckRecord:
    """Return one check packed against the stored versions, ready for `record_many`."""
    return Packer(archive).record(url, result, outcome, at, **kw)


def save_unchanged(archive: Archive, url: str, at: datetime) -> list[StoredEvent]:
    """Record a check that found the current version again."""
    state = archive.state_of(url)
    body = archive.read(state.current_sha256) if state.current_sha256 else b""
    outcome = Outcome(OutcomeKind.UNCHANGED, replace(state, status=Status.OK), seen_again=True)
    return record_check(archive, url, fetched(url, body, at), outcome, at, worker="test")


def save_failure(archive: Archive, url: str, at: datetime, *, status: int | None = 404) -> list[StoredEvent]:
    """Record a failed check: a 404 makes a present document disappear at once."""
    state = archive.state_of(url)
    error = FetchFailure("http", f"HTTP {status}") if status else FetchFailure("timeout", "no answer in 30s")
    failures = state.consecutive_failures + 1
    gone = status == 404 and state.current_version > 0
    events: tuple[Event, ...] = ()
    if gone:
        events = (Event(DOCUMENT_DISAPPEARED, url, at, old_sha256=state.current_sha256, status=status),)
    new_state = replace(state, status=Status.GONE if gone else Status.FAILING, consecutive_failures=failures)
    kind = OutcomeKind.DISAPPEARED if gone else OutcomeKind.FAILED
    return record_check(
        archive, url, fetched(url, None, at, status=status, error=error), Outcome(kind, new_state, events), at
    )
