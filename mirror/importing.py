"""Recording imported captures (`mirror import warc`): versions with their original capture times.

An imported capture becomes the next version of its document (numbers are the order versions
entered the record, as the chain announces them), dated at its capture (`first_seen`), with a
`document.imported` event on the hash chain that announces it like any version and names the
file and record offset it came from. A capture older than what is stored is kept the same way;
the target's latest content (`current_sha256`, what the next check compares with) stays the
latest *captured*, so an old capture never looks like a change to the next check. A capture
that adds nothing (`warcmap.is_repeat`) writes nothing: importing a file twice adds nothing.
A URL not in the store becomes an unwatched target of source `warc` (never checked until the
config names it). One batch is ONE transaction; the chain's one writer is `ledger.append`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from mirror import blobs, ledger, tables, targets
from mirror.codec import Packed
from mirror.domain import Event, Status, StoredEvent
from mirror.events import DOCUMENT_IMPORTED
from mirror.recording import announced
from mirror.urls import normalized
from mirror.warcread import Capture, is_repeat

T = tables.targets
S = tables.snapshots
SOURCE = "warc"


@dataclass(frozen=True, slots=True)
class ImportBatch:
    """What one batch wrote: the events chained (one per new version), repeats, targets added."""

    events: list[StoredEvent]
    repeats: int
    targets_added: int


def import_captures(
    conn: Connection,
    captures: Sequence[tuple[Capture, Packed]],
    now: datetime,
    interval_seconds: int,
) -> ImportBatch:
    """Store `captures` (each with its packed blob) in the caller's transaction, in capture-time order."""
    ordered = sorted(captures, key=lambda c: (c[0].at, c[0].source.file, c[0].source.offset))
    urls = list(dict.fromkeys(normalized(c.url) for c, _ in ordered))
    rows = _targets(conn, urls)
    missing = [u for u in urls if u not in rows]
    if missing:
        rng = random.Random(0)
        new = [targets._new_target(url, SOURCE, interval_seconds, now, rng) for url in missing]
        for fresh in new:  # unscheduled: never checked until the config names it
            fresh.update(active=False, unwatched_since=now, status=Status.OK.value)
        conn.execute(T.insert(), new)
        rows = _targets(conn, urls)
    ids = [row.id for row in rows.values()]
    kept: dict[int, list[tuple[datetime, str]]] = {i: [] for i in ids}
    for i in range(0, len(ids), targets.CHUNK):
        query = select(S.c.target_id, S.c.first_seen, S.c.sha256).where(
            S.c.target_id.in_(ids[i : i + targets.CHUNK])
        )
        for snap in conn.execute(query):
            kept[snap.target_id].append((snap.first_seen, snap.sha256))
    versions = {row.id: int(row.current_version) for row in rows.values()}
    snapshots: list[dict[str, Any]] = []
    events: list[tuple[Event, int, str | None]] = []
    packed: dict[str, Packed] = {}
    repeats = 0
    for capture, blob in ordered:
        row = rows[normalized(capture.url)]
        if is_repeat(kept[row.id], capture.at, capture.sha256):
            repeats += 1
            continue
        versions[row.id] += 1
        kept[row.id].append((capture.at, capture.sha256))
        packed.setdefault(blob.sha256, blob)
        snapshot = {
            "target_id": row.id,
            "version": versions[row.id],
            "sha256": capture.sha256,
            "size": blob.size,
            "first_seen": capture.at,
            "last_seen": capture.at,
            "http_status": capture.status,
            "content_type": capture.headers.get("content-type"),
            "headers": dict(capture.headers),
            "final_url": row.url,
        }
        snapshots.append(snapshot)
        event = Event(
            DOCUMENT_IMPORTED,
            row.url,
            now,
            new_sha256=capture.sha256,
            details={
                "source": SOURCE,
                "file": capture.source.file,
                "offset": capture.source.offset,
                "record_type": capture.record_type,
            },
        )
        events.append((announced((event,), snapshot)[0], row.id, None))
    blobs.insert(conn, list(packed.values()), now)
    if snapshots:
        conn.execute(S.insert(), snapshots)
    stored = ledger.append(conn, events)
    changed = [
        {
            "b_id": row.id,
            "b_version": versions[row.id],
            "b_sha": max(kept[row.id])[1],
            # A target that had no content yet has some now; its next check compares with it.
            "b_status": Status.OK.value if row.status in _NO_CONTENT else row.status,
        }
        for row in rows.values()
        if versions[row.id] != row.current_version
    ]
    if changed:
        conn.execute(_UPDATE_TARGET, changed)
    return ImportBatch(stored, repeats, len(missing))


_NO_CONTENT = (Status.NEW.value, Status.UNAVAILABLE.value)


def _targets(conn: Connection, urls: list[str]) -> dict[str, tables.AnyRow]:
    found: dict[str, tables.AnyRow] = {}
    for i in range(0, len(urls), targets.CHUNK):
        query = (
            select(T.c.id, T.c.url, T.c.current_version, T.c.status)
            .where(T.c.url.in_(urls[i : i + targets.CHUNK]))
            .order_by(T.c.id)
            .with_for_update()
        )
        found.update({row.url: row for row in conn.execute(query)})
    return found


_UPDATE_TARGET = (
    update(T)
    .where(T.c.id == bindparam("b_id"))
    .values(
        current_version=bindparam("b_version"),
        current_sha256=bindparam("b_sha"),
        status=bindparam("b_status"),
    )
)
