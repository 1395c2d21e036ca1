"""The store's read side: versions, history, events and counts, read back in read-only transactions.

`Reader` is all that readers of the record need (show, history, diff, restore, verify,
status, and the web page, exports and notifications to come); the write side,
`mirror.archive.Archive`, is a `Reader` that also records. Reads run in read-only
transactions, which on SQLite never wait for a writer. The engine never leaves the store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

import mirror.targets
from mirror import db, ledger, tables
from mirror.db import DEFAULT_RETRY, RetrySettings
from mirror.domain import Status, StoredEvent, Target, TargetState, VerifyRun, Version
from mirror.targets import TargetSummary, target_row
from mirror.versions import SiteEntry, site_batch, version_of, version_row

if TYPE_CHECKING:  # imported where used: `status` and `history` load neither zstandard nor the web's pages
    from mirror import blobs, outbox
    from mirror.browse import IndexRow, Page
    from mirror.captures import Document
    from mirror.integrity import VerifyReport

T = tables.targets
S = tables.snapshots
C = tables.checks
E = tables.events
B = tables.blobs

R = TypeVar("R")


class _ByUrl(Protocol):
    @property
    def url(self) -> str: ...


U = TypeVar("U", bound=_ByUrl)

SITE_BATCH = 500  # targets per read transaction of `site_at`
EXPORT_CACHE_BYTES = 32 * 1024 * 1024  # decoded bases kept while an export reads versions in order

__all__ = [
    "History",
    "Reader",
    "SiteEntry",
    "Snapshot",
    "StoreStatus",
    "TargetSummary",
]


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
class Snapshot:
    """One version with the response headers recorded with it (`Reader.snapshot`)."""

    version: Version
    headers: dict[str, str]


class Reader:
    """The store's read side over one engine: what readers of the record (show, history, diff,
    restore, verify, status, and the web page, exports and notifications to come) need, and no more.

    The engine stays inside the store; `close` lets it go.
    """

    def __init__(self, engine: Engine, retry: RetrySettings = DEFAULT_RETRY) -> None:
        self._engine = engine
        self.retry = retry
        self.database = db.mask_url(engine.url)

    @classmethod
    def open(cls, database: str, *, existing: bool = False, read_only: bool = False) -> Self:
        """Return the store at the SQLAlchemy URL `database`, migrated (see `db.open_engine`).

        `read_only` (with `existing`) opens connections that cannot write at all (`mirror serve`).

        Raises:
            StoreError: it cannot be opened (or, with `existing`, does not exist).
        """
        return cls(db.open_engine(database, existing=existing or read_only, read_only=read_only))

    def after_fork(self) -> None:
        """In a forked child: open connections of its own; the parent's stay the parent's."""
        self._engine.dispose(close=False)

    def close(self) -> None:
        """Close the store's connections (the engine's pool)."""
        self._engine.dispose()

    def _read(self, fn: Callable[[Connection], R]) -> R:
        return db.read(self._engine, fn, retry=self.retry)

    def _by_url(self, read_page: Callable[..., Sequence[U]], batch: int, *, after: str | None) -> Iterator[U]:
        """Yield what `read_page(conn, after=URL, limit=batch)` returns, page after page by URL, each
        page its own short read transaction: memory stays flat however many rows there are."""
        while True:
            page = self._read(partial(read_page, after=after, limit=batch))
            yield from page
            if len(page) < batch:
                return
            after = page[-1].url

    # -- the record --------------------------------------------------------------------------

    def read(self, sha256: str) -> bytes:
        """Return the exact bytes stored under `sha256`.

        Raises:
            StoreError: no such blob, or it is damaged.
        """
        from mirror import blobs

        return self._read(lambda conn: blobs.get(conn, sha256))

    def blob_reader(self, cache_bytes: int = EXPORT_CACHE_BYTES) -> Callable[[str], bytes]:
        """Return a `read` that keeps up to `cache_bytes` of decoded content, for many versions in order.

        A version stored as a delta is rebuilt from its bases; reading a document's versions
        oldest first through one cache decodes each base once (an export), in bounded memory.
        """
        from mirror import blobs

        cache = blobs.Reader(cache_bytes)
        return lambda sha256: self._read(lambda conn: cache.get(conn, sha256))

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
                [version_of(v) for v in versions],
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
        return version_of(self._read(lambda conn: version_row(conn, url, spec, at)))

    def snapshot(self, url: str, spec: str | None = None, at: datetime | None = None) -> Snapshot:
        """Return one version of `url` (chosen as by `version`) with the response headers recorded with it.

        Raises:
            TargetNotFound: the URL is not in the store.
            VersionNotFound: no such version, an ambiguous prefix, or none stored by `at`.
            UsageError: both `spec` and `at` were given.
        """
        row = self._read(lambda conn: version_row(conn, url, spec, at))
        return Snapshot(version_of(row), dict(row.headers or {}))

    def site_at(self, at: datetime, *, batch: int = SITE_BATCH) -> Iterator[SiteEntry]:
        """Yield, by URL, every target (active or not) with a version first seen by `at`, as it was then.

        Each entry carries the version current at `at` (the latest first seen by then)
        and, when the document had disappeared by then (the latest of its new, changed,
        reappeared and disappeared events at or before `at` is a disappearance), the
        time it disappeared. Reads `batch` targets per short read transaction, so a
        site of 100,000 documents never loads at once.
        """
        return self._by_url(partial(site_batch, at=at), batch, after="")

    def documents(self, urls: Sequence[str] | None = None, *, batch: int = SITE_BATCH) -> Iterator[Document]:
        """Yield, by URL, every target's record (of `urls`): versions with headers, events, re-checks.

        Reads `batch` targets per short read transaction (`mirror.captures`), for exports.
        """
        from mirror.captures import documents_page

        return self._by_url(partial(documents_page, urls=urls), batch, after="")

    def events_after(self, seq: int, limit: int = 1000) -> list[StoredEvent]:
        """Return up to `limit` events of the chain after sequence number `seq`, in chain order.

        A follower of the log (notifications, exports) keeps the last `seq` it handled.
        """
        query = select(E).where(E.c.seq > seq).order_by(E.c.seq).limit(limit)
        rows = self._read(lambda conn: conn.execute(query).all())
        return [ledger.to_stored_event(row) for row in rows]

    # -- pages of the record, for the web page (see `mirror.browse`) -------------------------

    def targets_page(
        self,
        changed_since: datetime,
        *,
        state: str | None = None,
        prefix: str = "",
        after: str = "",
        limit: int = 50,
    ) -> Page[IndexRow]:
        """Return a page of targets by URL after `after`: in `state` (`browse.INDEX_STATES`; `changed`
        means a change recorded since `changed_since`) and under `prefix`, each with its last change."""
        from mirror import browse

        return self._read(
            partial(
                browse.targets_page,
                state=state,
                prefix=prefix,
                after=after,
                limit=limit,
                changed_since=changed_since,
            )
        )

    def target(self, url: str) -> TargetSummary:
        """Return one target's summary. Raises: TargetNotFound."""
        from mirror import browse

        return self._read(lambda conn: browse.target(conn, url))

    def versions_page(self, url: str, before: int | None = None, limit: int = 50) -> Page[Version]:
        """Return a page of `url`'s versions, newest first, below number `before`. Raises: TargetNotFound."""
        from mirror import browse

        return self._read(lambda conn: browse.versions_page(conn, url, before, limit))

    def events_page(self, url: str, before: int | None = None, limit: int = 50) -> Page[StoredEvent]:
        """Return a page of `url`'s events in time order, before `before` (seq). Raises: TargetNotFound."""
        from mirror import browse

        return self._read(lambda conn: browse.events_page(conn, url, before, limit))

    def versions(self, url: str) -> list[Version]:
        """Return every version of `url`, oldest first (without its events). Raises: TargetNotFound."""
        from mirror import browse

        return self._read(lambda conn: browse.all_versions(conn, url))

    def neighbours(self, url: str, at: datetime) -> list[Version]:
        """Return the versions of `url` either side of `at` (none, one or two). Raises: TargetNotFound."""
        from mirror import browse

        return self._read(lambda conn: browse.neighbours(conn, url, at))

    def last_verify(self) -> VerifyRun | None:
        """Return the last recorded `mirror verify` run, or None."""
        from mirror import browse

        return self._read(browse.last_verify)

    def verify_runs_after(self, run: int) -> list[VerifyRun]:
        """Return the recorded `mirror verify` runs after `verify_runs.id` `run`, oldest first (up to 100)."""
        from mirror import outbox

        return self._read(lambda conn: outbox.verify_runs_after(conn, run))

    def cursors(self) -> list[outbox.Cursor]:
        """Return every notification destination's cursor (`mirror.outbox`), by name."""
        from mirror import outbox

        return self._read(outbox.cursors)

    # -- fixity (see `mirror.verify`) --------------------------------------------------------

    def verify(
        self, *, progress: Callable[[int], object] | None = None, published: tuple[int, str] | None = None
    ) -> VerifyReport:
        """Return every problem of the store: blobs re-hashed, snapshots checked, the chain recomputed."""
        from mirror import verify as fixity

        return fixity.run(self._engine, progress=progress, published=published)

    def chain_head(self) -> tuple[int, str]:
        """Return the hash chain's head: its last sequence number and hash, to publish elsewhere."""
        from mirror import verify as fixity

        return fixity.head(self._engine)

    def unreadable_blobs(self, keys: Collection[str]) -> set[str]:
        """Return those of `keys` whose blob is missing or does not read back intact (one transaction)."""
        from mirror import mending

        return self._read(lambda conn: mending.unreadable(conn, keys))

    def blob_bytes(self) -> int:
        """Return the content bytes of every stored blob (what `verify` will hash)."""
        from mirror import verify as fixity

        return fixity.total_blob_bytes(self._engine)

    # -- targets and their schedule ----------------------------------------------------------

    def status(self, now: datetime) -> StoreStatus:
        """Return counts over targets, versions, blobs and recent checks as of `now`."""

        def load(conn: Connection) -> StoreStatus:
            # One pass over the targets, grouped by (status, watched): with 1,000,000 targets each
            # pass costs seconds on a cold cache, and four separate counts took four.
            by_status: dict[str, int] = {}
            targets = overdue = suspicious = checking = 0
            next_at: datetime | None = None
            last_at: datetime | None = None
            groups = conn.execute(
                select(
                    T.c.status,
                    T.c.active,
                    func.count(),
                    func.min(T.c.next_check_at),
                    func.count().filter(T.c.next_check_at < now),
                    func.count().filter(T.c.suspicious.is_not(None)),
                    func.count().filter(T.c.lease_until >= now),
                    func.max(T.c.last_checked_at),
                ).group_by(T.c.status, T.c.active)
            ).all()
            for status, active, count, soonest, late, flagged, leased, last in groups:
                if last is not None and (last_at is None or last > last_at):
                    last_at = last
                if not active:
                    key = Status.UNWATCHED.value
                    by_status[key] = by_status.get(key, 0) + int(count)
                    continue
                by_status[status] = by_status.get(status, 0) + int(count)
                targets += int(count)
                overdue += int(late)
                suspicious += int(flagged)
                checking += int(leased)
                if soonest is not None and (next_at is None or soonest < next_at):
                    next_at = soonest
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

    def each_target(self, status: str | None = None, batch: int = 5000) -> Iterator[TargetSummary]:
        """Yield the targets as `targets` returns them, `batch` per read: memory stays flat at any count.

        Each page is its own read (by URL, after the last one seen): a target checked meanwhile
        shows the state its page read.
        """
        return self._by_url(partial(mirror.targets.summaries, status=status), batch, after=None)

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

    def active_targets(self, urls: Sequence[str] | None = None) -> list[Target]:
        """Return every active target (by URL), or the targets with these URLs in the order given.

        Raises:
            TargetNotFound: one of `urls` is not in the store.
        """
        return self._read(lambda conn: mirror.targets.active_targets(conn, urls))

    def known_urls(self, urls: Sequence[str]) -> set[str]:
        """Return those of `urls` that are targets in the store (crawl budgets count new URLs only)."""
        return self._read(lambda conn: mirror.targets.known_urls(conn, list(urls)))

    def count_under(self, prefix: str) -> int:
        """Return how many targets have a URL under `prefix` (a crawl source's `max_pages` budget)."""
        return self._read(lambda conn: mirror.targets.count_under(conn, prefix))

    def redirected_to(self, url: str, *, besides: str) -> int:
        """Return how many watched targets other than `besides` answer through a redirect to `url`."""
        return self._read(lambda conn: mirror.targets.redirected_to(conn, url, besides))

    def delta_base(self, sha256: str) -> blobs.DeltaBase | None:
        """Return what packing a delta against the stored blob `sha256` needs of it; None if missing."""
        from mirror import blobs

        return self._read(lambda conn: blobs.base_of(conn, sha256))
