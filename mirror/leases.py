"""Leases on `targets`: a target is checked by one process at a time, whatever runs at once.

APScheduler 4's vocabulary: `claim_due`, `claim`, `release`, `extend`, `reap_abandoned`.
`Archive` runs each in one write transaction of its own. Every way of checking claims
before it fetches: the daemon with `claim_due`, `mirror check` (all targets, or the URLs
given) with `claim`. A target is claimable by `owner` when:

- its lease is free (`lease_owner IS NULL`) or expired (`lease_until < now`): not even
  `owner` claims a target twice (a daemon's due targets stay due until their check is written);
- for `claim_due` only: it is active (still configured or discovered) and
  `next_check_at <= now`. `claim` takes the targets it is given, due or not: a
  `mirror check` checks now.

Claimed targets get `lease_owner = owner`, `lease_until = now + lease`. Candidate rows
are locked in id order (`FOR UPDATE`, re-read once a lock is granted): `claim_due` skips
rows another transaction holds (`SKIP LOCKED`, several daemons share the due work), while
`claim` waits for them and then sees whether they are free. On SQLite the write
transaction is `BEGIN IMMEDIATE`, which serialises claimers. Recording a check frees
its owner's lease (`recording.record_many`); an owner frees what it still holds when it
stops (`release`), and a killed owner's leases expire and are taken over.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.engine import Connection

from mirror import tables
from mirror.domain import Target
from mirror.targets import CHUNK
from mirror.urls import normalized

T = tables.targets


def _free(now: datetime) -> ColumnElement[bool]:
    return or_(T.c.lease_owner.is_(None), T.c.lease_until < now)


def _take(
    conn: Connection,
    owner: str,
    now: datetime,
    lease: timedelta,
    where: ColumnElement[bool],
    *,
    limit: int | None,
    skip_locked: bool,
    order: Any,
) -> list[Any]:
    """Lease the free rows matching `where` to `owner`; return their url, interval, source."""
    candidates = select(T.c.id).where(where, _free(now)).order_by(order)
    if limit is not None:
        candidates = candidates.limit(limit)
    due = candidates.with_for_update(skip_locked=skip_locked).cte("due")
    stmt = (
        update(T)
        .where(T.c.id.in_(select(due.c.id)))
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(T.c.url, T.c.interval_seconds, T.c.source, T.c.next_check_at)
    )
    return list(conn.execute(stmt).all())


def claim_due(conn: Connection, owner: str, now: datetime, limit: int, lease: timedelta) -> list[Target]:
    """Claim up to `limit` due active targets for `owner` until `now + lease`; return them, by due time."""
    if limit <= 0:
        return []
    due = and_(T.c.active.is_(True), T.c.next_check_at <= now)
    rows = _take(conn, owner, now, lease, due, limit=limit, skip_locked=True, order=T.c.next_check_at)
    return [_target(r) for r in sorted(rows, key=lambda r: r.next_check_at)]


def claim(conn: Connection, owner: str, urls: Sequence[str], now: datetime, lease: timedelta) -> list[Target]:
    """Claim those of `urls` (due or not) whose lease is free; return them in the order given.

    The others are held by another process: the caller skips them.
    """
    wanted = list(dict.fromkeys(normalized(u) for u in urls))
    found: dict[str, Target] = {}
    for i in range(0, len(wanted), CHUNK):
        chosen = T.c.url.in_(wanted[i : i + CHUNK])
        for row in _take(conn, owner, now, lease, chosen, limit=None, skip_locked=False, order=T.c.id):
            found[row.url] = _target(row)
    return [found[url] for url in wanted if url in found]


def release(conn: Connection, owner: str, urls: Sequence[str] | None = None) -> int:
    """Free the leases `owner` holds (on `urls`, or all of them); return how many."""
    cond = T.c.lease_owner == owner
    if urls is not None:
        cond = and_(cond, T.c.url.in_(list(urls)))
    return int(conn.execute(update(T).where(cond).values(lease_owner=None, lease_until=None)).rowcount)


def extend(conn: Connection, owner: str, urls: Sequence[str], until: datetime) -> int:
    """Push `owner`'s leases on `urls` to `until`; return how many are still held."""
    held = 0
    for i in range(0, len(urls), CHUNK):
        # Rows locked in id order, as claims and the writer lock them: no deadlock between them.
        mine = (
            select(T.c.id)
            .where(T.c.lease_owner == owner, T.c.url.in_(list(urls[i : i + CHUNK])))
            .order_by(T.c.id)
            .with_for_update()
            .cte("mine")
        )
        stmt = update(T).where(T.c.id.in_(select(mine.c.id))).values(lease_until=until)
        held += int(conn.execute(stmt).rowcount)
    return held


def reap_abandoned(conn: Connection, now: datetime) -> int:
    """Free every expired lease (left by a killed process); return how many."""
    stmt = update(T).where(T.c.lease_until < now).values(lease_owner=None, lease_until=None)
    return int(conn.execute(stmt).rowcount)


def _target(row: Any) -> Target:
    return Target(row.url, timedelta(seconds=row.interval_seconds), row.source)
