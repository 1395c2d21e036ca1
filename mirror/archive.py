"""The archive: what the rest of `mirror` calls to store checks and read history back.

`record_many` stores a batch of checks in ONE transaction (`mirror.recording`): the
blobs before the snapshots that name them, the check rows, the events on the hash
chain, and the targets' new states; `mirror.packing` compresses a new version's blob
before, outside any transaction (the store stores, it never packs). A batch is retried
as a whole on transient database errors (`db.run_in_transaction`) and leaves nothing
behind when it fails. Reads run in read-only transactions, which on SQLite never wait
for a writer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.engine import Connection, Engine

import mirror.targets
from mirror import blobs, db, leases, ledger, recording, tables
from mirror.db import DEFAULT_RETRY, RetrySettings
from mirror.domain import Status, StoredEvent, Target, TargetState, Version
from mirror.errors import UsageError, VersionNotFound
from mirror.events import (
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_NEW,
    DOCUMENT_REAPPEARED,
)
from mirror.recording import CheckRecord
from mirror.tables import AnyRow
from mirror.targets import SyncReport, TargetSummary, target_row

T = tables.targets
S = tables.snapshots
C = tables.checks
E = tables.events
B = tables.blobs

R = TypeVar("R")

MIN_SHA_PREFIX = 4
SITE_BATCH = 500  # targets per read transaction of `site_at`
# The events that say whether a document was there: the latest of them at a time decides.
_PRESENCE_EVENTS = (DOCUMENT_NEW, DOCUMENT_CHANGED, DOCUMENT_REAPPEARED, DOCUMENT_DISAPPEARED)

__all__ = ["Archive", "CheckRecord", "History", "SiteEntry", "StoreStatus", "SyncReport", "TargetSummary"]


@dataclass(frozen=True, slots=True)
class History:
    """Every version (oldest first) and event (in chain order) of one URL.

    `status` is `unwatched` once the target left the config (since `unwatched_since`).
    """

    url: str
    status: str
    versions: list[Version]
    events: list[StoredEvent]
    unwatched_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """Counts over the store, for `mirror status`."""

    targets_by_status: dict[
        str, int
    ]  # watched targets by state, and `unwatched` ones; every `Status`, zero included
    targets: int  # watched targets
    versions: int
    blobs: int
    stored_bytes: int
    content_bytes: int
    last_check_at: datetime | None
    next_check_at: datetime | None
    checks_last_hour: int
    overdue: int
    database: str
    suspicious: int = 0  # active targets whose last change looked like tampering
    lag_seconds: float = 0.0  # how far the most overdue target is behind its schedule
    checking: int = 0  # targets leased by a process (`run` or `check`) right now: being checked or queued


@dataclass(frozen=True, slots=True)
class SiteEntry:
    """One document of a site as it was at a time (see `Archive.site_at`).

    `gone_since` is set when the document had disappeared by then; `version` is
    still its last good version, which a restore leaves out and lists.
    """

    url: str
    version: Version | None
    gone_since: datetime | None


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
        self,
        targets: Sequence[Target],
        now: datetime,
        rng: random.Random | None = None,
        *,
        scopes: Sequence[str] | None = None,
    ) -> SyncReport:
        """Make the configured targets in the store match `targets`; return what changed.

        See `mirror.targets.sync_targets`: new targets' first checks are spread over
        their interval; unlisted configured targets, and discovered ones under none of
        the sources' `scopes` (when given), become unwatched, history kept.
        """
        rng = rng or random.Random()
        return self._write(lambda conn: mirror.targets.sync_targets(conn, targets, now, rng, scopes))

    def add_discovered(
        self, targets: Sequence[Target], now: datetime, rng: random.Random | None = None
    ) -> int:
        """Add the targets not yet in the store (source "crawl" or "sitemap"); return how many were added."""
        rng = rng or random.Random()
        return self._write(lambda conn: mirror.targets.add_discovered(conn, targets, now, rng))

    def known_urls(self, urls: Sequence[str]) -> set[str]:
        """Return those of `urls` that are targets in the store (crawl budgets count new URLs only)."""
        return self._read(lambda conn: mirror.targets.known_urls(conn, list(urls)))

    def redirected_to(self, url: str, *, besides: str) -> int:
        """Return how many watched targets other than `besides` answer through a redirect to `url`."""
        return self._read(lambda conn: mirror.targets.redirected_to(conn, url, besides))

    def count_under(self, prefix: str) -> int:
        """Return how many targets have a URL under `prefix` (a crawl source's `max_pages` budget)."""
        return self._read(lambda conn: mirror.targets.count_under(conn, prefix))

    def active_targets(self, urls: Sequence[str] | None = None) -> list[Target]:
        """Return every active target (by URL), or the targets with these URLs in the order given.

        Raises:
            TargetNotFound: one of `urls` is not in the store.
        """
        return self._read(lambda conn: mirror.targets.active_targets(conn, urls))

    # -- leases (see `mirror.leases`) --------------------------------------------------------

    def claim_due(self, owner: str, now: datetime, limit: int, lease: timedelta) -> list[Target]:
        """Lease up to `limit` due active targets to `owner` until `now + lease`; return them, by due time."""
        return self._write(lambda conn: leases.claim_due(conn, owner, now, limit, lease))

    def claim(self, owner: str, urls: Sequence[str], now: datetime, lease: timedelta) -> list[Target]:
        """Lease those of `urls` no other process holds to `owner`, due or not; return them in order."""
        return self._write(lambda conn: leases.claim(conn, owner, urls, now, lease))

    def extend_leases(self, owner: str, urls: Sequence[str], until: datetime) -> int:
        """Push `owner`'s leases on `urls` to `until`; return how many it still holds."""
        return self._write(lambda conn: leases.extend(conn, owner, urls, until))

    def release_leases(self, owner: str, urls: Sequence[str] | None = None) -> int:
        """Free the leases `owner` holds (on `urls`, or all); return how many."""
        return self._write(lambda conn: leases.release(conn, owner, urls))

    def reap_abandoned(self, now: datetime) -> int:
        """Free every lease expired by `now` (left by a killed process); return how many."""
        return self._write(lambda conn: leases.reap_abandoned(conn, now))

    def schedule(self, now: datetime) -> tuple[int, int, datetime | None]:
        """Return the active targets, how many are due by `now`, and when the next is due (one query)."""
        query = select(
            func.count(), func.count().filter(T.c.next_check_at <= now), func.min(T.c.next_check_at)
        ).where(T.c.active.is_(True))
        targets, due, first = self._read(lambda conn: conn.execute(query).one())
        return int(targets), int(due), first

    def state_of(self, url: str) -> TargetState:
        """Return what the store knows about `url` before its next check.

        Raises:
            TargetNotFound: the URL is not in the store.
        """
        states = self._read(lambda conn: mirror.targets.states_of(conn, [url]))
        return next(iter(states.values()))

    def states_of(self, urls: Sequence[str]) -> dict[str, TargetState]:
        """Return what the store knows about each of `urls` before its next check, by normalised URL.

        One read transaction, one query per 500 URLs: a round loads its targets' states at once.

        Raises:
            TargetNotFound: one of `urls` is not in the store.
        """
        return self._read(lambda conn: mirror.targets.states_of(conn, list(urls)))

    # -- recording ---------------------------------------------------------------------------

    def delta_base(self, sha256: str) -> blobs.DeltaBase | None:
        """Return what packing a delta against the stored blob `sha256` needs of it; None if missing."""
        return self._read(lambda conn: blobs.base_of(conn, sha256))

    def record_many(self, records: Sequence[CheckRecord]) -> list[list[StoredEvent] | None]:
        """Store `records` in ONE transaction, in order; return each one's events as chained.

        For each check: the blob and snapshot (for a new version), the check row, the
        events and the target's new state (its owner's lease cleared, next check
        `next_check_in` from its time, by default one interval). All are written together
        or not at all, and the whole is retried on transient database errors. A check
        judged against a state the store has moved past is superseded: nothing of it is
        written and its entry is None (`mirror.recording`); the caller logs `check.superseded`.

        Raises:
            TargetNotFound: a URL is not in the store.
            StoreError: the database failed (after retries), or a new version has no blob.
        """
        if not records:
            return []
        return self._write(lambda conn: recording.record_many(conn, records))

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
            target = target_row(conn, url)
            versions = conn.execute(select(S).where(S.c.target_id == target.id).order_by(S.c.version)).all()
            events = conn.execute(select(E).where(E.c.target_id == target.id).order_by(E.c.seq)).all()
            return History(
                target.url,
                target.status if target.active else Status.UNWATCHED.value,
                [_version(v) for v in versions],
                [ledger.to_stored_event(e) for e in events],
                target.unwatched_since,
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
            target = target_row(conn, url)
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
            unwatched = conn.execute(select(func.count()).where(T.c.active.is_(False))).scalar_one()
            if unwatched:
                by_status[Status.UNWATCHED.value] = int(unwatched)
            targets, next_at, overdue, suspicious, checking = conn.execute(
                select(
                    func.count(),
                    func.min(T.c.next_check_at),
                    func.count().filter(T.c.next_check_at < now),
                    func.count().filter(T.c.suspicious.is_not(None)),
                    func.count().filter(T.c.lease_until >= now),
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
                # Every status, zero included, so that scripts never meet a missing key.
                targets_by_status={
                    **dict.fromkeys(map(str, Status), 0),
                    **{str(k): int(v) for k, v in by_status.items()},
                },
                targets=int(targets),
                versions=int(versions),
                blobs=int(blob_count),
                stored_bytes=int(stored),
                content_bytes=int(content),
                last_check_at=last_at,
                next_check_at=next_at,
                checks_last_hour=int(recent),
                overdue=int(overdue),
                lag_seconds=max(0.0, (now - next_at).total_seconds()) if next_at else 0.0,
                checking=int(checking),
                database=self.database,
                suspicious=int(suspicious),
            )

        return self._read(load)

    def targets(self, status: str | None = None) -> list[TargetSummary]:
        """Return the targets (in one `status`, if given), by URL; those no longer configured are `unwatched`.

        `status="suspicious"` lists the watched targets flagged suspicious, whatever their status.
        """
        return self._read(lambda conn: mirror.targets.summaries(conn, status))

    def site_at(self, at: datetime, *, batch: int = SITE_BATCH) -> Iterator[SiteEntry]:
        """Yield, by URL, every target (active or not) with a version first seen by `at`, as it was then.

        Each entry carries the version current at `at` (the latest first seen by then)
        and, when the document had disappeared by then (the latest of its new, changed,
        reappeared and disappeared events at or before `at` is a disappearance), the
        time it disappeared. Reads `batch` targets per short read transaction, so a
        site of 100,000 documents never loads at once.
        """
        after = ""
        while True:
            entries = self._read(partial(_site_batch, at=at, after=after, limit=batch))
            yield from entries
            if len(entries) < batch:
                return
            after = entries[-1].url

    # -- retention ---------------------------------------------------------------------------

    def prune_checks(self, before: datetime, batch: int = 10_000) -> int:
        """Delete the `checks` rows of fetches started before `before`; return how many went.

        Deletes `batch` rows per transaction, so writers wait for no long lock.
        """

        def prune(conn: Connection) -> int:
            oldest = select(C.c.id).where(C.c.started_at < before).order_by(C.c.id).limit(batch)
            return int(conn.execute(delete(C).where(C.c.id.in_(oldest))).rowcount)

        total = 0
        while True:
            deleted = self._write(prune)
            total += deleted
            if deleted < batch:
                return total


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


def _site_batch(conn: Connection, at: datetime, after: str, limit: int) -> list[SiteEntry]:
    """Return up to `limit` entries of `site_at(at)` with URLs after `after`, by URL."""
    seen_by_then = exists().where(S.c.target_id == T.c.id, S.c.first_seen <= at)
    page = conn.execute(
        select(T.c.id, T.c.url).where(T.c.url > after, seen_by_then).order_by(T.c.url).limit(limit)
    ).all()
    if not page:
        return []
    ids = [row.id for row in page]
    # Versions are numbered in the order they were first seen: the highest by `at` is current then.
    current = (
        select(S.c.target_id, func.max(S.c.version).label("number"))
        .where(S.c.target_id.in_(ids), S.c.first_seen <= at)
        .group_by(S.c.target_id)
        .subquery()
    )
    versions = {
        row.target_id: _version(row)
        for row in conn.execute(
            select(S).join(
                current, and_(S.c.target_id == current.c.target_id, S.c.version == current.c.number)
            )
        )
    }
    latest = (
        select(func.max(E.c.seq).label("seq"))
        .where(E.c.target_id.in_(ids), E.c.kind.in_(_PRESENCE_EVENTS), E.c.at <= at)
        .group_by(E.c.target_id)
        .subquery()
    )
    gone = {
        row.target_id: row.at
        for row in conn.execute(select(E.c.target_id, E.c.kind, E.c.at).join(latest, E.c.seq == latest.c.seq))
        if row.kind == DOCUMENT_DISAPPEARED
    }
    return [SiteEntry(row.url, versions.get(row.id), gone.get(row.id)) for row in page]
