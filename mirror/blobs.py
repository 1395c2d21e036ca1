"""Content-addressed blobs: the exact bytes of every version, stored once per SHA-256.

A blob row is written before any row that names it, in the same transaction
(`archive.record`). Identical content is stored once, whatever its URL: `put`
inserts with ON CONFLICT DO NOTHING, so two workers storing the same bytes at
once both succeed and one row remains.

Codecs: `zstd` (the whole content, compressed) today. The columns for deltas
(`base_sha256`, `chain_length`) are filled as for a whole blob; a delta codec is
one more entry in `_DECODERS` that rebuilds its base with `get` first.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import zstandard
from sqlalchemy import Row, select
from sqlalchemy import exists as sql_exists
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from mirror.errors import StoreError
from mirror.tables import Base, BlobRow

B = Base.metadata.tables[BlobRow.__tablename__]
AnyRow = Row[*tuple[Any, ...]]

ZSTD = "zstd"
ZSTD_LEVEL = 10  # about 4x on HTML at tens of MB/s; levels above 15 cost far more for a few percent

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


def sha256_of(data: bytes) -> str:
    """Return the hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def put(conn: Connection, data: bytes, sha256: str | None = None, *, now: datetime | None = None) -> str:
    """Store `data` unless a blob with its content is already there; return its sha256.

    Raises:
        StoreError: `sha256` was given and does not match `data`.
    """
    actual = sha256_of(data)
    if sha256 is not None and sha256.lower() != actual:
        raise StoreError(f"blob claimed sha256 {sha256} but its {len(data)} bytes hash to {actual}")
    if exists(conn, actual):  # skip compressing content we already hold
        return actual
    packed = compress(data)
    values = {
        "sha256": actual,
        "size": len(data),
        "stored_size": len(packed),
        "codec": ZSTD,
        "base_sha256": None,
        "chain_length": 0,
        "data": packed,
        "created_at": now or datetime.now(UTC),
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(B).values(values).on_conflict_do_nothing(index_elements=[B.c.sha256]))
    return actual


def get(conn: Connection, sha256: str, *, verify: bool = True) -> bytes:
    """Return the exact bytes stored under `sha256` (re-hashed unless `verify=False`).

    Raises:
        StoreError: no such blob, an unknown codec, or its bytes are damaged.
    """
    row = conn.execute(
        select(B.c.sha256, B.c.size, B.c.codec, B.c.base_sha256, B.c.data).where(B.c.sha256 == sha256)
    ).first()
    if row is None:
        raise StoreError(f"blob {sha256}: not in the store")
    decoder = _DECODERS.get(row.codec)
    if decoder is None:
        raise StoreError(f"blob {sha256}: unknown codec {row.codec!r}")
    try:
        data = decoder(conn, row)
    except zstandard.ZstdError as exc:
        raise StoreError(f"blob {sha256}: damaged ({exc})") from None
    if verify and (len(data) != row.size or sha256_of(data) != sha256):
        raise StoreError(f"blob {sha256}: damaged (its {len(data)} bytes hash to {sha256_of(data)})")
    return data


def exists(conn: Connection, sha256: str) -> bool:
    """Return True when a blob with this sha256 is stored."""
    return bool(conn.execute(select(sql_exists().where(B.c.sha256 == sha256))).scalar())


def _decode_zstd(conn: Connection, row: AnyRow) -> bytes:
    return decompress(row.data)


# codec → how to rebuild the content of a row; a delta codec would `get(conn, row.base_sha256)`
# first and apply `row.data` to it.
_DECODERS: dict[str, Callable[[Connection, AnyRow], bytes]] = {ZSTD: _decode_zstd}
