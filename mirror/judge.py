"""The one place that decides what a check means. Pure: no I/O, no clock, no logging.

`judge(state, result, policy, now)` returns the target's next state and the events
to record. Rules:

- a 2xx body on a target with no version yet is `document.new`;
- a body whose SHA-256 differs from the latest version is `document.changed`
  (a new version); the same SHA-256, or a 304 to a conditional request, is unchanged;
- a failed fetch is one of two kinds (`not_served`):
  - "the host no longer serves this": no answer (`connect`, `dns`, `timeout`), a
    redirect loop or a chain past `max_redirects` (`too_many_redirects`: no reader gets
    the document either), or an HTTP error status (`http`: 4xx, 5xx) other than 429;
  - "we could not take it": the host answered, but with more than we accept
    (`too_large`), something we cannot decode or follow (`bad_content`, which also
    covers a request we could not send), or 429 Too Many Requests (busy with us, not
    without the document; `blocked` by the rule `rate-limited` below); and any kind
    not listed above.
  Every failure is a failed check (`consecutive_failures` counts them all). Only the
  first kind counts toward disappearance (`missing_checks`, reset by anything else):
  404 and 410 make a present document `document.disappeared` at once, the others
  after `policy.missing_after` of them in a row; one event on the transition only;
- a target with no version yet whose check fails is `unavailable`, never `gone`: a
  document that never appeared cannot disappear (its first content is `document.new`);
- a body (or 304) after `gone` is `document.reappeared`, saying whether the content
  is the same as the last good version (if not, a `document.changed` follows);
- an answer that came through redirects to another URL is `document.moved`, once
  per new destination, with `cross_host` when the host differs; validators are sent
  only to the URL whose answer gave them (`TargetState.conditional`), so the first
  fetch of a new destination is unconditional and its content, when it differs, is a
  new version at the time of the move;
- a fetch that robots.txt forbids is `skipped`: nothing about the document changes;
- an answer that matches a rule of `mirror.blocking` (a bot wall, a challenge, a rate
  limit; ours or the user's) is `blocked`, checked before anything else is made of it:
  no version, no change, and it never counts toward disappearance (`missing_checks`
  restart). It is a failed check (`consecutive_failures`, which sets the back-off).
  The target becomes `blocked`, with one `document.blocked` event on the transition
  (its evidence: status, server, title, rule); a `gone` target stays `gone` (a wall
  says nothing of the document). The first answer after a blocked one that is not
  blocked raises `document.unblocked`, before whatever else it means;
- a soft 404 is `document.disappeared` with `soft: true` and its evidence, not a move
  nor a version (`mirror.soft404` finds it): a redirect to a home page, or to the page
  `policy.soft_404_shared` other targets redirect to (`shared_redirects`, counted by the
  caller), or a 200 page whose title says it is not found. The page is kept with the
  check as evidence (`Outcome.evidence`); the target is `gone`, its validators dropped,
  and a soft 404 again while `gone` is a failed check with no event. A redirect to any
  other page is still `document.moved`;
- `policy.missing_for`, when set, replaces the count of `missing_after`: a document
  is gone when every check since the first of its run of not-served ones
  (`missing_since`) failed so, over at least that span.

A change is flagged `suspicious` (the target keeps the reason until a later,
unsuspicious version) when its text shrinks by more than `policy.shrink_share`,
when the page turns into a short "not found" or placeholder page served with 200,
or when a redirect leaves the host.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from urllib.parse import urlsplit

from mirror import blocking, soft404
from mirror.domain import (
    BlockRule,
    ChangeDiff,
    DetectPolicy,
    Event,
    FetchResult,
    Outcome,
    OutcomeKind,
    Status,
    TargetState,
)
from mirror.events import (
    DOCUMENT_BLOCKED,
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_MOVED,
    DOCUMENT_NEW,
    DOCUMENT_REAPPEARED,
    DOCUMENT_UNBLOCKED,
)

HARD_GONE_STATUSES = frozenset({404, 410})
# Failure kinds (FetchFailure.kind) that say the host no longer serves the document.
NOT_SERVED_ERRORS = frozenset({"connect", "dns", "timeout", "too_many_redirects"})
HTTP_ERROR = "http"  # FetchFailure.kind of an answer with an error status
BUSY_STATUSES = frozenset({429})  # the host is busy with us: no sign that it lost the page
ROBOTS_ERROR = "robots"  # FetchFailure.kind of a fetch that robots.txt forbids

# Words of the pages that replace a document when it is taken down or a site is lost.
PLACEHOLDER_WORDS = re.compile(
    r"\b(?:not found|404|page (?:has been |was )?(?:removed|deleted)|no longer (?:available|exists)|"
    r"does not exist|doesn't exist|coming soon|under construction|(?:account|site|website) "
    r"(?:has been |is )?suspended|domain (?:is )?(?:for sale|parked|expired)|parked (?:free|domain)|"
    r"access denied|forbidden|unavailable for legal reasons|removed (?:at|by|due)|temporarily unavailable|"
    r"maintenance)\b",
    re.IGNORECASE,
)
CROSS_HOST_REASON = "redirect leaves the host"


def judge(
    state: TargetState, result: FetchResult, policy: DetectPolicy, now: datetime, *, shared_redirects: int = 0
) -> Outcome:
    """Return the Outcome of one fetch of a target in `state`.

    `shared_redirects`: how many other targets redirect to `result.final_url` (soft 404s).
    """
    if result.error is not None and result.error.kind == ROBOTS_ERROR:
        return Outcome(OutcomeKind.SKIPPED, state)
    rule = blocking.match(result, policy.block_rules)
    if rule is not None:
        return _blocked(state, result, rule, now)
    answered = result.error is None and (result.not_modified or result.body is not None)
    soft = soft404.evidence(state, result, policy, shared_redirects) if answered else None
    if soft is not None:
        outcome = _soft_gone(state, result, soft, now)
    elif answered and result.not_modified:
        outcome = _not_modified(state, result, now)
    elif answered:
        outcome = _got_body(state, result, now)
    else:
        outcome = _failed(state, result, policy, now)
    if state.status is Status.BLOCKED:
        unblocked = Event(
            DOCUMENT_UNBLOCKED,
            result.url,
            now,
            status=result.status,
            details={"outcome": str(outcome.kind), "blocked_checks": state.consecutive_failures},
        )
        outcome = replace(outcome, events=(unblocked, *outcome.events))
    return outcome


def _blocked(state: TargetState, result: FetchResult, rule: BlockRule, now: datetime) -> Outcome:
    new_state = replace(
        state,
        status=Status.GONE if state.status is Status.GONE else Status.BLOCKED,
        consecutive_failures=state.consecutive_failures + 1,
        missing_checks=0,
        missing_since=None,
    )
    events: tuple[Event, ...] = ()
    if state.status not in (Status.BLOCKED, Status.GONE):
        event = Event(
            DOCUMENT_BLOCKED,
            result.url,
            now,
            old_sha256=state.current_sha256,
            status=result.status,
            error=result.error.kind if result.error else None,
            details=blocking.evidence(result, rule),
        )
        events = (event,)
    return Outcome(OutcomeKind.BLOCKED, new_state, events)


def with_diff(outcome: Outcome, diff: ChangeDiff, policy: DetectPolicy) -> Outcome:
    """Return `outcome` with `diff` attached, its change event's line counts, `significance`
    and `noise` filled in, and the change flagged `suspicious` when it looks like a takedown
    or tampering (whatever its significance: a takedown may be small)."""
    reasons = suspicious_reasons(diff, policy)
    moved_reason = outcome.state.suspicious if outcome.state.suspicious == CROSS_HOST_REASON else None
    state = replace(outcome.state, suspicious="; ".join(reasons) if reasons else moved_reason)
    fields: dict[str, object] = {
        "old_size": diff.old_size,
        "new_size": diff.new_size,
        "text": diff.text,
        "lines_added": diff.lines_added,
        "lines_removed": diff.lines_removed,
        "significance": diff.significance,
        "noise": list(diff.noise),
    }
    if reasons:
        fields.update(suspicious=True, reasons=reasons)
    events = tuple(e.with_details(**fields) if e.kind == DOCUMENT_CHANGED else e for e in outcome.events)
    return replace(outcome, events=events, diff=diff, state=state)


def suspicious_reasons(diff: ChangeDiff, policy: DetectPolicy) -> list[str]:
    """Return why a change looks like a takedown or tampering (empty when it does not)."""
    reasons = []
    old_len, new_len = (diff.old_chars, diff.new_chars) if diff.text else (diff.old_size, diff.new_size)
    unit = "text" if diff.text else "bytes"
    if old_len >= policy.shrink_min_chars and new_len < old_len * (1 - policy.shrink_share):
        reasons.append(f"{unit} shrank by {100 - 100 * new_len // max(old_len, 1)}%")
    if diff.text and new_len <= policy.placeholder_max_chars and PLACEHOLDER_WORDS.search(diff.new_head):
        reasons.append("short placeholder or not-found page served as a document")
    return reasons


def _not_modified(state: TargetState, result: FetchResult, now: datetime) -> Outcome:
    events: tuple[Event, ...] = ()
    kind = OutcomeKind.UNCHANGED
    if state.status is Status.GONE:
        kind = OutcomeKind.REAPPEARED
        events = (_reappeared(state, result, now, same=True),)
    moved_to, moved_events = _moved(state, result, now)
    new_state = replace(
        state,
        status=Status.MOVED if moved_to else Status.OK,
        consecutive_failures=0,
        missing_checks=0,
        missing_since=None,
        moved_to=moved_to,
        suspicious=_moved_suspicion(state, moved_to, moved_events, new_version=False),
        etag=result.headers.get("etag", state.etag),
        last_modified=result.headers.get("last-modified", state.last_modified),
    )
    if moved_events:
        kind = OutcomeKind.MOVED
    return Outcome(kind, new_state, events + moved_events, seen_again=state.current_version > 0)


def _got_body(state: TargetState, result: FetchResult, now: datetime) -> Outcome:
    assert result.body is not None  # guarded by judge()
    sha = result.body_sha256
    events: list[Event] = []
    new_version = sha != state.current_sha256 or state.current_version == 0
    if state.current_version == 0:
        kind = OutcomeKind.NEW
        events.append(
            Event(
                DOCUMENT_NEW,
                result.url,
                now,
                new_sha256=sha,
                status=result.status,
                details={"size": len(result.body), "content_type": result.content_type},
            )
        )
    else:
        kind = OutcomeKind.CHANGED if new_version else OutcomeKind.UNCHANGED
        if state.status is Status.GONE:
            kind = OutcomeKind.REAPPEARED
            events.append(_reappeared(state, result, now, same=not new_version))
        if new_version:
            events.append(
                Event(
                    DOCUMENT_CHANGED,
                    result.url,
                    now,
                    old_sha256=state.current_sha256,
                    new_sha256=sha,
                    status=result.status,
                    details={"version": state.current_version + 1, "content_type": result.content_type},
                )
            )
    moved_to, moved_events = _moved(state, result, now)
    if moved_events and kind is not OutcomeKind.NEW:
        kind = OutcomeKind.MOVED
    new_state = TargetState(
        status=Status.MOVED if moved_to else Status.OK,
        current_sha256=sha,
        current_version=state.current_version + 1 if new_version else state.current_version,
        content_type=result.content_type,
        consecutive_failures=0,
        etag=result.headers.get("etag"),
        last_modified=result.headers.get("last-modified"),
        moved_to=moved_to,
        suspicious=_moved_suspicion(state, moved_to, moved_events, new_version=new_version),
    )
    return Outcome(
        kind,
        new_state,
        (*events, *moved_events),
        new_version=new_version,
        seen_again=not new_version,
        diff_from=state.current_sha256 if new_version and state.current_version > 0 else None,
    )


def _soft_gone(
    state: TargetState, result: FetchResult, evidence: dict[str, object], now: datetime
) -> Outcome:
    redirected = result.final_url != result.url
    new_state = replace(
        state,
        status=Status.GONE,
        consecutive_failures=state.consecutive_failures + 1,
        missing_checks=0,
        missing_since=None,
        moved_to=result.final_url if redirected else None,
        etag=None,  # the validators were the document's: the next fetch asks afresh
        last_modified=None,
    )
    kept = result.body is not None  # a 304 through the redirect: no page to keep
    if state.status is Status.GONE:
        return Outcome(OutcomeKind.FAILED, new_state, evidence=kept)
    event = Event(
        DOCUMENT_DISAPPEARED,
        result.url,
        now,
        old_sha256=state.current_sha256,
        status=result.status,
        details={
            "soft": True,
            **evidence,
            "evidence_sha256": result.body_sha256,  # None after a 304
            "redirects": list(result.redirects),
            "consecutive_failures": new_state.consecutive_failures,
        },
    )
    return Outcome(OutcomeKind.DISAPPEARED, new_state, (event,), evidence=kept)


def not_served(result: FetchResult) -> bool:
    """Return True when a failed fetch says the host no longer serves the document (see the rules)."""
    if result.error is None:
        return False
    if result.error.kind == HTTP_ERROR:
        return result.status is not None and result.status not in BUSY_STATUSES
    return result.error.kind in NOT_SERVED_ERRORS


def _failed(state: TargetState, result: FetchResult, policy: DetectPolicy, now: datetime) -> Outcome:
    counts = not_served(result)
    new_state = replace(
        state,
        consecutive_failures=state.consecutive_failures + 1,
        missing_checks=state.missing_checks + 1 if counts else 0,
        missing_since=(state.missing_since or now) if counts else None,
    )
    if state.current_version == 0:  # nothing appeared, so nothing can disappear
        return Outcome(OutcomeKind.FAILED, replace(new_state, status=Status.UNAVAILABLE))
    if state.status is Status.GONE:
        return Outcome(OutcomeKind.FAILED, new_state)
    hard = counts and result.status in HARD_GONE_STATUSES
    if not (hard or _missing_long_enough(new_state, policy, now)):
        return Outcome(OutcomeKind.FAILED, replace(new_state, status=Status.FAILING))
    failures = new_state.consecutive_failures
    new_state = replace(new_state, status=Status.GONE)
    event = Event(
        DOCUMENT_DISAPPEARED,
        result.url,
        now,
        old_sha256=state.current_sha256,
        status=result.status,
        error=result.error.kind if result.error else None,
        details={
            "consecutive_failures": failures,
            "message": result.error.message if result.error else None,
        },
    )
    return Outcome(OutcomeKind.DISAPPEARED, new_state, (event,))


def _missing_long_enough(state: TargetState, policy: DetectPolicy, now: datetime) -> bool:
    """Return whether the run of not-served checks is long enough to call the document gone."""
    if policy.missing_for is None:
        return state.missing_checks >= policy.missing_after
    # A run whose start is not known (recorded before it was kept) starts now.
    since = state.missing_since or now
    return state.missing_checks > 0 and now - since >= policy.missing_for


def _moved_suspicion(
    state: TargetState, moved_to: str | None, moved_events: tuple[Event, ...], *, new_version: bool
) -> str | None:
    """Return the suspicion a body carries before its diff is known (`with_diff` adds the rest)."""
    if any(e.details.get("cross_host") for e in moved_events):
        return CROSS_HOST_REASON
    if moved_to is None and state.suspicious == CROSS_HOST_REASON:
        return None  # served in place again
    return None if new_version else state.suspicious


def _reappeared(state: TargetState, result: FetchResult, now: datetime, *, same: bool) -> Event:
    return Event(
        DOCUMENT_REAPPEARED,
        result.url,
        now,
        old_sha256=state.current_sha256,
        new_sha256=result.body_sha256 if result.body is not None else state.current_sha256,
        status=result.status,
        details={"same_content": same, "consecutive_failures": state.consecutive_failures},
    )


def _moved(state: TargetState, result: FetchResult, now: datetime) -> tuple[str | None, tuple[Event, ...]]:
    """Return the redirect destination (None when served in place) and a move event when it is new."""
    if result.final_url == result.url:
        return None, ()
    if result.final_url == state.moved_to:
        return state.moved_to, ()
    cross_host = urlsplit(result.url).netloc != urlsplit(result.final_url).netloc
    event = Event(
        DOCUMENT_MOVED,
        result.url,
        now,
        old_sha256=state.current_sha256,
        new_sha256=result.body_sha256,
        status=result.status,
        details={
            "to": result.final_url,
            "previous_to": state.moved_to,
            "cross_host": cross_host,
            "redirects": list(result.redirects),
            **({"suspicious": True, "reasons": [CROSS_HOST_REASON]} if cross_host else {}),
        },
    )
    return result.final_url, (event,)
