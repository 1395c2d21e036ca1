"""The archive: what the rest of `mirror` calls to store checks and read history back.

`record` stores one check in ONE transaction: the blob before the snapshot that
names it, the check row, the events on the hash chain, and the target's new state.
It is retried as a whole on transient database errors (`db.run_in_transaction`)
and leaves nothing behind when it fails. Reads run in read-only transactions,
which on SQLite never wait for a writer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Row, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from mirror import blobs, db, ledger, log
from mirror.db import DEFAULT_RETRY, RetrySettings
from mirror.domain import FetchResult, Outcome, Status, StoredEvent, Target, TargetState, Version
from mirror.errors import StoreError, TargetNotFound, UsageError, VersionNotFound
from mirror.tables import Base, BlobRow, CheckRow, EventRow, SnapshotRow, TargetRow
from mirror.urls import BadURL, host_of, normalize_url

T = Base.metadata.tables[TargetRow.__tablename__]
S = Base.metadata.tables[SnapshotRow.__tablename__]
C = Base.metadata.tables[CheckRow.__tablename__]
E = Base.metadata.tables[EventRow.__tablename__]
B = Base.metadata.tables[BlobRow.__tablename__]
AnyRow = Row[*tuple[Any, ...]]

R = TypeVar("R")

CONFIG = "config"
MIN_SHA_PREFIX = 4
_CHUNK = 500  # URLs per IN (...) list: far below SQLite's and PostgreSQL's parameter limits
_MAX_ERROR_MESSAGE = 2000


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What `sync_targets` changed. A configured target that comes back counts as added."""

    added: int
    removed: int
    updated: int
    total: int  # active targets after the sync, configured and discovered


@dataclass(frozen=True, slots=True)
class History:
    """Every version (oldest first) and event (in chain order) of one URL."""

    url: str
    status: str
    versions: list[Version]
    events: list[StoredEvent]


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Counts over the store, for `mirror status`."""

    targets_by_status: dict[str, int]  # active targets only
    targets: int
    versions: int
    blobs: int
    stored_bytes: int
    content_bytes: int
    last_check_at: datetime | None
    next_check_at: datetime | None
    checks_last_hour: int
    overdue: int
    database: str


@dataclass(frozen=True, slots=True)
class TargetSummary:
    """One active target, for `mirror targets`."""

    url: str
    status: str
    source: str
    last_checked_at: datetime | None
    next_check_at: datetime | None
    versions: int
    current_sha256: str | None
    consecutive_failures: int


class Archive:
    """The store of targets, versions, checks and events over one engine (see `db.open_engine`)."""

    def __init__(self, engine: Engine, retry: RetrySettings = DEFAULT_RETRY) -> None:
        self.engine = engine
        self.retry = retry
        self.database = db.mask_url(engine.url)

    def _write(self, fn: Callable[[Connection], R]) -> R:
        return db.run_in_transaction(self.engine, fn, retry=self.retry)

    def _read(self, fn: Callable[[Connection], R]) -> R:
        return db.read(self.engine, fn, retry=self.retry)

    # -- targets -----------------------------------------------------------------------------

    def sync_targets(
        self, targets: Sequence[Target], now: datetime, rng: random.Random | None = None
    ) -> SyncReport:
        """Make the configured targets in the store match `targets`; return what changed.

        New targets get their first check spread uniformly over [now, now + interval).
        A changed interval is saved (and a next check beyond the new interval is
        brought forward). Configured targets no longer listed become inactive, their
        history kept; one listed again is active again. Discovered targets are left
        alone. A few bulk statements, whatever the number of targets.
        """
        rng = rng or random.Random()
        wanted = {normalize_url(t.url): _seconds(t.interval) for t in targets}

        def sync(conn: Connection) -> SyncReport:
            cols = (T.c.id, T.c.url, T.c.source, T.c.active, T.c.interval_seconds, T.c.next_check_at)
            existing = {row.url: row for row in conn.execute(select(*cols))}
            inserts, changes, gone = [], [], []
            reactivated = 0
            for url, seconds in wanted.items():
                row = existing.get(url)
                if row is None:
                    inserts.append(_new_target(url, CONFIG, seconds, now, rng))
                elif not row.active:
                    reactivated += 1
                    changes.append(_change(row.id, seconds, _spread(now, seconds, rng)))
                elif row.interval_seconds != seconds or row.source != CONFIG:
                    changes.append(
                        _change(row.id, seconds, min(row.next_check_at, now + timedelta(seconds=seconds)))
                    )
            for row in existing.values():
                if row.active and row.source == CONFIG and row.url not in wanted:
                    gone.append({"b_id": row.id})
            if inserts:
                conn.execute(T.insert(), inserts)
            if changes:
                conn.execute(
                    update(T)
                    .where(T.c.id == bindparam("b_id"))
                    .values(
                        active=True,
                        source=CONFIG,
                        interval_seconds=bindparam("b_interval"),
                        next_check_at=bindparam("b_next"),
                    ),
                    changes,
                )
            if gone:
                conn.execute(update(T).where(T.c.id == bindparam("b_id")).values(active=False), gone)
            total = conn.execute(select(func.count()).select_from(T).where(T.c.active.is_(True))).scalar_one()
            return SyncReport(len(inserts) + reactivated, len(gone), len(changes) - reactivated, int(total))

        return self._write(sync)

    def add_discovered(
        self, targets: Sequence[Target], now: datetime, rng: random.Random | None = None
    ) -> int:
        """Add the targets not yet in the store (source "crawl" or "sitemap"); return how many were added."""
        rng = rng or random.Random()
        wanted = {normalize_url(t.url): t for t in targets}

        def add(conn: Connection) -> int:
            present: set[str] = set()
            urls = list(wanted)
            for i in range(0, len(urls), _CHUNK):
                present.update(
                    conn.execute(select(T.c.url).where(T.c.url.in_(urls[i : i + _CHUNK]))).scalars()
                )
            rows = [
                _new_target(url, t.source, _seconds(t.interval), now, rng)
                for url, t in wanted.items()
                if url not in present
            ]
            if not rows:
                return 0
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            # DO NOTHING: another daemon may add the same URL between our SELECT and INSERT.
            stmt = dialect.insert(T).on_conflict_do_nothing(index_elements=[T.c.url]).returning(T.c.id)
            return len(conn.execute(stmt, rows).all())

        return self._write(add)

    def active_targets(self, urls: Sequence[str] | None = None) -> list[Target]:
        """Return every active target (by URL), or the targets with these URLs in the order given.

        Raises:
            TargetNotFound: one of `urls` is not in the store.
        """
        cols = (T.c.url, T.c.interval_seconds, T.c.source)

        def load(conn: Connection) -> list[Target]:
            if urls is None:
                rows = conn.execute(select(*cols).where(T.c.active.is_(True)).order_by(T.c.url)).all()
                return [_target(r) for r in rows]
            wanted = [_normal(u) for u in urls]
            found: dict[str, Target] = {}
            for i in range(0, len(wanted), _CHUNK):
                for r in conn.execute(select(*cols).where(T.c.url.in_(wanted[i : i + _CHUNK]))):
                    found[r.url] = _target(r)
            for url in wanted:
                if url not in found:
                    raise TargetNotFound(url)
            return [found[url] for url in dict.fromkeys(wanted)]

        return self._read(load)

    def state_of(self, url: str) -> TargetState:
        """Return what the store knows about `url` before its next check.

        Raises:
            TargetNotFound: the URL is not in the store.
        """

        def load(conn: Connection) -> TargetState:
            row = _target_row(conn, url)
            content_type = conn.execute(
                select(S.c.content_type).where(S.c.target_id == row.id, S.c.version == row.current_version)
            ).scalar()
            return TargetState(
                status=Status(row.status),
                current_sha256=row.current_sha256,
                current_version=row.current_version,
                content_type=content_type,
                consecutive_failures=row.consecutive_failures,
                etag=row.etag,
                last_modified=row.last_modified,
                moved_to=row.moved_to,
            )

        return self._read(load)

    # -- recording ---------------------------------------------------------------------------

    def record(
        self, url: str, result: FetchResult, outcome: Outcome, now: datetime, *, worker: str | None = None
    ) -> list[StoredEvent]:
        """Store one check of `url` in one transaction; return its events as chained.

        The blob and snapshot (for a new version), the check row, the events and the
        target's new state (lease cleared, next check one interval from `now`) are
        written together or not at all.

        Raises:
            TargetNotFound: the URL is not in the store.
            StoreError: the database failed (after retries), or a new version has no body.
        """

        def write(conn: Connection) -> list[StoredEvent]:
            target = _target_row(conn, url)
            state = outcome.state
            if outcome.new_version:
                if result.body is None or state.current_version < 1:
                    raise StoreError(f"{target.url}: a new version needs a body and a version number")
                sha256 = blobs.put(conn, result.body, result.body_sha256, now=now)
                conn.execute(
                    S.insert().values(
                        target_id=target.id,
                        version=state.current_version,
                        sha256=sha256,
                        size=len(result.body),
                        first_seen=now,
                        last_seen=now,
                        http_status=result.status,
                        content_type=result.content_type,
                        headers=dict(result.headers),
                        final_url=result.final_url,
                    )
                )
            elif outcome.seen_again:
                conn.execute(
                    update(S)
                    .where(S.c.target_id == target.id, S.c.version == state.current_version)
                    .values(last_seen=now)
                )
            error = result.error
            conn.execute(
                C.insert().values(
                    target_id=target.id,
                    started_at=result.started_at,
                    duration_ms=max(0, round(result.elapsed * 1000)),
                    http_status=result.status,
                    error_kind=error.kind if error else None,
                    error_message=error.message[:_MAX_ERROR_MESSAGE] if error else None,
                    outcome=outcome.kind.value,
                    bytes=len(result.body) if result.body is not None else None,
                    worker=worker,
                )
            )
            unified = outcome.diff.unified if outcome.diff is not None and outcome.diff.unified else None
            stored = [
                ledger.append(conn, e, target.id, unified if e.kind == log.DOCUMENT_CHANGED else None)
                for e in outcome.events
            ]
            conn.execute(
                update(T)
                .where(T.c.id == target.id)
                .values(
                    status=state.status.value,
                    current_sha256=state.current_sha256,
                    current_version=state.current_version,
                    consecutive_failures=state.consecutive_failures,
                    etag=state.etag,
                    last_modified=state.last_modified,
                    moved_to=state.moved_to,
                    last_checked_at=now,
                    next_check_at=now + timedelta(seconds=target.interval_seconds),
                    lease_owner=None,
                    lease_until=None,
                )
            )
            return stored

        return self._write(write)

    # -- reading -----------------------------------------------------------------------------

    def read(self, sha256: str) -> bytes:
        """Return the exact bytes stored under `sha256`.

        Raises:
            StoreError: no such blob, or it is damaged.
        """
        return self._read(lambda conn: blobs.get(conn, sha256))

    def history(self, url: str) -> History:
        """Return the versions (oldest first) and events (in chain order) of `url`.

        Raises:
            TargetNotFound: the URL is not in the store.
        """

        def load(conn: Connection) -> History:
            target = _target_row(conn, url)
            versions = conn.execute(select(S).where(S.c.target_id == target.id).order_by(S.c.version)).all()
            events = conn.execute(select(E).where(E.c.target_id == target.id).order_by(E.c.seq)).all()
            return History(
                target.url,
                target.status,
                [_version(v) for v in versions],
                [ledger.to_stored_event(e) for e in events],
            )

        return self._read(load)

    def version(self, url: str, spec: str | None = None, at: datetime | None = None) -> Version:
        """Return one version of `url`: by `spec` or current at time `at`; the latest when neither is given.

        `spec` is a version number ("3"), counted back from the latest ("-1" the
        latest, "-2" the one before), or a sha256 prefix of at least 4 hex digits
        (all-digit text is a number first, then a prefix if there is no such version).

        Raises:
            TargetNotFound: the URL is not in the store.
            VersionNotFound: no such version, an ambiguous prefix, or none stored by `at`.
            UsageError: both `spec` and `at` were given.
        """
        if spec is not None and at is not None:
            raise UsageError("give a version or a time, not both")

        def load(conn: Connection) -> Version:
            target = _target_row(conn, url)
            by_target = select(S).where(S.c.target_id == target.id)
            if at is not None:
                row = conn.execute(
                    by_target.where(S.c.first_seen <= at).order_by(S.c.version.desc()).limit(1)
                ).first()
                if row is None:
                    raise VersionNotFound(target.url, at.isoformat(), "no version was stored by then")
                return _version(row)
            text = (spec or "-1").strip().lower()
            if re.fullmatch(r"-?\d+", text):
                number = int(text)
                if number < 0:
                    number += target.current_version + 1
                row = conn.execute(by_target.where(S.c.version == number)).first() if number > 0 else None
                if row is not None:
                    return _version(row)
                if len(text) < MIN_SHA_PREFIX or text.startswith("-"):
                    problem = "no version stored yet" if target.current_version == 0 else "no such version"
                    raise VersionNotFound(
                        target.url, text, f"{problem} (versions: 1..{target.current_version})"
                    )
            if not re.fullmatch(r"[0-9a-f]+", text) or len(text) < MIN_SHA_PREFIX:
                raise VersionNotFound(
                    target.url, text, "expected a number, -N, or a sha256 prefix of 4+ hex digits"
                )
            rows = conn.execute(by_target.where(S.c.sha256.startswith(text)).order_by(S.c.version)).all()
            shas = {r.sha256 for r in rows}
            if len(shas) > 1:
                raise VersionNotFound(
                    target.url, text, f"ambiguous prefix ({len(shas)} different versions match)"
                )
            if not rows:
                raise VersionNotFound(target.url, text, "no version has this sha256 prefix")
            return _version(rows[-1])  # the same content stored twice (a revert): the latest

        return self._read(load)

    def status(self, now: datetime) -> StoreStatus:
        """Return counts over targets, versions, blobs and recent checks as of `now`."""

        def load(conn: Connection) -> StoreStatus:
            active = T.c.active.is_(True)
            by_status: dict[str, int] = dict(
                conn.execute(select(T.c.status, func.count()).where(active).group_by(T.c.status)).all()
            )
            targets, next_at, overdue = conn.execute(
                select(
                    func.count(), func.min(T.c.next_check_at), func.count().filter(T.c.next_check_at < now)
                )
                .select_from(T)
                .where(active)
            ).one()
            last_at = conn.execute(select(func.max(T.c.last_checked_at))).scalar()
            versions = conn.execute(select(func.count()).select_from(S)).scalar_one()
            blob_count, stored, content = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(B.c.stored_size), 0),
                    func.coalesce(func.sum(B.c.size), 0),
                )
            ).one()
            recent = conn.execute(
                select(func.count()).select_from(C).where(C.c.started_at >= now - timedelta(hours=1))
            ).scalar_one()
            return StoreStatus(
                targets_by_status={str(k): int(v) for k, v in by_status.items()},
                targets=int(targets),
                versions=int(versions),
                blobs=int(blob_count),
                stored_bytes=int(stored),
                content_bytes=int(content),
                last_check_at=last_at,
                next_check_at=next_at,
                checks_last_hour=int(recent),
                overdue=int(overdue),
                database=self.database,
            )

        return self._read(load)

    def targets(self, status: str | None = None) -> list[TargetSummary]:
        """Return the active targets (in one `status`, if given), by URL."""

        def load(conn: Connection) -> list[TargetSummary]:
            cond: ColumnElement[bool] = T.c.active.is_(True)
            if status is not None:
                cond = and_(cond, T.c.status == status)
            rows = conn.execute(select(T).where(cond).order_by(T.c.url)).all()
            return [
                TargetSummary(
                    url=r.url,
                    status=r.status,
                    source=r.source,
                    last_checked_at=r.last_checked_at,
                    next_check_at=r.next_check_at,
                    versions=r.current_version,  # versions are numbered 1..n per target
                    current_sha256=r.current_sha256,
                    consecutive_failures=r.consecutive_failures,
                )
                for r in rows
            ]

        return self._read(load)


def _normal(url: str) -> str:
    try:
        return normalize_url(url)
    except BadURL:
        return url  # not found below, with the user's spelling in the message


def _target_row(conn: Connection, url: str) -> AnyRow:
    normal = _normal(url)
    row = conn.execute(select(T).where(T.c.url == normal)).first()
    if row is None:
        raise TargetNotFound(normal)
    return row


def _target(row: AnyRow) -> Target:
    return Target(row.url, timedelta(seconds=row.interval_seconds), row.source)


def _version(row: AnyRow) -> Version:
    return Version(
        number=row.version,
        sha256=row.sha256,
        size=row.size,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        status=row.http_status,
        content_type=row.content_type,
        final_url=row.final_url,
    )


def _seconds(interval: timedelta) -> int:
    return max(0, round(interval.total_seconds()))


def _spread(now: datetime, seconds: int, rng: random.Random) -> datetime:
    # uniform over [now, now + interval): a fresh config does not check everything at start-up
    return now + timedelta(seconds=rng.random() * seconds)


def _change(target_id: int, seconds: int, next_check_at: datetime) -> dict[str, Any]:
    return {"b_id": target_id, "b_interval": seconds, "b_next": next_check_at}


def _new_target(url: str, source: str, seconds: int, now: datetime, rng: random.Random) -> dict[str, Any]:
    return {
        "url": url,
        "host": host_of(url),
        "source": source,
        "active": True,
        "interval_seconds": seconds,
        "next_check_at": _spread(now, seconds, rng),
        "status": Status.NEW.value,
        "consecutive_failures": 0,
        "current_version": 0,
        "created_at": now,
    }
