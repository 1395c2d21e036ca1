"""The ledger: a hash chain over events, and its one writer, `append`.

`append` is the only code that adds to the chain: `recording.record_many` calls it
inside the write transaction of a batch of checks, after the rows the events speak of.

Each event row carries `seq` (1, 2, ...), `prev_hash` (the previous event's hash,
or 64 zeros for the first) and `hash = sha256(prev_hash + canonical(event))`.
`canonical` is stable JSON (sorted keys, no whitespace, ASCII only, times as ISO
8601 UTC with microseconds) of seq, kind, url, at, old_sha256, new_sha256,
details and the sha256 of the diff text. Changing any stored field, or removing
or reordering an event, breaks every later link; `walk` and `chain_hash` let
`verify` recompute them.

The single `ledger_head` row (seq, hash of the last event) is locked to append, and
written once per batch: `SELECT ... FOR UPDATE` on PostgreSQL; on SQLite the BEGIN
IMMEDIATE of every write transaction already serialises appends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from mirror import tables
from mirror.domain import Event, StoredEvent
from mirror.errors import StoreError
from mirror.events import DOCUMENT_CHANGED, DOCUMENT_NEW
from mirror.tables import AnyRow

E = tables.events
H = tables.ledger_head

GENESIS = "0" * 64
# Events that make a version, in the order versions are made: each announces its snapshot
# (`recording.announced`; `verify_versions` checks them).
VERSION_EVENTS = (DOCUMENT_NEW, DOCUMENT_CHANGED)
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
    utc = at.astimezone(UTC)
    if utc.year < 1000:  # strftime writes such a year unpadded ("999-..."): what the chain has always held
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as strftime's, at less than half its cost (twice per event the writer records).
    return utc.isoformat(timespec="microseconds")[:26] + "Z"


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
    return _digest(prev_hash, body)


def _digest(prev_hash: str, body: bytes) -> str:
    """Return the chain hash of an event's canonical `body` after `prev_hash`."""
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


def append(conn: Connection, events: Sequence[tuple[Event, int, str | None]]) -> list[StoredEvent]:
    """Append `(event, target_id, unified diff)` to the hash chain in order; return them as stored.

    The head is locked (PostgreSQL: FOR UPDATE; SQLite: BEGIN IMMEDIATE) and written
    once for the batch. `event.status` and `event.error` are kept in the stored details
    (as "status" and "error"), so the hash covers them too. Call inside a write transaction.

    Raises:
        StoreError: the ledger head row is missing (the schema was not migrated).
        TypeError, ValueError: details cannot be encoded as JSON.
    """
    if not events:
        return []
    from mirror import blobs  # here, not at the top: reading the chain needs no compressor

    seq, prev = _head(conn, _LOCK_HEAD)
    rows: list[dict[str, Any]] = []
    stored: list[StoredEvent] = []
    for event, target_id, diff in events:
        seq += 1
        at, details = event.at.astimezone(UTC), stored_details(event)
        body = canonical(seq, event.kind, event.url, at, event.old_sha256, event.new_sha256, details, diff)
        digest = _digest(prev, body)  # as `chain_hash`, without a StoredEvent made twice
        entry = StoredEvent(
            seq=seq,
            kind=event.kind,
            url=event.url,
            at=at,
            old_sha256=event.old_sha256,
            new_sha256=event.new_sha256,
            details=details,
            diff=diff,
            hash=digest,
        )
        rows.append(
            {
                "seq": seq,
                "target_id": target_id,
                "url": entry.url,
                "at": entry.at,
                "kind": entry.kind,
                "old_sha256": entry.old_sha256,
                "new_sha256": entry.new_sha256,
                "details": dict(entry.details),
                "diff": None if diff is None else blobs.compress(diff.encode("utf-8")),
                "prev_hash": prev,
                "hash": digest,
            }
        )
        stored.append(entry)
        prev = digest
    conn.execute(_INSERT_EVENT, rows)
    conn.execute(_UPDATE_HEAD, {"b_seq": seq, "b_hash": prev})
    return stored


def head(conn: Connection) -> tuple[int, str]:
    """Return the seq and hash of the last event: (0, GENESIS) before the first.

    Raises:
        StoreError: the ledger head row is missing (the schema was not migrated).
    """
    return _head(conn, _READ_HEAD)


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
    import zstandard  # here, not at the top: `status`, and `history` of a page without diffs, never load it

    from mirror import blobs

    try:
        if not isinstance(stored, bytes):
            raise TypeError(f"it is {type(stored).__name__}, not bytes")
        return blobs.decompress(stored).decode("utf-8")
    except (zstandard.ZstdError, UnicodeDecodeError, TypeError) as exc:
        raise StoreError(f"event #{seq}: its diff cannot be read ({exc})") from None


def _head(conn: Connection, query: Any) -> tuple[int, str]:
    row = conn.execute(query).first()
    if row is None:
        raise StoreError("the ledger head row is missing; is the schema migrated?")
    return int(row.seq), str(row.hash)


def stored_details(event: Event) -> dict[str, Any]:
    """Return the details `event` is stored and hashed with (its status and error among them)."""
    details: dict[str, Any] = dict(event.details)
    if event.status is not None:
        details.setdefault("status", event.status)
    if event.error is not None:
        details.setdefault("error", event.error)
    # Round-trip through JSON so what is hashed now is what a verify reads back later
    # (tuples become lists, keys become strings); also rejects what JSON cannot hold.
    loaded: dict[str, Any] = json.loads(json.dumps(details, allow_nan=False))
    return loaded


# Built once: building statements costs more Python time than running them (see benchmarks/RESULTS.md).
_READ_HEAD = select(H.c.seq, H.c.hash).where(H.c.id == HEAD_ID)
# FOR UPDATE holds concurrent appenders on PostgreSQL until this transaction ends;
# SQLite renders no FOR UPDATE, and its BEGIN IMMEDIATE has already serialised writers.
_LOCK_HEAD = _READ_HEAD.with_for_update()
_INSERT_EVENT = E.insert()
_UPDATE_HEAD = update(H).where(H.c.id == HEAD_ID).values(seq=bindparam("b_seq"), hash=bindparam("b_hash"))
