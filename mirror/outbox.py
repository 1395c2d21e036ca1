"""The notifications outbox in SQL: a durable cursor per destination in `notify_cursors`, and its lease.

A destination's row says which events it has had: every event with `seq <= cursor.seq`
was acknowledged by it (a 2xx, Apprise's success) or passed over by its filters. Rows are
claimed as targets are (`mirror.leases`): a conditional UPDATE takes the row when its
lease is free or expired and its back-off is over, so one process at a time delivers to
a destination, whatever runs at once (on PostgreSQL a second claimer waits on the row
lock and then sees it taken; on SQLite BEGIN IMMEDIATE serialises them). Every step
after that (`advance`, `failed`, `mark`) holds only while the lease is still the
claimer's: a process whose lease expired under it changes nothing, and the next owner
resends from the cursor. Delivery is therefore at least once, and exactly once but for
a crash between a receiver's 2xx and the cursor's commit.

`Archive` runs each in a write transaction of its own; `Reader.outbox` reads the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection

from mirror import tables
from mirror.domain import VerifyRun

N = tables.notify_cursors
V = tables.verify_runs


@dataclass(frozen=True, slots=True)
class Cursor:
    """One destination's place in the event log, and how its deliveries went."""

    name: str
    seq: int  # every event up to here is acknowledged (or not for this destination)
    created_at: datetime
    delivered_at: datetime | None = None
    delivered_seq: int | None = None
    failures: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    digest_from: datetime | None = None
    head_sent_at: datetime | None = None
    verify_run: int = 0  # the last `verify_runs.id` told of (`integrity.damaged`); later ones are owed
    lease_owner: str | None = None
    lease_until: datetime | None = None


def _cursor(row: Any) -> Cursor:
    return Cursor(
        name=row.name,
        seq=int(row.seq),
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        delivered_seq=None if row.delivered_seq is None else int(row.delivered_seq),
        failures=int(row.failures),
        retry_at=row.retry_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        digest_from=row.digest_from,
        head_sent_at=row.head_sent_at,
        verify_run=int(row.verify_run or 0),
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
    )


def register(conn: Connection, names: Sequence[str], head: int, now: datetime) -> list[str]:
    """Add a cursor at `head` for each of `names` that has none; return the names added.

    A new destination starts at the chain's head when it is first configured: it is told
    what happens from then on, not the whole history.
    """
    known = set(conn.execute(select(N.c.name).where(N.c.name.in_(list(names)))).scalars())
    last_run = conn.execute(select(func.max(V.c.id))).scalar() or 0  # nor past verify runs
    added = []
    for name in names:
        if name in known:
            continue
        # Two daemons starting together may both add it: the second insert does nothing.
        row = {"name": name, "seq": head, "created_at": now, "failures": 0, "digest_from": now}
        row["verify_run"] = last_run
        stmt = _insert(conn)(N).values(**row).on_conflict_do_nothing(index_elements=[N.c.name])
        if conn.execute(stmt).rowcount:
            added.append(name)
    return added


def _insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def claim(conn: Connection, name: str, owner: str, now: datetime, lease: timedelta) -> Cursor | None:
    """Lease `name`'s cursor to `owner` until `now + lease` when it is free and not backing off.

    Returns the cursor, or None when another process holds it or its back-off is not over.
    """
    free = or_(N.c.lease_owner.is_(None), N.c.lease_until < now, N.c.lease_owner == owner)
    ready = or_(N.c.retry_at.is_(None), N.c.retry_at <= now)
    stmt = (
        update(N)
        .where(N.c.name == name, free, ready)
        .values(lease_owner=owner, lease_until=now + lease)
        .returning(*N.c)
    )
    row = conn.execute(stmt).first()
    return None if row is None else _cursor(row)


def _mine(name: str, owner: str) -> Any:
    return and_(N.c.name == name, N.c.lease_owner == owner)


def advance(
    conn: Connection, name: str, owner: str, seq: int, now: datetime, lease: timedelta, *, sent: bool
) -> bool:
    """Move `name`'s cursor to `seq` (delivered when `sent`, else passed over); return whether the lease held.

    Clears the back-off and extends the lease.
    """
    values: dict[str, Any] = {"seq": seq, "failures": 0, "retry_at": None, "lease_until": now + lease}
    if sent:
        values.update(delivered_at=now, delivered_seq=seq)
    stmt = update(N).where(_mine(name, owner), N.c.seq <= seq).values(**values)
    return int(conn.execute(stmt).rowcount) == 1


def failed(conn: Connection, name: str, owner: str, error: str, now: datetime, retry_at: datetime) -> bool:
    """Record a failed delivery, back off until `retry_at` and free the lease; return whether it held."""
    stmt = (
        update(N)
        .where(_mine(name, owner))
        .values(
            failures=N.c.failures + 1,
            retry_at=retry_at,
            last_error=error[:1000],
            last_error_at=now,
            lease_owner=None,
            lease_until=None,
        )
    )
    return int(conn.execute(stmt).rowcount) == 1


def mark(conn: Connection, name: str, owner: str, **values: datetime | int | None) -> bool:
    """Set `digest_from`, `head_sent_at`, `delivered_at` or `verify_run` of `name` while `owner` holds it;
    return whether it held."""
    allowed = {"digest_from", "head_sent_at", "delivered_at", "verify_run"}
    if not values or set(values) - allowed:
        raise ValueError(f"mark sets only {sorted(allowed)}")
    return int(conn.execute(update(N).where(_mine(name, owner)).values(**values)).rowcount) == 1


def release(conn: Connection, name: str, owner: str) -> int:
    """Free `owner`'s lease on `name`; return 1 when it held one."""
    stmt = update(N).where(_mine(name, owner)).values(lease_owner=None, lease_until=None)
    return int(conn.execute(stmt).rowcount)


def cursors(conn: Connection) -> list[Cursor]:
    """Return every destination's cursor, by name (those no longer configured too)."""
    return [_cursor(row) for row in conn.execute(select(N).order_by(N.c.name)).all()]


def verify_runs_after(conn: Connection, run: int, limit: int = 100) -> list[VerifyRun]:
    """Return the recorded `mirror verify` runs after `verify_runs.id` `run`, oldest first."""
    rows = conn.execute(select(V).where(V.c.id > run).order_by(V.c.id).limit(limit)).all()
    return [VerifyRun(r.finished_at, bool(r.ok), r.problems, r.head_seq, r.head_hash, r.id) for r in rows]
