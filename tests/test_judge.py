"""judge() is pure: every rule is a row here, with exact `now` and no I/O."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from mirror.domain import (
    ChangeDiff,
    Conditional,
    DetectPolicy,
    FetchFailure,
    FetchResult,
    OutcomeKind,
    Status,
    TargetState,
)
from mirror.events import (
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_MOVED,
    DOCUMENT_NEW,
    DOCUMENT_REAPPEARED,
)
from mirror.judge import judge, with_diff

URL = "https://archive.example/etext/essay.html"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = DetectPolicy(missing_after=3)
A = b"<p>first text</p>"
B = b"<p>second text</p>"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ok(body: bytes, *, final_url: str = URL, etag: str | None = None, redirects: tuple[str, ...] = ()):
    headers = {"content-type": "text/html"}
    if etag:
        headers["etag"] = etag
    return FetchResult(URL, final_url, 200, headers, body, sha(body), None, NOW, 0.01, redirects)


def not_modified():
    return FetchResult(URL, URL, 304, {}, None, None, None, NOW, 0.01)


def http_error(status: int):
    return FetchResult(URL, URL, status, {}, None, None, FetchFailure("http", f"HTTP {status}"), NOW, 0.01)


def net_error(kind: str = "timeout"):
    return FetchResult(URL, URL, None, {}, None, None, FetchFailure(kind, "it failed"), NOW, 30.0)


NEW = TargetState()
HAS_A = TargetState(Status.OK, sha(A), 1, "text/html", etag='"a"')
FAILING_TWICE = TargetState(Status.FAILING, sha(A), 1, "text/html", consecutive_failures=2)
FAILING_ONCE = TargetState(Status.FAILING, sha(A), 1, "text/html", consecutive_failures=1)
GONE = TargetState(Status.GONE, sha(A), 1, "text/html", consecutive_failures=1)
NEVER_SEEN_FAILING = TargetState(Status.FAILING, None, 0, None, consecutive_failures=2)
UNAVAILABLE = TargetState(Status.UNAVAILABLE, None, 0, None, consecutive_failures=1)
LEGACY_GONE_NEVER_SEEN = TargetState(Status.GONE, None, 0, None, consecutive_failures=3)  # before 0003
FAILING_TWICE_MISSING = TargetState(
    Status.FAILING, sha(A), 1, "text/html", consecutive_failures=2, missing_checks=2
)


@pytest.mark.parametrize(
    ("state", "result", "kind", "events", "status"),
    [
        (NEW, ok(A), OutcomeKind.NEW, [DOCUMENT_NEW], Status.OK),
        (HAS_A, ok(A), OutcomeKind.UNCHANGED, [], Status.OK),
        (HAS_A, not_modified(), OutcomeKind.UNCHANGED, [], Status.OK),
        (HAS_A, ok(B), OutcomeKind.CHANGED, [DOCUMENT_CHANGED], Status.OK),
        (HAS_A, http_error(404), OutcomeKind.DISAPPEARED, [DOCUMENT_DISAPPEARED], Status.GONE),
        (HAS_A, http_error(410), OutcomeKind.DISAPPEARED, [DOCUMENT_DISAPPEARED], Status.GONE),
        (HAS_A, http_error(500), OutcomeKind.FAILED, [], Status.FAILING),
        (HAS_A, net_error("timeout"), OutcomeKind.FAILED, [], Status.FAILING),
        (FAILING_ONCE, net_error("dns"), OutcomeKind.FAILED, [], Status.FAILING),
        (
            FAILING_TWICE_MISSING,
            net_error("connect"),
            OutcomeKind.DISAPPEARED,
            [DOCUMENT_DISAPPEARED],
            Status.GONE,
        ),
        (FAILING_TWICE_MISSING, ok(A), OutcomeKind.UNCHANGED, [], Status.OK),
        # Two failures that were no sign of absence (too_large, say): a third is the first that counts.
        (FAILING_TWICE, net_error("connect"), OutcomeKind.FAILED, [], Status.FAILING),
        (GONE, http_error(404), OutcomeKind.FAILED, [], Status.GONE),
        (GONE, net_error(), OutcomeKind.FAILED, [], Status.GONE),
        (GONE, ok(A), OutcomeKind.REAPPEARED, [DOCUMENT_REAPPEARED], Status.OK),
        (GONE, not_modified(), OutcomeKind.REAPPEARED, [DOCUMENT_REAPPEARED], Status.OK),
        (GONE, ok(B), OutcomeKind.REAPPEARED, [DOCUMENT_REAPPEARED, DOCUMENT_CHANGED], Status.OK),
        # A document that never appeared is not gone: nothing disappeared.
        (NEW, http_error(404), OutcomeKind.FAILED, [], Status.UNAVAILABLE),
        (NEW, http_error(410), OutcomeKind.FAILED, [], Status.UNAVAILABLE),
        (NEW, net_error(), OutcomeKind.FAILED, [], Status.UNAVAILABLE),
        (NEW, net_error("too_large"), OutcomeKind.FAILED, [], Status.UNAVAILABLE),
        (NEVER_SEEN_FAILING, net_error(), OutcomeKind.FAILED, [], Status.UNAVAILABLE),
        (NEVER_SEEN_FAILING, http_error(404), OutcomeKind.FAILED, [], Status.UNAVAILABLE),
        (NEVER_SEEN_FAILING, ok(A), OutcomeKind.NEW, [DOCUMENT_NEW], Status.OK),
        (UNAVAILABLE, ok(A), OutcomeKind.NEW, [DOCUMENT_NEW], Status.OK),
        (UNAVAILABLE, http_error(404), OutcomeKind.FAILED, [], Status.UNAVAILABLE),
        (LEGACY_GONE_NEVER_SEEN, net_error(), OutcomeKind.FAILED, [], Status.UNAVAILABLE),
    ],
)
def test_each_rule_gives_its_outcome_events_and_status(state, result, kind, events, status):
    outcome = judge(state, result, POLICY, NOW)
    assert outcome.kind is kind
    assert [e.kind for e in outcome.events] == events
    assert outcome.state.status is status
    assert all(e.url == URL and e.at == NOW for e in outcome.events)


def test_a_timeout_counts_as_disappeared_only_after_missing_after_failures():
    state = HAS_A
    kinds = []
    for _ in range(4):
        outcome = judge(state, net_error("timeout"), POLICY, NOW)
        kinds.append(outcome.kind)
        state = outcome.state
    assert kinds == [OutcomeKind.FAILED, OutcomeKind.FAILED, OutcomeKind.DISAPPEARED, OutcomeKind.FAILED]
    assert state.consecutive_failures == 4


def failure(kind: str, status: int | None = None):
    message = f"HTTP {status}" if kind == "http" else "it failed"
    return FetchResult(URL, URL, status, {}, None, None, FetchFailure(kind, message), NOW, 0.1)


# What "the host no longer serves this" means; everything else is "we could not take it".
NOT_SERVED = [
    failure("connect"),
    failure("dns"),
    failure("timeout"),
    failure("too_many_redirects", 302),
    failure("http", 500),
    failure("http", 502),
    failure("http", 503),
    failure("http", 403),
    failure("http", 401),
    failure("http", 451),
]
NOT_TAKEN = [
    failure("too_large", 200),
    failure("bad_content", 200),
    failure("bad_content", None),  # a header value we could not send: nothing reached the host
    failure("some_future_kind"),
]


@pytest.mark.parametrize("result", NOT_SERVED, ids=lambda r: f"{r.error.kind}-{r.status}")
def test_a_failure_that_says_the_host_no_longer_serves_it_disappears_after_missing_after(result):
    state, kinds = HAS_A, []
    for _ in range(POLICY.missing_after):
        outcome = judge(state, result, POLICY, NOW)
        kinds.append(outcome.kind)
        state = outcome.state
    assert kinds == [OutcomeKind.FAILED, OutcomeKind.FAILED, OutcomeKind.DISAPPEARED]
    assert state.status is Status.GONE
    assert state.consecutive_failures == state.missing_checks == 3


@pytest.mark.parametrize("result", NOT_TAKEN, ids=lambda r: f"{r.error.kind}-{r.status}")
def test_a_failure_that_says_we_could_not_take_it_never_disappears(result):
    state = HAS_A
    for attempt in range(1, 3 * POLICY.missing_after + 1):
        outcome = judge(state, result, POLICY, NOW)
        assert outcome.kind is OutcomeKind.FAILED
        assert outcome.events == ()
        state = outcome.state
        assert (state.status, state.consecutive_failures) == (Status.FAILING, attempt)
        assert state.missing_checks == 0


def test_an_answer_we_could_not_take_breaks_a_run_of_missing_checks():
    state = HAS_A
    kinds = []
    for result in (failure("timeout"), failure("timeout"), failure("too_large", 200), failure("timeout")):
        outcome = judge(state, result, POLICY, NOW)
        kinds.append(outcome.kind)
        state = outcome.state
    assert kinds == [OutcomeKind.FAILED] * 4  # the host answered the third check: not three in a row
    assert (state.consecutive_failures, state.missing_checks) == (4, 1)
    outcome = judge(judge(state, failure("timeout"), POLICY, NOW).state, failure("connect"), POLICY, NOW)
    assert outcome.kind is OutcomeKind.DISAPPEARED
    assert outcome.events[0].details["consecutive_failures"] == 6


def test_a_404_disappears_at_once_even_after_answers_we_could_not_take():
    state = judge(HAS_A, failure("too_large", 200), POLICY, NOW).state
    outcome = judge(state, http_error(404), POLICY, NOW)
    assert outcome.kind is OutcomeKind.DISAPPEARED


def test_content_again_clears_both_counters():
    state = judge(FAILING_TWICE_MISSING, ok(A), POLICY, NOW).state
    assert (state.consecutive_failures, state.missing_checks) == (0, 0)
    state = judge(FAILING_TWICE_MISSING, not_modified(), POLICY, NOW).state
    assert (state.consecutive_failures, state.missing_checks) == (0, 0)


def test_validators_are_sent_only_to_the_url_that_gave_them():
    moved_url = "https://archive.example/etext/q.html"
    in_place = judge(NEW, ok(A, etag='"a"'), POLICY, NOW).state
    assert in_place.conditional() == Conditional('"a"', None, None)  # None: the target's own URL
    moved = judge(in_place, ok(B, final_url=moved_url, etag='"b"', redirects=(URL,)), POLICY, NOW).state
    assert moved.conditional() == Conditional('"b"', None, moved_url)
    back = judge(moved, ok(A, etag='"a2"'), POLICY, NOW).state
    assert back.conditional() == Conditional('"a2"', None, None)


def test_a_move_to_other_content_is_a_new_version_at_the_time_of_the_move():
    moved_url = "https://archive.example/etext/q.html"
    outcome = judge(HAS_A, ok(B, final_url=moved_url, redirects=(URL,)), POLICY, NOW)
    assert outcome.kind is OutcomeKind.MOVED
    assert [e.kind for e in outcome.events] == [DOCUMENT_CHANGED, DOCUMENT_MOVED]
    assert outcome.new_version and outcome.state.current_version == 2
    assert all(e.at == NOW for e in outcome.events)


@pytest.mark.parametrize("missing_after", [1, 2, 5])
def test_missing_after_is_the_exact_boundary(missing_after):
    state = HAS_A
    for attempt in range(1, missing_after + 1):
        outcome = judge(state, net_error(), DetectPolicy(missing_after=missing_after), NOW)
        state = outcome.state
        expected = OutcomeKind.DISAPPEARED if attempt == missing_after else OutcomeKind.FAILED
        assert outcome.kind is expected, attempt


def test_change_makes_the_next_version_and_asks_for_a_diff_against_the_old_content():
    outcome = judge(HAS_A, ok(B, etag='"b"'), POLICY, NOW)
    assert outcome.new_version and not outcome.seen_again
    assert outcome.state.current_version == 2
    assert outcome.state.current_sha256 == sha(B)
    assert outcome.state.etag == '"b"'
    assert outcome.diff_from == sha(A)
    (event,) = outcome.events
    assert (event.old_sha256, event.new_sha256) == (sha(A), sha(B))


def test_unchanged_content_is_seen_again_not_a_new_version():
    for result in (ok(A), not_modified()):
        outcome = judge(HAS_A, result, POLICY, NOW)
        assert outcome.seen_again and not outcome.new_version
        assert outcome.state.current_version == 1
        assert outcome.diff_from is None


def test_not_modified_keeps_the_validators_for_the_next_conditional_request():
    outcome = judge(HAS_A, not_modified(), POLICY, NOW)
    assert outcome.state.etag == '"a"'


def test_reappeared_says_whether_the_content_is_the_same_as_the_last_good_version():
    same = judge(GONE, ok(A), POLICY, NOW).events[0]
    other = judge(GONE, ok(B), POLICY, NOW).events[0]
    assert same.details["same_content"] is True
    assert other.details["same_content"] is False


def test_disappeared_event_names_the_lost_content_and_the_reason():
    (event,) = judge(HAS_A, http_error(410), POLICY, NOW).events
    assert event.old_sha256 == sha(A)
    assert event.status == 410
    assert event.error == "http"


def test_a_redirect_elsewhere_is_one_moved_event_then_quiet():
    moved_url = "https://mirror-host.example/essay.html"
    first = judge(HAS_A, ok(A, final_url=moved_url, redirects=(URL,)), POLICY, NOW)
    assert first.kind is OutcomeKind.MOVED
    (event,) = first.events
    assert event.kind == DOCUMENT_MOVED
    assert event.details["to"] == moved_url
    assert event.details["cross_host"] is True
    assert first.state.status is Status.MOVED
    second = judge(first.state, ok(A, final_url=moved_url, redirects=(URL,)), POLICY, NOW)
    assert second.events == ()
    assert second.state.status is Status.MOVED


def test_a_redirect_within_the_host_is_moved_without_cross_host():
    same_host = "https://archive.example/etext/new-place/essay.html"
    (event,) = judge(HAS_A, ok(A, final_url=same_host, redirects=(URL,)), POLICY, NOW).events
    assert event.details["cross_host"] is False


def test_a_moved_target_served_in_place_again_is_ok():
    moved = judge(HAS_A, ok(A, final_url="https://b.example/x", redirects=(URL,)), POLICY, NOW).state
    back = judge(moved, ok(A), POLICY, NOW)
    assert back.state.status is Status.OK
    assert back.state.moved_to is None


def test_with_diff_fills_line_counts_of_the_change_event():
    outcome = judge(HAS_A, ok(B), POLICY, NOW)
    diff = ChangeDiff(
        old_size=len(A), new_size=len(B), text=True, lines_added=3, lines_removed=1, unified="-a\n+b"
    )
    (event,) = with_diff(outcome, diff, POLICY).events
    assert event.details["lines_added"] == 3
    assert event.details["lines_removed"] == 1
    assert event.details["version"] == 2


def _change(old_chars: int, new_chars: int, head: str = "", *, text: bool = True) -> ChangeDiff:
    return ChangeDiff(
        old_size=old_chars,
        new_size=new_chars,
        text=text,
        lines_added=1,
        lines_removed=5,
        old_chars=old_chars,
        new_chars=new_chars,
        new_head=head,
    )


@pytest.mark.parametrize(
    ("diff", "reason"),
    [
        (_change(10_000, 3_000, "Most of the essay is gone"), "text shrank by 70%"),
        (_change(10_000, 200, "404 Not Found. The page you requested does not exist."), "placeholder"),
        (_change(1_000, 900, "Account suspended. Contact your hosting provider."), "placeholder"),
        (_change(900_000, 100_000, text=False), "bytes shrank by 89%"),
    ],
)
def test_a_change_that_looks_like_a_takedown_is_suspicious(diff, reason):
    outcome = with_diff(judge(HAS_A, ok(B), POLICY, NOW), diff, POLICY)
    (event,) = outcome.events
    assert event.details["suspicious"] is True
    assert any(reason in r for r in event.details["reasons"])
    assert outcome.state.suspicious is not None and reason.split()[0] in outcome.state.suspicious


@pytest.mark.parametrize(
    "diff",
    [
        _change(10_000, 9_000, "An essay, lightly edited."),
        _change(100, 10, "tiny page"),  # too small to judge a shrink
        _change(
            10_000, 8_000, "A long essay that mentions a 404 page in passing. " * 100
        ),  # long: not a placeholder
    ],
)
def test_an_ordinary_edit_is_not_suspicious(diff):
    outcome = with_diff(judge(HAS_A, ok(B), POLICY, NOW), diff, POLICY)
    assert "suspicious" not in outcome.events[0].details
    assert outcome.state.suspicious is None


def test_the_suspicion_stays_until_a_later_unsuspicious_version():
    flagged = with_diff(judge(HAS_A, ok(B), POLICY, NOW), _change(10_000, 100, "Not Found"), POLICY).state
    assert flagged.suspicious
    assert judge(flagged, ok(B), POLICY, NOW).state.suspicious == flagged.suspicious  # unchanged: kept
    later = with_diff(judge(flagged, ok(A), POLICY, NOW), _change(100, 10_000, "The essay is back."), POLICY)
    assert later.state.suspicious is None


def test_a_redirect_to_another_host_is_suspicious_and_within_the_host_is_not():
    away = judge(HAS_A, ok(A, final_url="https://elsewhere.example/x", redirects=(URL,)), POLICY, NOW)
    assert away.events[0].details["suspicious"] is True
    assert away.state.suspicious == "redirect leaves the host"
    inside = judge(HAS_A, ok(A, final_url="https://archive.example/y", redirects=(URL,)), POLICY, NOW)
    assert "suspicious" not in inside.events[0].details
    assert inside.state.suspicious is None


def test_a_fetch_forbidden_by_robots_changes_nothing():
    robots = FetchResult(URL, URL, None, {}, None, None, FetchFailure("robots", "disallowed"), NOW, 0.0)
    outcome = judge(FAILING_ONCE, robots, POLICY, NOW)
    assert outcome.kind is OutcomeKind.SKIPPED
    assert outcome.state == FAILING_ONCE
    assert outcome.events == ()


# -- `detect.missing_after = "2d"`: a span, the same on any schedule ---------------------------


@pytest.mark.parametrize(("every", "checks_to_gone"), [(timedelta(hours=1), 49), (timedelta(days=1), 3)])
def test_missing_for_two_days_is_gone_after_two_days_of_failures_hourly_or_daily(every, checks_to_gone):
    policy = DetectPolicy(missing_for=timedelta(days=2))
    state, kinds, now = HAS_A, [], NOW
    while OutcomeKind.DISAPPEARED not in kinds:
        outcome = judge(state, net_error("connect"), policy, now)
        kinds.append(outcome.kind)
        state = outcome.state
        now += every
    assert len(kinds) == checks_to_gone  # the first failure at t=0, the last at t=2d
    assert kinds[:-1] == [OutcomeKind.FAILED] * (checks_to_gone - 1)
    assert state.status is Status.GONE and state.missing_since == NOW
    assert now - every - NOW == timedelta(days=2)


def test_missing_for_restarts_when_a_check_is_served_and_404_is_still_gone_at_once():
    policy = DetectPolicy(missing_for=timedelta(days=2))
    state = judge(HAS_A, net_error("timeout"), policy, NOW).state
    assert state.missing_since == NOW
    state = judge(state, ok(A), policy, NOW + timedelta(days=1)).state
    assert (state.missing_checks, state.missing_since) == (0, None)
    later = NOW + timedelta(days=1, hours=1)
    state = judge(state, net_error("timeout"), policy, later).state
    outcome = judge(state, net_error("timeout"), policy, NOW + timedelta(days=3))
    assert outcome.kind is OutcomeKind.FAILED and outcome.state.missing_since == later  # 1d23h: not yet
    assert judge(outcome.state, net_error("timeout"), policy, later + timedelta(days=2)).kind is (
        OutcomeKind.DISAPPEARED
    )
    assert judge(HAS_A, http_error(404), policy, NOW).kind is OutcomeKind.DISAPPEARED


def test_an_answer_we_could_not_take_breaks_a_span_of_missing_checks():
    policy = DetectPolicy(missing_for=timedelta(hours=2))
    state = judge(HAS_A, net_error("timeout"), policy, NOW).state
    state = judge(state, failure("too_large", 200), policy, NOW + timedelta(hours=1)).state
    assert state.missing_since is None
    outcome = judge(state, net_error("timeout"), policy, NOW + timedelta(hours=3))
    assert outcome.kind is OutcomeKind.FAILED and outcome.state.missing_since == NOW + timedelta(hours=3)


def test_a_run_recorded_before_its_start_was_kept_counts_from_its_next_check():
    policy = DetectPolicy(missing_for=timedelta(days=2))
    outcome = judge(FAILING_TWICE_MISSING, net_error("timeout"), policy, NOW)
    assert outcome.kind is OutcomeKind.FAILED and outcome.state.missing_since == NOW
