"""Blob encodings, pure: zstd frames, zstd deltas against a base, and `pack` (hash + compress).

Workers pack a new version's content before any transaction (`blobs.insert` then writes
it); `blobs` stores and reads packed blobs. Codecs:

- `zstd`: the whole content, compressed.
- `zstd-delta`: compressed with a base blob's content as a raw zstd dictionary. The base is
  the previous version of the same document, or for a new document a whole page of its
  site (`mirror.dictionaries`), so a version costs about its change or its own words.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import zstandard

ZSTD = "zstd"
ZSTD_DELTA = "zstd-delta"
# Level 3 when a check stores new content: on the benchmark corpus (Sphinx HTML) 0.4 ms for a page
# against its site's page, where level 6 took 0.8 ms and was 11% smaller. Compression runs for every
# new page while the round waits; `mirror gc` (`mirror.repack`) re-packs at a high level later.
ZSTD_LEVEL = 3
# Deltas against a previous version search harder: one changed paragraph of a 4 MB page costs
# ~1.5 KB at level 10 against ~4 KB at level 6, and few pages change per round.
DELTA_LEVEL = 10
# A delta at most this share of its content is kept without making a whole copy to compare: a
# raw-content dictionary only adds matches, so a delta is rarely larger than the whole copy, and
# compressible content (HTML: 7x) lands far below; PDFs and images (1.1x) are still compared.
SURE_DELTA_SHARE = 3

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
# zstd decompressors are not thread-safe but are cheap: one per thread.
_local = threading.local()
# Compression contexts are not thread-safe and large (~6 MB each at level 6 for a 100 KB page with
# a prepared site dictionary): 16 worker threads each keeping theirs held ~100 MB. Compression
# lets go of the GIL, so more contexts than cores buy nothing: a few, shared by every thread.
COMPRESSORS = max(2, min(4, os.cpu_count() or 2))


@dataclass(slots=True)
class _Slot:
    """One compression context's worth of state: a plain compressor, and the last shared base's."""

    plain: zstandard.ZstdCompressor | None = None
    shared: tuple[bytes, int, zstandard.ZstdCompressor] | None = field(default=None)


# Each slot with its own lock: a free one is taken without waiting, and a thread waits on one
# slot's lock (C) rather than all queue on one queue's mutex and condition (Python; measured,
# 16 threads on 2 slots: half the CPU of a `queue.LifoQueue` per compression).
_slots = tuple((_Slot(), threading.Lock()) for _ in range(COMPRESSORS))
_turns = itertools.count()  # which slot a thread waits for when all are in use


def share_compressors(processes: int) -> int:
    """Keep this process's share of the compression slots when `processes` compress at once; return it.

    Called before a round's processes fork (each keeps the same share): more contexts than
    the cores they share buy nothing, and each holds its window and the site dictionary's tables.
    """
    global _slots
    _slots = _slots[: max(1, len(_slots) // processes)]
    return len(_slots)


@contextmanager
def _slot() -> Iterator[_Slot]:
    """Hold one of this process's compression slots, waiting while all are in use.

    `COMPRESSORS` of them, or this process's share of them in a round's team (`share_compressors`).
    """
    slot, lock = _take()
    try:
        yield slot
    finally:
        lock.release()


def _take() -> tuple[_Slot, threading.Lock]:
    """Return a slot and its lock, held: the first free one (so the first few stay warm), else one in turn."""
    for held in _slots:
        if held[1].acquire(blocking=False):
            return held
    held = _slots[next(_turns) % len(_slots)]
    held[1].acquire()
    return held


def _exact(frame: bytes) -> bytes:
    """Return `frame` in an allocation of its own size.

    python-zstandard's `compress` returns bytes that keep the allocation of the worst case
    (`compressBound`, about the input's size): a 10 KB frame of a 100 KB page held 100 KB
    (measured: 2,000 pages compressed to 23 MB took 77 MB of RSS; copied, 30 MB).
    """
    return bytes(memoryview(frame))


def compress(data: bytes) -> bytes:
    """Return `data` as one zstd frame (with its content size, so `decompress` needs no limit)."""
    with _slot() as slot:
        if slot.plain is None:
            slot.plain = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return _exact(slot.plain.compress(data))


def decompress(data: bytes) -> bytes:
    """Return the bytes of one zstd frame made by `compress`.

    Raises:
        zstandard.ZstdError: the frame is damaged.
    """
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor.decompress(data)


def compress_at(data: bytes, level: int) -> bytes:
    """Return `data` as one zstd frame at `level` (a fresh context: `mirror gc`, not the round's)."""
    with _slot():
        return _exact(zstandard.ZstdCompressor(level=level).compress(data))


def delta_parameters(
    size: int, base_size: int, level: int | None = None
) -> zstandard.ZstdCompressionParameters:
    """Return the zstd parameters of a delta of `size` bytes against a base of `base_size` bytes.

    At `DELTA_LEVEL` (a check's delta) unless `level` says otherwise (`mirror gc`).
    """
    # The window must reach back over the whole base from the end of the body, or a large
    # body matches only the start of its base (measured: 8 MB, one change: 1.5 MB vs 0.8 KB).
    span = (base_size + size).bit_length()
    window_log = min(max(10, span), _MAX_WINDOW_LOG)
    params = zstandard.ZstdCompressionParameters.from_level(
        DELTA_LEVEL if level is None else level, source_size=size, dict_size=base_size, window_log=window_log
    )
    if level is not None:
        return params
    # A check's delta: the level's tables are sized for any input past 256 KB (level 10: 4M
    # hash and 2M chain entries, a 21.5 MiB context for a 700 KB page, 45 MiB for 4 MB). A
    # quarter and an eighth of the positions of base and body made the same deltas of the
    # benchmark's pages (30 KB to 16 MB, one paragraph changed), faster, in a third of the
    # memory (700 KB: 6.5 MiB). `mirror gc` (a `level`) keeps the level's own tables.
    return zstandard.ZstdCompressionParameters.from_level(
        DELTA_LEVEL,
        source_size=size,
        dict_size=base_size,
        window_log=window_log,
        hash_log=max(zstandard.HASHLOG_MIN, min(params.hash_log, span - 2)),
        chain_log=max(zstandard.CHAINLOG_MIN, min(params.chain_log, span - 3)),
    )


def compress_delta(data: bytes, base: bytes, level: int | None = None) -> bytes:
    """Return `data` as one zstd frame that needs `base` (a raw-content dictionary) to decode.

    At `DELTA_LEVEL` unless `level` says otherwise.
    """
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = delta_parameters(len(data), len(base), level)
    with _slot():  # its context is made for this call; the slot bounds how many live at once
        return _exact(
            zstandard.ZstdCompressor(compression_params=params, dict_data=dictionary).compress(data)
        )


def _compress_shared(data: bytes, base: bytes, level: int) -> bytes:
    """Return `data` compressed with `base` (a site's page) as a prepared raw-content dictionary.

    Preparing the dictionary costs about a quarter of compressing a 100 KB page against it;
    a site's base serves many pages in a row, so each slot keeps the last one.
    """
    with _slot() as slot:
        cached = slot.shared
        if cached is None or cached[0] is not base or cached[1] != level:
            slot.shared = None  # the old context goes before the new one is built
            dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            dictionary.precompute_compress(level=level)
            cached = slot.shared = (base, level, zstandard.ZstdCompressor(level=level, dict_data=dictionary))
        return _exact(cached[2].compress(data))


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


@dataclass(frozen=True, slots=True)
class DeltaBase:
    """What packing a delta needs to know of its base blob (read outside any write transaction)."""

    sha256: str
    size: int
    chain_length: int
    root_sha256: str
    level: int = 0  # a shared base (a site's page for its new pages): zstd level of deltas against it


@dataclass(frozen=True, slots=True)
class Packed:
    """One blob ready to insert: hashed and compressed (whole or as a delta) before any transaction."""

    sha256: str
    size: int
    stored_size: int
    codec: str
    base_sha256: str | None
    root_sha256: str
    chain_length: int
    data: bytes


def pack(
    data: bytes, sha256: str | None = None, *, base: DeltaBase | None = None, base_bytes: bytes | None = None
) -> Packed:
    """Return `data` packed for `insert`: a delta against `base` when that is smaller, else whole.

    A delta is tried when `base` and its content `base_bytes` are given, the base's chain
    is shorter than `MAX_CHAIN`, and both are at most `MAX_DELTA_BYTES`. Pure: no database.
    `sha256` is the caller's hash of `data` when it has one (fetch hashes a body as it
    reads it): a page is not hashed twice. `mirror verify` re-hashes every stored blob.
    """
    actual = sha256.lower() if sha256 is not None else sha256_of(data)
    whole_size = len(data)  # what a delta must beat before a whole copy is made to compare
    delta = None
    if (
        base is not None
        and base_bytes is not None
        and base.chain_length < MAX_CHAIN
        and base.size <= MAX_DELTA_BYTES
        and len(data) <= MAX_DELTA_BYTES
    ):
        delta = Packed(
            actual, len(data), 0, ZSTD_DELTA, base.sha256, base.root_sha256, base.chain_length + 1, b""
        )
        if base.level:  # a site's page shared by many new pages: its dictionary is prepared once
            packed = _compress_shared(data, base_bytes, base.level)
        else:
            packed = compress_delta(data, base_bytes)
        delta = replace(delta, stored_size=len(packed), data=packed)
        if len(packed) * SURE_DELTA_SHARE <= whole_size:  # no whole copy comes near: skip making one
            return delta
    whole = compress(data)
    if delta is not None and delta.stored_size < len(whole):
        return delta
    return Packed(actual, len(data), len(whole), ZSTD, None, actual, 0, whole)  # stand alone
