"""Soft 404s: a document that starts to redirect home, or to where many others go, or that
answers 200 with a "not found" page, has disappeared (`soft: true`), not moved nor changed."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from mirror import blobs, verify
from mirror.domain import DetectPolicy, FetchResult, OutcomeKind, Status, TargetState
from mirror.events import DOCUMENT_DISAPPEARED, DOCUMENT_MOVED, DOCUMENT_NEW
from mirror.judge import judge
from mirror.soft404 import NOT_FOUND_TITLE, is_home
from tests.fixtures_store import key
from tests.test_check import checker_for, page, watch

SITE = "https://www.example.gov"
URL = f"{SITE}/reports/climate-2016.html"
NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
POLICY = DetectPolicy()
DOC = b"<html><head><title>Climate report 2016</title></head><body><p>Findings.</p></body></html>"
HOME = b"<html><head><title>Welcome | Example Agency</title></head><body><p>News.</p></body></html>"
NOT_FOUND = b"<html><head><title>Page Not Found | Example Agency</title></head><body>Sorry.</body></html>"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def answer(body: bytes, final_url: str = URL, status: int = 200) -> FetchResult:
    redirects = (URL,) if final_url != URL else ()
    headers = {"content-type": "text/html"}
    return FetchResult(URL, final_url, status, headers, body, sha(body), None, NOW, 0.1, redirects)


HAS_DOC = TargetState(Status.OK, sha(DOC), 1, "text/html", etag='"doc"')


@pytest.mark.parametrize(
    ("final_url", "body", "shared", "reason"),
    [
        (f"{SITE}/", HOME, 0, "redirect to the home page"),
        (f"{SITE}", HOME, 0, "redirect to the home page"),
        (f"{SITE}/index.html", HOME, 0, "redirect to the home page"),
        (f"{SITE}/archive/removed.html", HOME, 3, "redirect to a page 3 other targets redirect to"),
        (URL, NOT_FOUND, 0, "a not-found page served with 200"),
    ],
)
def test_a_soft_404_is_disappeared_with_its_evidence_not_a_move_nor_a_version(
    final_url, body, shared, reason
):
    outcome = judge(HAS_DOC, answer(body, final_url), POLICY, NOW, shared_redirects=shared)

    assert outcome.kind is OutcomeKind.DISAPPEARED
    assert not outcome.new_version and outcome.evidence
    (event,) = outcome.events
    assert event.kind == DOCUMENT_DISAPPEARED and event.old_sha256 == sha(DOC)
    assert event.details["soft"] is True and event.details["reason"] == reason
    assert event.details["evidence_sha256"] == sha(body)
    state = outcome.state
    assert (state.status, state.current_sha256, state.current_version) == (Status.GONE, sha(DOC), 1)
    assert (state.etag, state.last_modified) == (None, None)

    again = judge(state, answer(body, final_url), POLICY, NOW + timedelta(hours=1), shared_redirects=shared)
    assert (again.kind, again.events, again.state.status) == (OutcomeKind.FAILED, (), Status.GONE)
    back = judge(again.state, answer(DOC), POLICY, NOW + timedelta(hours=2))
    assert back.kind is OutcomeKind.REAPPEARED and back.events[0].details["same_content"] is True


@pytest.mark.parametrize(
    ("state", "result", "shared", "kind"),
    [
        # A redirect to a real new location is a move.
        (HAS_DOC, answer(DOC, f"{SITE}/reports/2016/climate.html"), 0, OutcomeKind.MOVED),
        (HAS_DOC, answer(DOC, f"{SITE}/reports/2016/climate.html"), 2, OutcomeKind.MOVED),
        # A home page that moves to the root is no soft 404.
        (
            TargetState(Status.OK, sha(HOME), 1, "text/html"),
            FetchResult(f"{SITE}/index.html", f"{SITE}/", 200, {}, HOME, sha(HOME), None, NOW, 0.1),
            0,
            OutcomeKind.MOVED,
        ),
        # A target that never had a version cannot disappear: its first content is new.
        (TargetState(), answer(HOME, f"{SITE}/"), 0, OutcomeKind.NEW),
        (TargetState(), answer(NOT_FOUND), 0, OutcomeKind.NEW),
        # A page about things not found is content when its title does not say so.
        (
            HAS_DOC,
            answer(DOC.replace(b"Findings.", b"Species not found since 1990.")),
            0,
            OutcomeKind.CHANGED,
        ),
    ],
)
def test_what_is_not_a_soft_404(state, result, shared, kind):
    outcome = judge(state, result, POLICY, NOW, shared_redirects=shared)
    assert outcome.kind is kind and not outcome.evidence
    assert all(not e.details.get("soft") for e in outcome.events)


@pytest.mark.parametrize(
    ("title", "not_found"),
    [
        ("Page Not Found | Example Agency", True),
        ("404 - File or directory not found.", True),
        ("Error 404", True),
        ("404 Error Page", True),
        ("This page no longer exists", True),
        ("Climate report 2016", False),
        ("Route 404 through the Rockies", False),
        ("Lost and found: records of 1901", False),
    ],
)
def test_a_title_that_says_not_found(title, not_found):
    assert (NOT_FOUND_TITLE.search(title) is not None) is not_found


def test_home_pages():
    assert is_home(f"{SITE}/") and is_home(SITE) and is_home(f"{SITE}/default.aspx")
    assert not is_home(f"{SITE}/?page=2") and not is_home(f"{SITE}/reports/") and not is_home(URL)


# -- through a real check: loopback server, real store ----------------------------------------


def evidence_of(engine, url: str) -> list[str | None]:
    """Return the evidence blob of each check of `url`, as hex (the store keeps digests as bytes)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.evidence_sha256 FROM checks c JOIN targets t ON t.id = c.target_id "
                "WHERE t.url = :url ORDER BY c.id"
            ),
            {"url": url},
        )
        return [None if r[0] is None else bytes(r[0]).hex() for r in rows]


def test_a_document_that_starts_to_redirect_home_is_soft_gone_and_its_page_kept_as_evidence(
    site, archive, engine
):
    home = page("Welcome", "News of the agency.")
    site.put("/", home)
    site.put("/reports/climate.html", page("Climate report", "Findings."))
    url = site.url("/reports/climate.html")
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    checker.check_one(target)
    site.redirect("/reports/climate.html", "/")
    reports = [checker.check_one(target) for _ in range(3)]
    checker.close()

    assert [(r.outcome, r.status, r.version) for r in reports] == [
        ("disappeared", "gone", 1),
        ("failed", "gone", 1),
        ("failed", "gone", 1),
    ]
    h = archive.history(url)
    assert len(h.versions) == 1
    assert [e.kind for e in h.events] == [DOCUMENT_NEW, DOCUMENT_DISAPPEARED]
    gone = h.events[1].details
    assert (gone["soft"], gone["to"], gone["evidence_sha256"]) == (True, site.url("/"), sha(home))
    assert evidence_of(engine, url) == [None, sha(home), sha(home), sha(home)]
    with engine.connect() as conn:
        assert blobs.get(conn, sha(home)) == home
    assert verify.run(engine).ok


def test_a_200_not_found_page_is_soft_gone_and_verify_proves_its_evidence(site, archive, engine):
    url = site.url("/reports/water.html")
    site.put("/reports/water.html", page("Water report", "Findings."))
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    checker.check_one(target)
    missing = page("Page Not Found | Example Agency", "Sorry, we could not find that page.")
    site.put("/reports/water.html", missing)
    report = checker.check_one(target)
    checker.close()

    assert (report.outcome, report.status, report.events) == (
        "disappeared",
        "gone",
        (DOCUMENT_DISAPPEARED,),
    )
    (_, gone) = archive.history(url).events
    assert gone.details["title"] == "Page Not Found | Example Agency" and gone.details["soft"] is True
    assert [v.sha256 for v in archive.history(url).versions] != [sha(missing)]
    assert evidence_of(engine, url)[-1] == sha(missing)
    assert verify.run(engine).ok
    with engine.begin() as conn:  # the evidence, and nothing else, damaged
        conn.execute(
            text("UPDATE blobs SET data = :data WHERE sha256 = :sha"),
            {"data": blobs.compress(b"not what was served"), "sha": key(sha(missing))},
        )
    damaged = verify.run(engine)
    assert [(p.item, p.key) for p in damaged.problems] == [("blob", sha(missing))]


def test_many_targets_redirecting_to_one_page_are_soft_gone_and_a_real_move_is_still_moved(site, archive):
    paths = [f"/reports/r{n}.html" for n in range(5)]
    for n, path in enumerate(paths):
        site.put(path, page(f"Report {n}", "Findings."))
    site.put("/reports/archived.html", page("Archived reports", "Ask us for a copy."))
    site.put("/reports/2017/r0.html", page("Report 0", "Findings, moved."))
    targets = watch(archive, *(site.url(p) for p in paths))
    checker = checker_for(archive)
    for target in targets:
        checker.check_one(target)
    site.redirect(paths[0], "/reports/2017/r0.html")  # a real move
    for path in paths[1:]:
        site.redirect(path, "/reports/archived.html")
    first = [checker.check_one(t).outcome for t in targets]
    second = [checker.check_one(t).outcome for t in targets]
    checker.close()

    # Three others must redirect there first; those that moved before are soft 404s next time.
    assert first == ["moved", "moved", "moved", "moved", "disappeared"]
    assert second == ["unchanged", "disappeared", "disappeared", "disappeared", "failed"]
    for target in targets[1:]:
        events = archive.history(target.url).events
        assert events[-1].kind == DOCUMENT_DISAPPEARED and events[-1].details["soft"] is True
    assert [e.kind for e in archive.history(targets[0].url).events][-1] == DOCUMENT_MOVED


def test_a_soft_404_through_the_command_line(site, database_url, tmp_path):
    from tests.test_cli import Mirror, write_config

    site.put("/", page("Welcome", "News."))
    site.put("/reports/air.html", page("Air report", "Findings."))
    url = site.url("/reports/air.html")
    m = Mirror(write_config(tmp_path / "mirror.toml", [url]), database_url, tmp_path)
    m("check")
    site.redirect("/reports/air.html", "/")

    report = m.json("check")
    assert report["outcomes"]["disappeared"] == 1 and report["outcomes"]["moved"] == 0
    assert [t["url"] for t in m.json("targets", "--state", "gone")["targets"]] == [url]
    history = m("history", url).stdout.decode()
    summary = f'to={site.url("/")} status=200 soft=True reason="redirect to the home page"'
    assert f"{DOCUMENT_DISAPPEARED}  {summary}" in history
    (_, gone) = m.json("history", url)["events"]
    assert gone["details"]["soft"] is True and gone["details"]["evidence_sha256"]


def test_pruning_old_checks_keeps_the_evidence_blob_and_the_record_verifies(site, archive, engine):
    url = site.url("/reports/soil.html")
    site.put("/reports/soil.html", page("Soil report", "Findings."))
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    checker.check_one(target)
    missing = page("404 - File or directory not found.", "The resource you are looking for has been removed.")
    site.put("/reports/soil.html", missing)
    checker.check_one(target)
    checker.close()
    assert evidence_of(engine, url)[-1] == sha(missing)

    assert archive.prune_checks(datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert evidence_of(engine, url) == []
    with engine.connect() as conn:
        assert blobs.get(conn, sha(missing)) == missing  # named by the chained event's evidence_sha256
    assert verify.run(engine).ok
