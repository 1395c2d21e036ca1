"""Bot walls, challenges and rate limits: answers that are the host refusing us, not the document.

Pure: no I/O, no clock, no logging. The rules are data (`RULES`, and the user's
`[[detect.block_rules]]`, see `mirror.config`): `match(result, extra)` returns the first
rule an answer matches, or None. A rule matches when every part it names matches (see
`BlockRule`); the title is the page's whole `<title>`, so a real page that merely
mentions Cloudflare in its text is content, and a 403 from a plain server with a normal
error page is a failure as before. Be conservative: a false `blocked` hides a real change.

`next_check_in` says when a blocked target is tried again: exponential back-off from
BLOCKED_BACKOFF, never later than the target's interval, and never sooner than a
Retry-After asks (itself capped at MAX_RETRY_AFTER, so a hostile header cannot park a
target for good).
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta

from mirror.domain import BlockRule, FetchResult, Outcome, OutcomeKind, retry_after

HEAD_BYTES = 64 * 1024  # of a body, read for a title or a marker (as much as fetch keeps of an error page)
BLOCKED_BACKOFF = timedelta(minutes=5)  # the first wait after a blocked check, doubled each one in a row
MAX_RETRY_AFTER = timedelta(days=1)


def _title(text: str) -> re.Pattern[str]:
    """Return a pattern matching a whole title (case-insensitive, white space collapsed)."""
    return re.compile(text, re.IGNORECASE)


# Each seen in the wild; tests/test_blocking.py replays each with its real status and headers.
RULES: tuple[BlockRule, ...] = (
    BlockRule(  # Cloudflare's JavaScript / managed challenge
        "cloudflare-challenge",
        frozenset({403, 429, 503}),
        (("server", "cloudflare"),),
        title=_title(r"just a moment\.*"),
    ),
    BlockRule(  # Cloudflare's firewall block page
        "cloudflare-block",
        frozenset({403}),
        (("server", "cloudflare"),),
        title=_title(r"attention required! \| cloudflare"),
    ),
    BlockRule("cloudflare-mitigated", headers=(("cf-mitigated", "challenge"),)),  # any challenge it serves
    BlockRule(
        "akamai-access-denied",
        frozenset({403}),
        (("server", "akamaighost"),),
        title=_title(r"access denied"),
    ),
    BlockRule(  # CloudFront refusing (WAF, geo restriction); its other errors say other things
        "cloudfront-refused",
        frozenset({403}),
        title=_title(r"error: the request could not be satisfied"),
    ),
    BlockRule("aws-waf-captcha", frozenset({405}), title=_title(r"human verification")),
    BlockRule("aws-waf-action", headers=(("x-amzn-waf-action", ""),)),  # challenge or captcha
    BlockRule(  # an AWS load balancer's challenge: 202 Accepted and nothing in it
        "aws-elb-challenge",
        frozenset({202}),
        (("server", "awselb"),),
        empty_body=True,
    ),
    BlockRule("request-access", frozenset({200}), title=_title(r"request access")),
    BlockRule("rate-limited", frozenset({429})),  # Too Many Requests, from any server
)

_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")


def head_of(result: FetchResult) -> bytes:
    """Return the first HEAD_BYTES of what the answer carried: its body, or the head of its error page."""
    data = result.body if result.body is not None else result.error_head
    return (data or b"")[:HEAD_BYTES]


def title_of(head: bytes) -> str | None:
    """Return a page's title, entities decoded and white space collapsed; None when it has none."""
    found = _TITLE.search(head)
    if found is None:
        return None
    return _SPACE.sub(" ", html.unescape(found[1].decode("utf-8", "replace"))).strip()


def match(result: FetchResult, extra: tuple[BlockRule, ...] = ()) -> BlockRule | None:
    """Return the first rule (ours, then `extra`) that `result` matches, or None.

    A failure without an answer (no status), a 304 and a redirect never match.
    """
    answered = result.error is None or result.error.kind == "http"
    if result.status is None or result.not_modified or not answered:
        return None
    head: bytes | None = None
    title: str | None = None
    for rule in (*RULES, *extra):
        if rule.statuses and result.status not in rule.statuses:
            continue
        if not all(_header_matches(result, name, value) for name, value in rule.headers):
            continue
        if head is None:
            head = head_of(result)
            title = title_of(head)
        if rule.empty_body and head.strip():
            continue
        if rule.title is not None and (title is None or not rule.title.fullmatch(title)):
            continue
        if rule.body is not None and not rule.body.search(head.decode("utf-8", "replace")):
            continue
        return rule
    return None


def evidence(result: FetchResult, rule: BlockRule) -> dict[str, object]:
    """Return what a `document.blocked` event says of the answer: status, server, title, rule."""
    return {
        "rule": rule.name,
        "server": result.headers.get("server"),
        "title": title_of(head_of(result)),
    }


def next_check_in(outcome: Outcome, result: FetchResult, interval: timedelta, now: datetime) -> timedelta:
    """Return how long until the target is checked again: `interval`, or a blocked target's back-off."""
    if outcome.kind is not OutcomeKind.BLOCKED:
        return interval
    in_row = max(1, outcome.state.consecutive_failures)
    wait = min(interval, BLOCKED_BACKOFF * (1 << min(in_row - 1, 32)))
    asked = retry_after(result.headers.get("retry-after"), now)
    if asked is not None:
        wait = max(wait, min(asked, MAX_RETRY_AFTER))
    return wait


def _header_matches(result: FetchResult, name: str, value: str) -> bool:
    found = result.headers.get(name)
    return found is not None and value.lower() in found.lower()
