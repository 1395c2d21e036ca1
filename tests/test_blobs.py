"""Delta storage on both backends: a page's versions cost what changed, and read back exactly."""

from __future__ import annotations

import itertools
import random
import threading

import pytest
import zstandard
from sqlalchemy import select, update

from mirror import blobs, codec
from mirror.db import run_in_transaction
from mirror.errors import StoreError
from mirror.tables import metadata
from tests.fixtures_store import HOUR, T0, save_version, sha, watch

URL = "https://www.prisoncensorship.info/archive/etext/wim/cong/notefromchair092207.html"
OTHER = "https://www.prisoncensorship.info/archive/etext/wim/cong/copy.html"
BLOBS = metadata.tables["blobs"]

# a small vocabulary: pages compress about 4x, as real HTML does
_VOCABULARY = """
    prison censorship mail letter newsletter comrade inmate rights congress chair note report
    the of and to in a is that for on with as was by at from this be are have it not or we they
    state department review denied publication issue policy appeal court ruling officer
    committee statement archive page text study group movement struggle people education
"""
WORDS = _VOCABULARY.split()


def paragraph(rng: random.Random) -> str:
    return "<p>" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 110))) + ".</p>"


def page(paragraphs: list[str]) -> bytes:
    head = "<!DOCTYPE html><html><head><title>Note from the chair</title></head><body><div id=main>\n"
    return (head + "\n".join(paragraphs) + "\n</div><div id=footer>MIM</div></body></html>\n").encode()


def edited_versions(count: int, paragraphs: int = 40, seed: int = 7) -> list[bytes]:
    """`count` versions of one page, each with one paragraph rewritten."""
    rng = random.Random(seed)
    paras = [paragraph(rng) for _ in range(paragraphs)]
    versions = []
    for _ in range(count):
        versions.append(page(paras))
        paras = list(paras)
        paras[rng.randrange(len(paras))] = paragraph(rng)
    return versions


def put_history(engine, versions: list[bytes]) -> list[str]:
    """Store `versions` as one document's history (each against the one before), in one transaction."""

    def store(conn) -> list[str]:
        keys: list[str] = []
        for body in versions:
            keys.append(blobs.put(conn, body, base=keys[-1] if keys else None, now=T0))
        return keys

    return run_in_transaction(engine, store)


def rows(engine, keys: list[str]) -> list:
    with engine.connect() as conn:
        found = {
            r.sha256: r
            for r in conn.execute(
                select(
                    BLOBS.c.sha256,
                    BLOBS.c.codec,
                    BLOBS.c.base_sha256,
                    BLOBS.c.root_sha256,
                    BLOBS.c.chain_length,
                    BLOBS.c.stored_size,
                )
            )
        }
    return [found[k] for k in keys]


def read(engine, key: str) -> bytes:
    return run_in_transaction(engine, lambda conn: blobs.get(conn, key), write=False)


def tamper(engine, key: str, data: bytes) -> None:
    with engine.begin() as conn:
        conn.execute(update(BLOBS).where(BLOBS.c.sha256 == key).values(data=data))


def test_two_hundred_versions_of_a_page_read_back_byte_identical_from_delta_chains(engine):
    versions = edited_versions(200)

    keys = put_history(engine, versions)

    with engine.connect() as conn:
        reader = blobs.Reader()
        assert [blobs.get(conn, k) for k in keys] == versions
        assert [reader.get(conn, k) for k in reversed(keys)] == versions[::-1]
    stored = rows(engine, keys)
    assert max(r.chain_length for r in stored) == blobs.MAX_CHAIN
    # a whole copy starts each chain: versions 1, 66, 131, 196 with MAX_CHAIN = 64
    assert [i for i, r in enumerate(stored) if r.codec == blobs.ZSTD] == list(
        range(0, 200, blobs.MAX_CHAIN + 1)
    )
    for before, after in itertools.pairwise(stored):
        if after.codec == blobs.ZSTD_DELTA:
            assert after.base_sha256 == before.sha256
            assert after.chain_length == before.chain_length + 1
            assert after.root_sha256 == before.root_sha256
        else:
            assert (after.base_sha256, after.chain_length, after.root_sha256) == (None, 0, after.sha256)
    whole_copy = len(blobs.compress(versions[0]))
    assert max(r.stored_size for r in stored if r.codec == blobs.ZSTD_DELTA) < whole_copy / 10
    assert sum(r.stored_size for r in stored) < 20 * whole_copy  # 4 whole copies and 196 small deltas


def test_chains_restart_with_a_whole_copy_after_max_chain_deltas(engine, monkeypatch):
    monkeypatch.setattr(codec, "MAX_CHAIN", 3)

    keys = put_history(engine, edited_versions(10))

    assert [r.chain_length for r in rows(engine, keys)] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_a_completely_different_version_is_stored_whole_and_does_not_depend_on_its_base(engine):
    rng = random.Random(3)
    first, unrelated = edited_versions(1)[0], rng.randbytes(50_000)

    keys = put_history(engine, [first, unrelated])

    new = rows(engine, keys)[1]
    assert (new.codec, new.base_sha256, new.chain_length, new.root_sha256) == (blobs.ZSTD, None, 0, keys[1])
    tamper(engine, keys[0], blobs.compress(b"the first version, destroyed"))
    assert read(engine, keys[1]) == unrelated


def test_bodies_over_the_delta_limit_are_stored_whole(engine, monkeypatch):
    versions = edited_versions(3)
    monkeypatch.setattr(codec, "MAX_DELTA_BYTES", len(versions[0]) - 1)

    keys = put_history(engine, versions)

    assert {r.codec for r in rows(engine, keys)} == {blobs.ZSTD}
    assert [read(engine, k) for k in keys] == versions


def test_a_large_body_with_one_change_costs_about_the_change(engine):
    rng = random.Random(5)
    base = b"\n".join(paragraph(rng).encode() for _ in range(9000))  # ~4 MB: beyond zstd's default window
    changed = base[: len(base) // 2] + b"<p>one new paragraph in the middle</p>" + base[len(base) // 2 :]

    keys = put_history(engine, [base, changed])

    assert rows(engine, keys)[1].codec == blobs.ZSTD_DELTA
    assert rows(engine, keys)[1].stored_size < 2000
    assert read(engine, keys[1]) == changed


def test_damage_in_a_base_surfaces_as_damage_of_each_dependant_naming_both(engine):
    keys = put_history(engine, edited_versions(4))
    tamper(engine, keys[1], blobs.compress(b"not the second version"))

    assert read(engine, keys[0]) == edited_versions(1)[0]
    for dependant in keys[2:]:
        with pytest.raises(StoreError, match=f"blob {dependant}: damaged base {keys[1]}"):
            read(engine, dependant)
    with pytest.raises(StoreError, match=f"blob {keys[1]}: damaged \\("):
        read(engine, keys[1])


def test_a_new_version_is_stored_whole_when_its_base_is_damaged(engine):
    versions = edited_versions(2)
    (base,) = put_history(engine, versions[:1])
    tamper(engine, base, blobs.compress(b"destroyed"))

    new = run_in_transaction(engine, lambda conn: blobs.put(conn, versions[1], base=base))

    assert rows(engine, [new])[0].codec == blobs.ZSTD
    assert read(engine, new) == versions[1]


def test_a_loop_of_bases_made_by_editing_rows_is_reported_not_followed(engine):
    keys = put_history(engine, edited_versions(3))
    with engine.begin() as conn:  # the root now claims to be a delta of its own descendant
        conn.execute(
            update(BLOBS).where(BLOBS.c.sha256 == keys[0]).values(codec=blobs.ZSTD_DELTA, base_sha256=keys[2])
        )

    with pytest.raises(StoreError, match="chain of bases is longer than"):
        read(engine, keys[2])


def test_a_reader_walking_a_chain_in_order_decodes_each_blob_once(engine):
    keys = put_history(engine, edited_versions(30))
    reader = blobs.Reader()
    with engine.connect() as conn:
        for key in keys:
            reader.get(conn, key)
    assert reader.decoded == 30

    uncached = blobs.Reader(cache_bytes=0)
    with engine.connect() as conn:
        uncached.get(conn, keys[-1])
    assert uncached.decoded == 30  # the whole chain, once


def test_a_reader_keeps_no_more_decoded_content_than_its_cache_allows(engine):
    versions = edited_versions(12)
    keys = put_history(engine, versions)
    reader = blobs.Reader(cache_bytes=3 * len(versions[0]))
    with engine.connect() as conn:
        for key in keys:
            reader.get(conn, key)
            assert reader.cached_bytes <= reader.cache_bytes
        assert reader.get(conn, keys[0]) == versions[0]  # evicted long ago: read again from the store


def test_a_base_that_is_not_stored_gives_a_whole_blob(engine):
    body = edited_versions(1)[0]

    key = run_in_transaction(engine, lambda conn: blobs.put(conn, body, base=sha(b"never stored")))

    assert rows(engine, [key])[0].codec == blobs.ZSTD


def test_a_changed_page_is_recorded_as_a_delta_against_its_previous_version(archive, engine):
    v1, v2 = edited_versions(2)
    watch(archive, URL)
    save_version(archive, URL, v1, T0)
    save_version(archive, URL, v2, T0 + HOUR)

    (row,) = rows(engine, [sha(v2)])
    assert (row.codec, row.base_sha256, row.chain_length) == (blobs.ZSTD_DELTA, sha(v1), 1)
    assert archive.read(sha(v2)) == v2
    status = archive.status(T0 + HOUR)
    assert status.content_bytes == len(v1) + len(v2)
    assert status.stored_bytes < len(blobs.compress(v1)) * 1.1


def test_a_blob_shared_by_two_urls_is_stored_once_and_reads_from_either_history(archive, engine):
    a1, a2, b2 = edited_versions(3)
    watch(archive, URL, OTHER)
    save_version(archive, URL, a1, T0)
    save_version(archive, URL, a2, T0 + HOUR)  # a delta of a1
    save_version(archive, OTHER, a2, T0 + HOUR)  # the same bytes at another URL: no new blob
    save_version(archive, OTHER, b2, T0 + 2 * HOUR)  # a delta of a2, itself a delta in URL's history

    assert [r.chain_length for r in rows(engine, [sha(a1), sha(a2), sha(b2)])] == [0, 1, 2]
    assert [archive.read(archive.version(OTHER, n).sha256) for n in ("1", "2")] == [a2, b2]
    assert archive.read(archive.version(URL).sha256) == a2


def test_many_threads_share_the_few_compression_contexts_and_each_frame_is_its_own():
    # 16 workers pack at once over codec.COMPRESSORS contexts: none waits forever, none gets another's frame.
    rng = random.Random(7)
    pages = [bytes(rng.getrandbits(8) for _ in range(2000)) * (1 + n % 5) for n in range(64)]
    base = pages[0]
    frames: dict[int, tuple[bytes, bytes]] = {}

    def work(first: int) -> None:
        for n in range(first, len(pages), 16):
            frames[n] = (codec.compress(pages[n]), codec._compress_shared(pages[n], base, 3))

    threads = [threading.Thread(target=work, args=(first,)) for first in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(frames) == list(range(len(pages)))
    for n, (whole, delta) in frames.items():
        assert codec.decompress(whole) == pages[n]
        assert codec.decompress_delta(delta, base) == pages[n]
    assert sum(slot.plain is not None for slot, _ in codec._slots) <= codec.COMPRESSORS


def test_a_checks_delta_of_a_700_kb_page_takes_a_few_mib_of_context_and_costs_about_the_change():
    rng = random.Random(6)
    base = b"\n".join(paragraph(rng).encode() for _ in range(1600))  # ~700 KB: past zstd's small-input tables
    changed = base[: len(base) // 2] + b"<p>one new paragraph in the middle</p>" + base[len(base) // 2 :]
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)

    def context(level: int | None) -> int:
        params = codec.delta_parameters(len(changed), len(base), level)
        compressor = zstandard.ZstdCompressor(compression_params=params, dict_data=dictionary)
        compressor.compress(changed)
        return compressor.memory_size()

    delta = codec.compress_delta(changed, base)
    full_tables = codec.compress_delta(changed, base, level=codec.DELTA_LEVEL)  # as `mirror gc` sizes them

    assert context(None) < 8 * 2**20 < context(codec.DELTA_LEVEL)
    assert len(delta) <= len(full_tables) + 16 < 2000
    assert codec.decompress_delta(delta, base) == changed
