"""Content-addressed blobs: the exact bytes of every version, stored once per SHA-256.

A blob row is written before any row that names it, in the same transaction
(`archive.record`). Identical content is stored once, whatever its URL: `put`
inserts with ON CONFLICT DO NOTHING, so two workers storing the same bytes at
once both succeed and one row remains.

Codecs:
- `zstd`: the whole content, compressed. `chain_length` 0; `root_sha256` is its own key.
- `zstd-delta`: compressed with the base blob's content as a raw zstd dictionary, so a
  version that changed one paragraph costs about that paragraph. `base_sha256` names the
  base, `chain_length` is the base's plus one (at most `MAX_CHAIN`, then a whole copy
  starts a new chain), `root_sha256` the whole blob the chain starts from.

Reads fetch a chain in one recursive query and apply it iteratively from the nearest whole
(or cached) ancestor, then re-hash the result. When it does not match, the chain is re-hashed
link by link, so a damaged base surfaces as damage of each dependant, naming both. A `Reader`
keeps a bounded cache of decoded, verified content: walking blobs in chain order (as `verify`
does, by `root_sha256, chain_length`) then decodes each blob once.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import zstandard
from sqlalchemy import Row, Select, bindparam, literal, select
from sqlalchemy import exists as sql_exists
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mirror.errors import StoreError
from mirror.tables import Base, BlobRow

B = Base.metadata.tables[BlobRow.__tablename__]
AnyRow = Row[*tuple[Any, ...]]

ZSTD = "zstd"
ZSTD_DELTA = "zstd-delta"
ZSTD_LEVEL = 10  # about 4x on HTML at tens of MB/s; levels above 15 cost far more for a few percent

# Deltas between a whole copy and the newest version. Measured (benchmarks/store_figures.py) on a
# 100 KB page of the Python docs with one paragraph rewritten per version: a delta is ~150 bytes
# against 11 KB for a whole compressed copy, so whole copies are nearly all the size: 100 versions
# cost 5.7 copies at 32, 3.4 at 64. Reading the 64th delta costs ~1.5 ms (SQLite) to ~2 ms
# (PostgreSQL) against ~0.2 ms for a whole blob. The price: damage to one blob spoils up to the
# next whole copy of that document (verify names them all).
MAX_CHAIN = 64
# Bodies (and bases) above this are stored whole: a delta holds base, body and window in memory.
MAX_DELTA_BYTES = 32 * 1024 * 1024
# zstd's default decoder limit (2**27): a delta's window covers its base and its body.
_MAX_WINDOW_LOG = 27
# Far beyond any MAX_CHAIN: a longer chain means edited rows (a loop of bases), so stop, not spin.
_CHAIN_LIMIT = 1000
READER_CACHE_BYTES = 64 * 1024 * 1024  # decoded bases a `Reader` keeps (verify's working set)

# zstd compressors and decompressors are not thread-safe but are costly to build:
# one of each per worker thread.
_local = threading.local()


def compress(data: bytes) -> bytes:
    """Return `data` as one zstd frame (with its content size, so `decompress` needs no limit)."""
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return compressor.compress(data)


def decompress(data: bytes) -> bytes:
    """Return the bytes of one zstd frame made by `compress`.

    Raises:
        zstandard.ZstdError: the frame is damaged.
    """
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor.decompress(data)


def compress_delta(data: bytes, base: bytes) -> bytes:
    """Return `data` as one zstd frame that needs `base` (a raw-content dictionary) to decode."""
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    # The window must reach back over the whole base from the end of the body, or a large
    # body matches only the start of its base (measured: 8 MB, one change: 1.5 MB vs 0.8 KB).
    window_log = min(max(10, (len(base) + len(data)).bit_length()), _MAX_WINDOW_LOG)
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, source_size=len(data), dict_size=len(base), window_log=window_log
    )
    return zstandard.ZstdCompressor(compression_params=params, dict_data=dictionary).compress(data)


def decompress_delta(delta: bytes, base: bytes) -> bytes:
    """Return the bytes of a frame made by `compress_delta(data, base)`.

    Raises:
        zstandard.ZstdError: the frame is damaged, or `base` is not the content it was made against.
    """
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdDecompressor(dict_data=dictionary).decompress(delta)


def sha256_of(data: bytes) -> str:
    """Return the hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


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
    packed = compress(data)
    values: dict[str, Any] = {
        "sha256": actual,
        "size": len(data),
        "stored_size": len(packed),
        "codec": ZSTD,
        "base_sha256": None,
        "root_sha256": actual,
        "chain_length": 0,
        "data": packed,
        "created_at": now or datetime.now(UTC),
    }
    if base is not None and len(data) <= MAX_DELTA_BYTES:
        values.update(_delta_values(conn, data, base, len(packed)))
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(B).values(values).on_conflict_do_nothing(index_elements=[B.c.sha256]))
    return actual


def _delta_values(conn: Connection, data: bytes, base: str, whole_size: int) -> dict[str, Any]:
    """Return the columns of `data` as a delta against `base`, or {} when a whole copy is better."""
    row = conn.execute(select(B.c.size, B.c.chain_length, B.c.root_sha256).where(B.c.sha256 == base)).first()
    if row is None or row.chain_length >= MAX_CHAIN or row.size > MAX_DELTA_BYTES:
        return {}
    try:
        base_bytes = get(conn, base)
    except StoreError:  # a damaged base must not take a new version down with it
        return {}
    delta = compress_delta(data, base_bytes)
    if len(delta) >= whole_size:  # unrelated content: stand alone rather than depend on the base
        return {}
    return {
        "stored_size": len(delta),
        "codec": ZSTD_DELTA,
        "base_sha256": base,
        "root_sha256": row.root_sha256 or base,
        "chain_length": row.chain_length + 1,
        "data": delta,
    }


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
        except zstandard.ZstdError as exc:
            raise StoreError(self._culprit(sha256, chain, base, str(exc))) from None
        assert data is not None  # the chain is never empty: it starts with the requested row
        if verify:
            problem = _problem(data, chain[0])
            if problem is not None:
                raise StoreError(self._culprit(sha256, chain, base, problem))
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
            raise StoreError(f"blob {sha256}: damaged (its chain of bases is longer than {_CHAIN_LIMIT})")
        raise StoreError(_damaged(sha256, chain[-1].base_sha256, "it is not in the store"))

    def _decode(self, row: AnyRow, base: bytes | None) -> bytes:
        self.decoded += 1
        if row.codec == ZSTD:
            return decompress(row.data)
        assert base is not None  # `_chain` ends at a whole blob or a cached base
        return decompress_delta(row.data, base)

    def _culprit(self, wanted: str, chain: list[AnyRow], base: bytes | None, problem: str) -> str:
        """Return the message naming the oldest damaged blob of `chain` (rebuilt from `base`)."""
        data = base
        for row in reversed(chain):
            try:
                data = self._decode(row, data)
            except zstandard.ZstdError as exc:
                return _damaged(wanted, row.sha256, str(exc))
            if (found := _problem(data, row)) is not None:
                return _damaged(wanted, row.sha256, found)
        return _damaged(wanted, wanted, problem)

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


_COLUMNS = (B.c.sha256, B.c.size, B.c.codec, B.c.base_sha256, B.c.data)


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
        raise StoreError(f"blob {wanted}: unknown codec {row.codec!r} (in blob {row.sha256})")
    if row.base_sha256 is None:
        raise StoreError(_damaged(wanted, row.sha256, "a delta that names no base"))
    return False


def _problem(data: bytes, row: AnyRow) -> str | None:
    actual = sha256_of(data)
    if actual == row.sha256 and len(data) == row.size:
        return None
    return f"its {len(data)} bytes hash to {actual}"


def _damaged(wanted: str, culprit: str, problem: str) -> str:
    if culprit == wanted:
        return f"blob {wanted}: damaged ({problem})"
    return f"blob {wanted}: damaged base {culprit} ({problem})"
