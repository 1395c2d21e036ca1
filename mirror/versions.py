"""Finding versions in the store: one by number, count back, sha256 prefix or time; a site as it was.

A version spec is a number ("3"), counted back from the latest ("-1" the latest, "-2"
the one before), or a sha256 prefix of at least MIN_SHA_PREFIX hex digits (all-digit text
is a number first, then a prefix if there is no such version). `site_batch` reads one
page of a site as it was at a time. Queries over one connection, for `mirror.reader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, select
from sqlalchemy.engine import Connection

from mirror import tables
from mirror.domain import Version
from mirror.errors import UsageError, VersionNotFound
from mirror.events import DOCUMENT_CHANGED, DOCUMENT_DISAPPEARED, DOCUMENT_NEW, DOCUMENT_REAPPEARED
from mirror.tables import AnyRow
from mirror.targets import target_row

T = tables.targets
S = tables.snapshots
E = tables.events

MIN_SHA_PREFIX = 4
# The order of "latest": by capture time, then number. Numbers are the order versions entered the
# record; an imported capture older than what was stored is numbered after it (`mirror.importing`).
_LATEST_FIRST = (S.c.first_seen.desc(), S.c.version.desc())
# The events that say whether a document was there: the latest of them at a time decides.
_PRESENCE_EVENTS = (DOCUMENT_NEW, DOCUMENT_CHANGED, DOCUMENT_REAPPEARED, DOCUMENT_DISAPPEARED)


@dataclass(frozen=True, slots=True)
class SiteEntry:
    """One document of a site as it was at a time (see `mirror.reader.Reader.site_at`).

    `gone_since` is set when the document had disappeared by then; `version` is
    still its last good version, which a restore leaves out and lists.
    """

    url: str
    version: Version | None
    gone_since: datetime | None


def version_of(row: AnyRow) -> Version:
    return Version(
        number=row.version,
        sha256=row.sha256,
        size=row.size,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        status=row.http_status,
        content_type=row.content_type,
        final_url=row.final_url,
    )


def site_batch(conn: Connection, at: datetime, after: str, limit: int) -> list[SiteEntry]:
    """Return up to `limit` entries of `site_at(at)` with URLs after `after`, by URL."""
    seen_by_then = exists().where(S.c.target_id == T.c.id, S.c.first_seen <= at)
    page = conn.execute(
        select(T.c.id, T.c.url).where(T.c.url > after, seen_by_then).order_by(T.c.url).limit(limit)
    ).all()
    if not page:
        return []
    ids = [row.id for row in page]
    # The latest captured by `at` is current then (an imported version may be numbered after a
    # later capture: numbers are the order versions entered the record); on a tie, the highest number.
    current = (
        select(S.c.target_id, func.max(S.c.first_seen).label("seen"))
        .where(S.c.target_id.in_(ids), S.c.first_seen <= at)
        .group_by(S.c.target_id)
        .subquery()
    )
    versions: dict[int, Version] = {}
    for row in conn.execute(
        select(S)
        .join(current, and_(S.c.target_id == current.c.target_id, S.c.first_seen == current.c.seen))
        .order_by(S.c.version)
    ):
        versions[row.target_id] = version_of(row)
    latest = (
        select(func.max(E.c.seq).label("seq"))
        .where(E.c.target_id.in_(ids), E.c.kind.in_(_PRESENCE_EVENTS), E.c.at <= at)
        .group_by(E.c.target_id)
        .subquery()
    )
    gone = {
        row.target_id: row.at
        for row in conn.execute(select(E.c.target_id, E.c.kind, E.c.at).join(latest, E.c.seq == latest.c.seq))
        if row.kind == DOCUMENT_DISAPPEARED
    }
    return [SiteEntry(row.url, versions.get(row.id), gone.get(row.id)) for row in page]


def version_row(conn: Connection, url: str, spec: str | None, at: datetime | None) -> AnyRow:
    """Return the `snapshots` row of `mirror.reader.Reader.version`'s arguments (see there)."""
    if spec is not None and at is not None:
        raise UsageError("give a version or a time, not both")
    target = target_row(conn, url)
    by_target = select(S).where(S.c.target_id == target.id)
    if at is not None:
        row = conn.execute(by_target.where(S.c.first_seen <= at).order_by(*_LATEST_FIRST).limit(1)).first()
        if row is None:
            raise VersionNotFound(target.url, at.isoformat(), "no version was stored by then")
        return row
    text = (spec or "-1").strip().lower()
    if re.fullmatch(r"-?\d+", text):
        number = int(text)
        if number < 0:  # counted back in capture order: -1 is the latest captured
            back = -number - 1
            row = conn.execute(by_target.order_by(*_LATEST_FIRST).offset(back).limit(1)).first()
        else:
            row = conn.execute(by_target.where(S.c.version == number)).first() if number > 0 else None
        if row is not None:
            return row
        if len(text) < MIN_SHA_PREFIX or text.startswith("-"):
            problem = "no version stored yet" if target.current_version == 0 else "no such version"
            raise VersionNotFound(target.url, text, f"{problem} (versions: 1..{target.current_version})")
    if not re.fullmatch(r"[0-9a-f]+", text) or len(text) < MIN_SHA_PREFIX:
        raise VersionNotFound(target.url, text, "expected a number, -N, or a sha256 prefix of 4+ hex digits")
    # Digests are stored as bytes: a prefix is the range of the digests it can begin.
    spread = 64 - len(text)
    within = S.c.sha256.between(text + "0" * spread, text + "f" * spread)
    rows = conn.execute(by_target.where(within).order_by(S.c.version)).all()
    shas = {r.sha256 for r in rows}
    if len(shas) > 1:
        raise VersionNotFound(target.url, text, f"ambiguous prefix ({len(shas)} different versions match)")
    if not rows:
        raise VersionNotFound(target.url, text, "no version has this sha256 prefix")
    return rows[-1]  # the same content stored twice (a revert): the latest
