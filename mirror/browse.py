"""Paged reads for the web page: a page of targets, of versions, of events; a document's neighbours in time.

Every query is keyset-paged (`WHERE key > after ORDER BY key LIMIT n + 1`) over an index
(`targets.url`, `snapshots (target_id, version)`, `events.seq`), so the first page of
100,000 targets or of 10,000 versions costs what any page costs. Queries over one
connection, run by `mirror.reader.Reader` in short read-only transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, exists, func, select, true
from sqlalchemy.engine import Connection

from mirror import ledger, tables
from mirror.domain import Status, StoredEvent, VerifyRun, Version
from mirror.events import DOCUMENT_CHANGED, DOCUMENT_NEW
from mirror.targets import SUSPICIOUS, TargetSummary, target_row
from mirror.versions import version_of

T = tables.targets
S = tables.snapshots
E = tables.events
V = tables.verify_runs

CHANGED = "changed"  # `targets_page(state=...)`: a change recorded since `changed_since`
INDEX_STATES = (CHANGED, Status.GONE.value, Status.BLOCKED.value, SUSPICIOUS)
_CHANGES = (DOCUMENT_NEW, DOCUMENT_CHANGED)

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One target on the index page: its state, last check, versions and last change."""

    url: str
    status: str
    last_checked_at: datetime | None
    versions: int
    suspicious: str | None
    last_change_at: datetime | None
    last_change_kind: str | None
    significance: float | None  # of the last change, when it was weighed


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    """Items of one page, and the key to ask for the next one (None on the last page)."""

    items: list[Item]
    next_key: Any


def _filter(state: str | None, prefix: str, changed_since: datetime) -> ColumnElement[bool]:
    cond: ColumnElement[bool] = true()
    if prefix:
        # A range the url index serves, then the exact prefix test (LIKE would escape nothing).
        cond = and_(T.c.url >= prefix, func.substr(T.c.url, 1, len(prefix)) == prefix)
    if state == CHANGED:
        recent = exists().where(
            E.c.target_id == T.c.id, E.c.kind == DOCUMENT_CHANGED, E.c.at >= changed_since
        )
        cond = and_(cond, recent)
    elif state == SUSPICIOUS:
        cond = and_(cond, T.c.active.is_(True), T.c.suspicious.is_not(None))
    elif state is not None:
        cond = and_(cond, T.c.active.is_(True), T.c.status == state)
    return cond


def targets_page(
    conn: Connection, *, state: str | None, prefix: str, after: str, limit: int, changed_since: datetime
) -> Page[IndexRow]:
    """Return up to `limit` targets by URL after `after`, filtered; with each one's last change."""
    cols = (T.c.id, T.c.url, T.c.status, T.c.active, T.c.last_checked_at, T.c.current_version, T.c.suspicious)
    query = select(*cols).where(_filter(state, prefix, changed_since), T.c.url > after)
    rows = conn.execute(query.order_by(T.c.url).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    last = (
        select(func.max(E.c.seq).label("seq"))
        .where(E.c.target_id.in_([r.id for r in rows]), E.c.kind.in_(_CHANGES))
        .group_by(E.c.target_id)
        .subquery()
    )
    changes = {
        e.target_id: e
        for e in conn.execute(
            select(E.c.target_id, E.c.at, E.c.kind, E.c.details).join(last, E.c.seq == last.c.seq)
        )
    }
    items = []
    for r in rows:
        change = changes.get(r.id)
        weight = change.details.get("significance") if change is not None and change.details else None
        items.append(
            IndexRow(
                url=r.url,
                status=r.status if r.active else Status.UNWATCHED.value,
                last_checked_at=r.last_checked_at,
                versions=r.current_version,
                suspicious=r.suspicious,
                last_change_at=change.at if change is not None else None,
                last_change_kind=change.kind if change is not None else None,
                significance=float(weight) if isinstance(weight, int | float) else None,
            )
        )
    return Page(items, rows[-1].url if more and rows else None)


def target(conn: Connection, url: str) -> TargetSummary:
    """Return one target's summary (see `mirror.targets.summaries`).

    Raises:
        TargetNotFound: the URL is not in the store.
    """
    r = target_row(conn, url)
    return TargetSummary(
        url=r.url,
        status=r.status if r.active else Status.UNWATCHED.value,
        source=r.source,
        last_checked_at=r.last_checked_at,
        next_check_at=r.next_check_at,
        versions=r.current_version,
        current_sha256=r.current_sha256,
        consecutive_failures=r.consecutive_failures,
        suspicious=r.suspicious,
        suspicious_since=r.suspicious_since,
        unwatched_since=r.unwatched_since,
    )


def versions_page(conn: Connection, url: str, before: int | None, limit: int) -> Page[Version]:
    """Return up to `limit` versions of `url`, newest first, numbered below `before` (all when None).

    Raises:
        TargetNotFound: the URL is not in the store.
    """
    t = target_row(conn, url)
    query = select(S).where(S.c.target_id == t.id)
    if before is not None:
        query = query.where(S.c.version < before)
    rows = conn.execute(query.order_by(S.c.version.desc()).limit(limit + 1)).all()
    items = [version_of(r) for r in rows[:limit]]
    return Page(items, items[-1].number if len(rows) > limit else None)


def events_page(conn: Connection, url: str, before: int | None, limit: int) -> Page[StoredEvent]:
    """Return up to `limit` events of `url` before sequence number `before` (the latest when None),
    in time order; `next_key` is the `before` of the earlier page.

    Raises:
        TargetNotFound: the URL is not in the store.
    """
    t = target_row(conn, url)
    query = select(E).where(E.c.target_id == t.id)
    if before is not None:
        query = query.where(E.c.seq < before)
    rows = conn.execute(query.order_by(E.c.seq.desc()).limit(limit + 1)).all()
    items = [ledger.to_stored_event(r) for r in reversed(rows[:limit])]
    return Page(items, items[0].seq if len(rows) > limit else None)


def neighbours(conn: Connection, url: str, at: datetime) -> list[Version]:
    """Return the versions of `url` either side of `at`: the latest first seen by then, the first after.

    Two index reads, whatever the number of versions; an empty list when it has none.

    Raises:
        TargetNotFound: the URL is not in the store.
    """
    t = target_row(conn, url)
    by_target = select(S).where(S.c.target_id == t.id)
    before = conn.execute(
        by_target.where(S.c.first_seen <= at).order_by(S.c.first_seen.desc()).limit(1)
    ).first()
    after = conn.execute(by_target.where(S.c.first_seen > at).order_by(S.c.first_seen).limit(1)).first()
    return [version_of(r) for r in (before, after) if r is not None]


def all_versions(conn: Connection, url: str) -> list[Version]:
    """Return every version of `url`, oldest first (a TimeMap lists them all).

    Raises:
        TargetNotFound: the URL is not in the store.
    """
    t = target_row(conn, url)
    return [version_of(r) for r in conn.execute(select(S).where(S.c.target_id == t.id).order_by(S.c.version))]


def last_verify(conn: Connection) -> VerifyRun | None:
    """Return the last recorded `mirror verify` run, or None when none was."""
    r = conn.execute(select(V).order_by(V.c.id.desc()).limit(1)).first()
    if r is None:
        return None
    return VerifyRun(r.finished_at, bool(r.ok), r.problems, r.head_seq, r.head_hash, r.id)


def record_verify(conn: Connection, run: VerifyRun, started_at: datetime) -> None:
    """Add one `verify_runs` row (the write side calls this in its transaction)."""
    conn.execute(
        V.insert().values(
            started_at=started_at,
            finished_at=run.finished_at,
            ok=run.ok,
            problems=run.problems,
            head_seq=run.head_seq,
            head_hash=run.head_hash,
        )
    )
