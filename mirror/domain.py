"""Frozen values that cross module boundaries. Standard library only.

Nothing here does I/O: `fetch` produces a `FetchResult`, `judge` turns a
`TargetState` and a `FetchResult` into an `Outcome`, `archive.record` stores it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})

# The response headers `fetch` keeps (`FetchResult.headers`), stored with every snapshot:
# enough to explain a version, small enough to keep; and what a block rule can match.
KEPT_HEADERS = (
    "content-type", "etag", "last-modified", "content-length", "content-encoding", "content-language",
    "content-disposition", "date", "server", "retry-after", "location",
    "cf-mitigated", "x-amzn-waf-action",  # a challenge's own marks (`mirror.blocking`)
)  # fmt: skip


class Status(enum.StrEnum):
    """What we believe about a hosted copy after its last check."""

    NEW = "new"  # configured or discovered, not checked yet
    OK = "ok"  # last check got the document
    FAILING = "failing"  # has a version; its last check failed, not (yet) a sign it is gone
    GONE = "gone"  # had a version, then 404/410, or `missing_after` checks in a row found it not served
    MOVED = "moved"  # answered by a redirect to another URL
    UNAVAILABLE = "unavailable"  # checked, but no check has got the document yet: it never appeared
    BLOCKED = "blocked"  # the host answered with a bot wall, challenge or rate limit, not the document
    UNWATCHED = "unwatched"  # removed from the config: no longer checked, its history kept (never judged)


class OutcomeKind(enum.StrEnum):
    """What one check found. One per check; it is stored in `checks.outcome`."""

    NEW = "new"
    UNCHANGED = "unchanged"
    CHANGED = "changed"
    FAILED = "failed"
    DISAPPEARED = "disappeared"
    REAPPEARED = "reappeared"
    MOVED = "moved"
    SKIPPED = "skipped"  # not fetched: robots.txt disallows it
    BLOCKED = "blocked"  # a bot wall, challenge or rate limit answered (`mirror.blocking`)


@dataclass(frozen=True, slots=True)
class Target:
    """A URL to watch, as configured or discovered."""

    url: str
    interval: timedelta
    source: str = "config"


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """How one fetch may behave. Built from `[fetch]` in the config."""

    timeout: float = 30.0  # seconds, a deadline for the whole fetch
    connect_timeout: float = 10.0
    max_bytes: int = 104_857_600
    max_redirects: int = 10
    retries: int = 2  # extra attempts for transient errors (connect, 502/503/504)
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    user_agent: str = "mirror"


@dataclass(frozen=True, slots=True)
class Conditional:
    """Validators from the previous good fetch, sent as If-None-Match / If-Modified-Since.

    They are sent to `url` only, the URL whose answer gave them (None: the URL asked):
    another URL's 304 would say nothing about its own content.
    """

    etag: str | None = None
    last_modified: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class FetchFailure:
    """Why a fetch produced no document. `kind` is stable and goes into logs and the store."""

    kind: str  # timeout | connect | dns | too_large | too_many_redirects | bad_content | http
    message: str


@dataclass(frozen=True, slots=True)
class FetchResult:
    """Everything one fetch learned, as plain data.

    `status` is the final HTTP status (None when no response came). `body` and
    `body_sha256` are set for 2xx answers only; a 304 has `status == 304` and no body.
    `redirects` lists every URL that answered with a redirect, in order, starting
    with `url`; `final_url` is the one that answered last.
    """

    url: str
    final_url: str
    status: int | None
    headers: Mapping[str, str]  # lower-cased names, selected headers only
    body: bytes | None
    body_sha256: str | None
    error: FetchFailure | None
    started_at: datetime
    elapsed: float  # seconds
    redirects: tuple[str, ...] = ()
    error_head: bytes | None = None

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True, slots=True)
class TargetState:
    """What the store knows about a target before a check (and after, in an Outcome)."""

    status: Status = Status.NEW
    current_sha256: str | None = None  # the latest version's content, kept while gone
    current_version: int = 0  # 0: no version yet
    content_type: str | None = None  # of the latest version
    consecutive_failures: int = 0
    etag: str | None = None
    last_modified: str | None = None
    moved_to: str | None = None  # the redirect destination last reported as a move
    suspicious: str | None = None  # why the last change looked like tampering; None when it did not
    missing_checks: int = 0  # checks in a row that found the document not served (see `judge`)
    missing_since: datetime | None = None  # when the first of those checks ran; None when there are none

    def conditional(self) -> Conditional:
        """Return the validators and the URL that gave them.

        Validators and `moved_to` are both taken from the last answer (a body or a 304), so
        the validators' URL is that answer's final URL: `moved_to`, or the target's own URL.
        """
        return Conditional(self.etag, self.last_modified, self.moved_to)


@dataclass(frozen=True, slots=True)
class BlockRule:
    """One sign that a host refused us rather than answered (see `mirror.blocking`).

    An answer matches when every given part matches: its status is one of `statuses`
    (empty: any), each `headers` name is present and, when its value is not empty,
    contains it (case-insensitive), `title` matches the page's whole title, `body`
    is found in the first 64 KB, and the body is empty when `empty_body`.
    """

    name: str
    statuses: frozenset[int] = frozenset()
    headers: tuple[tuple[str, str], ...] = ()
    title: re.Pattern[str] | None = None
    body: re.Pattern[str] | None = None
    empty_body: bool = False


@dataclass(frozen=True, slots=True)
class DetectPolicy:
    """Rules of `judge`, from `[detect]` in the config.

    `missing_for`, when set, replaces the count: a document not served by every check
    over that span (from its first such check) is gone. `block_rules` are the user's
    rules, tried after `mirror.blocking`'s own.
    """

    missing_after: int = 3
    missing_for: timedelta | None = None
    shrink_share: float = 0.5  # a change that loses more than this share of the text is suspicious
    shrink_min_chars: int = 200  # ... when the old text had at least this many characters
    placeholder_max_chars: int = 1500  # a 200 page this short with "not found"-like words is suspicious
    block_rules: tuple[BlockRule, ...] = ()
    soft_404_shared: int = 3  # a redirect to a page this many other targets redirect to is a soft 404


@dataclass(frozen=True, slots=True)
class ChangeDiff:
    """How two versions differ, as text when both are text."""

    old_size: int
    new_size: int
    text: bool  # False for PDFs, zips and other binaries: no line counts, no diff
    lines_added: int = 0
    lines_removed: int = 0
    unified: str = ""  # a short unified diff (truncated), empty for binaries
    old_chars: int = 0  # length of the old text (0 for binaries)
    new_chars: int = 0  # length of the new text (0 for binaries)
    new_head: str = ""  # the first characters of the new text, for placeholder detection
    significance: float = 1.0  # how much the change matters, 0 (noise) to 1 (see `mirror.significance`)
    noise: tuple[str, ...] = ()  # what a change of significance 0 consisted of ("date", "number", ...)


@dataclass(frozen=True, slots=True)
class Event:
    """A notable change in a target's life. `kind` is one of the `mirror.events.DOCUMENT_*` names."""

    kind: str
    url: str
    at: datetime
    old_sha256: str | None = None
    new_sha256: str | None = None
    status: int | None = None
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def with_details(self, **more: Any) -> Event:
        return replace(self, details={**self.details, **more})


@dataclass(frozen=True, slots=True)
class Outcome:
    """The verdict of `judge` on one check: what to record and which events to raise.

    - `new_version`: the fetched body becomes the next version (its blob is stored first).
    - `seen_again`: the current version was seen again (its `last_seen` moves forward).
    - `diff_from`: sha256 of the version to diff against, when the content changed;
      `Checker.build` fills `diff` from it before recording.
    - `evidence`: the answer's body is kept with the check (a soft 404's page), never
      as a version.
    """

    kind: OutcomeKind
    state: TargetState
    events: tuple[Event, ...] = ()
    new_version: bool = False
    seen_again: bool = False
    diff_from: str | None = None
    diff: ChangeDiff | None = None
    evidence: bool = False


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a document, as `history` shows it."""

    number: int
    sha256: str
    size: int
    first_seen: datetime
    last_seen: datetime
    status: int | None
    content_type: str | None
    final_url: str | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read back from the store, with its place in the hash chain."""

    seq: int
    kind: str
    url: str
    at: datetime
    old_sha256: str | None
    new_sha256: str | None
    details: Mapping[str, Any]
    diff: str | None
    hash: str


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Return the wait a Retry-After header asks for (seconds or an HTTP date) from `now`, or None.

    Hostile values are None, never an exception: garbage, "²" (a digit to `str.isdigit`),
    more than 12 digits, a date out of range. A date in the past is no wait.
    """
    if not value:
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]{1,12}", text):
        return timedelta(seconds=int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    wait: timedelta = when - now
    return max(timedelta(0), wait)


@dataclass(frozen=True, slots=True)
class VerifyRun:
    """A `mirror verify` run: when it ended, what it found, and the chain head it checked.

    The web page's footer shows the last one; `integrity.damaged` tells of each that found damage.
    """

    finished_at: datetime
    ok: bool
    problems: int
    head_seq: int
    head_hash: str
    id: int = 0  # its `verify_runs.id` once recorded
