"""Recording checks: a batch of checks in ONE transaction, with statements built once.

`CheckRecord` is what a worker hands over after fetching and judging: the fetch, the
verdict and the new version's blob already hashed and compressed (`blobs.pack`), so the
transaction only writes rows. `record_many` writes a batch: blobs before the snapshots
that name them, snapshots, check rows, the events appended to the hash chain in order
(`ledger.append`, the chain's one writer), and the targets' new states.
All of it commits together or not at all.

A check is recorded only on top of the state it was judged against: the targets' rows
are read under the write lock (`FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite),
and a check judged against another state than the store now holds (its status, version,
failures or move; at least its version), or one whose new content equals the latest
version, is superseded: another process recorded this target meanwhile (a lease that
expired under it). It writes nothing but freeing its
lease, so no version is recorded twice and no event announces a version number twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.engine import Connection

from mirror import blobs, ledger, tables
from mirror.domain import Event, FetchResult, Outcome, StoredEvent, TargetState
from mirror.errors import StoreError
from mirror.events import DOCUMENT_CHANGED
from mirror.targets import by_url
from mirror.urls import normalized

T = tables.targets
S = tables.snapshots
C = tables.checks

MAX_ERROR_MESSAGE = 2000


@dataclass(frozen=True, slots=True)
class CheckRecord:
    """One check ready to store: everything but the write is done.

    `blob` is the new version's content packed outside any transaction (None when the
    outcome has no new version). `next_check_in` defaults to the target's interval.
    `judged` is the state the check was judged against, as the store gave it: when set,
    the check is recorded only while the store still holds that state.
    """

    url: str
    result: FetchResult
    outcome: Outcome
    now: datetime
    worker: str | None = None
    next_check_in: timedelta | None = None
    blob: blobs.Packed | None = None
    judged: TargetState | None = None
    evidence: blobs.Packed | None = None  # a soft 404's page, kept with the check (never a version)
    # The whole blob of a site's shared base `blob` is a delta against, which may not be stored yet
    # (queued, or its own check superseded): written first when the store has not got it.
    base_blob: blobs.Packed | None = None
    body_size: int | None = None  # the body's length once `lightened` let go of the body

    def size(self) -> int | None:
        """Return the length of the fetched body (None when there was none)."""
        body = self.result.body
        return len(body) if body is not None else self.body_size

    def lightened(self) -> CheckRecord:
        """Return this record without the fetched body: what the store writes is packed already.

        A queued check then holds its compressed blob, not its body too, while it waits for the writer.
        """
        body = self.result.body
        if body is None:
            return self
        return replace(self, result=replace(self.result, body=None), body_size=len(body))


@dataclass(slots=True)
class _Current:
    """A target's row as this batch has left it so far (a target may appear twice in a batch)."""

    id: int
    interval_seconds: int
    version: int
    sha256: str | None  # the latest version's content: the store's, not a (possibly stale) judgement's
    status: str
    failures: int
    moved_to: str | None
    suspicious: str | None
    suspicious_since: datetime | None


def record_many(conn: Connection, records: Sequence[CheckRecord]) -> list[list[StoredEvent] | None]:
    """Store `records` in the caller's transaction, in order; return each one's events as chained.

    A superseded check (see the module's docstring) is not written: its entry is None.
    A check frees its target's lease when its owner (`record.worker`) holds it.
    Version numbers come from the store: a new version is the target's current one plus
    one, whatever the (possibly stale) state the check was judged against; so does the
    target's latest content, which only a new version changes. The event that makes a
    version announces its number and snapshot (`announced`), so the chain covers them.

    Raises:
        TargetNotFound: a URL is not in the store.
        StoreError: a new version has no body (or no packed blob).
    """
    current = _load_targets(conn, [r.url for r in records])
    packed: dict[str, blobs.Packed] = {}
    snapshots: list[dict[str, Any]] = []
    seen: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    events: list[tuple[Event, int, str | None]] = []
    targets: list[dict[str, Any]] = []
    counts: list[int | None] = []
    superseded: list[dict[str, Any]] = []
    for record in records:
        target = current.get(record.url) or current[normalized(record.url)]
        state, now = record.outcome.state, record.now
        if _superseded(target, record):
            superseded.append({"b_id": target.id, "b_owner": record.worker})
            counts.append(None)
            continue
        outcome_events = record.outcome.events
        if record.outcome.new_version:
            if record.size() is None or record.blob is None:
                raise StoreError(f"{record.url}: a new version needs a body and its packed blob")
            target.version += 1
            target.sha256 = record.blob.sha256
            packed.setdefault(record.blob.sha256, record.blob)
            snapshot = _snapshot(target, record)
            snapshots.append(snapshot)
            outcome_events = announced(outcome_events, snapshot)
        elif record.outcome.seen_again:
            seen.append({"b_target": target.id, "b_version": target.version, "b_seen": now})
        if record.evidence is not None:
            packed.setdefault(record.evidence.sha256, record.evidence)
        # As this batch leaves the target: a later check of it in the batch is judged on top.
        target.status, target.failures = state.status.value, state.consecutive_failures
        target.moved_to = state.moved_to
        checks.append(_check(target, record))
        diff = record.outcome.diff
        unified = diff.unified if diff is not None and diff.unified else None
        for event in outcome_events:
            events.append((event, target.id, unified if event.kind == DOCUMENT_CHANGED else None))
        counts.append(len(outcome_events))
        since = None
        if state.suspicious is not None:
            since = target.suspicious_since if target.suspicious is not None else now
        target.suspicious, target.suspicious_since = state.suspicious, since
        targets.append(
            {
                "b_id": target.id,
                "b_status": state.status.value,
                "b_sha": target.sha256,
                "b_version": target.version,
                "b_failures": state.consecutive_failures,
                "b_missing": state.missing_checks,
                "b_missing_since": state.missing_since,
                "b_etag": state.etag,
                "b_modified": state.last_modified,
                "b_moved": state.moved_to,
                "b_suspicious": state.suspicious,
                "b_since": since,
                "b_checked": now,
                "b_next": now + (record.next_check_in or timedelta(seconds=target.interval_seconds)),
                "b_owner": record.worker,
            }
        )
    # Rows before the rows that name them: blobs, snapshots, then the rest.
    blobs.insert(conn, _with_bases(conn, packed, records), records[0].now if records else datetime.now(UTC))
    for statement, rows in ((_INSERT_SNAPSHOT, snapshots), (_SEEN_AGAIN, seen), (_INSERT_CHECK, checks)):
        if rows:
            conn.execute(statement, rows)
    stored = ledger.append(conn, events)
    if targets:
        conn.execute(_UPDATE_TARGET, targets)
    if superseded:
        conn.execute(_FREE_LEASE, superseded)
    grouped: list[list[StoredEvent] | None] = []
    start = 0
    for n in counts:
        grouped.append(None if n is None else stored[start : start + n])
        start += n or 0
    return grouped


def _superseded(target: _Current, record: CheckRecord) -> bool:
    """Return whether the store moved past the state `record` was judged against.

    The judged state's version is the outcome's, less the one it adds; content equal to
    the latest version is never a new version, whatever the judged state said.
    """
    outcome, judged = record.outcome, record.judged
    if judged is not None and (
        (judged.status.value, judged.current_version, judged.current_sha256)
        != (target.status, target.version, target.sha256)
        or (judged.consecutive_failures, judged.moved_to) != (target.failures, target.moved_to)
    ):
        return True  # another check of this target was recorded since this one read its state
    if outcome.state.current_version - (1 if outcome.new_version else 0) != target.version:
        return True
    return outcome.new_version and record.blob is not None and record.blob.sha256 == target.sha256


VERSION_EVENTS = ledger.VERSION_EVENTS
# The snapshot's columns an announcing event carries in its details, so the chain's hash covers
# what `history`, `show`, `restore` and `--at` read of it (`mirror.verify` compares them).
ANNOUNCED = ("version", "size", "first_seen", "http_status", "content_type", "final_url")


def announced(events: Sequence[Event], snapshot: dict[str, Any]) -> tuple[Event, ...]:
    """Return `events` with the one that makes the new version announcing `snapshot`'s number and metadata.

    That is the `document.new` or `document.changed` event; failing one, the first event
    whose new SHA-256 is the snapshot's (a move or reappearance that makes a version).
    The number is the store's, whatever (possibly stale) number the judge wrote.
    """
    at = next((i for i, e in enumerate(events) if e.kind in VERSION_EVENTS), None)
    if at is None:
        at = next((i for i, e in enumerate(events) if e.new_sha256 == snapshot["sha256"]), None)
    if at is None:
        return tuple(events)
    fields = {key: snapshot[key] for key in ANNOUNCED}
    fields["first_seen"] = ledger.iso_time(snapshot["first_seen"])
    out = list(events)
    out[at] = out[at].with_details(**fields)
    return tuple(out)


def _with_bases(
    conn: Connection, packed: dict[str, blobs.Packed], records: Sequence[CheckRecord]
) -> list[blobs.Packed]:
    """Return the batch's blobs in order, each delta's base before it when the store has not got it yet.

    A site's shared base is offered to other workers as soon as it is queued, so its
    dependants come after it; should its own check not be written, the base blob each
    dependant carries (`CheckRecord.base_blob`) is written instead. Nothing is packed here.

    Raises:
        StoreError: a delta's base is neither stored, nor in the batch, nor carried.
    """
    bases = {p.base_sha256 for p in packed.values() if p.base_sha256 is not None}
    if not bases:
        return list(packed.values())
    stored = set(conn.execute(_STORED_BLOBS, {"shas": sorted(bases)}).scalars())
    carried = {r.base_blob.sha256: r.base_blob for r in records if r.base_blob is not None}
    out: list[blobs.Packed] = []
    for p in packed.values():
        if p.base_sha256 is not None and p.base_sha256 not in stored:
            base = carried.get(p.base_sha256)
            if base is None:
                raise StoreError(f"blob {p.sha256}: its delta base {p.base_sha256} is not stored")
            out.append(base)
            stored.add(base.sha256)
        out.append(p)
        stored.add(p.sha256)
    return out


def _load_targets(conn: Connection, urls: Sequence[str]) -> dict[str, _Current]:
    # Locked (PostgreSQL; SQLite's BEGIN IMMEDIATE holds the whole file) and re-read once the
    # lock is granted, in id order: what another process commits meanwhile is seen, not overwritten.
    rows = by_url(conn, _TARGETS, urls)
    # By position (id, then the columns after `url`, in `_Current`'s order): a Row's names cost more.
    return {url: _Current(row[0], *row[2:]) for url, row in rows.items()}


def _snapshot(target: _Current, record: CheckRecord) -> dict[str, Any]:
    result = record.result
    assert record.blob is not None  # checked by the caller
    return {
        "target_id": target.id,
        "version": target.version,
        "sha256": record.blob.sha256,
        "size": record.blob.size,
        "first_seen": record.now,
        "last_seen": record.now,
        "http_status": result.status,
        "content_type": result.content_type,
        "headers": dict(result.headers),
        "final_url": result.final_url,
    }


def _check(target: _Current, record: CheckRecord) -> dict[str, Any]:
    result, error = record.result, record.result.error
    return {
        "target_id": target.id,
        "started_at": result.started_at,
        "duration_ms": max(0, round(result.elapsed * 1000)),
        "http_status": result.status,
        "error_kind": error.kind if error else None,
        "error_message": error.message[:MAX_ERROR_MESSAGE] if error else None,
        "outcome": record.outcome.kind.value,
        "bytes": record.size(),
        "worker": record.worker,
        "evidence_sha256": record.evidence.sha256 if record.evidence is not None else None,
    }


# Built once: building statements costs more Python time than running them (see benchmarks/RESULTS.md).
_TARGETS = (
    select(
        T.c.id,
        T.c.url,
        T.c.interval_seconds,
        T.c.current_version,
        T.c.current_sha256,
        T.c.status,
        T.c.consecutive_failures,
        T.c.moved_to,
        T.c.suspicious,
        T.c.suspicious_since,
    )
    .where(T.c.url.in_(bindparam("urls", expanding=True)))
    .order_by(T.c.id)
    .with_for_update()
)
B = tables.blobs
_STORED_BLOBS = select(B.c.sha256).where(B.c.sha256.in_(bindparam("shas", expanding=True)))
_INSERT_SNAPSHOT = S.insert()
_INSERT_CHECK = C.insert()
_SEEN_AGAIN = (
    update(S)
    .where(S.c.target_id == bindparam("b_target"), S.c.version == bindparam("b_version"))
    .values(last_seen=bindparam("b_seen"))
)
_UPDATE_TARGET = (
    update(T)
    .where(T.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        current_sha256=bindparam("b_sha"),
        current_version=bindparam("b_version"),
        consecutive_failures=bindparam("b_failures"),
        missing_checks=bindparam("b_missing"),
        missing_since=bindparam("b_missing_since"),
        etag=bindparam("b_etag"),
        last_modified=bindparam("b_modified"),
        moved_to=bindparam("b_moved"),
        suspicious=bindparam("b_suspicious"),
        suspicious_since=bindparam("b_since"),
        last_checked_at=bindparam("b_checked"),
        next_check_at=bindparam("b_next"),
        # Only the recording process's lease: one taken over after it expired stays its new owner's.
        lease_owner=case((T.c.lease_owner == bindparam("b_owner"), None), else_=T.c.lease_owner),
        lease_until=case((T.c.lease_owner == bindparam("b_owner"), None), else_=T.c.lease_until),
    )
)
_FREE_LEASE = (
    update(T)
    .where(T.c.id == bindparam("b_id"), T.c.lease_owner == bindparam("b_owner"))
    .values(lease_owner=None, lease_until=None)
)
