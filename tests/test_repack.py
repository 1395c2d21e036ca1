"""`mirror gc` (mirror.repack): blobs re-packed per site, smaller, every version intact, verify passing."""

from __future__ import annotations

import json
import random
import threading
import tracemalloc

from sqlalchemy import select, update

from mirror import codec, writer
from mirror.db import run_in_transaction
from mirror.domain import Outcome, OutcomeKind
from mirror.packing import Packer
from mirror.repack import GC_LEVEL
from mirror.tables import blobs as B
from tests.fixtures_store import HOUR, T0, engine_of, fetched, save_version, watch
from tests.test_cli import mirror as mirror  # the fixture: `mirror` run as a command

SITE = "https://docs.example"


def page(seed: int, words: int = 4000) -> bytes:
    """Return an HTML page of plausible words: compressible like prose, unlike any other seed's."""
    rng = random.Random(seed)
    vocabulary = [bytes(rng.choices(b"etaoinshrdlucmfwypvbgk", k=rng.randint(2, 9))) for _ in range(900)]
    paragraphs = [b" ".join(rng.choices(vocabulary, k=80)) for _ in range(words // 80)]
    return (
        b"<html><head><title>Manual</title></head><body>\n<p>"
        + b"</p>\n<p>".join(paragraphs)
        + b"</p></body></html>"
    )


def copy_of(body: bytes, n: int) -> bytes:
    return body.replace(b"<head>", f'<head><meta name="copy" content="{n}">'.encode(), 1)


def rows(archive):
    with engine_of(archive).connect() as conn:
        return {r.sha256: r for r in conn.execute(select(B))}


def stored(archive) -> int:
    return sum(r.stored_size for r in rows(archive).values())


def build_site(archive) -> dict[str, list[bytes]]:
    """Two copies of a manual page in two folders (the first in two versions), and a page of its own."""
    manual, other = page(1), page(2)
    versions = {
        f"{SITE}/v1/manual.html": [manual, manual.replace(b"<p>", b"<p>Revised. ", 1)],
        f"{SITE}/v2/manual.html": [copy_of(manual, 2)],
        f"{SITE}/v1/other.html": [other],
    }
    watch(archive, *versions)
    for url, bodies in versions.items():
        for n, body in enumerate(bodies):
            save_version(archive, url, body, T0 + n * HOUR)
    return versions


def test_gc_stores_a_copy_as_a_delta_of_its_namesake_and_every_version_reads_back(archive):
    versions = build_site(archive)
    before = stored(archive)
    copy = archive.version(f"{SITE}/v2/manual.html").sha256
    base = archive.history(f"{SITE}/v1/manual.html").versions[0].sha256

    report = archive.repack()

    after = rows(archive)
    assert report.examined == len(after) == 4 and report.skipped == 0 and report.remaining == 0
    assert after[copy].codec == codec.ZSTD_DELTA and after[copy].base_sha256 == base
    assert after[copy].stored_size * 20 < len(versions[f"{SITE}/v2/manual.html"][0])
    assert {r.packed_level for r in after.values()} == {GC_LEVEL}
    assert report.stored_before - report.stored_after == before - stored(archive) > 0
    for url, bodies in versions.items():
        for number, body in enumerate(bodies, start=1):
            assert archive.read(archive.version(url, str(number)).sha256) == body
    assert archive.verify().ok
    again = archive.repack()
    assert (again.examined, again.repacked, again.remaining) == (0, 0, 0)


def test_gc_keeps_the_base_of_a_blob_others_depend_on(archive):
    build_site(archive)
    first = archive.history(f"{SITE}/v1/manual.html").versions
    before = rows(archive)
    assert before[first[1].sha256].base_sha256 == first[0].sha256  # version 2 is a delta of version 1

    archive.repack()

    after = rows(archive)
    assert after[first[0].sha256].codec == codec.ZSTD  # a base: still whole, its dependant's chain unchanged
    assert after[first[1].sha256].base_sha256 == first[0].sha256
    assert after[first[1].sha256].chain_length == before[first[1].sha256].chain_length


def test_gc_leaves_a_damaged_blob_as_it_is_for_verify_to_name(archive):
    build_site(archive)
    damaged = archive.version(f"{SITE}/v1/other.html").sha256
    run_in_transaction(
        engine_of(archive),
        lambda conn: conn.execute(update(B).where(B.c.sha256 == damaged).values(data=b"junk")),
    )

    report = archive.repack()

    assert report.skipped == 1 and report.remaining == 1
    assert rows(archive)[damaged].data == b"junk"
    problems = archive.verify().problems
    assert [(p.item, p.key) for p in problems] == [("blob", damaged)]


def test_mirror_gc_reports_as_json_and_the_store_verifies(mirror, archive, database_url):
    build_site(archive)
    m = mirror([f"{SITE}/v1/manual.html"])

    done = m.json("gc")

    assert set(done) == {
        "examined",
        "repacked",
        "stored_before",
        "stored_after",
        "skipped",
        "remaining",
        "seconds",
    }
    assert done["examined"] == 4 and done["remaining"] == 0 and done["stored_after"] < done["stored_before"]
    assert json.loads(m("verify", "--json").stdout)["ok"] is True
    assert "re-packed:" in m("gc").stdout.decode()


def test_a_compressed_frame_holds_no_more_memory_than_its_size():
    body = page(3, words=20000)  # ~130 KB that compresses ~3x
    tracemalloc.start()
    try:
        frame = codec.compress(body)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frame) * 2 < len(body)
    assert held < 2 * len(frame) + 4096  # python-zstandard alone keeps ~len(body) behind each frame


def test_submit_waits_while_the_writer_is_behind_rather_than_queue_without_bound(archive):
    url = watch(archive, f"{SITE}/a.html")[0]
    state = archive.state_of(url)
    result = fetched(url, None, T0, status=None)
    record = Packer(archive).record(url, result, Outcome(OutcomeKind.FAILED, state, ()), T0)
    batch = writer.BatchWriter(archive, max_batch=2)
    queued = threading.Event()

    def fill() -> None:
        for _ in range(writer.MAX_QUEUED + 1):
            batch.submit(record)
        queued.set()

    filler = threading.Thread(target=fill, daemon=True)
    filler.start()
    assert not queued.wait(0.5)  # the writer has not started: the queue is full, submit waits
    assert batch._queue.qsize() == writer.MAX_QUEUED
    batch.start()
    assert queued.wait(10)
    batch.flush()
    batch.close()


def test_status_and_targets_need_no_targets_file(mirror, archive, tmp_path):
    watch(archive, f"{SITE}/a.html", f"{SITE}/b.html")
    m = mirror([])
    m.config.write_text('targets_file = "gone.txt"\n')  # a million targets are not read to say how many

    assert m.json("status")["targets"] == 2
    assert [t["url"] for t in m.json("targets")["targets"]] == [f"{SITE}/a.html", f"{SITE}/b.html"]
    assert m("check", check=False).returncode == 2  # a command that checks reads the targets: no such file


def test_each_target_pages_through_every_target_in_order(archive):
    urls = sorted(watch(archive, *(f"{SITE}/{n}.html" for n in range(7))))
    assert [t.url for t in archive.each_target(batch=3)] == urls
    assert [t.url for t in archive.each_target(batch=7)] == urls
