"""The ledger: a hash chain over events, appended inside `archive.record`'s transaction.

Each event row carries `seq` (1, 2, ...), `prev_hash` (the previous event's hash,
or 64 zeros for the first) and `hash = sha256(prev_hash + canonical(event))`.
`canonical` is stable JSON (sorted keys, no whitespace, ASCII only, times as ISO
8601 UTC with microseconds) of seq, kind, url, at, old_sha256, new_sha256,
details and the sha256 of the diff text. Changing any stored field, or removing
or reordering an event, breaks every later link; `walk` and `chain_hash` let
`verify` recompute them.

The single `ledger_head` row (seq, hash of the last event) is locked to append:
`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite the BEGIN IMMEDIATE of every
write transaction already serialises appends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import zstandard
from sqlalchemy import Row, select, update
from sqlalchemy.engine import Connection

from mirror import blobs, tables
from mirror.domain import Event, StoredEvent
from mirror.errors import StoreError

E = tables.events
H = tables.ledger_head
AnyRow = Row[*tuple[Any, ...]]

GENESIS = "0" * 64
HEAD_ID = 1


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One link of the chain as stored: the event and the hash it claims to follow."""

    event: StoredEvent
    prev_hash: str
    target_id: int


def canonical(
    seq: int,
    kind: str,
    url: str,
    at: datetime,
    old_sha256: str | None,
    new_sha256: str | None,
    details: Mapping[str, Any],
    diff: str | None,
) -> bytes:
    """Return the stable JSON bytes of an event that its hash covers."""
    if at.tzinfo is None:
        raise ValueError("naive datetime given to the ledger; use aware UTC datetimes")
    document = {
        "seq": seq,
        "kind": kind,
        "url": url,
        "at": iso_time(at),
        "old_sha256": old_sha256,
        "new_sha256": new_sha256,
        "details": details,
        "diff_sha256": None if diff is None else hashlib.sha256(diff.encode("utf-8")).hexdigest(),
    }
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def iso_time(at: datetime) -> str:
    """Return `at` as the chain writes times: ISO 8601 UTC with microseconds (`...T12:00:00.000000Z`)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(prev_hash: str, event: StoredEvent) -> str:
    """Return the hash `event` must have when it follows `prev_hash`."""
    body = canonical(
        event.seq,
        event.kind,
        event.url,
        event.at,
        event.old_sha256,
        event.new_sha256,
        event.details,
        event.diff,
    )
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def append(conn: Connection, event: Event, target_id: int, diff: str | None) -> StoredEvent:
    """Append `event` (of target `target_id`, with its unified `diff` if any) to the chain; return it stored.

    `event.status` and `event.error` are kept in the stored details (as "status"
    and "error"), so the hash covers them too. Call inside a write transaction.

    Raises:
        StoreError: the ledger head row is missing (the schema was not migrated).
        TypeError, ValueError: the details cannot be encoded as JSON.
    """
    head_seq, head_hash = _lock_head(conn)
    stored = StoredEvent(
        seq=head_seq + 1,
        kind=event.kind,
        url=event.url,
        at=event.at.astimezone(UTC),
        old_sha256=event.old_sha256,
        new_sha256=event.new_sha256,
        details=stored_details(event),
        diff=diff,
        hash="",
    )
    digest = chain_hash(head_hash, stored)
    conn.execute(
        E.insert().values(
            seq=stored.seq,
            target_id=target_id,
            url=stored.url,
            at=stored.at,
            kind=stored.kind,
            old_sha256=stored.old_sha256,
            new_sha256=stored.new_sha256,
            details=dict(stored.details),
            diff=None if diff is None else blobs.compress(diff.encode("utf-8")),
            prev_hash=head_hash,
            hash=digest,
        )
    )
    conn.execute(update(H).where(H.c.id == HEAD_ID).values(seq=stored.seq, hash=digest))
    return replace(stored, hash=digest)


def head(conn: Connection) -> tuple[int, str]:
    """Return the seq and hash of the last event: (0, GENESIS) before the first.

    Raises:
        StoreError: the ledger head row is missing (the schema was not migrated).
    """
    row = conn.execute(select(H.c.seq, H.c.hash).where(H.c.id == HEAD_ID)).first()
    if row is None:
        raise StoreError("the ledger head row is missing; is the schema migrated?")
    return int(row.seq), str(row.hash)


def walk(conn: Connection, batch: int = 1000, *, after: int = 0) -> Iterator[LedgerEntry]:
    """Yield every event with seq > `after` in seq order, reading `batch` rows at a time."""
    last = after
    while True:
        rows = conn.execute(select(E).where(E.c.seq > last).order_by(E.c.seq).limit(batch)).all()
        for row in rows:
            yield LedgerEntry(to_stored_event(row), row.prev_hash, row.target_id)
        if len(rows) < batch:
            return
        last = rows[-1].seq


def to_stored_event(row: AnyRow) -> StoredEvent:
    """Return the StoredEvent of an `events` row (its diff decompressed).

    Raises:
        StoreError: its diff is damaged.
    """
    return StoredEvent(
        seq=int(row.seq),
        kind=row.kind,
        url=row.url,
        at=row.at,
        old_sha256=row.old_sha256,
        new_sha256=row.new_sha256,
        details=row.details or {},
        diff=diff_text(row.seq, row.diff),
        hash=row.hash,
    )


def diff_text(seq: int, stored: Any) -> str | None:
    """Return the unified diff stored (compressed) with event `seq`, or None when it has none.

    Raises:
        StoreError: the stored diff is damaged (not a zstd frame of UTF-8 text).
    """
    if stored is None:
        return None
    try:
        if not isinstance(stored, bytes):
            raise TypeError(f"it is {type(stored).__name__}, not bytes")
        return blobs.decompress(stored).decode("utf-8")
    except (zstandard.ZstdError, UnicodeDecodeError, TypeError) as exc:
        raise StoreError(f"event #{seq}: its diff cannot be read ({exc})") from None


def _lock_head(conn: Connection) -> tuple[int, str]:
    # FOR UPDATE holds concurrent appenders on PostgreSQL until this transaction ends;
    # SQLite renders no FOR UPDATE, and its BEGIN IMMEDIATE has already serialised writers.
    row = conn.execute(select(H.c.seq, H.c.hash).where(H.c.id == HEAD_ID).with_for_update()).first()
    if row is None:
        raise StoreError("the ledger head row is missing; is the schema migrated?")
    return int(row.seq), str(row.hash)


def stored_details(event: Event) -> dict[str, Any]:
    details: dict[str, Any] = dict(event.details)
    if event.status is not None:
        details.setdefault("status", event.status)
    if event.error is not None:
        details.setdefault("error", event.error)
    # Round-trip through JSON so what is hashed now is what a verify reads back later
    # (tuples become lists, keys become strings); also rejects what JSON cannot hold.
    loaded: dict[str, Any] = json.loads(json.dumps(details, allow_nan=False))
    return loaded
