"""Fixity: re-hash every blob, check every snapshot names a stored blob whose history the
event log tells, and recompute the event hash chain. Collects every problem; never stops at the first.

What a clean report proves: each stored blob's bytes hash to its key; each version of
each document points at such a blob, in the order the chained `document.new` /
`document.changed` / `document.reappeared` events announced it; and no event was
edited, removed, inserted or reordered since the head (seq, hash) was published.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
import zstandard
from sqlalchemy import select, tuple_
from sqlalchemy.engine import Connection, Engine

from mirror import blobs, ledger, log, tables
from mirror.db import read
from mirror.errors import StoreError

B, S, E, T = tables.blobs, tables.snapshots, tables.events, tables.targets

logger = structlog.get_logger("mirror.verify")

# Events that announce the content of a new version, in the order versions were made.
_VERSION_EVENTS = ("document.new", "document.changed")


@dataclass(frozen=True, slots=True)
class Problem:
    """One damaged item: what (`blob`, `snapshot`, `event`, `head`), which, and how."""

    item: str
    key: str
    problem: str
    url: str | None = None


@dataclass
class VerifyReport:
    """All that `verify` checked and every problem it found."""

    blobs: int = 0
    blob_bytes: int = 0
    snapshots: int = 0
    events: int = 0
    head_seq: int = 0
    head_hash: str = ledger.GENESIS
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


Progress = Callable[[int], object]


def run(
    engine: Engine,
    *,
    batch: int = 200,
    progress: Progress | None = None,
    published: tuple[int, str] | None = None,
) -> VerifyReport:
    """Return the report of a full verification of the store. Memory stays flat: rows stream in batches.

    `progress(n)` is called with the number of content bytes checked since the last call.
    `published` is a head (seq, hash) published earlier: event `seq` must still have that hash.
    Each problem is also logged as `integrity.damaged`.

    Raises:
        StoreError: the database failed (damage is reported, not raised).
    """
    report = VerifyReport()
    _check_blobs(engine, report, batch, progress)
    read(engine, lambda conn: _check_snapshots(conn, report))
    read(engine, lambda conn: _check_chain(conn, report, batch))
    if published is not None:
        check_published(engine, report, *published)
    for p in report.problems:
        logger.error(log.INTEGRITY_DAMAGED, item=p.item, key=p.key, problem=p.problem, url=p.url)
    return report


def head(engine: Engine) -> tuple[int, str]:
    """Return the current head of the event chain: (seq, hash)."""
    return read(engine, ledger.head)


def check_published(engine: Engine, report: VerifyReport, seq: int, digest: str) -> None:
    """Add a problem to `report` unless event `seq` still carries the published hash `digest`."""

    def load(conn: Connection) -> str | None:
        value = conn.execute(select(E.c.hash).where(E.c.seq == seq)).scalar()
        return None if value is None else str(value)

    stored = read(engine, load)
    if stored is None:
        report.problems.append(Problem("head", f"#{seq}", "the published head's event is missing"))
    elif stored != digest.lower():
        report.problems.append(
            Problem(
                "head", f"#{seq}", f"carries hash {stored}, not the published {digest}: history was rewritten"
            )
        )


def total_blob_bytes(engine: Engine) -> int:
    """Return the content bytes verify will re-hash (for a progress bar)."""
    from sqlalchemy import func

    return int(
        read(engine, lambda conn: conn.execute(select(func.coalesce(func.sum(B.c.size), 0))).scalar_one())
    )


def _check_blobs(engine: Engine, report: VerifyReport, batch: int, progress: Progress | None) -> None:
    # Blobs in chain order (root, then its deltas by chain length), so each delta's base was
    # just decoded and sits in the reader's bounded cache: every blob is decoded once and
    # memory stays flat. Keyset pagination: each batch is its own short read transaction.
    # Rows with no root (edited: `put` and the migration always set one) come last, by key.
    reader = blobs.Reader()
    order = (B.c.root_sha256, B.c.chain_length, B.c.sha256)
    last: tuple[str, int, str] | None = None
    while True:

        def page(conn: Connection, after: tuple[str, int, str] | None = last) -> list[Any]:
            query = select(*order).where(B.c.root_sha256.is_not(None))
            if after is not None:
                query = query.where(tuple_(*order) > tuple_(*after))
            return list(conn.execute(query.order_by(*order).limit(batch)))

        rows = read(engine, page)
        if not rows:
            break
        keys = [row.sha256 for row in rows]
        read(engine, partial(_check_blob_batch, keys=keys, report=report, progress=progress, reader=reader))
        last = tuple(rows[-1])
    after_key = ""
    while True:

        def rootless(conn: Connection, after: str = after_key) -> list[str]:
            query = select(B.c.sha256).where(B.c.root_sha256.is_(None), B.c.sha256 > after)
            return list(conn.execute(query.order_by(B.c.sha256).limit(batch)).scalars())

        keys = read(engine, rootless)
        if not keys:
            return
        read(engine, partial(_check_blob_batch, keys=keys, report=report, progress=progress, reader=reader))
        after_key = keys[-1]


def _check_blob_batch(
    conn: Connection,
    keys: list[str],
    report: VerifyReport,
    progress: Progress | None,
    reader: blobs.Reader | None = None,
) -> None:
    reader = reader or blobs.Reader()
    for key in keys:
        report.blobs += 1
        try:
            # Re-hashes the blob and every base it is rebuilt from; a damaged base is named.
            data = reader.get(conn, key)
        except (StoreError, zstandard.ZstdError) as exc:
            report.problems.append(Problem("blob", key, str(exc).removeprefix(f"blob {key}: ")))
            continue
        report.blob_bytes += len(data)
        if progress is not None:
            progress(len(data))


def _check_snapshots(conn: Connection, report: VerifyReport) -> None:
    snaps = conn.execute(
        select(S.c.target_id, S.c.version, S.c.sha256, T.c.url, B.c.sha256.label("blob"))
        .join(T, T.c.id == S.c.target_id)
        .outerjoin(B, B.c.sha256 == S.c.sha256)
        .order_by(S.c.target_id, S.c.version)
        .execution_options(yield_per=1000)
    )
    announced = conn.execute(
        select(E.c.target_id, E.c.new_sha256, E.c.seq)
        .where(E.c.kind.in_(_VERSION_EVENTS))
        .order_by(E.c.target_id, E.c.seq)
        .execution_options(yield_per=1000)
    )
    by_target = _merge(
        itertools.groupby(snaps, key=lambda r: r.target_id),
        itertools.groupby(announced, key=lambda r: r.target_id),
    )
    for target_id, versions, events in by_target:
        shas = [e.new_sha256 for e in events]
        for row in versions:
            report.snapshots += 1
            where = f"{row.url} v{row.version}"
            if row.blob is None:
                report.problems.append(
                    Problem("snapshot", where, f"names blob {row.sha256}, which is missing", row.url)
                )
            if row.version > len(shas):
                report.problems.append(Problem("snapshot", where, "no event announced this version", row.url))
            elif shas[row.version - 1] != row.sha256:
                report.problems.append(
                    Problem(
                        "snapshot",
                        where,
                        f"is {row.sha256} but the event log announced {shas[row.version - 1]}",
                        row.url,
                    )
                )
        del target_id


def _merge(
    left: Iterator[tuple[int, Iterator[Any]]], right: Iterator[tuple[int, Iterator[Any]]]
) -> Iterator[tuple[int, list[Any], list[Any]]]:
    """Join two streams grouped by ascending target id; a side with no group gives []."""
    lk, lv = next(left, (None, None))
    rk, rv = next(right, (None, None))
    while lk is not None:
        if rk is None or lk < rk:
            yield lk, list(lv or []), []
            lk, lv = next(left, (None, None))
        elif rk < lk:
            rk, rv = next(right, (None, None))
        else:
            yield lk, list(lv or []), list(rv or [])
            lk, lv = next(left, (None, None))
            rk, rv = next(right, (None, None))


def _check_chain(conn: Connection, report: VerifyReport, batch: int) -> None:
    prev = ledger.GENESIS
    expected_seq = 1
    for entry in ledger.walk(conn, batch):
        event = entry.event
        report.events += 1
        where = f"#{event.seq}"
        if event.seq != expected_seq:
            report.problems.append(
                Problem("event", where, f"expected seq {expected_seq}: events missing or inserted", event.url)
            )
        if entry.prev_hash != prev:
            report.problems.append(
                Problem(
                    "event",
                    where,
                    "does not follow the previous event (prev_hash mismatch: deleted, inserted or reordered)",
                    event.url,
                )
            )
        recomputed = ledger.chain_hash(entry.prev_hash, event)
        if recomputed != event.hash:
            report.problems.append(
                Problem(
                    "event",
                    where,
                    f"{event.kind} was edited: its content no longer matches its hash",
                    event.url,
                )
            )
        prev = event.hash
        expected_seq = event.seq + 1
    seq, digest = ledger.head(conn)
    report.head_seq, report.head_hash = seq, digest
    if seq != expected_seq - 1 or digest != prev:
        report.problems.append(
            Problem(
                "head",
                f"#{seq}",
                f"the head row ({seq}, {digest[:12]}) does not match the "
                f"last event ({expected_seq - 1}, {prev[:12]})",
            )
        )
