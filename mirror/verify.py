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
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog
import zstandard
from sqlalchemy import Text, TypeDecorator, and_, case, func, or_, select, tuple_, type_coerce
from sqlalchemy.engine import Connection, Dialect, Engine

from mirror import blobs, ledger, log, recording, tables
from mirror.db import read
from mirror.domain import StoredEvent
from mirror.errors import StoreError

B, S, E, T = tables.blobs, tables.snapshots, tables.events, tables.targets

logger = structlog.get_logger("mirror.verify")

# The events that may make a version: new and changed always; a move or reappearance when it
# announces its snapshot (see `recording.announced`).
_MAY_ANNOUNCE = (*recording.VERSION_EVENTS, log.DOCUMENT_MOVED, log.DOCUMENT_REAPPEARED)


@dataclass(frozen=True, slots=True)
class Problem:
    """One damaged item: what (`blob`, `snapshot`, `event`, `target`, `head`), which, and how.

    `url` is the first (by URL) of `urls`, every document the damage reaches; `snapshots`
    names the versions (`URL vN`) whose bytes or record it spoils.
    """

    item: str
    key: str
    problem: str
    url: str | None = None
    urls: tuple[str, ...] = ()
    snapshots: tuple[str, ...] = ()


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
    _name_snapshots(engine, report, batch)
    read(engine, lambda conn: _check_versions(conn, report))
    read(engine, lambda conn: _check_event_targets(conn, report))
    read(engine, lambda conn: _check_chain(conn, report, batch))
    if published is not None:
        check_published(engine, report, *published)
    report.problems = [_with_urls(p) for p in report.problems]
    for p in report.problems:
        logger.error(
            log.INTEGRITY_DAMAGED, item=p.item, key=p.key, problem=p.problem, url=p.url, urls=list(p.urls)
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


def _name_snapshots(engine: Engine, report: VerifyReport, batch: int) -> None:
    """Give each damaged blob's problem every snapshot and URL whose bytes are rebuilt from it.

    A blob rebuilt from a damaged base has its own problem (naming that base), so through
    delta chains every version that cannot be read back is named.
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
    for n, p in enumerate(report.problems):
        if p.item == "blob" and p.key in users:
            named = users[p.key]
            urls = tuple(dict.fromkeys(url for url, _ in named))
            report.problems[n] = replace(
                p, url=urls[0], urls=urls, snapshots=tuple(f"{url} v{v}" for url, v in named)
            )


def _check_versions(conn: Connection, report: VerifyReport) -> None:
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
            type_coerce(S.c.first_seen, _AsStored()).label("first_seen"),
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
        select(E.c.target_id, E.c.seq, E.c.kind, E.c.new_sha256, type_coerce(E.c.details, _AsStored()))
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
            report.problems.append(
                Problem("snapshot", where, f"names blob {snap.sha256}, which is missing", url)
            )
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
    latest = made[-1].new_sha256 if made else None
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


def _check_event_targets(conn: Connection, report: VerifyReport) -> None:
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
    return kind in recording.VERSION_EVENTS or ("version" in details and "first_seen" in details)


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
    at = _as_time(value)
    return ledger.iso_time(at) if at is not None else value


def _as_time(value: Any) -> datetime | None:
    """Return a stored time as aware UTC, or None when it is not a time at all."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _event_rows(conn: Connection, batch: int) -> Iterator[Any]:
    """Yield every event row in seq order, `batch` at a time, its time and details as stored."""
    columns = (
        E.c.seq,
        E.c.url,
        type_coerce(E.c.at, _AsStored()).label("at"),
        E.c.kind,
        E.c.old_sha256,
        E.c.new_sha256,
        type_coerce(E.c.details, _AsStored()).label("details"),
        type_coerce(E.c.diff, _AsStored()).label("diff"),
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
    at = _as_time(row.at)
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


class _AsStored(TypeDecorator[Any]):
    """A column read as the driver returns it, unconverted: one unreadable value is reported, not raised.

    SQLite keeps any type an UPDATE writes (`first_seen = 'soon'`, `details = '{'`), and
    SQLAlchemy's own conversion of such a value raises in the middle of a stream.
    """

    impl = Text
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return value


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
