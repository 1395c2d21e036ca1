"""The command line as a user types it: real `mirror` processes, a real server, a real store."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    """Return the counts that are not 0 (`--json` lists every outcome and state, zero included)."""
    return {k: n for k, n in counts.items() if n}


class Mirror:
    """Runs `python -m mirror` with a config and a database, like a user in a shell."""

    def __init__(self, config: Path, database_url: str, cwd: Path) -> None:
        self.config, self.database_url, self.cwd = config, database_url, cwd

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "MIRROR_DATABASE_URL": self.database_url}
        env.pop("MIRROR_CONFIG", None)
        proc = subprocess.run(
            [sys.executable, "-m", "mirror", "--config", str(self.config), *args],
            capture_output=True,
            env=env,
            cwd=self.cwd,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"mirror {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()}")
        return proc

    def json(self, *args: str):
        return json.loads(self(*args, "--json").stdout)


def write_config(path: Path, urls: list[str], extra: str = "") -> Path:
    lines = ["targets = [", *(f'  "{u}",' for u in urls), "]", ""]
    lines += ["[fetch]", 'timeout = "5s"', 'per_host_delay = "0"', "retries = 0", extra]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def mirror(tmp_path, database_url):
    def make(urls: list[str], extra: str = "") -> Mirror:
        return Mirror(write_config(tmp_path / "mirror.toml", urls, extra), database_url, tmp_path)

    return make


def test_check_history_show_diff_and_restore_from_the_command_line(site, mirror, tmp_path):
    v1 = b"<html><body><h1>Note from the chair</h1><p>First words.</p></body></html>"
    v2 = b"<html><body><h1>Note from the chair</h1><p>Second words.</p></body></html>"
    site.put("/note.html", v1)
    url = site.url("/note.html")
    m = mirror([url])

    first = m.json("check")
    assert first["checked"] == 1
    assert nonzero(first["outcomes"]) == {"new": 1}
    assert first["targets"][0]["url"] == url
    site.put("/note.html", v2)
    assert nonzero(m.json("check", url)["outcomes"]) == {"changed": 1}

    history = m.json("history", url)
    assert [v["number"] for v in history["versions"]] == [1, 2]
    assert [v["sha256"] for v in history["versions"]] == [sha(v1), sha(v2)]
    assert [e["kind"] for e in history["events"]] == ["document.new", "document.changed"]
    assert history["events"][1]["details"]["lines_added"] == 1

    assert m("show", url, "--version", "1").stdout == v1
    assert m("show", url).stdout == v2
    assert m("show", url, "--version", sha(v1)[:10]).stdout == v1

    diff = m("diff", url).stdout.decode()
    assert "-First words." in diff and "+Second words." in diff

    out = tmp_path / "restored" / "note.html"
    out.parent.mkdir()
    m("restore", url, "--version", "1", "--to", str(out))
    assert sha(out.read_bytes()) == sha(v1)
    again = m("restore", url, "--version", "2", "--to", str(out), check=False)
    assert again.returncode == 2
    assert "--force" in again.stderr.decode()
    assert out.read_bytes() == v1
    m("restore", url, "--version", "2", "--to", str(out), "--force")
    assert out.read_bytes() == v2

    status = m.json("status")
    assert status["targets"] == 1
    assert status["versions"] == 2
    assert nonzero(status["targets_by_status"]) == {"ok": 1}
    targets = m.json("targets")["targets"]
    assert [(t["url"], t["versions"], t["status"]) for t in targets] == [(url, 2, "ok")]


def test_a_broken_config_is_one_line_naming_the_key_and_exit_2(site, mirror):
    m = mirror([site.url("/x.html")], extra='connect_timeout = "soon"')
    proc = m("check", check=False)
    assert proc.returncode == 2
    err = proc.stderr.decode().strip()
    assert len(err.splitlines()) == 1
    assert "fetch.connect_timeout" in err and "soon" in err and "mirror.toml" in err


def test_an_unknown_url_or_version_is_exit_2(site, mirror):
    site.put("/known.html", b"<p>known</p>")
    m = mirror([site.url("/known.html")])
    m("check")
    unknown = m("history", site.url("/unknown.html"), check=False)
    assert unknown.returncode == 2
    assert "unknown.html" in unknown.stderr.decode()
    no_version = m("show", site.url("/known.html"), "--version", "7", check=False)
    assert no_version.returncode == 2
    assert "version 7" in no_version.stderr.decode()


def test_an_unreachable_database_is_exit_3_with_one_line(tmp_path):
    config = write_config(tmp_path / "mirror.toml", ["http://127.0.0.1:9/x"])
    env = {**os.environ, "MIRROR_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    proc = subprocess.run(
        [sys.executable, "-m", "mirror", "--config", str(config), "status"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 3
    assert len(proc.stderr.decode().strip().splitlines()) == 1
    assert "127.0.0.1:1" in proc.stderr.decode()


def test_logs_are_json_lines_on_stderr_when_not_on_a_terminal(site, mirror):
    site.put("/log.html", b"<p>logged</p>")
    m = mirror([site.url("/log.html")])
    proc = m("check")
    events = [json.loads(line) for line in proc.stderr.decode().splitlines()]
    new = [e for e in events if e["event"] == "document.new"]
    assert new and new[0]["url"] == site.url("/log.html")
    assert all("timestamp" in e and "level" in e for e in events)


def test_each_checks_log_lines_carry_its_url_and_its_own_check_id(site, mirror):
    site.put("/ids/one.html", b"<p>one</p>")
    site.put("/ids/two.html", b"<p>two</p>")
    urls = [site.url("/ids/one.html"), site.url("/ids/two.html")]
    m = mirror(urls)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mirror",
            "--config",
            str(m.config),
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "check",
        ],
        capture_output=True,
        env={**os.environ, "MIRROR_DATABASE_URL": m.database_url},
        cwd=m.cwd,
        timeout=60,
        check=True,
    )

    events = [json.loads(line) for line in proc.stderr.decode().splitlines()]
    ids = {}
    for event in events:
        if event["event"] in ("document.new", "check.done"):
            ids.setdefault(event["url"], set()).add(event["check_id"])
    assert sorted(ids) == urls
    assert all(len(one) == 1 for one in ids.values())  # the new document and its check: one id
    assert ids[urls[0]] != ids[urls[1]]
    finished = [e for e in events if e["event"] == "round.finished"]
    assert finished and "check_id" not in finished[0] and "url" not in finished[0]


def test_check_crawls_a_linked_site_within_its_scope_in_one_command(site, tmp_path, database_url):
    site.put("/archive/", b'<a href="a.html">a</a> <a href="sub/">sub</a> <a href="/elsewhere.html">out</a>')
    site.put("/archive/a.html", b'<a href="../archive/b.html">b</a> <a href="mailto:x@y">mail</a>')
    site.put("/archive/b.html", b'<a href="a.html">back to a</a> <a href="/archive/">top</a>')
    site.put("/archive/sub/", b'<frameset><frame src="deep.html"></frameset>')
    site.put("/archive/sub/deep.html", b"<p>deep page</p>")
    site.put("/elsewhere.html", b"<p>out of scope</p>")
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'[fetch]\nper_host_delay = "0"\nretries = 0\n\n[[sources]]\nstart = "{site.url("/archive/")}"\n'
        "robots = false\n"
    )
    m = Mirror(config, database_url, tmp_path)
    report = m.json("check")
    found = sorted(t["url"] for t in m.json("targets")["targets"])
    assert found == sorted(
        site.url(p)
        for p in (
            "/archive/",
            "/archive/a.html",
            "/archive/b.html",
            "/archive/sub/",
            "/archive/sub/deep.html",
        )
    )
    assert nonzero(report["outcomes"]) == {"new": 5}
    assert site.hits("/elsewhere.html") == 0


def test_robots_txt_disallow_is_honoured_and_the_check_is_skipped(site, tmp_path, database_url):
    site.put("/robots.txt", b"User-agent: *\nDisallow: /archive/private/\n", content_type="text/plain")
    site.put("/archive/", b'<a href="open.html">open</a> <a href="private/secret.html">secret</a>')
    site.put("/archive/open.html", b"<p>open</p>")
    site.put("/archive/private/secret.html", b"<p>secret</p>")
    config = tmp_path / "mirror.toml"
    config.write_text(
        f'[fetch]\nper_host_delay = "0"\nretries = 0\n\n[[sources]]\nstart = "{site.url("/archive/")}"\n'
    )
    m = Mirror(config, database_url, tmp_path)
    report = m.json("check")
    by_url = {t["url"]: t for t in report["targets"]}
    assert by_url[site.url("/archive/private/secret.html")]["outcome"] == "skipped"
    assert by_url[site.url("/archive/open.html")]["outcome"] == "new"
    assert site.hits("/archive/private/secret.html") == 0


@pytest.mark.parametrize("started_ignoring_sigint", [False, True], ids=["foreground", "background-job"])
def test_ctrl_c_stops_a_check_round_soon_and_keeps_what_was_checked(
    site, mirror, tmp_path, started_ignoring_sigint
):
    # A shell starts a background job with SIGINT ignored, and Python then installs no handler:
    # `mirror` installs its own, so Ctrl-C (or `kill -INT`) does the same however it was started.
    # 40 pages of 1 s each over 2 workers: 20 s of work. Ctrl-C after ~2 s must not wait for it.
    urls = [site.url(f"/slow?seconds=1&n={i}") for i in range(40)]
    m = mirror(urls, "concurrency = 2\nper_host_concurrency = 2")
    env = {**os.environ, "MIRROR_DATABASE_URL": m.database_url}
    env.pop("MIRROR_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirror", "--config", str(m.config), "check"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=tmp_path,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        if started_ignoring_sigint
        else None,
    )
    deadline = time.monotonic() + 30
    while site.hits("/slow") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    stopped_after = time.monotonic() - interrupted

    assert proc.returncode == 130
    assert stopped_after < 5  # the checks under way end (1 s each), no new one starts
    checked = site.hits("/slow")
    assert 3 <= checked <= 10
    targets = m.json("targets")["targets"]
    assert sum(1 for t in targets if t["status"] == "ok") >= checked - 2  # finished checks were written


def test_restore_to_a_missing_folder_creates_nothing_and_restore_all_says_it_made_its_folder(
    site, mirror, tmp_path
):
    site.put("/essay.html", b"<p>essay</p>")
    url = site.url("/essay.html")
    m = mirror([url])
    m("check")
    typo = tmp_path / "archvie" / "2026" / "essay.html"
    one = m("restore", url, "--to", str(typo), check=False)
    assert one.returncode == 2
    assert one.stderr.decode().count("\n") == 1 and "archvie" in one.stderr.decode()
    assert not (tmp_path / "archvie").exists()
    whole = m("restore", "--all", "--at", "2100-01-01T00:00:00Z", "--to", str(typo.parent), check=False)
    assert whole.returncode == 2
    assert not (tmp_path / "archvie").exists()

    made = m("restore", "--all", "--at", "2100-01-01T00:00:00Z", "--to", str(tmp_path / "site"))
    assert f"to {tmp_path / 'site'} (created)" in made.stdout.decode()
    assert "1 document " in made.stdout.decode()  # not "1 documents"
    again = m.json(
        "restore", "--all", "--at", "2100-01-01T00:00:00Z", "--to", str(tmp_path / "site"), "--force"
    )
    assert again["created"] is False and again["files"] == 1


READ_ONLY_COMMANDS = [
    ("status",),
    ("targets",),
    ("verify",),
    ("verify", "--head"),
    ("history", "http://127.0.0.1:9/x"),
    ("diff", "http://127.0.0.1:9/x"),
    ("show", "http://127.0.0.1:9/x"),
    ("restore", "http://127.0.0.1:9/x", "--to", "x.html"),
    ("restore", "--all", "--at", "2026-01-01T00:00:00Z", "--to", "site"),
]


def public_tables(database_url: str) -> list[str]:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(database_url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_read_only_commands_never_create_a_store(mirror, database_url, tmp_path):
    m = mirror(["http://127.0.0.1:9/x"])
    for args in READ_ONLY_COMMANDS:
        proc = m(*args, check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, err)
        assert err.startswith("mirror: error: ") and err.count("\n") == 1, (args, err)
        assert "mirror check" in err, (args, err)  # how to make one
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "store").exists()  # neither the folder nor the file
    else:
        assert public_tables(database_url) == []
    assert not (tmp_path / "site").exists() and not (tmp_path / "x.html").exists()

    m("check")  # `check` (and `run`) create the store; then the same commands read it
    assert m("status").returncode == 0


def test_read_only_commands_refuse_a_store_at_an_older_schema_and_leave_it_as_it_was(mirror, database_url):
    from alembic import command

    from mirror.db import alembic_config, current_revision, open_engine

    engine = open_engine(database_url, migrate=False)
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(alembic_config(conn), "0001")
    finally:
        engine.dispose()
    m = mirror(["http://127.0.0.1:9/x"])
    proc = m("status", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "0001" in err and "mirror check" in err and "mirror run" in err
    engine = open_engine(database_url, migrate=False)
    try:
        assert current_revision(engine) == "0001"
        with engine.begin() as conn:  # a store a newer mirror migrated
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    newer = m("history", "http://127.0.0.1:9/x", check=False)
    assert newer.returncode == 2
    assert "9999" in newer.stderr.decode() and "upgrade mirror" in newer.stderr.decode()


def test_a_read_only_command_leaves_a_file_that_is_not_a_store_as_it_was(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    m = Mirror(
        write_config(tmp_path / "mirror.toml", ["http://127.0.0.1:9/x"]), f"sqlite:///{empty}", tmp_path
    )
    proc = m("verify", check=False)
    assert proc.returncode == 2 and "no mirror store here" in proc.stderr.decode()
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "mirror.toml"]  # no -wal, no -shm


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ((), "missing command"),
        (("frob",), "frob"),
        (("--bogus", "status"), "--bogus"),
        (("status", "--bogus"), "--bogus"),
        (("restore", "--frce"), "--force"),  # did you mean
        (("history",), "URL"),
        (("targets", "--state", "sunny"), "sunny"),
        (("--log-level", "loud", "status"), "loud"),
        (("restore", "--all", "--to"), "--to"),
        (("show", "{url}", "--version", "abc"), "abc"),
        (("show", "{url}", "--version", "9"), "version 9"),
        (("show", "{url}", "--at", "yesterday"), "yesterday"),
        (("verify", "--published", "12"), "SEQ:HASH"),
        (("check", "not a url"), "not a url"),
    ],
)
def test_every_usage_error_is_one_line_and_exit_2(site, tmp_path, args, names):
    site.put("/u.html", b"<p>u</p>")
    config = write_config(tmp_path / "mirror.toml", [site.url("/u.html")])
    m = Mirror(config, f"sqlite:///{tmp_path / 'mirror.db'}", tmp_path)  # the parser, not the store
    if "{url}" in args:
        m("check")
    proc = m(*(a.replace("{url}", site.url("/u.html")) for a in args), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.startswith("mirror: error: ") and err.count("\n") == 1, err
    assert names in err
    assert proc.stdout == b""


def test_check_of_a_url_that_is_not_configured_says_how_to_add_it(site, tmp_path):
    site.put("/known.html", b"<p>known</p>")
    config = write_config(tmp_path / "mirror.toml", [site.url("/known.html")])
    m = Mirror(config, f"sqlite:///{tmp_path / 'mirror.db'}", tmp_path)
    m("check")
    proc = m("--log-level", "warning", "check", site.url("/other.html"), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert err.startswith("mirror: error: ") and err.count("\n") == 1
    assert site.url("/other.html") in err
    assert "configured targets" in err and "`targets`" in err and str(config) in err
    assert site.hits("/other.html") == 0


def test_a_progress_bar_counts_on_stderr_and_there_is_none_when_it_is_off(capsys):
    from mirror.progress import progress_bar

    assert progress_bar(False, "checking", "page", total=3) is None
    bar = progress_bar(True, "checking", "page", total=3)
    assert bar is not None
    bar.update(2)
    assert bar.n == 2
    bar.close()
    captured = capsys.readouterr()
    assert "checking:" in captured.err and "/3 " in captured.err and captured.out == ""
    assert captured.err.rstrip("\r").rsplit("\r", 1)[-1].strip() == ""  # it leaves no line behind
