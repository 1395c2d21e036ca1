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
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

import mirror.targets
from mirror import db, leases, ledger, outbox, recording, tables
from mirror.domain import StoredEvent, Target, VerifyRun
from mirror.outbox import Cursor
from mirror.reader import History, Reader, SiteEntry, StoreStatus
from mirror.recording import CheckRecord
from mirror.targets import SyncReport, TargetSummary

if TYPE_CHECKING:  # imported where used, as `mirror.reader` does: a check never imports WARCs,
    # re-packs, mends or records a verify run (~25 ms of its start-up)
    from mirror.codec import Packed
    from mirror.importing import ImportBatch
    from mirror.mending import Mended
    from mirror.repack import GcReport
    from mirror.warcread import Capture

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

    # -- the notifications outbox (see `mirror.outbox`) ---------------------------------------

    def register_destinations(self, names: Sequence[str], now: datetime) -> list[str]:
        """Give each destination of `names` without a cursor one at the chain's head; return those added."""
        if not names:
            return []
        return self._write(lambda conn: outbox.register(conn, names, ledger.head(conn)[0], now))

    def claim_destination(self, name: str, owner: str, now: datetime, lease: timedelta) -> Cursor | None:
        """Lease `name`'s cursor to `owner`; None when another process holds it or it backs off."""
        return self._write(lambda conn: outbox.claim(conn, name, owner, now, lease))

    def advance_destination(
        self, name: str, owner: str, seq: int, now: datetime, lease: timedelta, *, sent: bool
    ) -> bool:
        """Move `name`'s cursor to `seq` while `owner` holds it; return whether it still did."""
        return self._write(lambda conn: outbox.advance(conn, name, owner, seq, now, lease, sent=sent))

    def destination_failed(
        self, name: str, owner: str, error: str, now: datetime, retry_at: datetime
    ) -> bool:
        """Record a failed delivery to `name` and back off until `retry_at`; the lease is freed."""
        return self._write(lambda conn: outbox.failed(conn, name, owner, error, now, retry_at))

    def mark_destination(self, name: str, owner: str, **values: datetime | int | None) -> bool:
        """Set `digest_from`, `head_sent_at`, `delivered_at` or `verify_run` of `name` (held by `owner`)."""
        return self._write(lambda conn: outbox.mark(conn, name, owner, **values))

    def release_destination(self, name: str, owner: str) -> int:
        """Free `owner`'s lease on `name`'s cursor."""
        return self._write(lambda conn: outbox.release(conn, name, owner))

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

    # -- repair (see `mirror.repair`) ---------------------------------------------------------

    def mend_blob(
        self, sha256: str, data: bytes, *, source: str, problem: str, now: datetime
    ) -> Mended | None:
        """Put `data` back whole under `sha256` with a `document.repaired` event per document it serves,
        in one transaction; None when the blob reads back intact already (nothing written).

        Raises:
            StoreError: `data` does not hash to `sha256`, or the database failed.
            mending.NotMended: nothing names the blob, so no event could say it was repaired.
        """
        from mirror import mending

        return self._write(
            lambda conn: mending.mend(conn, sha256, data, source=source, problem=problem, now=now)
        )

    # -- imports (see `mirror.importing`) ---------------------------------------------------

    def import_captures(
        self, captures: Sequence[tuple[Capture, Packed]], now: datetime, interval_seconds: int
    ) -> ImportBatch:
        """Store imported captures (each with its packed blob) in ONE transaction, in capture-time order.

        Each capture that adds something becomes the next version of its document, dated at its
        capture, announced by a `document.imported` event; a URL not in the store becomes an
        unwatched target of source `warc`.
        """
        from mirror.importing import import_captures

        return self._write(lambda conn: import_captures(conn, captures, now, interval_seconds))

    # -- re-packing --------------------------------------------------------------------------

    def repack(
        self,
        *,
        limit: int | None = None,
        seconds: float | None = None,
        on_blob: Callable[[], object] = lambda: None,
        count_remaining: bool = True,
    ) -> GcReport:
        """Re-pack the blobs checks stored at a cheap level (`mirror.repack`); return what was done."""
        from mirror import repack

        return repack.run(
            self._engine, limit=limit, seconds=seconds, on_blob=on_blob, count_remaining=count_remaining
        )

    # -- retention ---------------------------------------------------------------------------

    def record_verify(self, run: VerifyRun, started_at: datetime) -> None:
        """Record a finished `mirror verify` run (what the web page's footer shows)."""
        from mirror import browse

        self._write(lambda conn: browse.record_verify(conn, run, started_at))

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
