"""Bot walls, challenges and rate limits are `blocked`: never a version, never `disappeared`.

Each pattern is replayed with the status and headers its vendor sends (as seen in the
wild; bodies shortened to their telling parts), first to the pure rules, then through a
real check against a loopback server and a real store.
"""

from __future__ import annotations

import gzip
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from mirror import blocking
from mirror.blocking import RULES, match, next_check_in
from mirror.config import load_config
from mirror.domain import (
    DetectPolicy,
    FetchFailure,
    FetchLimits,
    FetchResult,
    OutcomeKind,
    Status,
    TargetState,
)
from mirror.events import DOCUMENT_BLOCKED, DOCUMENT_NEW, DOCUMENT_UNBLOCKED
from mirror.fetch import fetch, make_session
from mirror.judge import judge
from tests.test_check import checker_for, page, watch
from tests.test_cli import Mirror, write_config

URL = "https://www.example.gov/reports/climate.html"
NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

CF_CHALLENGE = (
    b'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
    b'<meta http-equiv="refresh" content="390"></head><body><div class="main-wrapper" role="main">'
    b"<noscript>Enable JavaScript and cookies to continue</noscript></div></body></html>"
)
CF_BLOCK = (
    b'<!DOCTYPE html><html class="no-js" lang="en-US"><head><title>Attention Required! | Cloudflare</title>'
    b'</head><body><div id="cf-wrapper"><h1 data-translate="block_headline">Sorry, you have been blocked</h1>'
    b"<h2>You are unable to access</h2> example.gov</div></body></html>"
)
AKAMAI = (
    b"<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n"
    b'You don\'t have permission to access "http&#58;&#47;&#47;www&#46;example&#46;gov&#47;" on this server.'
    b"<P>\nReference&#32;&#35;18&#46;6f64d817&#46;1733200000&#46;1a2b3c4d\n</BODY>\n</HTML>\n"
)
CLOUDFRONT = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01 Transitional//EN" "http://www.w3.org/TR/html4/loose.dtd">\n'
    b'<HTML><HEAD><META HTTP-EQUIV="Content-Type" CONTENT="text/html; charset=iso-8859-1">\n'
    b"<TITLE>ERROR: The request could not be satisfied</TITLE>\n</HEAD><BODY>\n<H1>403 ERROR</H1>\n"
    b'<H2>The request could not be satisfied.</H2>\n<HR noshade size="1px">\nRequest blocked.\n</BODY></HTML>'
)
HUMAN = (
    b'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Human Verification</title>'
    b'<script src="https://example.token.awswaf.com/captcha.js"></script></head>'
    b'<body><div id="captcha-container"></div></body></html>'
)
REQUEST_ACCESS = (
    b"<html><head><title>Request Access</title></head><body><h1>Request Access</h1>"
    b"<p>Please verify you are a human to continue.</p></body></html>"
)
NGINX_403 = (
    b"<html><head><title>403 Forbidden</title></head><body><center><h1>403 Forbidden</h1></center>"
    b"<hr><center>nginx</center></body></html>"
)
APACHE_403 = (
    b"<title>403 Forbidden</title><h1>Forbidden</h1><p>You don't have permission to access this resource.</p>"
)
REPORT = b"<html><head><title>Report</title></head><body><p>The report.</p></body></html>"
CF = {"Server": "cloudflare", "CF-RAY": "8ec1a2b3c4d5e6f7-FRA", "Content-Type": "text/html; charset=UTF-8"}
FRONT = {"Server": "CloudFront", "X-Cache": "Error from cloudfront", "Content-Type": "text/html"}

# (name, status, headers, body, the rule it matches): one per rule, as the vendors send them.
WALLS = [
    (
        "cloudflare-challenge-403",
        403,
        {**CF, "cf-mitigated": "challenge"},
        CF_CHALLENGE,
        "cloudflare-challenge",
    ),
    ("cloudflare-iuam-503", 503, CF, CF_CHALLENGE, "cloudflare-challenge"),
    ("cloudflare-block", 403, CF, CF_BLOCK, "cloudflare-block"),
    (
        "cloudflare-mitigated",
        403,
        {**CF, "cf-mitigated": "challenge"},
        b"<title>Un instant...</title>",
        "cloudflare-mitigated",
    ),
    ("akamai", 403, {"Server": "AkamaiGHost", "Content-Type": "text/html"}, AKAMAI, "akamai-access-denied"),
    ("cloudfront-403", 403, FRONT, CLOUDFRONT, "cloudfront-refused"),
    ("cloudfront-405", 405, {**FRONT, "x-amzn-waf-action": "captcha"}, HUMAN, "aws-waf-captcha"),
    (
        "aws-waf-challenge-202",
        202,
        {"Server": "awselb/2.0", "x-amzn-waf-action": "challenge"},
        b"",
        "aws-waf-action",
    ),
    ("aws-elb-202-empty", 202, {"Server": "awselb/2.0"}, b"", "aws-elb-challenge"),
    ("aws-elb-429", 429, {"Server": "awselb/2.0"}, b"", "rate-limited"),
    ("request-access-200", 200, {"Server": "nginx"}, REQUEST_ACCESS, "request-access"),
    (
        "nginx-429",
        429,
        {"Server": "nginx", "Retry-After": "120"},
        b"<title>429 Too Many Requests</title>",
        "rate-limited",
    ),
]

REAL_PAGE_NAMING_CLOUDFLARE = (
    b"<html><head><title>How this archive stays online</title></head><body><h1>Hosting</h1>"
    b"<p>We sit behind Cloudflare. If you see 'Just a moment...' or 'Attention Required! | Cloudflare',"
    b" or Akamai's 'Access Denied', wait a minute and reload.</p>"
    + b"<p>Our mirrors are listed below.</p>" * 30
    + b"</body></html>"
)
# Answers that are not walls: a failure as before, or content.
NOT_WALLS = [
    ("nginx-403", 403, {"Server": "nginx"}, NGINX_403),
    ("apache-403", 403, {"Server": "Apache/2.4.62 (Debian)"}, APACHE_403),
    ("cloudflare-origin-404", 404, CF, b"<html><head><title>Page not found | Example</title></head></html>"),
    ("real-page-naming-cloudflare", 200, CF, REAL_PAGE_NAMING_CLOUDFLARE),
    ("202-with-a-real-body", 202, {"Server": "awselb/2.0"}, REPORT),
    (
        "akamai-real-page",
        200,
        {"Server": "AkamaiGHost"},
        b"<html><head><title>Access Denied: the 1971 report</title></head></html>",
    ),
]


def result(status: int, headers: dict[str, str], body: bytes, url: str = URL) -> FetchResult:
    kept = {k.lower(): v for k, v in headers.items() if k.lower() in blocking_headers()}
    if 200 <= status < 300:
        sha = hashlib.sha256(body).hexdigest()
        return FetchResult(url, url, status, kept, body, sha, None, NOW, 0.1)
    failure = FetchFailure("http", f"HTTP {status}")
    return FetchResult(url, url, status, kept, None, None, failure, NOW, 0.1, error_head=body)


def blocking_headers() -> tuple[str, ...]:
    from mirror.domain import KEPT_HEADERS

    return KEPT_HEADERS


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


GOOD = b"<html><head><title>Climate report</title></head><body><p>The report.</p></body></html>"
HAS_GOOD = TargetState(Status.OK, sha(GOOD), 1, "text/html")


@pytest.mark.parametrize(("name", "status", "headers", "body", "rule"), WALLS, ids=[w[0] for w in WALLS])
def test_each_wall_seen_in_the_wild_matches_its_rule(name, status, headers, body, rule):
    found = match(result(status, headers, body))
    assert found is not None and found.name == rule


def test_every_rule_has_a_wall_that_matches_it():
    assert {w[4] for w in WALLS} == {r.name for r in RULES}


@pytest.mark.parametrize(("name", "status", "headers", "body"), NOT_WALLS, ids=[n[0] for n in NOT_WALLS])
def test_a_plain_error_page_or_a_real_page_is_no_wall(name, status, headers, body):
    assert match(result(status, headers, body)) is None


def test_a_plain_403_is_a_failure_and_a_real_page_naming_cloudflare_is_a_new_version():
    failed = judge(
        HAS_GOOD, result(403, {"Server": "nginx"}, b"<title>403 Forbidden</title>"), DetectPolicy(), NOW
    )
    assert (failed.kind, failed.state.status) == (OutcomeKind.FAILED, Status.FAILING)
    changed = judge(HAS_GOOD, result(200, CF, REAL_PAGE_NAMING_CLOUDFLARE), DetectPolicy(), NOW)
    assert changed.kind is OutcomeKind.CHANGED and changed.new_version
    content = judge(HAS_GOOD, result(202, {"Server": "awselb/2.0"}, NOT_WALLS[4][3]), DetectPolicy(), NOW)
    assert content.kind is OutcomeKind.CHANGED and content.new_version


@pytest.mark.parametrize(("name", "status", "headers", "body", "rule"), WALLS, ids=[w[0] for w in WALLS])
def test_a_wall_is_blocked_once_never_disappears_and_unblocks_when_the_page_returns(
    name, status, headers, body, rule
):
    state, kinds, events = HAS_GOOD, [], []
    for n in range(10):  # far past missing_after
        outcome = judge(state, result(status, headers, body), DetectPolicy(missing_after=2), NOW + n * HOUR)
        kinds.append(outcome.kind)
        events += outcome.events
        assert not outcome.new_version
        state = outcome.state
    assert kinds == [OutcomeKind.BLOCKED] * 10
    assert (state.status, state.current_version, state.current_sha256) == (Status.BLOCKED, 1, sha(GOOD))
    assert state.missing_checks == 0
    (blocked,) = events
    assert blocked.kind == DOCUMENT_BLOCKED and blocked.status == status
    assert blocked.details["rule"] == rule
    assert blocked.details["server"] == headers["Server"]

    back = judge(state, result(200, {}, GOOD), DetectPolicy(missing_after=2), NOW + 11 * HOUR)
    assert back.kind is OutcomeKind.UNCHANGED and back.state.status is Status.OK
    assert [e.kind for e in back.events] == [DOCUMENT_UNBLOCKED]
    assert back.events[0].details == {"outcome": "unchanged", "blocked_checks": 10}


def test_a_blocked_check_breaks_a_run_of_missing_checks_and_a_gone_document_stays_gone():
    state = HAS_GOOD
    for r in (FetchResult(URL, URL, None, {}, None, None, FetchFailure("timeout", "t"), NOW, 30.0),) * 2:
        state = judge(state, r, DetectPolicy(missing_after=3), NOW).state
    assert state.missing_checks == 2
    state = judge(state, result(*WALLS[2][1:4]), DetectPolicy(missing_after=3), NOW).state
    assert (state.status, state.missing_checks, state.missing_since) == (Status.BLOCKED, 0, None)

    gone = TargetState(Status.GONE, sha(GOOD), 1, "text/html", consecutive_failures=1)
    outcome = judge(gone, result(*WALLS[2][1:4]), DetectPolicy(), NOW)
    assert (outcome.kind, outcome.state.status, outcome.events) == (OutcomeKind.BLOCKED, Status.GONE, ())


def test_blocked_targets_back_off_exponentially_up_to_their_interval_and_honour_retry_after():
    wall = result(403, CF, CF_BLOCK)
    state, waits = HAS_GOOD, []
    for _ in range(8):
        outcome = judge(state, wall, DetectPolicy(), NOW)
        waits.append(next_check_in(outcome, wall, timedelta(hours=6), NOW))
        state = outcome.state
    minutes = [w.total_seconds() / 60 for w in waits]
    assert minutes == [5, 10, 20, 40, 80, 160, 320, 360]

    busy = result(429, {"Server": "nginx", "Retry-After": "7200"}, b"")
    first = judge(HAS_GOOD, busy, DetectPolicy(), NOW)
    assert next_check_in(first, busy, timedelta(hours=6), NOW) == timedelta(hours=2)
    dated = result(429, {"Server": "nginx", "Retry-After": "Thu, 03 Dec 2026 07:30:00 GMT"}, b"")
    assert next_check_in(first, dated, timedelta(hours=6), NOW) == timedelta(minutes=90)
    hostile = result(429, {"Retry-After": "99999999999"}, b"")
    assert next_check_in(first, hostile, timedelta(hours=6), NOW) == blocking.MAX_RETRY_AFTER
    served = judge(HAS_GOOD, result(200, {}, GOOD), DetectPolicy(), NOW)
    assert next_check_in(served, busy, timedelta(hours=6), NOW) == timedelta(hours=6)


def test_a_rule_from_the_config_blocks_what_it_names(tmp_path):
    config = tmp_path / "mirror.toml"
    config.write_text(
        'targets = ["https://www.example.gov/"]\n\n'
        "[[detect.block_rules]]\n"
        'name = "sucuri"\nstatus = [403]\nheaders = { server = "Sucuri" }\n'
        'title = "Sucuri WebSite Firewall - Access Denied"\n'
    )
    policy = load_config(config, {}).detect.policy()
    sucuri = result(
        403, {"Server": "Sucuri/Cloudproxy"}, b"<title>Sucuri WebSite Firewall - Access Denied</title>"
    )
    outcome = judge(HAS_GOOD, sucuri, policy, NOW)
    assert outcome.kind is OutcomeKind.BLOCKED and outcome.events[0].details["rule"] == "sucuri"
    plain = judge(
        HAS_GOOD, result(403, {"Server": "Sucuri/Cloudproxy"}, b"<title>Forbidden</title>"), policy, NOW
    )
    assert plain.kind is OutcomeKind.FAILED


# -- through a real check: loopback server, real store ----------------------------------------


def test_fetch_keeps_the_head_of_a_gzipped_error_page_for_its_title(site):
    site.answer("/cf.html", 403, gzip.compress(CF_BLOCK), {**CF, "Content-Encoding": "gzip"})
    session = make_session(FetchLimits())
    try:
        got = fetch(site.url("/cf.html"), session, FetchLimits(timeout=5.0, retries=0))
    finally:
        session.close()
    assert (got.status, got.error.kind, got.body) == (403, "http", None)
    assert got.error_head == CF_BLOCK
    assert got.headers["server"] == "cloudflare"
    assert match(got).name == "cloudflare-block"


def test_fetch_keeps_at_most_64_kb_of_an_error_page(site):
    site.answer("/big.html", 403, b"<title>Forbidden</title>" + b"x" * 300_000, {"Server": "nginx"})
    session = make_session(FetchLimits())
    try:
        got = fetch(site.url("/big.html"), session, FetchLimits(timeout=5.0, retries=0))
    finally:
        session.close()
    assert got.error.kind == "http" and len(got.error_head) == 64 * 1024


@pytest.mark.parametrize(("name", "status", "headers", "body", "rule"), WALLS, ids=[w[0] for w in WALLS])
def test_a_wall_after_a_good_version_is_blocked_through_check_and_the_page_returns(
    site, archive, name, status, headers, body, rule
):
    path = f"/reports/{name}.html"
    url = site.url(path)
    good = page("Climate report", "The findings.")
    site.put(path, good)
    (target,) = watch(archive, url)
    checker = checker_for(archive, missing_after=2)
    checker.check_one(target)
    site.answer(path, status, body, headers)
    with capture_logs() as logs:
        reports = [checker.check_one(target) for _ in range(4)]
    site.put(path, good)
    back = checker.check_one(target)
    checker.close()

    assert [(r.outcome, r.status, r.version) for r in reports] == [("blocked", "blocked", 1)] * 4
    (event,) = [e for e in logs if e["event"] == DOCUMENT_BLOCKED]
    assert (event["status"], event["rule"], event["server"]) == (status, rule, headers["Server"])
    assert event["log_level"] == "warning"
    assert (back.outcome, back.status, back.events) == ("unchanged", "ok", (DOCUMENT_UNBLOCKED,))
    h = archive.history(url)
    assert len(h.versions) == 1
    kinds = [e.kind for e in h.events]
    assert kinds == [DOCUMENT_NEW, DOCUMENT_BLOCKED, DOCUMENT_UNBLOCKED]
    assert h.events[1].details["rule"] == rule


def test_a_blocked_target_is_checked_again_after_its_back_off_and_retry_after(site, archive):
    path = "/reports/busy.html"
    url = site.url(path)
    site.put(path, page("Busy", "Text."))
    (target,) = watch(archive, url)
    checker = checker_for(archive)
    checker.check_one(target)
    site.answer(path, 403, CF_BLOCK, CF)
    before = datetime.now(UTC)
    checker.check_one(target)
    (summary,) = archive.targets()
    assert summary.status == "blocked"
    assert timedelta(minutes=4) < summary.next_check_at - before < timedelta(minutes=6)
    checker.check_one(target)
    (summary,) = archive.targets("blocked")
    assert timedelta(minutes=9) < summary.next_check_at - before < timedelta(minutes=11)
    site.answer(path, 429, b"", {"Server": "nginx", "Retry-After": "1800"})
    checker.check_one(target)
    checker.close()
    (summary,) = archive.targets("blocked")
    assert timedelta(minutes=29) < summary.next_check_at - before < timedelta(minutes=31)
    assert summary.consecutive_failures == 3
    assert timedelta(minutes=5) == blocking.BLOCKED_BACKOFF


def test_check_status_and_targets_show_a_blocked_target_from_the_command_line(site, database_url, tmp_path):
    good, walled = site.url("/reports/open.html"), site.url("/reports/walled.html")
    site.put("/reports/open.html", page("Open", "Text."))
    site.put("/reports/walled.html", page("Walled", "Text."))
    m = Mirror(write_config(tmp_path / "mirror.toml", [good, walled]), database_url, tmp_path)
    m("check")
    site.answer("/reports/walled.html", 403, CF_CHALLENGE, {**CF, "cf-mitigated": "challenge"})

    report = m.json("check")
    assert report["outcomes"]["blocked"] == 1 and report["outcomes"]["failed"] == 0
    (walled_report,) = [t for t in report["targets"] if t["url"] == walled]
    assert walled_report["events"] == [DOCUMENT_BLOCKED] and walled_report["version"] == 1
    assert m.json("status")["targets_by_status"]["blocked"] == 1
    assert [t["url"] for t in m.json("targets", "--state", "blocked")["targets"]] == [walled]
    listed = m("targets", "--state", "blocked").stdout.decode()
    assert walled in listed and good not in listed
    history = m("history", walled).stdout.decode()
    summary = 'error=http status=403 rule=cloudflare-challenge title="Just a moment..."'
    assert f"{DOCUMENT_BLOCKED}  {summary}" in history


@pytest.mark.slow
def test_the_daemon_blocks_by_a_rule_from_the_config_and_backs_off(site, tmp_path, database_url):
    """`mirror run` reads the user's rule and `missing_after` as a span, blocks, and backs off."""
    from mirror.archive import Archive
    from mirror.db import open_engine
    from tests.test_service import Daemon, all_due_now, wait_for
    from tests.test_service import write_config as daemon_config

    path = "/reports/firewalled.html"
    url = site.url(path)
    site.put(path, page("Firewalled", "Text."))
    rule = (
        '\n[detect]\nmissing_after = "1d"\n\n[[detect.block_rules]]\nname = "sucuri"\nstatus = [403]\n'
        'headers = { server = "Sucuri" }\ntitle = "Sucuri WebSite Firewall.*"\n'
    )
    config = daemon_config(tmp_path / "mirror.toml", [url], extra=rule)
    archive = Archive(open_engine(database_url))
    all_due_now(archive, config)
    daemon = Daemon(config, database_url, tmp_path / "daemon.log")
    try:
        wait_for(lambda: daemon.named(DOCUMENT_NEW), what="the first version")
        wall = b"<html><head><title>Sucuri WebSite Firewall - Access Denied</title></head></html>"
        site.answer(path, 403, wall, {"Server": "Sucuri/Cloudproxy"})
        before = datetime.now(UTC)
        all_due_now(archive, config)
        (blocked,) = wait_for(lambda: daemon.named(DOCUMENT_BLOCKED), what="document.blocked")
        assert daemon.stop() == 0
        assert (blocked["rule"], blocked["status"], blocked["level"]) == ("sucuri", 403, "warning")
        (summary,) = archive.targets("blocked")
        assert timedelta(minutes=4) < summary.next_check_at - before < timedelta(minutes=6)
        assert [e.kind for e in archive.history(url).events] == [DOCUMENT_NEW, DOCUMENT_BLOCKED]
    finally:
        daemon.kill()
        archive.close()


def test_a_target_walled_before_its_first_version_is_blocked_then_new():
    wall = result(403, CF, CF_BLOCK)
    outcome = judge(TargetState(), wall, DetectPolicy(), NOW)
    assert (outcome.kind, outcome.state.status) == (OutcomeKind.BLOCKED, Status.BLOCKED)
    assert [e.kind for e in outcome.events] == [DOCUMENT_BLOCKED]
    first = judge(outcome.state, result(200, {}, GOOD), DetectPolicy(), NOW + HOUR)
    assert first.kind is OutcomeKind.NEW and first.new_version
    assert [e.kind for e in first.events] == [DOCUMENT_UNBLOCKED, DOCUMENT_NEW]
