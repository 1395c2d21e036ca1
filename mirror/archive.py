"""The store's write side: what the checkers call to record checks, and the schedule's leases.

`Archive` is a `mirror.reader.Reader` that also writes. `record_many` stores a batch of
checks in ONE transaction (`mirror.recording`): the blobs before the snapshots that name
them, the check rows, the events on the hash chain, and the targets' new states;
`mirror.packing` packs a new version's blob before, outside any transaction (the store
stores, it never packs). A batch is retried as a whole on transient database errors
(`db.run_in_transaction`) and leaves nothing behind when it fails.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

import mirror.targets
from mirror import db, leases, recording, repack, tables
from mirror.domain import StoredEvent, Target
from mirror.reader import History, Reader, SiteEntry, StoreStatus
from mirror.recording import CheckRecord
from mirror.targets import SyncReport, TargetSummary

C = tables.checks

R = TypeVar("R")

__all__ = [
    "Archive",
    "CheckRecord",
    "History",
    "Reader",
    "SiteEntry",
    "StoreStatus",
    "SyncReport",
    "TargetSummary",
]


class Archive(Reader):
    """The store of targets, versions, checks and events over one engine: the read side, and recording."""

    def _write(self, fn: Callable[[Connection], R]) -> R:
        return db.run_in_transaction(self._engine, fn, retry=self.retry)

    # -- targets ---------------------------------------------------------------------------

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

    # -- recording ---------------------------------------------------------------------------

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

    # -- re-packing --------------------------------------------------------------------------

    def repack(
        self,
        *,
        limit: int | None = None,
        seconds: float | None = None,
        on_blob: Callable[[], object] = lambda: None,
        count_remaining: bool = True,
    ) -> repack.GcReport:
        """Re-pack the blobs checks stored at a cheap level (`mirror.repack`); return what was done."""
        return repack.run(
            self._engine, limit=limit, seconds=seconds, on_blob=on_blob, count_remaining=count_remaining
        )

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
