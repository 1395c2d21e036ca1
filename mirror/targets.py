"""The `targets` table: kept in step with the config and with discovery, looked up and listed.

`Archive` runs these inside its transactions (`sync_targets` and `add_discovered` in one
write transaction each, a few bulk statements whatever the number of targets).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, select, true, update
from sqlalchemy.engine import Connection

from mirror import db, tables
from mirror.domain import Status, Target, TargetState
from mirror.errors import TargetNotFound, TargetNotWatched
from mirror.tables import AnyRow
from mirror.urls import host_of, normalize_url, normalized

T = tables.targets
S = tables.snapshots

CONFIG = "config"
SUSPICIOUS = "suspicious"  # `summaries(status=...)` of targets flagged suspicious, whatever their status
CHUNK = 500  # URLs per IN (...) list: far below SQLite's and PostgreSQL's parameter limits
SYNC_PAGE = 5000  # stored targets read at once by a sync
INSERT_CHUNK = 2000  # new targets per executemany: bounds the start-up peak with 100,000 targets
_INSERT_TARGET = T.insert()


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What `sync_targets` changed. A configured target that comes back counts as added."""

    added: int
    removed: int
    updated: int
    total: int  # active targets after the sync, configured and discovered


@dataclass(frozen=True, slots=True)
class TargetSummary:
    """One target, for `mirror targets`: `status` is `unwatched` once it left the config."""

    url: str
    status: str
    source: str
    last_checked_at: datetime | None
    next_check_at: datetime | None
    versions: int
    current_sha256: str | None
    consecutive_failures: int
    suspicious: str | None = None  # why the last change looked like tampering
    suspicious_since: datetime | None = None
    unwatched_since: datetime | None = None  # when it left the config; None while watched


def sync_targets(
    conn: Connection,
    targets: Sequence[Target],
    now: datetime,
    rng: random.Random,
    scopes: Sequence[str] | None = None,
) -> SyncReport:
    """Make the configured targets in the store match `targets`; return what changed.

    New targets get their first check spread uniformly over [now, now + interval).
    A changed interval is saved (and a next check beyond the new interval is
    brought forward). Configured targets no longer listed become inactive
    (`unwatched_since = now`: no longer checked or claimed, their history kept); one
    listed again is active again. Discovered targets follow the sources' `scopes`
    (canonical URL prefixes, as discovered URLs are stored): one under no scope any
    more is unwatched the same way, and watched again when a source covers it again;
    with `scopes` None they are left alone. A few bulk statements, whatever the number
    of targets.
    """
    wanted = _wanted(targets)  # what is left of it after the walk below is new
    # The stored targets are walked a page at a time, not held: a million rows at once cost
    # ~400 MB at a restart. What changes is collected (a few rows, or the removed ones).
    cols = (T.c.id, T.c.url, T.c.source, T.c.active, T.c.interval_seconds)
    changes: list[dict[str, Any]] = []
    gone: list[dict[str, Any]] = []
    back: list[dict[str, Any]] = []  # discovered targets a source covers again
    retimed: list[tuple[int, int]] = []  # (id, seconds): configured targets whose interval changed
    reactivated = 0
    for row in conn.execute(select(*cols).execution_options(yield_per=SYNC_PAGE)):
        seconds = wanted.pop(row.url, None)
        if seconds is not None:  # configured
            if not row.active:
                reactivated += 1
                changes.append(_change(row.id, seconds, _spread(now, seconds, rng)))
            elif row.interval_seconds != seconds or row.source != CONFIG:
                retimed.append((row.id, seconds))
        elif row.source == CONFIG:
            if row.active:
                gone.append({"b_id": row.id})
        elif scopes is not None:
            covered = any(row.url.startswith(scope) for scope in scopes)
            if row.active and not covered:
                gone.append({"b_id": row.id})
            elif not row.active and covered:
                back.append({"b_id": row.id, "b_next": _spread(now, row.interval_seconds, rng)})
    # next_check_at is read only for the few targets whose interval changed: converting 100,000
    # datetimes costs more than the rest of an unchanged sync.
    for target_id, seconds in retimed:
        next_at = conn.execute(select(T.c.next_check_at).where(T.c.id == target_id)).scalar_one()
        changes.append(_change(target_id, seconds, min(next_at, now + timedelta(seconds=seconds))))
    # New rows are built and inserted a chunk at a time: a million at once would cost ~500 MB.
    chunk: list[dict[str, Any]] = []
    inserted = 0
    for url, seconds in wanted.items():
        chunk.append(_new_target(url, CONFIG, seconds, now, rng))
        if len(chunk) == INSERT_CHUNK:
            conn.execute(_INSERT_TARGET, chunk)
            inserted += len(chunk)
            chunk = []
    if chunk:
        conn.execute(_INSERT_TARGET, chunk)
        inserted += len(chunk)
    if changes:
        conn.execute(
            update(T)
            .where(T.c.id == bindparam("b_id"))
            .values(
                active=True,
                unwatched_since=None,
                source=CONFIG,
                interval_seconds=bindparam("b_interval"),
                next_check_at=bindparam("b_next"),
            ),
            changes,
        )
    if back:
        conn.execute(
            update(T)
            .where(T.c.id == bindparam("b_id"))
            .values(active=True, unwatched_since=None, next_check_at=bindparam("b_next")),
            back,
        )
    if gone:
        conn.execute(
            update(T).where(T.c.id == bindparam("b_id")).values(active=False, unwatched_since=now), gone
        )
    total = conn.execute(select(func.count()).select_from(T).where(T.c.active.is_(True))).scalar_one()
    added = inserted + reactivated + len(back)
    return SyncReport(added, len(gone), len(changes) - reactivated, int(total))


def add_discovered(conn: Connection, targets: Sequence[Target], now: datetime, rng: random.Random) -> int:
    """Add the targets not yet in the store (source "crawl" or "sitemap"); return how many were added."""
    wanted = {normalize_url(t.url): t for t in targets}
    present = known_urls(conn, list(wanted))
    rows = [
        _new_target(url, t.source, seconds_of(t.interval), now, rng)
        for url, t in wanted.items()
        if url not in present
    ]
    if not rows:
        return 0
    # DO NOTHING: another daemon may add the same URL between our SELECT and INSERT.
    stmt = db.insert_ignoring(conn.dialect.name, T, T.c.url).returning(T.c.id)
    return len(conn.execute(stmt, rows).all())


def known_urls(conn: Connection, urls: Sequence[str]) -> set[str]:
    """Return those of `urls` (normalised) that are targets in the store, active or not."""
    present: set[str] = set()
    for i in range(0, len(urls), CHUNK):
        present.update(conn.execute(select(T.c.url).where(T.c.url.in_(urls[i : i + CHUNK]))).scalars())
    return present


def states_of(conn: Connection, urls: Sequence[str]) -> dict[str, TargetState]:
    """Return what the store knows of each of `urls` before its next check, by normalised URL.

    One query per `CHUNK` URLs (the target joined to its current version's content type).

    Raises:
        TargetNotFound: one of `urls` is not in the store.
    """
    rows = by_url(conn, _STATES, urls)
    return {url: _state(row) for url, row in rows.items()}


def by_url(conn: Connection, query: Select[Any], urls: Sequence[str]) -> dict[str, AnyRow]:
    """Return the rows of `query` (which selects `url` and binds the list `urls`) by normalised URL.

    URLs are looked up as given first (those of a round come from the store, normalised
    already); only the ones not found are normalised and looked up again.

    Raises:
        TargetNotFound: one of `urls` is not in the store.
    """
    found: dict[str, AnyRow] = {}
    _select_into(conn, query, list(dict.fromkeys(urls)), found)
    missing = {u: normalized(u) for u in urls if u not in found}
    _select_into(conn, query, [u for u in dict.fromkeys(missing.values()) if u not in found], found)
    for url in missing.values():
        if url not in found:
            raise TargetNotFound(url)
    return found


def _select_into(conn: Connection, query: Select[Any], urls: list[str], found: dict[str, AnyRow]) -> None:
    for i in range(0, len(urls), CHUNK):
        for row in conn.execute(query, {"urls": urls[i : i + CHUNK]}):
            found[row.url] = row


def count_under(conn: Connection, prefix: str) -> int:
    """Return how many targets (active or not) have a URL starting with `prefix`."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    stmt = select(func.count()).select_from(T).where(T.c.url.like(escaped + "%", escape="\\"))
    return int(conn.execute(stmt).scalar_one())


def redirected_to(conn: Connection, url: str, besides: str) -> int:
    """Return how many active targets other than `besides` last answered through a redirect to `url`."""
    stmt = (
        select(func.count())
        .select_from(T)
        .where(T.c.moved_to == url, T.c.url != besides, T.c.active.is_(True))
    )
    return int(conn.execute(stmt).scalar_one())


def active_targets(conn: Connection, urls: Sequence[str] | None = None) -> list[Target]:
    """Return every active target (by URL), or the targets with these URLs in the order given.

    Raises:
        TargetNotFound: one of `urls` is not in the store.
        TargetNotWatched: one of `urls` is in the store but no longer in the config.
    """
    cols = (T.c.url, T.c.interval_seconds, T.c.source, T.c.active, T.c.unwatched_since)
    if urls is None:
        rows = conn.execute(select(*cols).where(T.c.active.is_(True)).order_by(T.c.url)).all()
        return [_target(r) for r in rows]
    wanted = [normalized(u) for u in urls]
    found: dict[str, Target] = {}
    for i in range(0, len(wanted), CHUNK):
        for r in conn.execute(select(*cols).where(T.c.url.in_(wanted[i : i + CHUNK]))):
            if not r.active:
                raise TargetNotWatched(r.url, r.unwatched_since)
            found[r.url] = _target(r)
    for url in wanted:
        if url not in found:
            raise TargetNotFound(url)
    return [found[url] for url in dict.fromkeys(wanted)]


def summaries(
    conn: Connection, status: str | None = None, *, after: str | None = None, limit: int | None = None
) -> list[TargetSummary]:
    """Return every target (in one `status`, or watched and flagged when it is `SUSPICIOUS`), by URL.

    A target no longer in the config is `unwatched`, whatever its last check found. With
    `after` and `limit`: only the first `limit` whose URL sorts after `after` (a page of them).
    """
    cond: ColumnElement[bool] = T.c.active.is_(True)
    if status is None:
        cond = true()
    elif status == Status.UNWATCHED:
        cond = T.c.active.is_(False)
    elif status == SUSPICIOUS:
        cond = and_(cond, T.c.suspicious.is_not(None))
    else:
        cond = and_(cond, T.c.status == status)
    if after is not None:
        cond = and_(cond, T.c.url > after)
    query = select(T).where(cond).order_by(T.c.url)
    if limit is not None:
        query = query.limit(limit)
    return [
        TargetSummary(
            url=r.url,
            status=r.status if r.active else Status.UNWATCHED.value,
            source=r.source,
            last_checked_at=r.last_checked_at,
            next_check_at=r.next_check_at,
            versions=r.current_version,  # versions are numbered 1..n per target
            current_sha256=r.current_sha256,
            consecutive_failures=r.consecutive_failures,
            suspicious=r.suspicious,
            suspicious_since=r.suspicious_since,
            unwatched_since=r.unwatched_since,
        )
        for r in conn.execute(query)
    ]


def target_row(conn: Connection, url: str) -> AnyRow:
    """Return the `targets` row of `url` (in any spelling that normalises to it).

    Raises:
        TargetNotFound: the URL is not in the store.
    """
    url = normalized(url)
    row = conn.execute(select(T).where(T.c.url == url)).first()
    if row is None:
        raise TargetNotFound(url)
    return row


def _wanted(targets: Sequence[Target]) -> dict[str, int]:
    """Return each target's normalised URL and interval in seconds.

    With a million targets this dict is the sync's peak: a URL already normal (as the
    config gives them) is kept as the same string, not a copy, and each distinct interval
    is one int.
    """
    seconds: dict[timedelta, int] = {}
    wanted: dict[str, int] = {}
    for target in targets:
        url = target.url
        normal = normalize_url(url)
        interval = target.interval
        if interval not in seconds:
            seconds[interval] = seconds_of(interval)
        wanted[url if normal == url else normal] = seconds[interval]
    return wanted


def seconds_of(interval: timedelta) -> int:
    """Return an interval in whole seconds (never negative), as `targets.interval_seconds` holds it."""
    return max(0, round(interval.total_seconds()))


def _state(row: AnyRow) -> TargetState:
    return TargetState(
        status=Status(row.status),
        current_sha256=row.current_sha256,
        current_version=row.current_version,
        content_type=row.content_type,
        consecutive_failures=row.consecutive_failures,
        etag=row.etag,
        last_modified=row.last_modified,
        moved_to=row.moved_to,
        suspicious=row.suspicious,
        missing_checks=row.missing_checks,
        missing_since=row.missing_since,
    )


def _states_query() -> Select[Any]:
    current = and_(S.c.target_id == T.c.id, S.c.version == T.c.current_version)
    columns = (
        T.c.url, T.c.status, T.c.current_sha256, T.c.current_version, S.c.content_type,
        T.c.consecutive_failures, T.c.etag, T.c.last_modified, T.c.moved_to, T.c.suspicious,
        T.c.missing_checks, T.c.missing_since,
    )  # fmt: skip
    return (
        select(*columns)
        .select_from(T.outerjoin(S, current))
        .where(T.c.url.in_(bindparam("urls", expanding=True)))
    )


# Built once: statement building costs more Python time than the query on a warm store.
_STATES = _states_query()


def _target(row: AnyRow) -> Target:
    return Target(row.url, timedelta(seconds=row.interval_seconds), row.source)


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
