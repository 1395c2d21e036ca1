"""Each document's versions and target row, checked against the events that announced them (for `verify`).

For the i-th event of a target that made a version (`document.new`, `document.changed`, or
any event that announces its snapshot): snapshot vi exists, names the event's new SHA-256
and a stored blob, and has the fields the event announced; the event's `version`, when
given, is i. No snapshot is left that no event announced. The target's latest version is the
last announced, its content the latest captured (an imported version may be older), and its
URL is the one its events carry. Three streams
(targets, snapshots, events) are read in target order and merged: one target in memory.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import and_, case, func, or_, select, type_coerce
from sqlalchemy.engine import Connection

from mirror import ledger, tables
from mirror.events import DOCUMENT_IMPORTED, DOCUMENT_MOVED, DOCUMENT_REAPPEARED
from mirror.integrity import MISSING_BLOB, AsStored, Problem, VerifyReport, as_time

B, S, E, T = tables.blobs, tables.snapshots, tables.events, tables.targets

# The events that may make a version: new and changed always; a move or reappearance when it
# announces its snapshot (see `recording.announced`).
_MAY_ANNOUNCE = (*ledger.VERSION_EVENTS, DOCUMENT_MOVED, DOCUMENT_REAPPEARED, DOCUMENT_IMPORTED)


def check_versions(conn: Connection, report: VerifyReport) -> None:
    """Check each target's versions against the events that made them, and its pointer to the latest."""
    targets = conn.execute(
        select(T.c.id, T.c.url, T.c.current_version, T.c.current_sha256)
        .order_by(T.c.id)
        .execution_options(yield_per=1000)
    )
    snaps = conn.execute(
        select(
            S.c.target_id,
            S.c.version,
            S.c.sha256,
            S.c.size,
            type_coerce(S.c.first_seen, AsStored()).label("first_seen"),
            S.c.http_status,
            S.c.content_type,
            S.c.final_url,
            B.c.sha256.label("blob"),
        )
        .outerjoin(B, B.c.sha256 == S.c.sha256)
        .order_by(S.c.target_id, S.c.version)
        .execution_options(yield_per=1000)
    )
    events = conn.execute(
        select(E.c.target_id, E.c.seq, E.c.kind, E.c.new_sha256, type_coerce(E.c.details, AsStored()))
        .where(E.c.kind.in_(_MAY_ANNOUNCE))
        .order_by(E.c.target_id, E.c.seq)
        .execution_options(yield_per=1000)
    )
    by_target = _Grouped(snaps), _Grouped(events)
    for target in targets:
        _check_target(report, target, *(grouped.take(target.id) for grouped in by_target))


def _check_target(report: VerifyReport, target: Any, snaps: list[Any], events: list[Any]) -> None:
    url = target.url
    made = [e for e in events if _makes_version(e.kind, _details(e.details))]
    by_number: dict[int, Any] = {}
    for snap in snaps:
        report.snapshots += 1
        where = f"{url} v{snap.version}"
        if snap.blob is None:
            report.problems.append(Problem("snapshot", where, MISSING_BLOB.format(snap.sha256), url))
            if isinstance(snap.sha256, str):
                report.damaged_blobs.setdefault(snap.sha256, snap.sha256)
        if _is_int(snap.version) and 1 <= snap.version <= len(made):
            by_number[snap.version] = snap
        else:
            report.problems.append(Problem("snapshot", where, "no event announced this version", url))
    for number, event in enumerate(made, 1):
        details = _details(event.details)
        claimed = details.get("version")
        if claimed is not None and claimed != number:
            report.problems.append(
                Problem(
                    "event",
                    f"#{event.seq}",
                    f"{event.kind} announces version {claimed}, but it made v{number} of {url}",
                    url,
                )
            )
        snap = by_number.get(number)
        where = f"{url} v{number}"
        if snap is None:
            report.problems.append(
                Problem("snapshot", where, f"is missing: event #{event.seq} ({event.kind}) announced it", url)
            )
            continue
        if snap.sha256 != event.new_sha256:
            report.problems.append(
                Problem(
                    "snapshot",
                    where,
                    f"is {snap.sha256} but event #{event.seq} announced {event.new_sha256}",
                    url,
                )
            )
        for column, announced in _announced(details):
            stored = _stored(snap, column)
            if stored != announced:
                report.problems.append(
                    Problem(
                        "snapshot",
                        where,
                        f"{column} is {stored!r} but event #{event.seq} announced {announced!r}",
                        url,
                    )
                )
    latest = _latest_captured(made)
    if target.current_version != len(made):
        report.problems.append(
            Problem(
                "target",
                url,
                f"says its latest version is v{target.current_version}, "
                f"but its events announced v{len(made)}",
                url,
            )
        )
    elif target.current_sha256 != latest:
        report.problems.append(
            Problem(
                "target",
                url,
                f"says its latest content is {target.current_sha256}, but its events announced {latest}",
                url,
            )
        )


def check_event_targets(conn: Connection, report: VerifyReport) -> None:
    """Check that each event is filed under the target with its (hashed) URL, and each target kept its URL."""
    carried = func.sum(case((E.c.url == T.c.url, 1), else_=0))
    rewritten = conn.execute(
        select(T.c.id, T.c.url, func.min(E.c.url).label("first"), func.max(E.c.url).label("last"))
        .join(E, E.c.target_id == T.c.id)
        .group_by(T.c.id, T.c.url)
        .having(carried == 0)
        .order_by(T.c.url)
    ).all()
    for row in rewritten:
        also = "" if row.first == row.last else f" (and {row.last})"
        report.problems.append(
            Problem("target", row.url, f"its URL was changed: its events carry {row.first}{also}", row.first)
        )
    skip = [row.id for row in rewritten]
    misfiled = conn.execute(
        select(E.c.seq, E.c.kind, E.c.url, T.c.url.label("target_url"))
        .outerjoin(T, T.c.id == E.c.target_id)
        .where(or_(T.c.id.is_(None), and_(E.c.url != T.c.url, T.c.id.not_in(skip))))
        .order_by(E.c.seq)
        .execution_options(yield_per=1000)
    )
    for row in misfiled:
        under = "no target" if row.target_url is None else f"the target {row.target_url}"
        report.problems.append(
            Problem("event", f"#{row.seq}", f"{row.kind} of {row.url} is filed under {under}", row.url)
        )


class _Grouped:
    """Rows ordered by target id, handed out one target's group at a time, in step with the targets."""

    def __init__(self, rows: Iterable[Any]) -> None:
        self._groups = (
            (key, list(group)) for key, group in itertools.groupby(rows, key=lambda r: r.target_id)
        )
        self._next = next(self._groups, None)

    def take(self, target_id: int) -> list[Any]:
        """Return the rows of `target_id` ([] when it has none); skip those of ids before it (no target)."""
        while self._next is not None and _order(self._next[0]) < _order(target_id):
            self._next = next(self._groups, None)
        if self._next is None or self._next[0] != target_id:
            return []
        rows = self._next[1]
        self._next = next(self._groups, None)
        return rows


def _order(value: Any) -> tuple[int, Any]:
    """Return a sort key that orders mixed types as SQLite does (NULL, numbers, text, bytes).

    SQLite keeps any type an UPDATE puts in a column; this keeps the merge from comparing
    `int` with `str` when someone did.
    """
    if value is None:
        return (0, 0)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, bytes):
        return (3, value)
    return (4, str(value))


def _latest_captured(made: list[Any]) -> str | None:
    """Return the content of the latest captured of the announced versions (the last announced on a tie).

    Numbers are the order versions entered the record; an imported capture may be older than
    the version before it. Events from before snapshots were announced carry no `first_seen`:
    among them the last announced is the latest.
    """
    if not made:
        return None
    order = [(str(_details(e.details).get("first_seen") or ""), i) for i, e in enumerate(made)]
    latest: str | None = made[max(order)[1]].new_sha256
    return latest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _details(value: Any) -> dict[str, Any]:
    """Return an event's details as stored, {} when they are not a JSON object (the chain reports that)."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _makes_version(kind: str, details: dict[str, Any]) -> bool:
    """Return True for an event that made a version: new and changed, or any that announces its snapshot."""
    return kind in ledger.VERSION_EVENTS or ("version" in details and "first_seen" in details)


def _announced(details: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield (snapshot column, value) for each snapshot field an event announced.

    Events written before snapshots were announced carry only some of them (`size` on
    `document.new`, `content_type`, and the HTTP status as `status`): only those are checked.
    """
    for key in ("size", "first_seen", "http_status", "content_type", "final_url"):
        if key in details:
            yield key, details[key]
    if "http_status" not in details and "status" in details:
        yield "http_status", details["status"]


def _stored(snap: Any, column: str) -> Any:
    value = getattr(snap, column)
    if column != "first_seen":
        return value
    at = as_time(value)
    return ledger.iso_time(at) if at is not None else value
