"""The whole flow of a check against a real loopback server and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from mirror.check import Checker
from mirror.domain import DetectPolicy, FetchLimits, Target
from mirror.events import (
    CHECK_FAILED,
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_MOVED,
    DOCUMENT_NEW,
    DOCUMENT_REAPPEARED,
    ROUND_FINISHED,
    ROUND_SKIPPED_CLAIMED,
)
from mirror.history import version_diff
from mirror.politeness import HostGate
from mirror.restore import restore_version
from mirror.rounds import run_round
from tests.fixtures_store import engine_of
from tests.test_service import checks_of

HOUR = timedelta(hours=1)
LEASE = timedelta(seconds=0.9)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checker_for(archive, *, missing_after: int = 3, **limits) -> Checker:
    settings = {"timeout": 5.0, "retries": 0, "backoff": 0.05, **limits}
    return Checker(archive, FetchLimits(**settings), DetectPolicy(missing_after), HostGate(4, 0.0))


def watch(archive, *urls: str) -> list[Target]:
    targets = [Target(u, HOUR) for u in urls]
    archive.sync_targets(targets, datetime.now(UTC))
    return targets


def page(title: str, *paragraphs: str) -> bytes:
    body = "".join(f"<p>{p}</p>\n" for p in paragraphs)
    return (
        f"<html><head><title>{title}</title></head><body><nav>Archive menu</nav>{body}</body></html>".encode()
    )


def test_page_changed_twice_has_three_versions_and_two_change_events(site, archive):
    url = site.url("/etext/essay.html")
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    bodies = [
        page("Essay", "First paragraph.", "Second paragraph."),
        page("Essay", "First paragraph, edited.", "Second paragraph."),
        page("Essay", "First paragraph, edited.", "Second paragraph.", "A third one."),
    ]
    outcomes = []
    with capture_logs() as logs:
        for body in bodies:
            site.put("/etext/essay.html", body)
            outcomes.append(checker.check_one(target).outcome)
    checker.close()

    assert outcomes == ["new", "changed", "changed"]
    h = archive.history(url)
    assert [v.number for v in h.versions] == [1, 2, 3]
    assert [v.sha256 for v in h.versions] == [sha(b) for b in bodies]
    assert [e.kind for e in h.events] == [DOCUMENT_NEW, DOCUMENT_CHANGED, DOCUMENT_CHANGED]
    changed = [e for e in logs if e["event"] == DOCUMENT_CHANGED]
    assert [(e["lines_added"], e["lines_removed"]) for e in changed] == [(1, 1), (1, 0)]
    assert "+First paragraph, edited." in changed[0]["diff"]
    assert all(e["url"] == url for e in changed)
    assert changed[1]["old_sha256"] == sha(bodies[1]) and changed[1]["new_sha256"] == sha(bodies[2])


def test_unchanged_page_answered_304_adds_no_version(site, archive):
    url = site.url("/etext/stable.html")
    site.put("/etext/stable.html", page("Stable", "Nothing moves here."))
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    first = checker.check_one(target)
    second = checker.check_one(target)
    checker.close()

    assert (first.outcome, second.outcome) == ("new", "unchanged")
    assert second.http_status == 304
    conditional = [r for r in site.requests if r.path == "/etext/stable.html"][-1]
    assert conditional.headers.get("If-None-Match")
    assert len(archive.history(url).versions) == 1
    assert archive.history(url).versions[0].last_seen > archive.history(url).versions[0].first_seen


def test_same_bytes_at_two_urls_are_stored_once(site, archive):
    body = page("Newsletter", "Issue 12 of the newsletter.")
    site.put("/a/newsletter.html", body)
    site.put("/b/copy-of-newsletter.html", body)
    targets = watch(archive, site.url("/a/newsletter.html"), site.url("/b/copy-of-newsletter.html"))
    checker = checker_for(archive)
    for t in targets:
        checker.check_one(t)
    checker.close()

    status = archive.status(datetime.now(UTC))
    assert status.versions == 2
    assert status.blobs == 1
    assert archive.version(targets[0].url).sha256 == archive.version(targets[1].url).sha256 == sha(body)


def test_a_404_disappears_at_once(site, archive):
    url = site.url("/etext/censored.html")
    site.put("/etext/censored.html", page("Report", "A censorship report."))
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    checker.check_one(target)
    site.delete("/etext/censored.html")
    with capture_logs() as logs:
        report = checker.check_one(target)
    checker.close()

    assert (report.outcome, report.status) == ("disappeared", "gone")
    (event,) = [e for e in logs if e["event"] == DOCUMENT_DISAPPEARED]
    assert event["status"] == 404 and event["url"] == url


def test_a_timeout_disappears_only_after_missing_after_checks(site, archive):
    url = site.url("/etext/flaky.html")
    site.put("/etext/flaky.html", page("Flaky", "Hosted on a slow machine."))
    (target,) = watch(archive, url)
    checker = checker_for(archive, missing_after=3, timeout=0.5)
    checker.check_one(target)
    site.redirect("/etext/flaky.html", "/slow?seconds=3", status=302)
    outcomes = [checker.check_one(target) for _ in range(3)]
    checker.close()

    assert [o.outcome for o in outcomes] == ["failed", "failed", "disappeared"]
    assert [o.error for o in outcomes] == ["timeout"] * 3
    assert archive.state_of(url).status == "gone"


def test_a_page_back_after_disappearing_reappears_and_says_it_is_the_same(site, archive):
    url = site.url("/etext/back.html")
    body = page("Back", "Still here.")
    site.put("/etext/back.html", body)
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    checker.check_one(target)
    site.gone("/etext/back.html")
    checker.check_one(target)
    site.put("/etext/back.html", body)
    with capture_logs() as logs:
        report = checker.check_one(target)
    checker.close()

    assert report.outcome == "reappeared"
    (event,) = [e for e in logs if e["event"] == DOCUMENT_REAPPEARED]
    assert event["same_content"] is True
    assert len(archive.history(url).versions) == 1


def test_a_redirect_to_another_url_is_moved_once(site, archive):
    url = site.url("/etext/old-place.html")
    site.put("/etext/new-place.html", page("Moved", "Same words, new address."))
    site.redirect("/etext/old-place.html", "/etext/new-place.html")
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    with capture_logs() as logs:
        first = checker.check_one(target)
        second = checker.check_one(target)
    checker.close()

    moved = [e for e in logs if e["event"] == DOCUMENT_MOVED]
    assert len(moved) == 1
    assert moved[0]["to"] == site.url("/etext/new-place.html")
    assert moved[0]["cross_host"] is False
    assert (first.status, second.status) == ("moved", "moved")
    assert archive.version(url).final_url == site.url("/etext/new-place.html")


def test_restored_file_is_byte_identical_to_what_was_served(site, archive, tmp_path):
    url = site.url("/pdf")
    with urllib.request.urlopen(url) as resp:  # what the server serves, read by another client
        pdf = resp.read()
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    checker.check_one(target)
    checker.close()

    done = restore_version(archive, url, tmp_path / "report.pdf", spec="1")
    assert (tmp_path / "report.pdf").read_bytes() == pdf
    assert done.sha256 == sha(pdf)


def test_body_over_max_bytes_fails_cleanly_and_stores_nothing(site, archive):
    url = site.url("/big?bytes=3000000")
    (target,) = watch(archive, url)
    checker = checker_for(archive, max_bytes=1_000_000)
    with capture_logs() as logs:
        report = checker.check_one(target)
    checker.close()

    assert (report.outcome, report.error) == ("failed", "too_large")
    assert archive.status(datetime.now(UTC)).blobs == 0
    (failed,) = [e for e in logs if e["event"] == CHECK_FAILED]
    assert failed["error"] == "too_large"


def test_windows_1252_page_diff_shows_the_right_characters(site, archive):
    def legacy(text: str) -> bytes:
        html = (
            '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
            f"</head><body><p>{text}</p></body></html>"
        )
        return html.encode("cp1252")

    site.put("/etext/legacy.html", legacy("Prix: 5 € – „Zitat“ café"), content_type="text/html")
    url = site.url("/etext/legacy.html")
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    checker.check_one(target)
    site.put("/etext/legacy.html", legacy("Prix: 6 € — „Zitat“ café"), content_type="text/html")
    checker.check_one(target)
    checker.close()

    text = version_diff(archive, url)
    assert "-Prix: 5 € – „Zitat“ café" in text
    assert "+Prix: 6 € — „Zitat“ café" in text


def test_a_redirect_to_other_content_is_fetched_without_the_old_validators_and_is_a_version(site, archive):
    # q.html honours If-Modified-Since and is older than p.html: sent p's validators, it would answer 304.
    new_text = page("Q", "Another text now stands at this address.")
    site.put("/etext/q.html", new_text, etag=False)
    site.put("/etext/p.html", page("P", "The first text."), etag=False)
    url = site.url("/etext/p.html")
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    first = checker.check_one(target)
    site.redirect("/etext/p.html", "/etext/q.html")
    with capture_logs() as logs:
        moved = checker.check_one(target)
    later = [checker.check_one(target) for _ in range(2)]
    checker.close()

    assert first.outcome == "new"
    assert (moved.outcome, moved.status, moved.version, moved.http_status) == ("moved", "moved", 2, 200)
    documents = [e for e in logs if e["event"].startswith("document.")]
    assert [e["event"] for e in documents] == [DOCUMENT_CHANGED, DOCUMENT_MOVED]
    assert archive.read(archive.version(url).sha256) == new_text  # what `mirror show` prints
    h = archive.history(url)
    assert [(v.number, v.sha256, v.final_url) for v in h.versions][1:] == [
        (2, sha(new_text), site.url("/etext/q.html"))
    ]
    assert [e.kind for e in h.events] == [DOCUMENT_NEW, DOCUMENT_CHANGED, DOCUMENT_MOVED]
    assert h.versions[1].first_seen == h.events[1].at == h.events[2].at  # the version dates from the move
    assert [(r.outcome, r.http_status, r.version) for r in later] == [("unchanged", 304, 2)] * 2
    asked_q = [r.headers.get("If-Modified-Since") for r in site.requests if r.path == "/etext/q.html"]
    assert asked_q[0] is None  # the first fetch of the new destination is unconditional
    assert asked_q[1:] == [asked_q[1]] * 2 and asked_q[1] is not None  # then its own validators


def _too_large(site, path: str) -> None:
    site.put(path, page("Report", "Grown. " * 20_000))  # max_bytes is 50,000 below


def _broken_gzip(site, path: str) -> None:
    site.put(path, b"\x1f\x8b\x08\x00 not deflate at all", headers={"Content-Encoding": "gzip"})


@pytest.mark.parametrize(
    ("spoil", "error"), [(_too_large, "too_large"), (_broken_gzip, "bad_content")]
)  # a 429 is `blocked`: tests/test_blocking.py
def test_an_answer_we_cannot_take_fails_every_time_but_never_disappears(site, archive, spoil, error):
    url = site.url("/etext/report.html")
    site.put("/etext/report.html", page("Report", "Short at first."))
    (target,) = watch(archive, url)
    checker = checker_for(archive, missing_after=2, max_bytes=50_000)
    checker.check_one(target)
    spoil(site, "/etext/report.html")
    with capture_logs() as logs:
        reports = [checker.check_one(target) for _ in range(5)]
    checker.close()

    assert [(r.outcome, r.status, r.error) for r in reports] == [("failed", "failing", error)] * 5
    failed = [e for e in logs if e["event"] == CHECK_FAILED]
    assert [e["consecutive_failures"] for e in failed] == [1, 2, 3, 4, 5]
    assert [e for e in logs if e["event"] == DOCUMENT_DISAPPEARED] == []
    assert [e.kind for e in archive.history(url).events] == [DOCUMENT_NEW]
    (summary,) = archive.targets()
    assert (summary.status, summary.consecutive_failures) == ("failing", 5)


def test_a_server_error_repeated_missing_after_times_disappears(site, archive):
    url = site.url("/etext/down.html")
    site.put("/etext/down.html", page("Down", "Hosted on a failing machine."))
    (target,) = watch(archive, url)
    checker = checker_for(archive, missing_after=2)
    checker.check_one(target)
    site.fail("/etext/down.html", 503)
    reports = [checker.check_one(target) for _ in range(3)]
    checker.close()

    assert [r.outcome for r in reports] == ["failed", "disappeared", "failed"]
    assert [e.kind for e in archive.history(url).events] == [DOCUMENT_NEW, DOCUMENT_DISAPPEARED]


def test_a_target_that_never_gave_content_is_unavailable_not_gone_until_it_appears(site, archive):
    url = site.url("/etext/not-yet.html")  # nothing there yet: 404
    (target,) = watch(archive, url)
    checker = checker_for(archive, missing_after=2)
    with capture_logs() as logs:
        reports = [checker.check_one(target) for _ in range(3)]
    site.put("/etext/not-yet.html", page("At last", "Published now."))
    with capture_logs() as later:
        appeared = checker.check_one(target)
    checker.close()

    assert [(r.outcome, r.status, r.http_status) for r in reports] == [("failed", "unavailable", 404)] * 3
    assert [e["event"] for e in logs if e["event"].startswith("document.")] == []
    assert (appeared.outcome, appeared.status, appeared.version) == ("new", "ok", 1)
    assert [e["event"] for e in later if e["event"].startswith("document.")] == [DOCUMENT_NEW]
    assert [e.kind for e in archive.history(url).events] == [DOCUMENT_NEW]


def test_after_a_move_show_prints_the_destinations_text_from_the_command_line(site, tmp_path, database_url):
    from tests.test_cli import Mirror, write_config

    q_text = page("Q", "The text that now stands at the new address.")
    site.put("/etext/q.html", q_text, etag=False)  # older than p.html, honours If-Modified-Since
    site.put("/etext/p.html", page("P", "The first text."), etag=False)
    url = site.url("/etext/p.html")
    mirror = Mirror(write_config(tmp_path / "mirror.toml", [url]), database_url, tmp_path)
    mirror("check")
    site.redirect("/etext/p.html", "/etext/q.html")

    moved = mirror.json("check")
    again = mirror.json("check")

    assert [(t["outcome"], t["version"]) for t in moved["targets"]] == [("moved", 2)]
    assert [(t["outcome"], t["http_status"]) for t in again["targets"]] == [("unchanged", 304)]
    assert mirror("show", url).stdout == q_text
    history = mirror.json("history", url)
    assert [v["number"] for v in history["versions"]] == [1, 2]
    move = next(e for e in history["events"] if e["kind"] == DOCUMENT_MOVED)
    assert history["versions"][1]["first_seen"] == move["at"]


def leases_of(archive) -> dict[str, str | None]:
    from sqlalchemy import select

    from mirror.tables import targets

    with engine_of(archive).connect() as conn:
        return dict(conn.execute(select(targets.c.url, targets.c.lease_owner)).all())


def test_a_round_skips_the_targets_another_process_holds_and_says_how_many(site, archive):
    urls = [site.url(f"/held/{i}.html") for i in range(6)]
    for i in range(6):
        site.put(f"/held/{i}.html", page("Held", f"Page {i}."))
    targets = watch(archive, *urls)
    archive.claim("daemon-elsewhere", urls[:2], datetime.now(UTC), HOUR)  # a `mirror run` checks these
    checker = checker_for(archive)
    with capture_logs() as logs:
        report = run_round(checker, targets, 3)
    checker.close()

    assert report.skipped_claimed == 2
    assert sorted(r.url for r in report.checks) == urls[2:]
    assert site.hits("/held/0.html") == site.hits("/held/1.html") == 0
    skipped = [e for e in logs if e["event"] == ROUND_SKIPPED_CLAIMED]
    assert [e["skipped_claimed"] for e in skipped] == [2]
    finished = [e for e in logs if e["event"] == ROUND_FINISHED]
    assert finished[0]["skipped_claimed"] == 2
    # The other process keeps its leases; the round leaves none of its own behind.
    assert leases_of(archive) == {u: "daemon-elsewhere" if u in urls[:2] else None for u in urls}


def test_a_round_longer_than_its_lease_keeps_its_targets_from_other_processes(site, archive):
    urls = [site.url(f"/slow?seconds=0.6&n={i}") for i in range(5)]
    targets = watch(archive, *urls)
    checker = checker_for(archive)
    result: list = []
    round_ = threading.Thread(target=lambda: result.append(run_round(checker, targets, 1, lease=LEASE)))
    round_.start()
    time.sleep(2 * LEASE.total_seconds())  # twice the lease: unextended, every lease would have expired
    taken = archive.claim("other", urls, datetime.now(UTC), HOUR)
    checked_then = {u for u, n in checks_of(archive).items() if n}
    round_.join(30)
    checker.close()

    assert {t.url for t in taken} <= checked_then  # only what the round had already written and freed
    assert len(checked_then) < len(urls)  # the round was still going
    (report,) = result
    assert len(report.checks) + report.skipped_claimed == len(urls)
    assert all(n <= 1 for n in checks_of(archive).values())


def _gzip_cut(body: bytes) -> bytes:
    whole = gzip.compress(body)
    return whole[: len(whole) // 2]


@pytest.mark.parametrize(
    ("encoding", "broken"),
    [
        ("gzip", _gzip_cut),
        ("gzip", lambda body: gzip.compress(body) + b"trailing garbage"),
        ("br", lambda body: b""),
        ("x-unknown", lambda body: body),
    ],
    ids=["gzip cut in half", "garbage after gzip", "br over nothing", "unknown coding"],
)
def test_a_broken_content_encoding_fails_as_bad_content_and_records_no_version(
    site, archive, encoding, broken
):
    good = page("Minutes", *[f"Item {n} was agreed." for n in range(300)])
    site.put("/etext/minutes.html", gzip.compress(good), headers={"Content-Encoding": "gzip"})
    url = site.url("/etext/minutes.html")
    (target,) = watch(archive, url)
    checker = checker_for(archive, retries=2)
    assert checker.check_one(target).outcome == "new"

    site.put("/etext/minutes.html", broken(good), headers={"Content-Encoding": encoding})
    with capture_logs() as logs:
        reports = [checker.check_one(target) for _ in range(2)]
    checker.close()

    assert [(r.outcome, r.error, r.version) for r in reports] == [("failed", "bad_content", 1)] * 2
    history = archive.history(url)
    assert [v.sha256 for v in history.versions] == [sha(good)]
    assert [e.kind for e in history.events] == [DOCUMENT_NEW]
    assert [e["event"] for e in logs if e["event"].startswith("document.")] == []
    assert archive.version(url).sha256 == sha(good)


def test_a_304_to_the_first_check_is_bad_content_and_records_nothing(raw_server, archive):
    server = raw_server(lambda sock: sock.sendall(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n"))
    (target,) = watch(archive, server.url())
    checker = checker_for(archive)
    with capture_logs() as logs:
        report = checker.check_one(target)
    checker.close()

    assert (report.outcome, report.error, report.version) == ("failed", "bad_content", 0)
    assert report.http_status == 304
    assert report.status != "ok"
    assert archive.history(server.url()).versions == []
    assert [e["event"] for e in logs if e["event"].startswith("document.")] == []


def test_a_location_that_cannot_be_parsed_fails_the_check_without_a_crash(raw_server, archive):
    server = raw_server(lambda sock: sock.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\n\r\n"))
    (target,) = watch(archive, server.url())
    checker = checker_for(archive)
    with capture_logs() as logs:
        report = run_round(checker, [target], concurrency=1)
    checker.close()

    assert report.crashed == ()
    assert [(c.outcome, c.error, c.http_status) for c in report.checks] == [("failed", "bad_content", 302)]
    assert "check.crashed" not in [e["event"] for e in logs]


@pytest.mark.parametrize(
    ("content_type", "declared"),
    [
        ("text/html; charset=base64", ""),
        ("text/plain; charset=rot13", ""),
        ("text/html; charset=undefined", ""),
        ("text/html; charset=idna", ""),
        ("text/html", '<meta charset="zlib">'),
        ("text/html", '<meta http-equiv="Content-Type" content="text/html; charset=uu">'),
    ],
)
def test_a_charset_that_is_no_text_encoding_is_ignored_and_the_change_is_diffed(
    site, archive, content_type, declared
):
    def served(words: str) -> bytes:
        return f"<html><head>{declared}</head><body><p>{words}</p></body></html>".encode()

    site.put("/etext/odd.html", served("Minutes of the first meeting, café."), content_type=content_type)
    url = site.url("/etext/odd.html")
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    first = run_round(checker, [target], concurrency=1)
    site.put("/etext/odd.html", served("Minutes of the second meeting, café."), content_type=content_type)
    with capture_logs() as logs:
        second = run_round(checker, [target], concurrency=1)
    checker.close()

    assert (first.crashed, second.crashed) == ((), ())
    assert [c.outcome for c in (*first.checks, *second.checks)] == ["new", "changed"]
    (changed,) = [e for e in logs if e["event"] == DOCUMENT_CHANGED]
    assert (changed["lines_added"], changed["lines_removed"]) == (1, 1)
    added = [line for line in version_diff(archive, url).splitlines() if line.startswith("+")]
    assert "Minutes of the second meeting, café." in added[-1]


SECRET = "s3cretPW"  # noqa: S105 - the password a hostile redirect carries


def store_text(engine) -> str:
    """Return every row of every table of the store as text, as someone grepping a dump would see it."""
    from sqlalchemy import MetaData, select

    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return "\n".join(repr(row) for table in meta.sorted_tables for row in conn.execute(select(table)))


def test_a_redirect_to_a_url_with_a_password_logs_and_stores_no_password(raw_server, archive, engine):
    location = f"http://admin:{SECRET}@127.0.0.1:1/private/report.html".encode()
    server = raw_server(
        lambda sock: sock.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\n\r\n")
    )
    (target,) = watch(archive, server.url())
    checker = checker_for(archive)
    with capture_logs() as logs:
        report = run_round(checker, [target], concurrency=1)
    checker.close()

    assert [(c.outcome, c.error) for c in report.checks] == [("failed", "bad_content")]
    (failed,) = [e for e in logs if e["event"] == CHECK_FAILED]
    assert "admin:***@127.0.0.1:1" in failed["message"]
    assert SECRET not in repr(logs)
    assert SECRET not in store_text(engine)


def test_a_location_header_with_a_password_on_a_page_is_stored_masked(site, archive, engine):
    body = page("Report", "The annual report.")
    site.put("/etext/report.html", body, headers={"Location": f"http://admin:{SECRET}@mirror.example/r.html"})
    url = site.url("/etext/report.html")
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    with capture_logs() as logs:
        assert checker.check_one(target).outcome == "new"
    checker.close()

    assert archive.version(url).sha256 == sha(body)
    assert "http://admin:***@mirror.example/r.html" in store_text(engine)
    assert SECRET not in store_text(engine)
    assert SECRET not in repr(logs)


NUL_ANSWERS = {
    "a NUL in the Content-Type and the ETag of a page": (
        b'HTTP/1.1 200 OK\r\nContent-Type: text/html\x00\r\nETag: "v\x001"\r\nContent-Length: 13\r\n'
        b"Connection: close\r\n\r\n<p>A page</p>",
        "new",
    ),
    "a NUL in the reason phrase of a 404": (
        b"HTTP/1.1 404 Not\x00Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        "failed",
    ),
    "a NUL in a status line that is no HTTP": (b"HTTP/1.1 2\x0000 OK\r\n\r\n", "failed"),
}


@pytest.mark.parametrize(("answer", "outcome"), NUL_ANSWERS.values(), ids=NUL_ANSWERS.keys())
def test_a_nul_byte_in_what_a_server_sends_is_recorded_without_a_store_error(
    raw_server, archive, answer, outcome
):
    # PostgreSQL text cannot hold a NUL: one such value used to stop the whole round with a store error.
    server = raw_server(lambda sock: sock.sendall(answer))
    (target,) = watch(archive, server.url())
    checker = checker_for(archive)
    report = run_round(checker, [target], concurrency=1)
    checker.close()

    assert report.crashed == ()
    assert [c.outcome for c in report.checks] == [outcome]
    assert archive.state_of(server.url()).consecutive_failures == (outcome == "failed")


def test_mirror_check_survives_a_location_that_cannot_be_parsed(raw_server, database_url, tmp_path):
    server = raw_server(lambda sock: sock.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\n\r\n"))
    config = tmp_path / "mirror.toml"
    config.write_text(f'targets = ["{server.url()}"]\n[fetch]\nretries = 0\n')
    env = {**os.environ, "MIRROR_DATABASE_URL": database_url}
    env.pop("MIRROR_CONFIG", None)

    proc = subprocess.run(
        [sys.executable, "-m", "mirror", "--config", str(config), "check", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert "check.crashed" not in [e["event"] for e in events]
    (failed,) = [e for e in events if e["event"] == "check.failed"]
    assert (failed["error"], failed["status"]) == ("bad_content", 302)
    assert "http://[::1" in failed["message"]


@pytest.mark.parametrize(("every", "failures_to_gone"), [(timedelta(hours=1), 49), (timedelta(days=1), 3)])
def test_missing_after_two_days_means_two_days_of_failures_on_an_hourly_or_a_daily_schedule(
    site, archive, every, failures_to_gone
):
    url = site.url("/etext/span.html")
    site.put("/etext/span.html", page("Span", "Text."))
    (target,) = watch(archive, url)
    clock = [datetime(2026, 12, 1, tzinfo=UTC)]
    checker = Checker(
        archive,
        FetchLimits(timeout=5.0, retries=0),
        DetectPolicy(missing_for=timedelta(days=2)),
        HostGate(4, 0.0),
        clock=lambda: clock[0],
    )
    checker.check_one(target)
    site.fail("/etext/span.html", 503)
    first_failure = clock[0] + every
    outcomes = []
    while "disappeared" not in outcomes:
        clock[0] += every
        outcomes.append(checker.check_one(target).outcome)
    checker.close()

    assert outcomes == ["failed"] * (failures_to_gone - 1) + ["disappeared"]
    assert clock[0] - first_failure == timedelta(days=2)
    (gone,) = [e for e in archive.history(url).events if e.kind == DOCUMENT_DISAPPEARED]
    assert gone.at == clock[0] and gone.details["consecutive_failures"] == failures_to_gone
    assert archive.state_of(url).missing_since == first_failure
