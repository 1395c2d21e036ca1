"""`verify --repair-from`: damaged and missing blobs come back from a second copy, and the chain says so."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import timedelta

import pytest
from sqlalchemy import text

from mirror import blobs
from mirror.archive import Archive
from mirror.db import open_engine
from mirror.events import DOCUMENT_REPAIRED
from mirror.reader import Reader
from mirror.repair import NOT_IN_SOURCE, StoreSource, run
from tests.fixtures_store import T0, engine_of, save_version, sha, watch
from tests.fixtures_store import key as stored
from tests.test_docs import assert_documented, documented_json
from tests.test_tamper import verify_command

A, B, C, D, E = (f"https://archive.example/etext/{n}.html" for n in "abcde")
PAGE = "<html><body><h1>Essay {n}</h1><p>" + "A sentence of the essay, long enough to compress well. " * 40


def page(n: int) -> bytes:
    return (PAGE.format(n=n) + "</p></body></html>").encode()


HISTORY = {  # what both copies recorded: A's versions are a delta chain, v2 the base of v3 and v4
    A: [page(1), page(2), page(3), page(4)],
    B: [b"<p>the only version of b</p>"],
    C: [page(10)],
    D: [b"<p>d, first version</p>"],
}
ONLY_HERE = {D: b"<p>d, second version: written after the backup</p>"}


def record(archive: Archive, history: dict[str, list[bytes]]) -> None:
    watch(archive, *history)
    for url, bodies in history.items():
        for n, body in enumerate(bodies):
            save_version(archive, url, body, T0 + timedelta(hours=n))


@pytest.fixture
def backup(tmp_path) -> Reader:
    """A second copy of the store: the same checks recorded in a SQLite file, read through its read side."""
    url = f"sqlite:///{tmp_path / 'backup' / 'mirror.db'}"
    archive = Archive(open_engine(url))
    record(archive, HISTORY)
    archive.close()
    reader = Reader.open(url, existing=True)
    yield reader
    reader.close()


@pytest.fixture
def store(archive) -> Archive:
    record(archive, HISTORY)
    save_version(archive, D, ONLY_HERE[D], T0 + timedelta(hours=5))
    return archive


def blob_data(archive, key: str) -> bytes:
    with engine_of(archive).connect() as conn:
        return conn.execute(text("SELECT data FROM blobs WHERE sha256 = :s"), {"s": stored(key)}).scalar_one()


def set_data(archive, key: str, data: bytes) -> None:
    with engine_of(archive).begin() as conn:
        conn.execute(text("UPDATE blobs SET data = :d WHERE sha256 = :s"), {"d": data, "s": stored(key)})


def delete_blob(archive, database_url: str, key: str) -> None:
    """Delete a blob row as someone with the file or a superuser can: foreign keys off."""
    if database_url.startswith("sqlite"):
        engine_of(archive).dispose()
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn:
            conn.execute("DELETE FROM blobs WHERE sha256 = ?", (stored(key),))
            conn.commit()
    else:
        with engine_of(archive).begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("DELETE FROM blobs WHERE sha256 = :s"), {"s": stored(key)})


def damage_three_ways(archive, database_url: str) -> None:
    flipped = bytearray(blob_data(archive, sha(page(2))))  # a delta that two later versions build on
    flipped[len(flipped) // 2] ^= 0x20
    set_data(archive, sha(page(2)), bytes(flipped))
    whole = blob_data(archive, sha(page(10)))
    set_data(archive, sha(page(10)), whole[: len(whole) // 2])  # truncated
    delete_blob(archive, database_url, sha(HISTORY[B][0]))  # missing
    set_data(archive, sha(ONLY_HERE[D]), b"not even zstd")  # the backup never had it


def test_blobs_damaged_three_ways_come_back_from_a_second_store_and_the_chain_says_so(
    store, backup, database_url
):
    damage_three_ways(store, database_url)
    before = store.verify()
    assert {sha(page(n)) for n in (2, 3, 4, 10)} | {sha(HISTORY[B][0]), sha(ONLY_HERE[D])} == set(
        before.damaged_blobs
    )

    report = run(store, StoreSource(backup))

    repaired = {r.sha256: r for r in report.repaired}
    assert set(repaired) == {sha(page(2)), sha(page(10)), sha(HISTORY[B][0])}  # v3 and v4 came back with v2
    assert repaired[sha(page(2))].snapshots == (f"{A} v2", f"{A} v3", f"{A} v4")
    assert repaired[sha(HISTORY[B][0])].problem == "missing"
    assert [(u.sha256, u.reason, u.snapshots) for u in report.unrepaired] == [
        (sha(ONLY_HERE[D]), NOT_IN_SOURCE, (f"{D} v2",))
    ]
    # Verified again: only the blob the backup never had is still damaged; the chain is whole.
    assert [(p.item, p.key) for p in report.verify.problems] == [("blob", sha(ONLY_HERE[D]))]
    for url, bodies in HISTORY.items():  # what `show URL --version N` prints: the original bytes
        for n, body in enumerate(bodies, 1):
            assert store.read(store.version(url, str(n)).sha256) == body

    events = [e for e in store.history(A).events if e.kind == DOCUMENT_REPAIRED]
    assert [(e.new_sha256, e.details["versions"], e.details["source"]) for e in events] == [
        (sha(page(2)), [2, 3, 4], f"mirror store {backup.database}")
    ]
    (found,) = [p.problem for p in before.problems if p.key == sha(page(2))]
    assert events[0].details["problem"] == found  # what verify found wrong with it
    assert events[0].seq in repaired[sha(page(2))].events
    assert store.verify().problems == report.verify.problems  # the repair events are in the chain, whole


def test_a_delta_whose_base_the_source_lacks_is_put_back_whole(archive, tmp_path):
    first, second = page(20), page(21)
    watch(archive, E)
    save_version(archive, E, first, T0)
    save_version(archive, E, second, T0 + timedelta(hours=1))
    with engine_of(archive).connect() as conn:
        base = conn.execute(
            text("SELECT base_sha256 FROM blobs WHERE sha256 = :s"), {"s": stored(sha(second))}
        ).scalar()
    assert base == stored(sha(first))  # stored as a delta against v1
    url = f"sqlite:///{tmp_path / 'other.db'}"
    other = Archive(open_engine(url))
    watch(other, E)
    save_version(other, E, second, T0)  # the copy only ever saw the second version
    set_data(archive, sha(first), b"\x28\xb5\x2f\xfd garbage")

    report = run(archive, StoreSource(other))

    assert [r.sha256 for r in report.repaired] == [sha(second)]
    assert archive.read(sha(second)) == second  # readable without its base
    assert [u.sha256 for u in report.unrepaired] == [sha(first)]
    assert archive.verify().damaged_blobs == {sha(first): sha(first)}
    other.close()


def test_a_source_whose_bytes_do_not_hash_to_what_was_asked_is_refused(store, database_url):
    damage_three_ways(store, database_url)

    class Liar:
        def describe(self) -> str:
            return "a liar"

        def find(self, wanted):
            for key in sorted(wanted):
                yield key, b"not what you asked for"

    report = run(store, Liar())
    assert report.repaired == []
    assert len(report.unrepaired) == 6
    lie = sha(b"not what you asked for")
    assert {u.reason for u in report.unrepaired} == {f"the source's copy hashes to {lie}"}
    assert not any(e.kind == DOCUMENT_REPAIRED for e in store.history(A).events)


@pytest.mark.postgres
def test_a_postgresql_store_is_a_repair_source_too(postgres_database, tmp_path):
    postgres_database.reset()
    other = Archive(open_engine(postgres_database.url))
    record(other, HISTORY)
    other.close()
    url = f"sqlite:///{tmp_path / 'damaged.db'}"
    store = Archive(open_engine(url))
    record(store, HISTORY)
    damage_three_ways(store, url)
    source = Reader.open(postgres_database.url, existing=True)
    try:
        report = run(store, StoreSource(source))
    finally:
        source.close()
        store.close()
    assert len(report.repaired) == 3 and report.unrepaired == []
    assert report.verify.ok, report.verify.problems


# -- the command line ------------------------------------------------------------------------


def test_verify_repair_from_on_the_command_line_exits_0_when_all_is_put_back_and_1_when_not(
    store, backup, database_url, tmp_path
):
    verify = verify_command(database_url, tmp_path)
    damage_three_ways(store, database_url)
    store.close()

    partly = verify("--repair-from", backup.database, "--json")
    assert partly.returncode == 1, partly.stderr.decode()[-2000:]
    document = json.loads(partly.stdout)
    assert sorted(document) == ["repaired", "source", "unrepaired", "verify"]
    assert_documented(document, documented_json("verify --repair-from"))  # every key, and no other
    assert len(document["repaired"]) == 3
    assert [u["sha256"] for u in document["unrepaired"]] == [sha(ONLY_HERE[D])]
    assert document["verify"]["ok"] is False
    logged = [json.loads(line)["event"] for line in partly.stderr.decode().splitlines()]
    assert logged.count(DOCUMENT_REPAIRED) == 3 and "repair.unrepaired" in logged

    fixed = Archive(open_engine(database_url))  # the version the backup never had is written again
    with engine_of(fixed).begin() as conn:
        conn.execute(
            text("UPDATE blobs SET data = :d WHERE sha256 = :s"), {"d": b"", "s": stored(sha(ONLY_HERE[D]))}
        )
    fixed.close()
    extra = tmp_path / "extra.db"
    extra_archive = Archive(open_engine(f"sqlite:///{extra}"))
    record(extra_archive, {D: [HISTORY[D][0], ONLY_HERE[D]]})
    extra_archive.close()
    whole = verify("--repair-from", str(extra))  # a SQLite file is a store too
    assert whole.returncode == 0, whole.stdout.decode() + whole.stderr.decode()[-2000:]
    out = whole.stdout.decode()
    assert out.startswith(f"repair from mirror store sqlite:///{extra}: 1 blob put back, 0 not\n")
    assert f"REPAIRED blob {sha(ONLY_HERE[D])} ({len(ONLY_HERE[D])} B; was damaged (" in out
    assert f"  gives back {D} v2" in out
    assert out.splitlines()[-1] == "intact"
    assert verify().returncode == 0


def test_the_backup_and_repair_story_export_warc_then_repair_from_that_folder(store, database_url, tmp_path):
    """README's story: `export warc --to backups/` while intact; damage; `--repair-from backups/`."""
    store.close()
    env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
    (tmp_path / "mirror.toml").write_text("")
    command = [sys.executable, "-m", "mirror", "--config", str(tmp_path / "mirror.toml")]
    exported = subprocess.run(
        [*command, "export", "warc", "--to", str(tmp_path / "backups"), "--json"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert exported.returncode == 0, exported.stderr.decode()[-2000:]
    assert json.loads(exported.stdout)["records"]["response"] == sum(map(len, HISTORY.values())) + 1
    damaged = Archive(open_engine(database_url))
    damage_three_ways(damaged, database_url)
    set_data(damaged, sha(ONLY_HERE[D]), b"not even zstd")  # exported too: this time it comes back
    damaged.close()
    verify = verify_command(database_url, tmp_path)
    assert verify().returncode == 1

    repaired = verify("--repair-from", str(tmp_path / "backups"), "--json")

    assert repaired.returncode == 0, repaired.stdout.decode() + repaired.stderr.decode()[-2000:]
    document = json.loads(repaired.stdout)
    assert document["source"] == "WARC folder backups/ (1 file)"
    assert {r["sha256"] for r in document["repaired"]} == {
        sha(page(2)),
        sha(page(10)),
        sha(HISTORY[B][0]),
        sha(ONLY_HERE[D]),
    }
    assert document["unrepaired"] == [] and document["verify"]["ok"] is True
    reader = Reader.open(database_url, existing=True)
    try:
        for url, bodies in {**HISTORY, D: [*HISTORY[D], ONLY_HERE[D]]}.items():
            for n, body in enumerate(bodies, 1):
                assert reader.read(reader.version(url, str(n)).sha256) == body  # what `show` prints
        kinds = [e.kind for e in reader.events_after(0, limit=1000)]
    finally:
        reader.close()
    assert kinds.count(DOCUMENT_REPAIRED) == 4  # one per document given back, in the chain
    assert verify().returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repair-from", "{tmp}/no/such"], "--repair-from {tmp}/no/such: no such file or folder"),
        (["--repair-from", "{tmp}"], "--repair-from {tmp}: no WARC or ARC file (*.warc, *.warc.gz"),
        (["--repair-from", "{tmp}/mirror.toml"], "not a database URL, a SQLite store or a folder of WARC"),
        (["--head", "--repair-from", "{tmp}/mirror.toml"], "not a database URL"),
        (
            ["--repair-from", "sqlite:///{tmp}/gone.db"],
            "{tmp}/gone.db: no such file: no mirror store to repair",
        ),
    ],
)
def test_a_bad_repair_source_is_one_line_and_exit_2(tmp_path, args, message):
    url = f"sqlite:///{tmp_path / 'mirror.db'}"  # the source is refused before either store matters
    made = Archive(open_engine(url))
    record(made, {B: HISTORY[B]})
    made.close()
    done = verify_command(url, tmp_path)(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2, done.stderr.decode()
    last = done.stderr.decode().splitlines()[-1]
    assert last.startswith("mirror: error: ") and message.format(tmp=tmp_path) in last


def test_a_blob_nothing_names_is_not_put_back_silently(store, backup):
    orphan = b"<p>a blob no version, base or check names</p>"
    for url in (backup.database, None):
        engine = open_engine(url) if url else engine_of(store)
        with engine.begin() as conn:
            blobs.put(conn, orphan)
        if url:
            engine.dispose()
    set_data(store, sha(orphan), b"junk")

    report = run(store, StoreSource(backup))

    assert report.repaired == []
    ((key, reason),) = [(u.sha256, u.reason) for u in report.unrepaired]
    assert (key, reason) == (sha(orphan), "no document's version is rebuilt from it and no check kept it")
