"""Fixity on both backends: every blob re-hashed once, damage reported for every version it reaches."""

from __future__ import annotations

from sqlalchemy import func, select, update

from mirror import blobs, verify
from mirror.tables import metadata
from tests.fixtures_store import HOUR, T0, save_version, sha, watch
from tests.test_blobs import edited_versions

URL = "https://www.prisoncensorship.info/archive/etext/wim/cong/notefromchair092207.html"
OTHER = "https://www.prisoncensorship.info/archive/etext/wim/cong/copy.html"
BLOBS = metadata.tables["blobs"]


def history(archive, url: str, versions: list[bytes]) -> list[str]:
    watch(archive, url)
    for i, body in enumerate(versions):
        save_version(archive, url, body, T0 + i * HOUR)
    return [sha(v) for v in versions]


def tamper(engine, key: str, **values) -> None:
    with engine.begin() as conn:
        conn.execute(update(BLOBS).where(BLOBS.c.sha256 == key).values(**values))


def test_a_clean_store_with_delta_chains_verifies_and_decodes_each_blob_once(archive, engine, monkeypatch):
    history(archive, URL, edited_versions(40, seed=1))
    history(archive, OTHER, edited_versions(25, seed=2))
    calls = {"delta": 0}
    real = blobs.decompress_delta

    def counted(delta: bytes, base: bytes) -> bytes:
        calls["delta"] += 1
        return real(delta, base)

    monkeypatch.setattr(blobs, "decompress_delta", counted)
    checked = []

    report = verify.run(engine, batch=7, progress=checked.append)

    assert report.ok, report.problems
    assert (report.blobs, report.snapshots, report.events) == (65, 65, 65)
    with engine.connect() as conn:
        deltas = conn.execute(
            select(func.count()).where(BLOBS.c.codec == blobs.ZSTD_DELTA).select_from(BLOBS)
        ).scalar_one()
    chains = sum(-(-n // (blobs.MAX_CHAIN + 1)) for n in (40, 25))  # each starts with a whole copy
    assert deltas == 65 - chains > 50
    assert calls["delta"] == deltas  # not once per version per link of its chain
    assert sum(checked) == report.blob_bytes


def test_damage_in_a_base_blob_is_reported_for_every_version_rebuilt_from_it(archive, engine):
    keys = history(archive, URL, edited_versions(6))
    tamper(engine, keys[2], data=blobs.compress(b"the third version, overwritten"))

    report = verify.run(engine)

    damaged = {p.key: p.problem for p in report.problems if p.item == "blob"}
    assert sorted(damaged) == sorted(keys[2:])
    assert damaged[keys[2]].startswith("damaged (its 30 bytes hash to")
    for dependant in keys[3:]:
        assert damaged[dependant].startswith(f"damaged base {keys[2]}")
    spoiled = {p.key: p.snapshots for p in report.problems}
    assert spoiled[keys[2]] == tuple(f"{URL} v{n}" for n in range(3, 7))  # its own and every dependant
    assert all(spoiled[key] == (f"{URL} v{n}",) for n, key in enumerate(keys[3:], 4))
    assert [p for p in report.problems if p.item != "blob"] == []


def test_a_whole_blob_whose_bytes_changed_is_reported_with_what_they_hash_to(archive, engine):
    (key,) = history(archive, URL, [b"<p>a note from the chair</p>"])
    tamper(engine, key, data=blobs.compress(b"<p>a different note</p>"))

    report = verify.run(engine)

    (problem,) = report.problems
    assert (problem.item, problem.key) == ("blob", key)
    assert problem.problem == f"damaged (its 23 bytes hash to {sha(b'<p>a different note</p>')})"


def test_a_blob_whose_chain_root_was_erased_is_still_verified(archive, engine):
    keys = history(archive, URL, edited_versions(3))
    tamper(engine, keys[1], root_sha256=None, data=b"not even zstd")

    report = verify.run(engine, batch=2)

    assert report.blobs == 3
    assert sorted(p.key for p in report.problems) == sorted(keys[1:])
