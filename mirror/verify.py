"""Fixity: re-hash every blob, check every row a reader uses against the events that announced it,
and recompute the event hash chain. Collects every problem; never stops at the first.

What a clean report proves:
- each stored blob's bytes (rebuilt through its deltas) hash to its key and have its size;
- each version of each document is the one its chained events announced: for the i-th
  `document.new` / `document.changed` event (or any event announcing a snapshot) of a
  target, snapshot vi exists, names that event's new SHA-256 and a stored blob, and has the
  size, first seen time, HTTP status, content type and final URL the event announced
  (events written before they announced these are checked for what they carry); the
  event's `version`, when it has one, is i; no snapshot exists that no event announced;
- each target's URL is the URL its events carry, and its latest version (what `show`
  and `-1` read) is the last one announced;
- no event was edited, removed, inserted or reordered since the head (seq, hash), and
  none since a published head, when one is given.

What it cannot prove: `last_seen` (moved by each unchanged check, which writes no event),
the recorded headers (no command reads them), the target's state, validators and schedule,
the `checks` log (pruned by retention), and anything about a target with no event yet.

Versions and targets are checked in `verify_versions`. Damage is reported, never raised:
rows are read as stored (`integrity.AsStored`), so a value SQLite let an UPDATE write in
a column of another type is a problem like any other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import structlog
import zstandard
from sqlalchemy import func, literal, select, tuple_, type_coerce
from sqlalchemy.engine import Connection, Engine

from mirror import blobs, ledger, tables, verify_versions
from mirror.db import read
from mirror.domain import StoredEvent
from mirror.errors import StoreError
from mirror.events import INTEGRITY_DAMAGED
from mirror.integrity import AsStored, Problem, VerifyReport, as_time

B, S, E, T, H = tables.blobs, tables.snapshots, tables.events, tables.targets, tables.ledger_head

logger = structlog.get_logger("mirror.verify")

__all__ = ["Problem", "VerifyReport", "check_published", "head", "run", "total_blob_bytes"]

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
    culprits = report.damaged_blobs  # damaged blob -> the blob (itself or a base) whose damage spoils it
    _check_blobs(engine, report, batch, progress, culprits)
    _name_snapshots(engine, report, batch, culprits)
    read(engine, lambda conn: verify_versions.check_versions(conn, report))
    read(engine, lambda conn: verify_versions.check_event_targets(conn, report))
    read(engine, lambda conn: _check_chain(conn, report, batch))
    if published is not None:
        check_published(engine, report, *published)
    report.problems = [_with_urls(p) for p in report.problems]
    for p in report.problems:
        logger.error(
            INTEGRITY_DAMAGED,
            item=p.item,
            key=p.key,
            problem=p.problem,
            url=p.url,
            urls=list(p.urls),
            snapshots=list(p.snapshots),
        )
    return report


def _with_urls(p: Problem) -> Problem:
    """Return `p` with `urls` and `snapshots` filled from its URL and key when nothing set them."""
    urls = p.urls or ((p.url,) if p.url is not None else ())
    snapshots = p.snapshots or ((p.key,) if p.item == "snapshot" else ())
    return replace(p, urls=urls, snapshots=snapshots)


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
    return int(
        read(engine, lambda conn: conn.execute(select(func.coalesce(func.sum(B.c.size), 0))).scalar_one())
    )


def _check_blobs(
    engine: Engine, report: VerifyReport, batch: int, progress: Progress | None, culprits: dict[str, str]
) -> None:
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
                # Each value bound as its column's type (a digest as its bytes), so they compare alike.
                bound = (literal(value, column.type) for column, value in zip(order, after, strict=True))
                query = query.where(tuple_(*order) > tuple_(*bound))
            return list(conn.execute(query.order_by(*order).limit(batch)))

        rows = read(engine, page)
        if not rows:
            break
        keys = [row.sha256 for row in rows]
        check = partial(_check_blob_batch, keys=keys, report=report, progress=progress, reader=reader)
        read(engine, partial(check, culprits=culprits))
        last = tuple(rows[-1])
    after_key = ""
    while True:

        def rootless(conn: Connection, after: str = after_key) -> list[str]:
            query = select(B.c.sha256).where(B.c.root_sha256.is_(None), B.c.sha256 > after)
            return list(conn.execute(query.order_by(B.c.sha256).limit(batch)).scalars())

        keys = read(engine, rootless)
        if not keys:
            return
        check = partial(_check_blob_batch, keys=keys, report=report, progress=progress, reader=reader)
        read(engine, partial(check, culprits=culprits))
        after_key = keys[-1]


def _check_blob_batch(
    conn: Connection,
    keys: list[str],
    report: VerifyReport,
    progress: Progress | None,
    reader: blobs.Reader | None = None,
    culprits: dict[str, str] | None = None,
) -> None:
    reader = reader or blobs.Reader()
    for key in keys:
        report.blobs += 1
        try:
            # Re-hashes the blob and every base it is rebuilt from; a damaged base is named.
            data = reader.get(conn, key)
        except blobs.Damaged as exc:
            report.problems.append(Problem("blob", key, str(exc).removeprefix(f"blob {key}: ")))
            if culprits is not None:
                culprits[key] = exc.culprit
            continue
        except (StoreError, zstandard.ZstdError) as exc:
            report.problems.append(Problem("blob", key, str(exc).removeprefix(f"blob {key}: ")))
            if culprits is not None:
                culprits[key] = key
            continue
        report.blob_bytes += len(data)
        if progress is not None:
            progress(len(data))


def _name_snapshots(engine: Engine, report: VerifyReport, batch: int, culprits: dict[str, str]) -> None:
    """Give each damaged blob's problem every snapshot and URL whose bytes are rebuilt from it.

    Through delta chains: a damaged base's problem names its own versions and those of every
    blob rebuilt from it (`culprits`), and each of those blobs has its own problem too.
    """
    keys = sorted({p.key for p in report.problems if p.item == "blob"})
    users: dict[str, list[tuple[str, Any]]] = {}
    for i in range(0, len(keys), batch):

        def load(conn: Connection, chunk: list[str] = keys[i : i + batch]) -> list[Any]:
            return list(
                conn.execute(
                    select(S.c.sha256, T.c.url, S.c.version)
                    .join(T, T.c.id == S.c.target_id)
                    .where(S.c.sha256.in_(chunk))
                    .order_by(T.c.url, S.c.version)
                )
            )

        for row in read(engine, load):
            users.setdefault(row.sha256, []).append((row.url, row.version))
    spoiled: dict[str, list[tuple[str, Any]]] = {}
    for key, culprit in culprits.items():
        if culprit != key:
            spoiled.setdefault(culprit, []).extend(users.get(key, []))
    for n, p in enumerate(report.problems):
        named = sorted(set(users.get(p.key, []) + spoiled.get(p.key, [])), key=_by_url_and_version)
        if p.item == "blob" and named:
            urls = tuple(dict.fromkeys(url for url, _ in named))
            report.problems[n] = replace(
                p, url=urls[0], urls=urls, snapshots=tuple(f"{url} v{v}" for url, v in named)
            )


def _by_url_and_version(snapshot: tuple[str, Any]) -> tuple[str, int, str]:
    url, version = snapshot
    return (url, version, "") if isinstance(version, int) else (url, 0, str(version))


def _event_rows(conn: Connection, batch: int) -> Iterator[Any]:
    """Yield every event row in seq order, `batch` at a time, its time and details as stored."""
    columns = (
        E.c.seq,
        E.c.url,
        type_coerce(E.c.at, AsStored()).label("at"),
        E.c.kind,
        E.c.old_sha256,
        E.c.new_sha256,
        type_coerce(E.c.details, AsStored()).label("details"),
        type_coerce(E.c.diff, AsStored()).label("diff"),
        E.c.prev_hash,
        E.c.hash,
    )
    last = 0
    while True:
        rows = conn.execute(select(*columns).where(E.c.seq > last).order_by(E.c.seq).limit(batch)).all()
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1].seq


def _stored_event(row: Any) -> StoredEvent:
    """Return the event of a row read as stored.

    Raises:
        StoreError: its time, details or diff cannot be read.
    """
    at = as_time(row.at)
    if at is None:
        raise StoreError(f"its time {row.at!r} is not a time")
    details = row.details
    if isinstance(details, str | bytes):
        try:
            details = json.loads(details)
        except ValueError:
            raise StoreError("its details are not JSON") from None
    if not isinstance(details, dict):
        raise StoreError("its details are not a JSON object")
    diff = ledger.diff_text(row.seq, row.diff)
    return StoredEvent(
        row.seq, row.kind, row.url, at, row.old_sha256, row.new_sha256, details, diff, row.hash
    )


def _check_chain(conn: Connection, report: VerifyReport, batch: int) -> None:
    prev = ledger.GENESIS
    expected_seq = 1
    for row in _event_rows(conn, batch):
        report.events += 1
        where, url = f"#{row.seq}", row.url if isinstance(row.url, str) else None
        if row.seq != expected_seq:
            report.problems.append(
                Problem("event", where, f"expected seq {expected_seq}: events missing or inserted", url)
            )
        if row.prev_hash != prev:
            report.problems.append(
                Problem(
                    "event",
                    where,
                    "does not follow the previous event (prev_hash mismatch: deleted, inserted or reordered)",
                    url,
                )
            )
        try:
            recomputed = ledger.chain_hash(row.prev_hash, _stored_event(row))
        except (StoreError, TypeError, ValueError, AttributeError) as exc:
            why = str(exc).removeprefix(f"event #{row.seq}: ")
            report.problems.append(Problem("event", where, f"{row.kind} cannot be read: {why}", url))
        else:
            if recomputed != row.hash:
                report.problems.append(
                    Problem(
                        "event", where, f"{row.kind} was edited: its content no longer matches its hash", url
                    )
                )
        prev = row.hash
        expected_seq = row.seq + 1
    row = conn.execute(select(H.c.seq, H.c.hash).where(H.c.id == ledger.HEAD_ID)).first()
    if row is None:
        report.problems.append(Problem("head", "ledger_head", "the head row is missing"))
        return
    seq, digest = row.seq, row.hash
    if not isinstance(seq, int) or not isinstance(digest, str):
        report.problems.append(
            Problem("head", "ledger_head", f"the head row ({seq!r}, {digest!r}) is unreadable")
        )
        return
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
