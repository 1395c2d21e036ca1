"""`mirror check` over several processes (`[fetch] processes`): real processes, server and stores.

A round shared by processes checks each target exactly once, reports what one process
would, keeps the per-host concurrency over all processes together, and stops cleanly on
Ctrl-C or when one of its processes is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from mirror.config import Config, load_config
from mirror.db import open_engine
from mirror.team import processes_for, share_of
from tests.test_service import wait_for, write_config

PAGES = 400


def page(i: int, edition: int = 1) -> bytes:
    return f"<html><body><h1>Page {i}</h1><p>Edition {edition} of page {i}.</p></body></html>".encode()


def put_pages(site, count: int = PAGES, edition: int = 1) -> list[str]:
    paths = [f"/team/{i}.html" for i in range(count)]
    for i, path in enumerate(paths):
        site.put(path, page(i, edition))
    return [site.url(p) for p in paths]


def mirror_check(
    config: Path, database_url: str, tmp_path: Path, *args: str, name: str = "check"
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
    log = (tmp_path / f"{name}.log").open("wb")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mirror",
                "--config",
                str(config),
                "--log-format",
                "json",
                "check",
                "--json",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=config.parent,
            start_new_session=True,  # its own process group: a Ctrl-C goes to all its processes
        )
    finally:
        log.close()


def run_check(
    config: Path, database_url: str, tmp_path: Path, name: str = "check"
) -> tuple[dict, list[dict]]:
    """Run one `mirror check --json`; return its document and its log lines (each must be one JSON object)."""
    proc = mirror_check(config, database_url, tmp_path, name=name)
    out, _ = proc.communicate(timeout=180)
    err = (tmp_path / f"{name}.log").read_text()
    assert proc.returncode == 0, f"mirror check exited {proc.returncode}:\n{err[-3000:]}"
    return json.loads(out), [json.loads(line) for line in err.splitlines()]


def checks_per_url(database_url: str) -> Counter[str]:
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT t.url FROM checks c JOIN targets t ON t.id = c.target_id")).all()
    finally:
        engine.dispose()
    return Counter(url for (url,) in rows)


def workers_of_checks(database_url: str) -> set[str]:
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            return {w for (w,) in conn.execute(text("SELECT DISTINCT worker FROM checks")).all()}
    finally:
        engine.dispose()


def test_a_round_over_two_processes_checks_every_target_once_and_reports_as_one(site, tmp_path, database_url):
    urls = put_pages(site)
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 8\nprocesses = 2")

    first, log = run_check(config, database_url, tmp_path, "first")

    assert first["checked"] == PAGES
    assert first["outcomes"]["new"] == PAGES
    assert (first["crashed"], first["skipped_claimed"], first["lost_processes"]) == ([], 0, 0)
    assert sorted(t["url"] for t in first["targets"]) == sorted(urls)
    per_url = checks_per_url(database_url)
    assert set(per_url) == set(urls) and set(per_url.values()) == {1}, "a target checked twice, or missed"
    assert len(workers_of_checks(database_url)) == 2, "both processes checked"
    assert [e["processes"] for e in log if e["event"] == "round.started"] == [2]
    (finished,) = [e for e in log if e["event"] == "round.finished"]
    assert (finished["checked"], finished["new"]) == (PAGES, PAGES)

    for i in range(0, PAGES, 4):  # a quarter changes; the rest answers 304
        site.put(f"/team/{i}.html", page(i, 2))
    then, _ = run_check(config, database_url, tmp_path, "then")
    assert then["checked"] == PAGES
    assert (then["outcomes"]["changed"], then["outcomes"]["unchanged"]) == (PAGES // 4, PAGES - PAGES // 4)
    assert set(checks_per_url(database_url).values()) == {2}


def test_two_processes_report_what_one_process_reports(site, tmp_path, database_url, postgres_database):
    urls = put_pages(site)
    for i in range(0, PAGES, 10):
        site.gone(f"/team/{i}.html")
    documents = []
    for processes in (1, 2):
        folder = tmp_path / f"p{processes}"
        folder.mkdir()
        if database_url.startswith("sqlite"):
            url = f"sqlite:///{folder / 'mirror.db'}"
        else:
            postgres_database.reset()
            url = database_url
        config = write_config(folder / "mirror.toml", urls, extra=f"concurrency = 8\nprocesses = {processes}")
        document, _ = run_check(config, url, folder)
        documents.append(document)
    one, two = documents
    assert one["outcomes"] == two["outcomes"]
    assert one["checked"] == two["checked"] == PAGES
    key = lambda t: t["url"]  # noqa: E731
    assert sorted(one["targets"], key=key) == sorted(two["targets"], key=key)


@pytest.mark.parametrize("per_host", [1, 2])
def test_per_host_concurrency_holds_over_all_processes(site, tmp_path, database_url, per_host):
    urls = put_pages(site, 240)
    site.pause = 0.005  # each answer waits: requests sent at once overlap at the server
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 8\nprocesses = 2")
    config.write_text(
        config.read_text().replace("per_host_concurrency = 8", f"per_host_concurrency = {per_host}")
    )

    document, log = run_check(config, database_url, tmp_path)

    assert document["checked"] == 240
    assert [e["processes"] for e in log if e["event"] == "round.started"] == [per_host]
    assert site.most_in_flight == per_host, f"{site.most_in_flight} requests at once to one host"


@pytest.mark.parametrize("processes", [1, 2])
def test_sigint_stops_every_process_after_writing_the_checks_under_way(
    site, tmp_path, database_url, processes
):
    urls = put_pages(site)
    site.pause = 0.05  # a round of ~10 s: Ctrl-C lands in the middle of it
    config = write_config(tmp_path / "mirror.toml", urls, extra=f"concurrency = 4\nprocesses = {processes}")
    proc = mirror_check(config, database_url, tmp_path)
    wait_for(lambda: len(site.requests) >= 40, timeout=60, what="the round to be under way")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C on a terminal: the whole process group
    proc.communicate(timeout=60)
    err = (tmp_path / "check.log").read_text()
    assert proc.returncode == 130, err[-3000:]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]  # every log line whole
    assert [line for line in err.splitlines() if not line.startswith("{")] == ["", "mirror: interrupted"]
    assert not [e for e in lines if e["event"] in ("round.process_lost", "check.crashed")]

    checked = checks_per_url(database_url)
    answered = Counter(r.path for r in site.requests)
    # Every request that was sent was recorded: no check under way was lost.
    assert {site.url(p) for p in answered} == set(checked)
    assert 40 <= len(checked) < PAGES
    assert set(checked.values()) == {1}
    assert _held_leases(database_url) == 0


def test_a_killed_process_does_not_hang_the_round_and_is_reported(site, tmp_path, database_url):
    urls = put_pages(site)
    site.pause = 0.02
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 4\nprocesses = 2")
    proc = mirror_check(config, database_url, tmp_path)
    wait_for(lambda: len(site.requests) >= 40, timeout=60, what="the round to be under way")
    children = _children(proc.pid)
    assert len(children) >= 1
    os.kill(children[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    err = (tmp_path / "check.log").read_text()
    assert proc.returncode == 3, err[-3000:]
    document = json.loads(out)
    assert document["lost_processes"] == 1
    lost = [json.loads(line) for line in err.splitlines() if "round.process_lost" in line]
    assert [e["exit_code"] for e in lost] == [-signal.SIGKILL]
    checked = checks_per_url(database_url)
    assert set(checked.values()) == {1}
    assert document["checked"] <= len(checked) < PAGES  # the dead one's claimed chunk waits


def test_a_few_targets_are_checked_in_one_process(site, tmp_path, database_url):
    urls = put_pages(site, 20)
    config = write_config(tmp_path / "mirror.toml", urls, extra="concurrency = 8\nprocesses = 2")
    document, log = run_check(config, database_url, tmp_path)
    assert document["checked"] == 20
    started = [e for e in log if e["event"] == "round.started"]
    assert [e["processes"] for e in started] == [1]
    assert len(workers_of_checks(database_url)) == 1


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def _held_leases(database_url: str) -> int:
    engine = open_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(text("SELECT count(*) FROM targets WHERE lease_owner IS NOT NULL")).scalar_one()
            )
    finally:
        engine.dispose()


def test_processes_follow_the_politeness_rules(tmp_path):
    def config(sources: str = "", **fetch: object) -> Config:
        keys = {"per_host_delay": '"0"', "per_host_concurrency": 8, **fetch}
        path = tmp_path / "mirror.toml"
        path.write_text("[fetch]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + sources)
        return load_config(path, {})

    assert processes_for(config(processes=2), 2000) == 2
    assert processes_for(config(processes=2, per_host_delay='"1s"'), 2000) == 1  # the delay bounds the rate
    assert processes_for(config(processes=4, per_host_concurrency=3), 2000) == 3
    assert processes_for(config(processes=2), 150) == 1  # a handful: no fork
    assert processes_for(config(processes=1), 2000) == 1
    crawl = "[[sources]]\nstart = 'http://127.0.0.1:1/a/'\n"  # honours robots.txt: its Crawl-delay
    assert processes_for(config(crawl, processes=2), 2000) == 1
    assert processes_for(config(crawl + "robots = false\n", processes=2), 2000) == 2
    assert [share_of(5, 2, i) for i in range(2)] == [3, 2]
    assert sum(share_of(16, 3, i) for i in range(3)) == 16


def descendants(pid: int) -> set[int]:
    """Return the processes under `pid` now (children, theirs, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def command_lines(pids: set[int]) -> set[str]:
    lines = set()
    for pid in pids:
        try:
            lines.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


@pytest.mark.parametrize("processes", [1, 2])
def test_only_a_round_in_one_process_hands_large_changes_to_a_text_helper(
    site, tmp_path, database_url, processes
):
    # A text helper gives a one-process round a second core; the processes of a team are the
    # cores already, and a helper (with its resource tracker) each would only add memory.
    menu = "".join(f"<li><a href='/etext/{i}.html'>Issue {i} of the newsletter</a></li>" for i in range(600))
    large = lambda i, edition: f"<html><body><ul>{menu}</ul>{page(i, edition).decode()}</body></html>"  # noqa: E731
    paths = [f"/team/{i}.html" for i in range(PAGES // 2)]
    for i, path in enumerate(paths):
        site.put(path, large(i, 1))
    urls = [site.url(p) for p in paths]
    config = write_config(tmp_path / "mirror.toml", urls, extra=f"concurrency = 8\nprocesses = {processes}")
    run_check(config, database_url, tmp_path, "first")
    for i, path in enumerate(paths):
        site.put(path, large(i, 2))

    proc = mirror_check(config, database_url, tmp_path, name="then")
    seen: set[str] = set()
    ended = threading.Event()

    def watch() -> None:
        while not ended.is_set():
            seen.update(command_lines(descendants(proc.pid)))
            ended.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, _ = proc.communicate(timeout=180)  # read while it runs: a full pipe would block it
    finally:
        ended.set()
        watcher.join()

    assert proc.returncode == 0
    assert json.loads(out)["outcomes"]["changed"] == len(paths)
    helpers = {line for line in seen if "multiprocessing" in line}  # spawn_main, resource_tracker
    assert bool(helpers) == (processes == 1), seen
