"""Leases on `targets`: the schedule lives in the database, so several daemons can share it.

APScheduler 4's vocabulary: `claim_due`, `release`, `extend`, `reap_abandoned`.
A target is claimable by `claim_due(owner, now, limit, lease)` when:

- it is active (still configured or discovered);
- its `next_check_at <= now`;
- its lease is free (`lease_owner IS NULL`) or expired (`lease_until < now`).

Claimed targets get `lease_owner = owner`, `lease_until = now + lease`, oldest due
first. On PostgreSQL the candidate rows are locked `FOR UPDATE SKIP LOCKED`, so two
daemons never claim the same target; on SQLite the write transaction is
`BEGIN IMMEDIATE`, which serialises writers. Recording a check clears the lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection, Engine, Row

from mirror import tables
from mirror.db import run_in_transaction
from mirror.domain import Target

T = tables.targets


def claim_due(engine: Engine, owner: str, now: datetime, limit: int, lease: timedelta) -> list[Target]:
    """Claim up to `limit` due targets for `owner` until `now + lease`; return them, oldest due first."""
    if limit <= 0:
        return []
    due = (
        select(T.c.id)
        .where(
            T.c.active.is_(True),
            T.c.next_check_at <= now,
            or_(T.c.lease_owner.is_(None), T.c.lease_until < now),
        )
        .order_by(T.c.next_check_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    stmt = (
        update(T)
        .where(T.c.id.in_(select(due.c.id)))
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(T.c.url, T.c.interval_seconds, T.c.source, T.c.next_check_at)
    )

    def claim(conn: Connection) -> list[Row[Any]]:
        return list(conn.execute(stmt).all())

    rows = sorted(run_in_transaction(engine, claim), key=lambda r: r.next_check_at)
    return [Target(r.url, timedelta(seconds=r.interval_seconds), r.source) for r in rows]


def release(engine: Engine, owner: str, urls: Sequence[str] | None = None) -> int:
    """Free the leases `owner` holds (on `urls`, or all of them); return how many."""
    cond = T.c.lease_owner == owner
    if urls is not None:
        cond = and_(cond, T.c.url.in_(list(urls)))
    stmt = update(T).where(cond).values(lease_owner=None, lease_until=None)
    return int(run_in_transaction(engine, lambda conn: conn.execute(stmt).rowcount))


def extend(engine: Engine, owner: str, urls: Sequence[str], until: datetime) -> int:
    """Push `owner`'s leases on `urls` to `until`; return how many are still held."""
    stmt = update(T).where(T.c.lease_owner == owner, T.c.url.in_(list(urls))).values(lease_until=until)
    return int(run_in_transaction(engine, lambda conn: conn.execute(stmt).rowcount))


def reap_abandoned(engine: Engine, now: datetime) -> int:
    """Free every expired lease (left by a killed daemon); return how many."""
    stmt = update(T).where(T.c.lease_until < now).values(lease_owner=None, lease_until=None)
    return int(run_in_transaction(engine, lambda conn: conn.execute(stmt).rowcount))
