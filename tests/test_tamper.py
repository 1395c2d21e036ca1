"""Tampering with a real store, through SQL and through the database file: `verify` names each change."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, bindparam, text, update

from mirror.tables import UTCDateTime
from mirror.verify import run as verify
from tests.fixtures_store import T0, engine_of, key, save_failure, save_version, sha, watch

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
    report = verify(engine_of(archive))
    return [(p.item, p.key) for p in report.problems]


HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def sql(archive, statement: str, **params) -> None:
    """Run `statement`; a parameter that is a hex SHA-256 is bound as the store keeps digests (`key`)."""
    bound = {k: key(v) if isinstance(v, str) and HEX_DIGEST.fullmatch(v) else v for k, v in params.items()}
    with engine_of(archive).begin() as conn:
        conn.execute(text(statement), bound)


def test_an_untouched_store_is_intact(filled):
    report = verify(engine_of(filled))
    assert report.ok, report.problems
    assert (report.blobs, report.snapshots, report.events) == (4, 4, 5)
    assert report.head_seq == 5


def test_a_changed_byte_in_a_blob_is_named(filled):
    first = sha((PAGE.format(n=0) + "</p></body></html>").encode())
    with engine_of(filled).connect() as conn:
        data = conn.execute(text("SELECT data FROM blobs WHERE sha256 = :s"), {"s": key(first)}).scalar_one()
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
    with engine_of(filled).begin() as conn:
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

    with engine_of(filled).begin() as conn:
        entry = next(e for e in ledger.walk(conn) if e.event.seq == 2)
        forged = entry.event.__class__(
            **{
                **{f: getattr(entry.event, f) for f in entry.event.__slots__},
                "at": entry.event.at - timedelta(days=1),
            }
        )
        new_hash = ledger.chain_hash(entry.prev_hash, forged)
        conn.execute(
            text("UPDATE events SET at = :a, hash = :h WHERE seq = 2").bindparams(
                bindparam("a", type_=UTCDateTime())
            ),
            {"a": forged.at, "h": bytes.fromhex(new_hash)},
        )
    found = problems(filled)
    assert ("event", "#3") in found
    assert ("event", "#2") not in found  # its own hash matches: only the chain shows it


def test_a_byte_changed_in_the_sqlite_file_is_named(filled, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("a database file exists only for SQLite")
    path = database_url.removeprefix("sqlite:///")
    engine_of(filled).dispose()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stored = conn.execute("SELECT sha256, data FROM blobs ORDER BY size DESC LIMIT 1").fetchone()
    target_sha, data = bytes(stored[0]).hex(), stored[1]
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

    with engine_of(filled).begin() as conn:
        entries = list(ledger.walk(conn))
        prev = entries[0].event.hash
        for entry in entries[1:]:
            event = entry.event
            if event.seq == 2:
                event = event.__class__(
                    **{**{f: getattr(event, f) for f in event.__slots__}, "at": event.at - timedelta(days=1)}
                )
            digest = ledger.chain_hash(prev, event)
            conn.execute(
                text("UPDATE events SET at = :a, prev_hash = :p, hash = :h WHERE seq = :s").bindparams(
                    bindparam("a", type_=UTCDateTime())
                ),
                {"a": event.at, "p": bytes.fromhex(prev), "h": bytes.fromhex(digest), "s": event.seq},
            )
            prev = digest
        conn.execute(
            text("UPDATE ledger_head SET hash = :h"), {"h": bytes.fromhex(prev)}
        )  # as stored: binary
    assert run().returncode == 0  # consistent with itself
    caught = run("--published", published, "--json")
    assert caught.returncode == 1
    (problem,) = json.loads(caught.stdout)["problems"]
    assert problem["item"] == "head"
    assert "rewritten" in problem["problem"]


# -- every row that show, history, restore and --at read ------------------------------------------


def damage(archive, database_url: str, tmp_path: Path) -> list[dict]:
    """Return the problems `mirror verify --json` names (it must exit 1, never 3)."""
    done = verify_command(database_url, tmp_path)("--json")
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)["problems"]


def named(found: list[dict], item: str, key: str) -> dict:
    """Return the problem about `item` `key`; fail listing what was found instead."""
    matches = [p for p in found if (p["item"], p["key"]) == (item, key)]
    assert matches, f"no problem about {item} {key} in {[(p['item'], p['key']) for p in found]}"
    return matches[0]


def rewrite_chain(archive, seq: int, **details) -> None:
    """Change event `seq`'s details and recompute every hash from it on, as a forger with write access can."""
    from mirror import ledger

    with engine_of(archive).begin() as conn:
        entries = [e for e in ledger.walk(conn) if e.event.seq >= seq]
        prev = entries[0].prev_hash
        for entry in entries:
            event = entry.event
            if event.seq == seq:
                changed = {k: v for k, v in {**event.details, **details}.items() if v is not None}
                event = event.__class__(
                    **{**{f: getattr(event, f) for f in event.__slots__}, "details": changed}
                )
            digest = ledger.chain_hash(prev, event)
            conn.execute(
                text("UPDATE events SET details = :d, prev_hash = :p, hash = :h WHERE seq = :s"),
                {
                    "d": json.dumps(dict(event.details)),
                    "p": bytes.fromhex(prev),
                    "h": bytes.fromhex(digest),
                    "s": event.seq,
                },
            )
            prev = digest
        conn.execute(
            text("UPDATE ledger_head SET hash = :h"), {"h": bytes.fromhex(prev)}
        )  # as stored: binary


def test_the_latest_snapshot_deleted_is_named(filled, database_url, tmp_path):
    sql(
        filled,
        "DELETE FROM snapshots WHERE version = 3 AND target_id = (SELECT id FROM targets WHERE url = :u)",
        u=URL_A,
    )
    problem = named(damage(filled, database_url, tmp_path), "snapshot", f"{URL_A} v3")
    assert "missing" in problem["problem"] and problem["url"] == URL_A


def test_the_only_snapshot_of_a_document_deleted_is_named(filled, database_url, tmp_path):
    sql(filled, "DELETE FROM snapshots WHERE target_id = (SELECT id FROM targets WHERE url = :u)", u=URL_B)
    problem = named(damage(filled, database_url, tmp_path), "snapshot", f"{URL_B} v1")
    assert "missing" in problem["problem"] and problem["url"] == URL_B


def test_a_rewritten_target_url_is_named_with_the_url_its_events_carry(filled, database_url, tmp_path):
    forged = "https://attacker.example/etext/a.html"
    sql(filled, "UPDATE targets SET url = :f WHERE url = :u", f=forged, u=URL_A)
    problem = named(damage(filled, database_url, tmp_path), "target", forged)
    assert URL_A in problem["problem"] and problem["url"] == URL_A


def test_an_event_moved_to_another_target_is_named(filled, database_url, tmp_path):
    sql(
        filled, "UPDATE events SET target_id = (SELECT id FROM targets WHERE url = :u) WHERE seq = 3", u=URL_B
    )
    found = damage(filled, database_url, tmp_path)
    named(found, "event", "#3")
    assert any(URL_A in p["problem"] and "filed under" in p["problem"] for p in found if p["key"] == "#3")


def test_an_event_announcing_another_version_than_it_created_is_named(filled, database_url, tmp_path):
    # The chain is recomputed after the edit, so only the version check can tell (issue 11, point 12).
    rewrite_chain(filled, 3, version=2)
    problem = named(damage(filled, database_url, tmp_path), "event", "#3")
    assert "version 2" in problem["problem"] and "v3" in problem["problem"]


def test_a_target_pointing_at_another_latest_version_is_named(filled, database_url, tmp_path):
    # `show URL` and `--version -1` count from the target's current version.
    sql(filled, "UPDATE targets SET current_version = 2 WHERE url = :u", u=URL_A)
    assert "v3" in named(damage(filled, database_url, tmp_path), "target", URL_A)["problem"]


def test_a_target_pointing_at_other_latest_content_is_named(filled, database_url, tmp_path):
    # `targets --json` shows it, and the next check diffs against it.
    sql(
        filled,
        "UPDATE targets SET current_sha256 = :s WHERE url = :u",
        s=sha(b"<p>short page b</p>"),
        u=URL_A,
    )
    problem = named(damage(filled, database_url, tmp_path), "target", URL_A)
    assert "latest content" in problem["problem"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("size", 7),
        ("first_seen", datetime(2020, 1, 1, tzinfo=UTC)),
        ("http_status", 203),
        ("content_type", "application/pdf"),
        ("final_url", "https://attacker.example/"),
    ],
)
def test_an_edited_snapshot_field_is_named(filled, database_url, tmp_path, column, value):
    with engine_of(filled).begin() as conn:
        snapshots = Table("snapshots", MetaData(), autoload_with=conn)
        target = conn.execute(text("SELECT id FROM targets WHERE url = :u"), {"u": URL_A}).scalar_one()
        where = (snapshots.c.target_id == target) & (snapshots.c.version == 2)
        conn.execute(update(snapshots).where(where).values({column: value}))
    problem = named(damage(filled, database_url, tmp_path), "snapshot", f"{URL_A} v2")
    assert column in problem["problem"]


def test_a_damaged_blob_names_every_snapshot_and_url_rebuilt_from_it(filled, database_url, tmp_path):
    copy = "https://mirror.example/etext/a.html"
    watch(filled, copy)
    first = (PAGE.format(n=0) + "</p></body></html>").encode()
    save_version(filled, copy, first, T0 + timedelta(hours=7))  # the same bytes: stored once
    sql(filled, "UPDATE blobs SET data = :d WHERE sha256 = :s", d=b"\x28\xb5\x2f\xfd broken", s=sha(first))
    found = damage(filled, database_url, tmp_path)
    base = named(found, "blob", sha(first))
    assert base["urls"] == sorted([URL_A, copy]) and base["url"] in base["urls"]
    # Its own versions and those rebuilt from it: later versions of a.html are deltas on it.
    assert base["snapshots"] == sorted([f"{URL_A} v1", f"{URL_A} v2", f"{URL_A} v3", f"{copy} v1"])
    for n in (1, 2):  # later versions of a.html are deltas on the first
        later = named(found, "blob", sha((PAGE.format(n=n) + "</p></body></html>").encode()))
        assert later["url"] == URL_A and later["snapshots"] == [f"{URL_A} v{n + 1}"]
    lines = verify_command(database_url, tmp_path)().stdout.decode().splitlines()
    assert f"  spoils {copy} v1" in lines and f"  spoils {URL_A} v3" in lines


def test_a_blob_holding_text_instead_of_bytes_is_damage_and_verify_goes_on(filled, database_url, tmp_path):
    key = sha(b"<p>short page b</p>")
    sql(filled, "UPDATE blobs SET data = 'abc' WHERE sha256 = :s", s=key)
    sql(filled, "DELETE FROM events WHERE seq = 4")  # found after it: verify went on
    found = damage(filled, database_url, tmp_path)
    assert named(found, "blob", key)["url"] == URL_B
    named(found, "event", "#5")


def test_a_delta_chain_that_loops_is_damage(filled, database_url, tmp_path):
    one, two = (sha((PAGE.format(n=n) + "</p></body></html>").encode()) for n in (1, 2))
    sql(filled, "UPDATE blobs SET base_sha256 = :t WHERE sha256 = :o", t=two, o=one)
    found = damage(filled, database_url, tmp_path)
    named(found, "blob", one)
    named(found, "blob", two)


def test_a_blob_with_an_unknown_codec_is_damage(filled, database_url, tmp_path):
    key = sha(b"<p>short page b</p>")
    sql(filled, "UPDATE blobs SET codec = 'lzma' WHERE sha256 = :s", s=key)
    assert "lzma" in named(damage(filled, database_url, tmp_path), "blob", key)["problem"]


def test_a_damaged_diff_of_an_event_is_damage_not_a_crash(filled, database_url, tmp_path):
    sql(filled, "UPDATE events SET diff = :d WHERE seq = 2", d=b"not zstd")
    named(damage(filled, database_url, tmp_path), "event", "#2")


def test_garbage_in_columns_sqlite_cannot_refuse_is_damage_not_a_crash(filled, database_url, tmp_path):
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's column types refuse these values")
    sql(filled, "UPDATE events SET details = '{not json', at = 'yesterday' WHERE seq = 2")
    sql(
        filled,
        "UPDATE snapshots SET first_seen = 'soon', version = 'x' "
        "WHERE version = 1 AND target_id = (SELECT id FROM targets WHERE url = :u)",
        u=URL_B,
    )
    found = damage(filled, database_url, tmp_path)
    named(found, "event", "#2")
    named(found, "snapshot", f"{URL_B} v1")


def test_a_store_written_before_events_announced_snapshots_still_verifies(filled, database_url, tmp_path):
    # Events of earlier releases carry no snapshot fields: not damage (verify checks what is announced).
    with engine_of(filled).connect() as conn:
        rows = conn.execute(
            text("SELECT seq, kind FROM events WHERE kind IN ('document.new', 'document.changed')")
        ).all()
    for seq, kind in rows:
        gone = {"version": None} if kind == "document.new" else {"size": None}  # as they were written
        rewrite_chain(filled, seq, first_seen=None, final_url=None, http_status=None, **gone)
    assert verify_command(database_url, tmp_path)("--json").returncode == 0


def test_a_deleted_ledger_head_is_damage_not_a_crash(filled, database_url, tmp_path):
    sql(filled, "DELETE FROM ledger_head")
    assert "missing" in named(damage(filled, database_url, tmp_path), "head", "ledger_head")["problem"]


def test_garbage_in_blob_columns_sqlite_cannot_refuse_is_damage_not_a_crash(filled, database_url, tmp_path):
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's column types refuse these values")
    key = sha(b"<p>short page b</p>")
    sql(filled, "UPDATE blobs SET root_sha256 = 5, chain_length = 'x', size = 'big' WHERE sha256 = :s", s=key)
    sql(filled, "UPDATE ledger_head SET seq = 'five'")
    found = damage(filled, database_url, tmp_path)
    assert "its size 'big'" in named(found, "blob", key)["problem"]
    named(found, "head", "ledger_head")


def test_an_edited_blob_size_is_named(filled, database_url, tmp_path):
    key = sha(b"<p>short page b</p>")
    sql(filled, "UPDATE blobs SET size = 7 WHERE sha256 = :s", s=key)
    problem = named(damage(filled, database_url, tmp_path), "blob", key)
    assert "19 bytes, more than its size 7" in problem["problem"] and problem["url"] == URL_B


def test_a_blob_size_edited_upwards_is_named(filled, database_url, tmp_path):
    key = sha(b"<p>short page b</p>")
    sql(filled, "UPDATE blobs SET size = 70 WHERE sha256 = :s", s=key)
    problem = named(damage(filled, database_url, tmp_path), "blob", key)
    assert "size is recorded as 70, but it has 19 bytes" in problem["problem"] and problem["url"] == URL_B


def test_versions_recorded_by_real_checks_are_announced_and_proven(site, tmp_path, database_url):
    from tests.test_cli import Mirror, write_config

    site.put("/note.html", b"<p>First words of the note.</p>")
    site.put("/moving.html", b"<p>Here for now.</p>")
    site.put("/elsewhere.html", b"<p>Moved here with new words.</p>")
    urls = [site.url("/note.html"), site.url("/moving.html")]
    m = Mirror(write_config(tmp_path / "mirror.toml", urls), database_url, tmp_path)
    m("check")
    site.put("/note.html", b"<p>Second words of the note.</p>")
    site.redirect("/moving.html", "/elsewhere.html")
    m("check")

    assert m.json("verify")["ok"] is True
    for url in urls:
        history = m.json("history", url)
        made = [e for e in history["events"] if "first_seen" in e["details"]]
        assert len(made) == len(history["versions"]) == 2
        for version, event in zip(history["versions"], made, strict=True):
            details = event["details"]
            assert (details["version"], event["new_sha256"], details["size"]) == (
                version["number"],
                version["sha256"],
                version["size"],
            )
            assert (details["http_status"], details["content_type"], details["final_url"]) == (
                version["status"],
                version["content_type"],
                version["final_url"],
            )
            assert datetime.fromisoformat(details["first_seen"]) == datetime.fromisoformat(
                version["first_seen"]
            )

    from mirror.db import open_engine

    engine = open_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE snapshots SET final_url = 'https://attacker.example/' WHERE version = 2")
            )
    finally:
        engine.dispose()
    damaged = m("verify", "--json", check=False)
    assert damaged.returncode == 1
    assert {p["key"] for p in json.loads(damaged.stdout)["problems"]} == {f"{u} v2" for u in urls}


def test_a_blob_frame_declaring_a_terabyte_is_damage_not_a_crash(filled, database_url, tmp_path):
    key = sha(b"<p>short page b</p>")
    # A zstd frame header declaring 2**40 bytes of content (single segment, 8-byte size), one empty block.
    bomb = b"\x28\xb5\x2f\xfd\xe0" + (2**40).to_bytes(8, "little") + b"\x01\x00\x00"
    sql(filled, "UPDATE blobs SET data = :d WHERE sha256 = :s", d=bomb, s=key)
    assert (
        "declares 1099511627776 bytes"
        in named(damage(filled, database_url, tmp_path), "blob", key)["problem"]
    )


def test_a_bug_in_verify_exits_3_never_1_which_means_damage(filled, database_url, tmp_path):
    # A check that raises what no code expects (a stand-in for a bug) in a real `mirror verify` process.
    program = (
        "import sys\n"
        "from mirror import cli, verify_versions\n"
        "def broken(conn, report):\n"
        "    raise TypeError('a bug, not damage')\n"
        "verify_versions.check_versions = broken\n"
        "cli.main(sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "--config", os.devnull, "verify"],
        capture_output=True,
        env={**os.environ, "MIRROR_DATABASE_URL": database_url},
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stderr.decode().splitlines()[-1] == "mirror: error: unexpected TypeError: a bug, not damage"


def test_a_deleted_target_is_named_by_the_events_it_leaves(filled, database_url, tmp_path):
    # Foreign keys do not stop someone with the file or a superuser: `history` would say "not
    # in the store" and `restore --all` would leave the document out, silently.
    if database_url.startswith("sqlite"):
        engine_of(filled).dispose()
        with closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn:  # foreign_keys off
            conn.execute(
                "DELETE FROM snapshots WHERE target_id = (SELECT id FROM targets WHERE url = ?)", (URL_B,)
            )
            conn.execute("DELETE FROM targets WHERE url = ?", (URL_B,))
            conn.commit()
    else:
        with engine_of(filled).begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))  # foreign keys off
            conn.execute(
                text("DELETE FROM snapshots WHERE target_id = (SELECT id FROM targets WHERE url = :u)"),
                {"u": URL_B},
            )
            conn.execute(text("DELETE FROM targets WHERE url = :u"), {"u": URL_B})
    found = damage(filled, database_url, tmp_path)
    for seq in ("#4", "#5"):
        problem = named(found, "event", seq)
        assert problem["url"] == URL_B and "no target" in problem["problem"]
