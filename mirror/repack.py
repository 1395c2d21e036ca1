"""`mirror gc`: re-pack blobs in idle time, per site, against the most similar earlier content.

Checks compress what they fetch at a cheap level (`codec.ZSTD_LEVEL`), so a round is
not bound by compression; re-packing later does what git's `gc` does:

- a blob nothing depends on (no delta names it as base) may move to a better base: the
  content of another document of the same site with the same file name (a copy, a
  mirror folder, a re-upload: like git's delta search, which pairs objects by name),
  tried first; else its own base (a site's page, or its previous version) or none;
- a blob others depend on keeps its base (their chains stay as they are) and is only
  compressed again;
- everything at `GC_LEVEL`; the smallest encoding wins, and the blob's row changes only
  when it gets smaller. Either way `packed_level` records that it is done.

The encodings stay `zstd` and `zstd-delta`: a re-packed blob reads like any other, in
this mirror and in older ones. Before a row is written the new encoding is decoded and
re-hashed against the blob's key (and `mirror verify` re-hashes every blob later). Each
blob is its own short write transaction, which changes the row only while its content is
still what was read and (for a new base) no delta names it yet: checks go on meanwhile.
A SQLite store gives the freed pages back to the file system in small steps
(`PRAGMA incremental_vacuum`, new stores are made with `auto_vacuum = INCREMENTAL`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Engine, exists, func, select, update
from sqlalchemy.engine import Connection

from mirror import codec, db, tables
from mirror.blobs import Reader
from mirror.codec import ZSTD, ZSTD_DELTA
from mirror.errors import StoreError

B = tables.blobs
S = tables.snapshots
T = tables.targets

GC_LEVEL = (
    12  # benchmark pages: a site delta 3% above level 15 at 2/3 of its time (19: 2% smaller, 4x the time)
)
PAGE = 64  # blobs listed per read
NAMED_CANDIDATES = 2  # earlier documents of the same file name tried as bases
SURE_SHARE = 20  # a delta this much smaller than its content is taken without trying more
READER_CACHE = 16 * 1024 * 1024
VACUUM_PAGES = 2000  # SQLite pages given back per transaction


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one run of `mirror gc` did."""

    examined: int  # blobs looked at
    repacked: int  # blobs whose row got smaller
    stored_before: int  # their stored bytes before
    stored_after: int  # and after
    skipped: int  # unreadable (damaged: `mirror verify` names them) or changed meanwhile
    remaining: int  # blobs not re-packed yet (a bounded run stops early)
    seconds: float


@dataclass(frozen=True, slots=True)
class Choice:
    """An encoding of one blob: its codec, base (for a delta) and data."""

    codec: str
    base: str | None
    chain_length: int
    root: str
    data: bytes


@dataclass(frozen=True, slots=True)
class _Blob:
    sha256: str
    size: int
    stored_size: int
    codec: str
    base: str | None
    chain_length: int
    root: str


def file_name(url: str) -> str:
    """Return the last segment of a URL's path ('' for a folder)."""
    return urlsplit(url).path.rpartition("/")[2]


class _Names:
    """Per host: file name -> the first few blobs of documents with that name (oldest first)."""

    def __init__(self) -> None:
        self._hosts: dict[str, dict[str, list[str]]] = {}

    def candidates(self, conn: Connection, host: str, url: str, own: str) -> list[str]:
        names = self._hosts.get(host)
        if names is None:
            names = self._hosts[host] = {}
            rows = conn.execute(
                select(T.c.url, S.c.sha256)
                .join(S, S.c.target_id == T.c.id)
                .where(T.c.host == host)
                .order_by(S.c.id)
            )
            for row in rows:
                found = names.setdefault(file_name(row.url), [])
                if len(found) <= NAMED_CANDIDATES and row.sha256 not in found:
                    found.append(row.sha256)
        name = file_name(url)
        return [sha for sha in names.get(name, []) if sha != own][:NAMED_CANDIDATES] if name else []


def run(
    engine: Engine,
    *,
    limit: int | None = None,
    seconds: float | None = None,
    on_blob: Callable[[], object] = lambda: None,
    count_remaining: bool = True,
) -> GcReport:
    """Re-pack the blobs not re-packed yet, one short transaction each; return what was done.

    `limit` bounds the blobs looked at, `seconds` the time (the daemon's idle slices);
    `on_blob` is called after each one (progress). Without `count_remaining` the blobs
    left are not counted (a scan of the table): `remaining` is then -1.

    Raises:
        StoreError: the database failed.
    """
    started = time.monotonic()
    reader = Reader(READER_CACHE)
    names = _Names()
    examined = repacked = before = after = skipped = 0
    after_key = ""
    while True:
        if limit is not None and examined >= limit:
            break
        if seconds is not None and time.monotonic() - started >= seconds:
            break
        page = db.read(engine, functools.partial(_page, after=after_key))
        if not page:
            break
        for blob in page:
            after_key = blob.sha256
            if (limit is not None and examined >= limit) or (
                seconds is not None and time.monotonic() - started >= seconds
            ):
                break
            examined += 1
            choice = db.read(engine, functools.partial(_choose, blob=blob, reader=reader, names=names))
            if choice is None:
                skipped += 1
            elif db.run_in_transaction(engine, functools.partial(_write, blob=blob, choice=choice)):
                if len(choice.data) < blob.stored_size:
                    repacked += 1
                    before += blob.stored_size
                    after += len(choice.data)
            else:
                skipped += 1
            on_blob()
    if repacked and engine.dialect.name == "sqlite":
        give_back(engine)
    remaining = db.read(engine, _remaining) if count_remaining else -1
    return GcReport(examined, repacked, before, after, skipped, remaining, time.monotonic() - started)


def give_back(engine: Engine) -> int:
    """Return a SQLite store's free pages to the file system, a few per transaction; return how many."""
    freed = 0
    raw = engine.raw_connection()  # pragmas outside the store's BEGIN IMMEDIATE: each is its own step
    try:
        cursor = raw.cursor()
        while True:
            free = int(cursor.execute("PRAGMA freelist_count").fetchone()[0] or 0)
            vacuum = int(cursor.execute("PRAGMA auto_vacuum").fetchone()[0] or 0)
            if not free or vacuum != 2:  # 2: INCREMENTAL (a store made before cannot give pages back)
                break
            cursor.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
            freed += min(free, VACUUM_PAGES)
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        cursor.close()
    finally:
        raw.close()
    return freed


def _remaining(conn: Connection) -> int:
    return int(
        conn.execute(select(func.count()).select_from(B).where(B.c.packed_level.is_(None))).scalar() or 0
    )


def _page(conn: Connection, after: str) -> list[_Blob]:
    rows = conn.execute(
        select(
            B.c.sha256,
            B.c.size,
            B.c.stored_size,
            B.c.codec,
            B.c.base_sha256,
            B.c.chain_length,
            B.c.root_sha256,
        )
        .where(B.c.packed_level.is_(None), B.c.sha256 > after)
        .order_by(B.c.sha256)
        .limit(PAGE)
    )
    return [
        _Blob(
            r.sha256, r.size, r.stored_size, r.codec, r.base_sha256, r.chain_length, r.root_sha256 or r.sha256
        )
        for r in rows
    ]


def _choose(conn: Connection, blob: _Blob, reader: Reader, names: _Names) -> Choice | None:
    """Return the smallest encoding of `blob` at `GC_LEVEL`; None when it (or its base) cannot be read."""
    if blob.codec not in (ZSTD, ZSTD_DELTA) or blob.size > codec.MAX_DELTA_BYTES:
        return None
    try:
        content = reader.get(conn, blob.sha256)
    except StoreError:  # damaged: left as it is, for `mirror verify` to name
        return None
    options: list[Choice] = []
    leaf = not conn.execute(select(exists().where(B.c.base_sha256 == blob.sha256))).scalar()
    if leaf:
        where = conn.execute(
            select(T.c.host, T.c.url)
            .join(S, S.c.target_id == T.c.id)
            .where(S.c.sha256 == blob.sha256)
            .limit(1)
        ).first()
        named = names.candidates(conn, where.host, where.url, blob.sha256) if where is not None else []
        for sha in named:
            option = _delta_against(conn, reader, content, sha)
            if option is not None:
                options.append(option)
                if len(option.data) * SURE_SHARE <= len(content):
                    break
    if not options or min(len(o.data) for o in options) * SURE_SHARE > len(content):
        if blob.codec == ZSTD_DELTA and blob.base is not None:
            option = _delta_against(conn, reader, content, blob.base, keep_chain=blob)
            if option is not None:
                options.append(option)
        if blob.codec == ZSTD or leaf:
            whole = codec.compress_at(content, GC_LEVEL)
            options.append(Choice(ZSTD, None, 0, blob.sha256, whole))
    if not options:
        return None
    best = min(options, key=lambda o: len(o.data))
    return best if _decodes(conn, reader, blob, best, content) else None


def _delta_against(
    conn: Connection, reader: Reader, content: bytes, base: str, keep_chain: _Blob | None = None
) -> Choice | None:
    """Return `content` as a delta against blob `base` at `GC_LEVEL`; None if the base will not do."""
    row = conn.execute(select(B.c.size, B.c.chain_length, B.c.root_sha256).where(B.c.sha256 == base)).first()
    if row is None or row.size > codec.MAX_DELTA_BYTES:
        return None
    if keep_chain is None and row.chain_length + 1 >= codec.MAX_CHAIN:
        return None
    try:
        base_bytes = reader.get(conn, base)
    except StoreError:
        return None
    data = codec.compress_delta(content, base_bytes, level=GC_LEVEL)
    if keep_chain is not None:
        return Choice(ZSTD_DELTA, base, keep_chain.chain_length, keep_chain.root, data)
    return Choice(ZSTD_DELTA, base, row.chain_length + 1, row.root_sha256 or base, data)


def _decodes(conn: Connection, reader: Reader, blob: _Blob, choice: Choice, content: bytes) -> bool:
    """Return True when `choice` decodes to exactly the blob's content (re-hashed against its key)."""
    try:
        if choice.codec == ZSTD:
            data = codec.decompress(choice.data)
        else:
            assert choice.base is not None
            data = codec.decompress_delta(choice.data, reader.get(conn, choice.base))
    except Exception:
        return False
    return data == content and codec.sha256_of(data) == blob.sha256


def _write(conn: Connection, blob: _Blob, choice: Choice) -> bool:
    """Store `choice` for `blob` when smaller (else only mark it done); False when the row moved meanwhile."""
    where = [B.c.sha256 == blob.sha256, B.c.packed_level.is_(None), B.c.stored_size == blob.stored_size]
    if len(choice.data) >= blob.stored_size:
        values: dict[str, object] = {"packed_level": GC_LEVEL}
    else:
        values = {
            "codec": choice.codec,
            "base_sha256": choice.base,
            "chain_length": choice.chain_length,
            "root_sha256": choice.root,
            "data": choice.data,
            "stored_size": len(choice.data),
            "packed_level": GC_LEVEL,
        }
        if choice.base != blob.base:  # a new base: only while no delta names this blob
            dependant = B.alias("dependant")
            where.append(~exists().where(dependant.c.base_sha256 == blob.sha256))
    return bool(conn.execute(update(B).where(*where).values(values)).rowcount)
