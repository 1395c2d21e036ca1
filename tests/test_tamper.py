"""Tampering with a real store, through SQL and through the database file: `verify` names each change."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from mirror.verify import run as verify
from tests.fixtures_store import T0, save_failure, save_version, sha, watch

URL_A = "https://archive.example/etext/a.html"
URL_B = "https://archive.example/etext/b.html"
PAGE = "<html><body><h1>Essay {n}</h1><p>" + "A sentence of the essay that is long enough to compress. " * 40


@pytest.fixture
def filled(archive):
    """A store with two documents, four versions and six chained events."""
    watch(archive, URL_A, URL_B)
    for n in range(3):
        save_version(
            archive, URL_A, (PAGE.format(n=n) + "</p></body></html>").encode(), T0 + timedelta(hours=n)
        )
    save_version(archive, URL_B, b"<p>short page b</p>", T0)
    save_failure(archive, URL_B, T0 + timedelta(hours=5), status=404)
    return archive


def problems(archive) -> list[tuple[str, str]]:
    report = verify(archive.engine)
    return [(p.item, p.key) for p in report.problems]


def sql(archive, statement: str, **params) -> None:
    with archive.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_an_untouched_store_is_intact(filled):
    report = verify(filled.engine)
    assert report.ok, report.problems
    assert (report.blobs, report.snapshots, report.events) == (4, 4, 5)
    assert report.head_seq == 5


def test_a_changed_byte_in_a_blob_is_named(filled):
    first = sha((PAGE.format(n=0) + "</p></body></html>").encode())
    with filled.engine.connect() as conn:
        data = conn.execute(text("SELECT data FROM blobs WHERE sha256 = :s"), {"s": first}).scalar_one()
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0x01
    sql(filled, "UPDATE blobs SET data = :d WHERE sha256 = :s", d=bytes(damaged), s=first)
    found = problems(filled)
    assert ("blob", first) in found


def test_a_deleted_event_is_named(filled):
    sql(filled, "DELETE FROM events WHERE seq = 2")
    found = problems(filled)
    assert ("event", "#3") in found


def test_an_edited_event_url_is_named(filled):
    sql(filled, "UPDATE events SET url = 'https://elsewhere.example/' WHERE seq = 3")
    assert ("event", "#3") in problems(filled)


def test_two_swapped_events_are_named(filled):
    with filled.engine.begin() as conn:
        rows = conn.execute(
            text("SELECT seq, hash, prev_hash FROM events WHERE seq IN (2, 3) ORDER BY seq")
        ).all()
        # Swap every column but seq: the rows trade places in the chain.
        conn.execute(text("UPDATE events SET seq = -2 WHERE seq = 2"))
        conn.execute(text("UPDATE events SET seq = 2 WHERE seq = 3"))
        conn.execute(text("UPDATE events SET seq = 3 WHERE seq = -2"))
    assert rows
    found = problems(filled)
    assert ("event", "#2") in found
    assert ("event", "#3") in found


def test_a_snapshot_pointed_at_other_stored_content_is_named(filled):
    other = sha(b"<p>short page b</p>")
    sql(
        filled,
        "UPDATE snapshots SET sha256 = :o WHERE version = 2 AND target_id = "
        "(SELECT id FROM targets WHERE url = :u)",
        o=other,
        u=URL_A,
    )
    found = problems(filled)
    assert ("snapshot", f"{URL_A} v2") in found


def test_a_rewritten_event_with_a_recomputed_hash_breaks_the_link_after_it(filled):
    # Someone rewrites event 2 and recomputes its own hash: the next event no longer follows it.
    from mirror import ledger

    with filled.engine.begin() as conn:
        entry = next(e for e in ledger.walk(conn) if e.event.seq == 2)
        forged = entry.event.__class__(
            **{
                **{f: getattr(entry.event, f) for f in entry.event.__slots__},
                "url": "https://forged.example/",
            }
        )
        new_hash = ledger.chain_hash(entry.prev_hash, forged)
        conn.execute(
            text("UPDATE events SET url = :u, hash = :h WHERE seq = 2"), {"u": forged.url, "h": new_hash}
        )
    found = problems(filled)
    assert ("event", "#3") in found
    assert ("event", "#2") not in found  # its own hash matches: only the chain shows it


def test_a_byte_changed_in_the_sqlite_file_is_named(filled, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("a database file exists only for SQLite")
    path = database_url.removeprefix("sqlite:///")
    filled.engine.dispose()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stored = conn.execute("SELECT sha256, data FROM blobs ORDER BY size DESC LIMIT 1").fetchone()
    target_sha, data = stored
    raw = bytearray(Path(path).read_bytes())
    at = raw.find(data)
    assert at >= 0, "the compressed blob is not stored contiguously in the file"
    raw[at + len(data) // 2] ^= 0x40
    with open(path, "r+b") as f:
        f.write(raw)
        f.flush()
        os.fsync(f.fileno())
    assert ("blob", target_sha) in problems(filled)


def verify_command(database_url: str, tmp_path: Path):
    """Return a function that runs `mirror verify ARGS` on the store, as a user would."""
    config = tmp_path / "mirror.toml"
    config.write_text("")
    env = {**os.environ, "MIRROR_DATABASE_URL": database_url}

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "mirror", "--config", str(config), "verify", *args],
            capture_output=True,
            env=env,
            timeout=60,
        )

    return run


def test_verify_command_exits_1_and_names_the_damage_then_0_when_intact(filled, database_url, tmp_path):
    run = verify_command(database_url, tmp_path)

    ok = run("--json")
    assert ok.returncode == 0
    report = json.loads(ok.stdout)
    assert report["ok"] is True
    head = json.loads(run("--head", "--json").stdout)
    assert (head["head_seq"], head["head_hash"]) == (report["head_seq"], report["head_hash"])

    sql(filled, "DELETE FROM events WHERE seq = 4")
    damaged = run("--json")
    assert damaged.returncode == 1
    assert any(p["item"] == "event" and p["key"] == "#5" for p in json.loads(damaged.stdout)["problems"])
    logged = [json.loads(line) for line in damaged.stderr.decode().splitlines()]
    assert any(e["event"] == "integrity.damaged" for e in logged)


def test_a_rewritten_history_is_caught_against_a_published_head(filled, database_url, tmp_path):
    run = verify_command(database_url, tmp_path)

    head = run("--head").stdout.decode().split()
    published = f"{head[0]}:{head[1]}"
    assert run("--published", published).returncode == 0

    # Rewrite the whole chain consistently from event 2 on: only the published head can tell.
    from mirror import ledger

    with filled.engine.begin() as conn:
        entries = list(ledger.walk(conn))
        prev = entries[0].event.hash
        for entry in entries[1:]:
            event = entry.event
            if event.seq == 2:
                event = event.__class__(
                    **{**{f: getattr(event, f) for f in event.__slots__}, "url": "https://forged.example/"}
                )
            digest = ledger.chain_hash(prev, event)
            conn.execute(
                text("UPDATE events SET url = :u, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"u": event.url, "p": prev, "h": digest, "s": event.seq},
            )
            prev = digest
        conn.execute(text("UPDATE ledger_head SET hash = :h"), {"h": prev})
    assert run().returncode == 0  # consistent with itself
    caught = run("--published", published, "--json")
    assert caught.returncode == 1
    (problem,) = json.loads(caught.stdout)["problems"]
    assert problem["item"] == "head"
    assert "rewritten" in problem["problem"]
