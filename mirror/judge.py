"""The one place that decides what a check means. Pure: no I/O, no clock, no logging.

`judge(state, result, policy, now)` returns the target's next state and the events
to record. Rules:

- a 2xx body on a target with no version yet is `document.new`;
- a body whose SHA-256 differs from the latest version is `document.changed`
  (a new version); the same SHA-256, or a 304 to a conditional request, is unchanged;
- 404 and 410 make a present document `document.disappeared` at once; any other
  failure (timeout, connection, DNS, 5xx, too large, ...) does so after
  `policy.missing_after` consecutive failed checks; one event on the transition only;
- a body (or 304) after `gone` is `document.reappeared`, saying whether the content
  is the same as the last good version (if not, a `document.changed` follows);
- an answer that came through redirects to another URL is `document.moved`, once
  per new destination, with `cross_host` when the host differs.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from urllib.parse import urlsplit

from mirror import log
from mirror.domain import (
    ChangeDiff,
    DetectPolicy,
    Event,
    FetchResult,
    Outcome,
    OutcomeKind,
    Status,
    TargetState,
)

HARD_GONE_STATUSES = frozenset({404, 410})


def judge(state: TargetState, result: FetchResult, policy: DetectPolicy, now: datetime) -> Outcome:
    """Return the Outcome of one fetch of a target in `state`."""
    if result.error is None and result.not_modified:
        return _not_modified(state, result, now)
    if result.error is None and result.body is not None:
        return _got_body(state, result, now)
    return _failed(state, result, policy, now)


def with_diff(outcome: Outcome, diff: ChangeDiff) -> Outcome:
    """Return `outcome` with `diff` attached and its change event's line counts filled in."""
    events = tuple(
        e.with_details(
            old_size=diff.old_size,
            new_size=diff.new_size,
            text=diff.text,
            lines_added=diff.lines_added,
            lines_removed=diff.lines_removed,
        )
        if e.kind == log.DOCUMENT_CHANGED
        else e
        for e in outcome.events
    )
    return replace(outcome, events=events, diff=diff)


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
        moved_to=moved_to,
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
                log.DOCUMENT_NEW,
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
                    log.DOCUMENT_CHANGED,
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
    )
    return Outcome(
        kind,
        new_state,
        (*events, *moved_events),
        new_version=new_version,
        seen_again=not new_version,
        diff_from=state.current_sha256 if new_version and state.current_version > 0 else None,
    )


def _failed(state: TargetState, result: FetchResult, policy: DetectPolicy, now: datetime) -> Outcome:
    failures = state.consecutive_failures + 1
    hard = result.status in HARD_GONE_STATUSES
    missing = hard or failures >= policy.missing_after
    status = Status.GONE if missing else Status.FAILING
    new_state = replace(state, status=status, consecutive_failures=failures)
    was_present = state.current_version > 0 and state.status is not Status.GONE
    if not (missing and was_present):
        if state.status is Status.GONE:
            new_state = replace(new_state, status=Status.GONE)
        return Outcome(OutcomeKind.FAILED, new_state)
    event = Event(
        log.DOCUMENT_DISAPPEARED,
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


def _reappeared(state: TargetState, result: FetchResult, now: datetime, *, same: bool) -> Event:
    return Event(
        log.DOCUMENT_REAPPEARED,
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
    event = Event(
        log.DOCUMENT_MOVED,
        result.url,
        now,
        old_sha256=state.current_sha256,
        new_sha256=result.body_sha256,
        status=result.status,
        details={
            "to": result.final_url,
            "previous_to": state.moved_to,
            "cross_host": urlsplit(result.url).netloc != urlsplit(result.final_url).netloc,
            "redirects": list(result.redirects),
        },
    )
    return result.final_url, (event,)
