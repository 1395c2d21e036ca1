"""Reading a document's whole record for export: versions with their headers, events and re-checks.

Queries over one connection, for `mirror.reader.Reader.documents` (the store's read side).
A page of targets at a time, so an export of 100,000 documents never loads them at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Connection

from mirror import ledger, tables
from mirror.domain import OutcomeKind, StoredEvent
from mirror.versions import version_of
from mirror.warcmap import Recheck, Stored

T, S, E, C = tables.targets, tables.snapshots, tables.events, tables.checks


@dataclass(frozen=True, slots=True)
class Document:
    """One target's record: its versions (by number) with headers, its events (chain order), its re-checks."""

    url: str
    versions: list[Stored]
    events: list[StoredEvent]
    rechecks: list[Recheck]


def documents_page(conn: Connection, urls: Sequence[str] | None, after: str, limit: int) -> list[Document]:
    """Return up to `limit` documents with URLs after `after` (of `urls`, when given), by URL."""
    query = select(T.c.id, T.c.url).where(T.c.url > after).order_by(T.c.url).limit(limit)
    if urls is not None:
        query = query.where(T.c.url.in_(list(urls)))
    page = conn.execute(query).all()
    if not page:
        return []
    ids = [row.id for row in page]
    versions: dict[int, list[Stored]] = {i: [] for i in ids}
    for row in conn.execute(select(S).where(S.c.target_id.in_(ids)).order_by(S.c.target_id, S.c.version)):
        versions[row.target_id].append(Stored(version_of(row), dict(row.headers or {})))
    events: dict[int, list[StoredEvent]] = {i: [] for i in ids}
    for row in conn.execute(select(E).where(E.c.target_id.in_(ids)).order_by(E.c.seq)):
        events[row.target_id].append(ledger.to_stored_event(row))
    rechecks: dict[int, list[Recheck]] = {i: [] for i in ids}
    found_again = select(C.c.target_id, C.c.started_at, C.c.http_status).where(
        C.c.target_id.in_(ids), C.c.outcome == OutcomeKind.UNCHANGED.value
    )
    for row in conn.execute(found_again.order_by(C.c.target_id, C.c.started_at)):
        rechecks[row.target_id].append(Recheck(row.started_at, row.http_status))
    return [Document(row.url, versions[row.id], events[row.id], rechecks[row.id]) for row in page]
