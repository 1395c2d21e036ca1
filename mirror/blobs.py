"""Content-addressed blobs: the exact bytes of every version, stored once per SHA-256.

A blob row is written before any row that names it, in the same transaction
(`recording.record_many`, through `insert` of blobs packed before it by `codec.pack`).
Identical content is stored once, whatever its URL: `insert` and `put` use ON CONFLICT
DO NOTHING, so two workers storing the same bytes at once both succeed and one row remains.

Codecs (`mirror.codec`):
- `zstd`: the whole content, compressed. `chain_length` 0; `root_sha256` is its own key.
- `zstd-delta`: compressed with the base blob's content as a raw zstd dictionary, so a
  version that changed one paragraph costs about that paragraph, and a new page about its
  own words (its base is then a whole page of its site). `base_sha256` names the base,
  `chain_length` is the base's plus one (at most `MAX_CHAIN`, then a whole copy starts a
  new chain), `root_sha256` the whole blob the chain starts from.

Reads fetch a chain in one recursive query and apply it iteratively from the nearest whole
(or cached) ancestor, then re-hash the result. When it does not match, the chain is re-hashed
link by link, so a damaged base surfaces as damage of each dependant, naming both. A `Reader`
keeps a bounded cache of decoded, verified content: walking blobs in chain order (as `verify`
does, by `root_sha256, chain_length`) then decodes each blob once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import zstandard
from sqlalchemy import Select, bindparam, literal, select
from sqlalchemy import exists as sql_exists
from sqlalchemy.engine import Connection

from mirror import codec, db, tables
from mirror.codec import (
    DELTA_LEVEL,
    MAX_CHAIN,
    MAX_DELTA_BYTES,
    ZSTD,
    ZSTD_DELTA,
    ZSTD_LEVEL,
    DeltaBase,
    Packed,
    compress,
    compress_delta,
    decompress,
    decompress_delta,
    pack,
    sha256_of,
)
from mirror.errors import StoreError
from mirror.tables import AnyRow

# Codecs and packing live in `mirror.codec` (pure); the names are here too for the store's callers.
__all__ = [
    "DELTA_LEVEL",
    "MAX_CHAIN",
    "MAX_DELTA_BYTES",
    "ZSTD",
    "ZSTD_DELTA",
    "ZSTD_LEVEL",
    "Damaged",
    "DeltaBase",
    "Packed",
    "Reader",
    "base_of",
    "compress",
    "compress_delta",
    "decompress",
    "decompress_delta",
    "exists",
    "get",
    "insert",
    "pack",
    "put",
    "sha256_of",
]

B = tables.blobs

# Far beyond any MAX_CHAIN: a longer chain means edited rows (a loop of bases), so stop, not spin.
_CHAIN_LIMIT = 1000
READER_CACHE_BYTES = 64 * 1024 * 1024  # decoded bases a `Reader` keeps (verify's working set)


def base_of(conn: Connection, sha256: str) -> DeltaBase | None:
    """Return what a delta against blob `sha256` needs to know of it, or None when it is not stored."""
    row = conn.execute(_BASE_INFO, {"sha": sha256}).first()
    if row is None:
        return None
    return DeltaBase(sha256, row.size, row.chain_length, row.root_sha256 or sha256)


def insert(conn: Connection, packed: Sequence[Packed], now: datetime) -> None:
    """Insert the packed blobs in one statement; one already stored is left alone (ON CONFLICT DO NOTHING)."""
    if not packed:
        return
    rows = [
        {
            "sha256": p.sha256,
            "size": p.size,
            "stored_size": p.stored_size,
            "codec": p.codec,
            "base_sha256": p.base_sha256,
            "root_sha256": p.root_sha256,
            "chain_length": p.chain_length,
            "data": p.data,
            "created_at": now,
        }
        for p in packed
    ]
    conn.execute(db.insert_ignoring(conn.dialect.name, B, B.c.sha256), rows)


def put(
    conn: Connection,
    data: bytes,
    sha256: str | None = None,
    *,
    base: str | None = None,
    now: datetime | None = None,
) -> str:
    """Store `data` unless a blob with its content is already there; return its sha256.

    With `base` (the sha256 of the previous version of the same document), the content
    is stored as a delta against it when that is smaller than a whole compressed copy,
    the base's chain is shorter than `MAX_CHAIN`, both are at most `MAX_DELTA_BYTES`,
    and the base reads back intact; otherwise it is stored whole.

    Raises:
        StoreError: `sha256` was given and does not match `data`.
    """
    actual = sha256_of(data)
    if sha256 is not None and sha256.lower() != actual:
        raise StoreError(f"blob claimed sha256 {sha256} but its {len(data)} bytes hash to {actual}")
    if exists(conn, actual):  # skip compressing content we already hold
        return actual
    info = base_of(conn, base) if base is not None and len(data) <= codec.MAX_DELTA_BYTES else None
    base_bytes = None
    if info is not None and info.size <= codec.MAX_DELTA_BYTES and info.chain_length < codec.MAX_CHAIN:
        try:
            base_bytes = get(conn, info.sha256)
        except StoreError:  # a damaged base must not take a new version down with it
            base_bytes = None
    insert(conn, [pack(data, actual, base=info, base_bytes=base_bytes)], now or datetime.now(UTC))
    return actual


def get(conn: Connection, sha256: str, *, verify: bool = True) -> bytes:
    """Return the exact bytes stored under `sha256` (re-hashed unless `verify=False`).

    Raises:
        StoreError: no such blob, an unknown codec, or its bytes (or a base's, named) are damaged.
    """
    return Reader(cache_bytes=0).get(conn, sha256, verify=verify)


def exists(conn: Connection, sha256: str) -> bool:
    """Return True when a blob with this sha256 is stored."""
    return bool(conn.execute(select(sql_exists().where(B.c.sha256 == sha256))).scalar())


class Reader:
    """Reads blobs, keeping up to `cache_bytes` of decoded, verified content (least recently used out).

    Content is immutable per sha256 and only bytes that hash to their key are cached,
    so one `Reader` may serve several connections and transactions. Not thread-safe.
    """

    def __init__(self, cache_bytes: int = READER_CACHE_BYTES) -> None:
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0
        self.decoded = 0  # blobs decompressed so far (whole or delta): what the cache saves

    def get(self, conn: Connection, sha256: str, *, verify: bool = True) -> bytes:
        """Return the exact bytes stored under `sha256` (re-hashed unless `verify=False`).

        Raises:
            StoreError: no such blob, an unknown codec, a broken chain of bases, or its
                bytes (or a base's, named in the message) are damaged.
        """
        hit = self._cached_bytes(sha256)
        if hit is not None:
            return hit
        chain, base = self._chain(conn, sha256)
        # Only the result is hashed: intact bases give intact bytes, and when they are not,
        # `_culprit` hashes the chain link by link to name the damaged one. Hashing every link
        # would cost more than decoding it (~60 us against ~13 us for a 100 KB link).
        data = base
        try:
            for row in reversed(chain):  # oldest first: each delta applies to the bytes before it
                data = self._decode(row, data)
        except _UNDECODABLE as exc:
            raise self._culprit(sha256, chain, base, str(exc)) from None
        assert data is not None  # the chain is never empty: it starts with the requested row
        if verify:
            problem = _problem(data, chain[0])
            if problem is not None:
                raise self._culprit(sha256, chain, base, problem)
            self._remember(sha256, data)
        return data

    def _chain(self, conn: Connection, sha256: str) -> tuple[list[AnyRow], bytes | None]:
        """Return the rows from `sha256` back to a whole blob or a cached base, and that base's bytes.

        One query when the blob is whole or its base is cached (as when blobs are read in
        chain order); otherwise one more, recursive, for the rest of the chain.
        """
        first = conn.execute(select(*_COLUMNS).where(B.c.sha256 == sha256)).first()
        if first is None:
            raise StoreError(f"blob {sha256}: not in the store")
        chain = [first]
        if _is_whole(sha256, first):
            return chain, None
        if (cached := self._cached_bytes(first.base_sha256)) is not None:
            return chain, cached
        for row in conn.execute(_BASES, {"start": first.base_sha256}).all():
            if row.sha256 != chain[-1].base_sha256:
                break
            chain.append(row)
            if _is_whole(sha256, row):
                return chain, None
            if (cached := self._cached_bytes(row.base_sha256)) is not None:
                return chain, cached
        if len(chain) > _CHAIN_LIMIT:
            raise Damaged(sha256, sha256, f"its chain of bases is longer than {_CHAIN_LIMIT}")
        raise Damaged(sha256, chain[-1].base_sha256, "it is not in the store")

    def _decode(self, row: AnyRow, base: bytes | None) -> bytes:
        self.decoded += 1
        if not isinstance(row.data, bytes):  # SQLite keeps whatever an UPDATE put there (`data = 'abc'`)
            raise _Undecodable(f"its data is {type(row.data).__name__}, not bytes")
        # zstd allocates the size a frame declares before decoding it: an edited header must not
        # make a reader (verify above all) allocate terabytes, so it may declare no more than the
        # row's size (less decodes, and the hash names the damage).
        declared = zstandard.frame_content_size(row.data)
        if declared != -1 and not (isinstance(row.size, int) and declared <= row.size):
            raise _Undecodable(f"its frame declares {declared} bytes, more than its size {row.size!r}")
        if row.codec == ZSTD:
            return decompress(row.data)
        assert base is not None  # `_chain` ends at a whole blob or a cached base
        return decompress_delta(row.data, base)

    def _culprit(self, wanted: str, chain: list[AnyRow], base: bytes | None, problem: str) -> Damaged:
        """Return the error naming the oldest damaged blob of `chain` (rebuilt from `base`)."""
        data = base
        for row in reversed(chain):
            try:
                data = self._decode(row, data)
            except _UNDECODABLE as exc:
                return Damaged(wanted, row.sha256, str(exc))
            if (found := _problem(data, row)) is not None:
                return Damaged(wanted, row.sha256, found)
        return Damaged(wanted, wanted, problem)

    @property
    def cached_bytes(self) -> int:
        """Return the bytes of decoded content the cache holds now (at most `cache_bytes`)."""
        return self._cached

    def _cached_bytes(self, sha256: str) -> bytes | None:
        data = self._cache.get(sha256)
        if data is not None:
            self._cache.move_to_end(sha256)
        return data

    def _remember(self, sha256: str, data: bytes) -> None:
        if len(data) > self.cache_bytes:
            return
        self._cache[sha256] = data
        self._cached += len(data)
        while self._cached > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached -= len(old)


class _Undecodable(Exception):
    """A blob's `data` is not bytes, or its frame declares another size than the row."""


# What decoding a stored row raises when its bytes (or their type) are damaged. MemoryError:
# a frame that declares more than the machine holds (a row whose size was edited to match it).
_UNDECODABLE = (zstandard.ZstdError, _Undecodable, MemoryError)

_COLUMNS = (B.c.sha256, B.c.size, B.c.codec, B.c.base_sha256, B.c.data)
_BASE_INFO = select(B.c.size, B.c.chain_length, B.c.root_sha256).where(B.c.sha256 == bindparam("sha"))


def _bases_query() -> Select[Any]:
    """Return the recursive query of blob `:start` and its bases, nearest first (column `depth`)."""
    start = select(*_COLUMNS, literal(1).label("depth")).where(B.c.sha256 == bindparam("start"))
    chain = start.cte("chain", recursive=True)
    base = B.alias("base")
    more = select(*(base.c[c.name] for c in _COLUMNS), chain.c.depth + 1).where(
        base.c.sha256 == chain.c.base_sha256,
        chain.c.codec == ZSTD_DELTA,
        chain.c.depth < _CHAIN_LIMIT,  # stops a loop of bases (edited rows) from recursing forever
    )
    chain = chain.union_all(more)
    return select(chain).order_by(chain.c.depth)


# Built once: building a recursive query costs more Python time than running it on a short chain.
_BASES = _bases_query()


def _is_whole(wanted: str, row: AnyRow) -> bool:
    """Return True for a whole blob, False for a delta with a base.

    Raises:
        StoreError: an unknown codec, or a delta naming no base.
    """
    if row.codec == ZSTD:
        return True
    if row.codec != ZSTD_DELTA:
        raise Damaged(wanted, row.sha256, f"unknown codec {row.codec!r}")
    if row.base_sha256 is None:
        raise Damaged(wanted, row.sha256, "a delta that names no base")
    return False


def _problem(data: bytes, row: AnyRow) -> str | None:
    actual = sha256_of(data)
    if actual != row.sha256:
        return f"its {len(data)} bytes hash to {actual}"
    if len(data) != row.size:
        return f"its size is recorded as {row.size!r}, but it has {len(data)} bytes"
    return None


class Damaged(StoreError):
    """Blob `sha256` cannot be read back intact because blob `culprit` (itself, or a base it is
    rebuilt from) is damaged: `problem` says how."""

    def __init__(self, sha256: str, culprit: str, problem: str) -> None:
        self.sha256, self.culprit, self.problem = sha256, culprit, problem
        where = "damaged" if culprit == sha256 else f"damaged base {culprit}"
        super().__init__(f"blob {sha256}: {where} ({problem})")
