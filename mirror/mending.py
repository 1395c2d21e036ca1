"""The store's side of a repair: a blob put back whole, and the events that say so, in one transaction.

`mend` is called by `mirror.repair` with bytes a repair source gave, already re-hashed
there and re-hashed here again. The blob is stored whole (codec `zstd`, no base): a
repaired blob depends on no other, so damage to a base it once had cannot spoil it again.
Deltas built on it still decode, as a delta's dictionary is its base's content, which is
the same bytes. The `chain_length` and `root_sha256` recorded on those deltas may then
overstate their chain; that only makes new chains end sooner (`codec.MAX_CHAIN`), and
`verify` reads them right whatever they say.

Each document with a version whose bytes are rebuilt from the blob (its own versions, and
those of every delta built on it), or whose check kept it as evidence, gets one
`document.repaired` event on the hash chain (`ledger.append`, the chain's one writer), in
the same transaction as the blob: a repair is never silent.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import literal, select, update
from sqlalchemy.engine import Connection

from mirror import blobs, codec, ledger, tables
from mirror.domain import Event, StoredEvent
from mirror.errors import StoreError
from mirror.events import DOCUMENT_REPAIRED

B, S, C, T = tables.blobs, tables.snapshots, tables.checks, tables.targets


@dataclass(frozen=True, slots=True)
class Mended:
    """One blob put back: its key and size, the versions it gives back (`URL vN`), its events."""

    sha256: str
    size: int
    snapshots: tuple[str, ...]
    events: tuple[StoredEvent, ...]


class NotMended(Exception):
    """A blob that is not put back, and why (no document or check names it: nothing to file it under)."""


def unreadable(conn: Connection, keys: Collection[str]) -> set[str]:
    """Return those of `keys` whose blob is missing or does not read back intact."""
    reader = blobs.Reader()
    bad = set()
    for key in sorted(keys):
        try:
            reader.get(conn, key)
        except StoreError:
            bad.add(key)
    return bad


def mend(
    conn: Connection, sha256: str, data: bytes, *, source: str, problem: str, now: datetime
) -> Mended | None:
    """Store `data` whole under `sha256` and file its `document.repaired` events; None when it reads back
    intact already (its base was repaired first, or another process mended it), and nothing is written.

    Call inside a write transaction: blob and events are written together or not at all.

    Raises:
        StoreError: `data` does not hash to `sha256`, or the stored blob does not read back intact.
        NotMended: no document's version is rebuilt from it and no check kept it.
    """
    if codec.sha256_of(data) != sha256:
        raise StoreError(f"blob {sha256}: the bytes given hash to {codec.sha256_of(data)}")
    try:
        blobs.get(conn, sha256)
    except StoreError:
        pass
    else:
        return None
    documents = _documents(conn, sha256)
    if not documents:
        raise NotMended("no document's version is rebuilt from it and no check kept it")
    packed = codec.pack(data, sha256)  # no base given: whole
    if blobs.exists(conn, sha256):
        conn.execute(
            update(B)
            .where(B.c.sha256 == sha256)
            .values(
                size=packed.size,
                stored_size=packed.stored_size,
                codec=packed.codec,
                base_sha256=None,
                root_sha256=sha256,
                chain_length=0,
                data=packed.data,
            )
        )
    else:
        blobs.insert(conn, [packed], now)
    blobs.get(conn, sha256)  # reads back intact, or the transaction rolls back
    events = [
        (
            Event(
                DOCUMENT_REPAIRED,
                url,
                now,
                new_sha256=sha256,
                details={"versions": versions, "size": len(data), "source": source, "problem": problem},
            ),
            target_id,
            None,
        )
        for (target_id, url), versions in documents.items()
    ]
    stored = ledger.append(conn, events)
    snapshots = tuple(f"{url} v{v}" for (_, url), versions in documents.items() for v in versions)
    return Mended(sha256, len(data), snapshots, tuple(stored))


def _documents(conn: Connection, sha256: str) -> dict[tuple[int, str], list[int]]:
    """Return (target id, URL) → the versions whose bytes are rebuilt from blob `sha256`, by URL.

    Through every delta built on it (a recursive query; UNION stops at a loop of edited
    bases). A document whose check kept the blob as evidence has an empty list.
    """
    start = select(literal(sha256, B.c.sha256.type).label("sha256")).cte("users", recursive=True)
    users = start.union(select(B.c.sha256).where(B.c.base_sha256 == start.c.sha256))
    rows: list[Any] = list(
        conn.execute(
            select(T.c.id, T.c.url, S.c.version)
            .join(T, T.c.id == S.c.target_id)
            .where(S.c.sha256.in_(select(users.c.sha256)))
            .order_by(T.c.url, S.c.version)
        )
    )
    rows += conn.execute(
        select(T.c.id, T.c.url, literal(None).label("version"))
        .join(T, T.c.id == C.c.target_id)
        .where(C.c.evidence_sha256 == sha256)
        .distinct()
        .order_by(T.c.url)
    ).all()
    documents: dict[tuple[int, str], list[int]] = {}
    for row in sorted(rows, key=lambda r: r.url):
        versions = documents.setdefault((row.id, row.url), [])
        if row.version is not None:
            versions.append(row.version)
    return documents
