"""One check of one target, read top to bottom, and the one builder of a ready checker.

`Checker.from_config` makes a checker from a config (politeness gate, robots.txt cache,
discovery, per-thread sessions). A worker (`mirror.workers`) hands it a claimed target
and its state: it fetches, judges, diffs and packs (`build`, `mirror.packing`) and queues
the check for the one writer thread (`check_queued`, `mirror.writer`). `check_one` records
a single check alone, without a lease (tests and library callers that own the store).
Rounds and the daemon run checkers over the one pool (`mirror.rounds`, `mirror.service`).

This module is glue: it reaches HTTP only through `fetch` and the store only
through `archive`. It decides nothing: `judge` does.
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

from mirror import blocking
from mirror.archive import Archive, CheckRecord
from mirror.claims import lease_owner
from mirror.clock import utcnow
from mirror.config import Config
from mirror.crawl import Discovery
from mirror.diff import compare
from mirror.domain import (
    Conditional,
    DetectPolicy,
    Event,
    FetchFailure,
    FetchLimits,
    FetchResult,
    Outcome,
    StoredEvent,
    Target,
    TargetState,
)
from mirror.events import (
    CHECK_DONE,
    CHECK_FAILED,
    CHECK_SKIPPED,
    DOCUMENT_BLOCKED,
    DOCUMENT_CHANGED,
    DOCUMENT_DISAPPEARED,
    DOCUMENT_MOVED,
    DOCUMENT_NEW,
    DOCUMENT_REAPPEARED,
    DOCUMENT_UNBLOCKED,
    TARGETS_DISCOVERED,
)
from mirror.fetch import Sessions, fetch
from mirror.heap import GIVE_BACK_FROM, give_back
from mirror.ignore import EMPTY_INDEX, IgnoreIndex
from mirror.judge import ROBOTS_ERROR, judge, with_diff
from mirror.packing import Packer
from mirror.politeness import HostGate
from mirror.robots import RobotsCache
from mirror.textpool import TextPool
from mirror.urls import host_of
from mirror.writer import BatchWriter, Done, log_superseded

if TYPE_CHECKING:
    pass

logger = structlog.get_logger("mirror.check")

_LEVELS = {
    DOCUMENT_NEW: "info",
    DOCUMENT_CHANGED: "info",
    DOCUMENT_REAPPEARED: "info",
    DOCUMENT_MOVED: "warning",
    DOCUMENT_DISAPPEARED: "warning",
    DOCUMENT_BLOCKED: "warning",
    DOCUMENT_UNBLOCKED: "info",
}


# Changes weighed at once per checker: each holds both versions, both texts and lxml trees of
# both sides (5-15 MB for a large page), and the text helper serves one at a time anyway.
WEIGH_AT_ONCE = 4
# Bytes of changes (old and new together) weighed at once per checker; a larger change is
# weighed alone. Weighing a 2.5 MB page takes ~30-40 MiB of texts, views and parse trees
# while it lasts (measured: RSS 51 -> 92 MiB for its two texts), so four such changes at
# once were a round's peak; the work is the interpreter's (one thread at a time) anyway.
WEIGH_BYTES = 4 * 1024 * 1024
JITTER = 0.05  # next checks land within ±5% of the interval, so targets added together drift apart
DEFAULT_LEASE = timedelta(minutes=5)  # as `schedule.lease`


class _Weighing:
    """Lets at most `count` changes, and `size` bytes of them, be weighed at once; a larger change alone.

    Changes start in the order they came: a large one waiting for room is not overtaken by
    small ones, which would keep it out for as long as they kept coming.
    """

    def __init__(self, count: int, size: int) -> None:
        self._count = count
        self._size = size
        self._busy = 0  # changes being weighed
        self._bytes = 0  # their bytes
        self._tickets = 0  # turns given out
        self._turn = 0  # the turn that may start next
        self._abandoned: set[int] = set()  # turns whose waiter gave up (an exception while waiting)
        self._changed = threading.Condition()

    @contextmanager
    def held(self, size: int) -> Iterator[None]:
        """Hold a place for a change of `size` bytes (old and new together) while it is weighed."""
        with self._changed:
            turn = self._tickets
            self._tickets += 1
            try:
                self._changed.wait_for(lambda: self._turn == turn and self._fits(size))
            except BaseException:
                self._abandoned.add(turn)
                self._pass_turn()
                raise
            self._busy += 1
            self._bytes += size
            self._turn += 1
            self._pass_turn()
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                self._bytes -= size
                self._changed.notify_all()

    def _fits(self, size: int) -> bool:
        return self._busy == 0 or (self._busy < self._count and self._bytes + size <= self._size)

    def _pass_turn(self) -> None:
        """Move the turn past the abandoned ones and wake the waiters: the next in line may fit now."""
        while self._turn in self._abandoned:
            self._abandoned.discard(self._turn)
            self._turn += 1
        self._changed.notify_all()


def _check_id() -> str:
    """Return a random id that ties one check's log lines together (not a secret: no urandom call)."""
    return f"{random.getrandbits(48):012x}"


@contextmanager
def _logged_as(url: str, check_id: str) -> Iterator[None]:
    """Put the check's `url` and `check_id` on every log line within, and take them off after.

    structlog's `bound_contextvars` does the same, but reads the whole context first to
    restore it (twice the cost, twice per check); resetting the tokens restores it too.
    """
    tokens = bind_contextvars(url=url, check_id=check_id)
    try:
        yield
    finally:
        reset_contextvars(**tokens)


def jittered(interval: timedelta) -> timedelta:
    """Return `interval` moved by up to ±JITTER of itself, at random."""
    return interval * (1 + random.uniform(-JITTER, JITTER))


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What one check did, for `mirror check --json` and the round's counts."""

    url: str
    outcome: str
    status: str
    version: int
    sha256: str | None
    http_status: int | None
    error: str | None
    events: tuple[str, ...]
    discovered: int = 0  # new targets found in its links (crawl sources)


class Checker:
    """Checks targets against one archive with a shared politeness gate.

    `worker` names this process in the `checks` rows and owns its leases (a new name when
    not given). `ignore` gives each target's ignore rules, used to weigh its changes. Each
    worker thread keeps its own `requests.Session` (sessions are not thread-safe).
    """

    def __init__(
        self,
        archive: Archive,
        limits: FetchLimits,
        policy: DetectPolicy,
        gate: HostGate,
        *,
        worker: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        discovery: Discovery | None = None,
        robots: RobotsCache | None = None,
        ignore: IgnoreIndex | None = None,
    ) -> None:
        self.ignore = ignore if ignore is not None else EMPTY_INDEX
        self.discovery = discovery
        self.robots = robots
        self.archive = archive
        self.limits = limits
        self.policy = policy
        self.gate = gate
        self.worker = worker or lease_owner()
        self.clock = clock
        self.packer = Packer(archive)  # chooses delta bases and packs, before the write
        self.texts = TextPool()  # its helper process starts with the first large change
        self.sessions = Sessions(limits)  # one per worker thread
        self._weighing = _Weighing(WEIGH_AT_ONCE, WEIGH_BYTES)

    @classmethod
    def from_config(cls, config: Config, archive: Archive, worker: str | None = None) -> Checker:
        """Return a checker ready to run: the config's limits, policy, politeness, discovery and robots."""
        fetching = config.fetch
        gate = HostGate(fetching.per_host_concurrency, fetching.per_host_delay.total_seconds())
        return cls(
            archive,
            fetching.limits(),
            config.detect.policy(),
            gate,
            worker=worker,
            discovery=Discovery(config.sources),
            robots=RobotsCache(),
            ignore=config.ignore,
        )

    def close(self) -> None:
        """Stop the text helper process and close the sessions."""
        self.texts.close()
        self.sessions.close()

    def check_one(self, target: Target) -> CheckReport:
        """Return what one check of `target` did: fetched, judged, recorded alone, its events logged."""
        with _logged_as(target.url, _check_id()):
            state = self.archive.state_of(target.url)
            record = self.build(target, state)
            (stored,) = self.archive.record_many([record])
            if stored is None:  # superseded by another process's check: nothing recorded
                log_superseded(record)
            else:
                self.packer.offer(record)
                _log_check(record.result, record.outcome)
            return self._discover_and_report(target, record)

    def check_queued(
        self, target: Target, state: TargetState, writer: BatchWriter, done: Done | None = None
    ) -> CheckReport:
        """Fetch and judge one target from its known `state`, and queue it on `writer`; return what happened.

        Its events are logged once the writer has committed its batch; `done` runs then too.

        Raises:
            StoreError: the writer has stopped on a store error.
        """
        check_id = _check_id()
        with _logged_as(target.url, check_id):
            record = self.build(target, state)
            # The writer needs the packed blob, not the body: a queued check holds no page.
            light = record.lightened()
            writer.submit(light, functools.partial(self._written, light, check_id, done))
            self.packer.offer(record)  # queued: any page that uses it is written in a later place
            return self._discover_and_report(target, record)

    def build(self, target: Target, state: TargetState) -> CheckRecord:
        """Return the check of `target` ready to record: fetched, judged, diffed, its blob compressed.

        No write transaction is open meanwhile: the old version is read in a short read one.
        """
        result = self._fetch(target.url, state.conditional())
        now = self.clock()  # one time for the events and the version they announce
        shared = 0
        if result.error is None and result.final_url != result.url:  # how many share this redirect
            shared = self.archive.redirected_to(result.final_url, besides=target.url)
        outcome = judge(state, result, self.policy, now, shared_redirects=shared)
        next_check_in = blocking.next_check_in(outcome, result, jittered(target.interval), now)
        changed = outcome.diff_from is not None and result.body is not None
        # A change: read the old version, weigh it and pack the delta, a bounded few at once
        # (memory: the peak of a round with many changes).
        # Its size: the new body's, twice (the old one, read within, is about as large).
        weighed = 2 * len(result.body) if changed and result.body is not None else 0
        with self._weighing.held(weighed) if changed else nullcontext():
            old = None
            if changed:
                assert outcome.diff_from is not None and result.body is not None  # `changed` says so
                old = self.archive.read(outcome.diff_from)
                diff = compare(
                    old,
                    state.content_type,
                    result.body,
                    result.content_type,
                    old_sha256=outcome.diff_from,
                    new_sha256=result.body_sha256,
                    run=self.texts.run,
                    rules=self.ignore.rules_for(target.url),
                )
                outcome = with_diff(outcome, diff, self.policy)
                if len(old) + len(result.body) >= GIVE_BACK_FROM:
                    give_back()  # the parse trees' pages, before the next large change
            return self.packer.record(
                target.url,
                result,
                outcome,
                now,
                state=state,
                old=old,
                worker=self.worker,
                next_check_in=next_check_in,
                judged=state,
            )

    def _written(
        self, record: CheckRecord, check_id: str, done: Done | None, stored: list[StoredEvent] | None
    ) -> None:
        """Log a queued check's events once its batch is committed (the writer thread calls this)."""
        if stored is not None:
            with _logged_as(record.url, check_id):
                _log_check(record.result, record.outcome)
        if done is not None:
            done(stored)

    def _discover_and_report(self, target: Target, record: CheckRecord) -> CheckReport:
        found = self._discover(target.url, record.result) if record.outcome.new_version else 0
        return _check_report(record.result, record.outcome, found)

    def _fetch(self, url: str, conditional: Conditional) -> FetchResult:
        """Fetch `url` politely: one slot of its host, and robots.txt asked first where a source says so."""
        host = host_of(url)
        with self.gate.slot(host):
            if self.robots is not None and self.discovery is not None and self.discovery.honours_robots(url):
                if not self.robots.allowed(url, self.sessions.get(), self.limits):
                    return _forbidden(url, self.clock())
                delay = self.robots.crawl_delay(host)
                if delay:
                    self.gate.defer(host, delay)
            return fetch(url, self.sessions.get(), self.limits, conditional, self.clock)

    def _discover(self, url: str, result: FetchResult) -> int:
        """Add the in-scope pages a new version links to; return how many were new."""
        if self.discovery is None or not self.discovery.crawls:
            return 0
        targets = self.discovery.found(url, result, self.archive.count_under, self.archive.known_urls)
        if not targets:
            return 0
        added = self.archive.add_discovered(targets, self.clock())
        if added:
            logger.info(TARGETS_DISCOVERED, url=url, added=added)
        return added


def _event_fields(event: Event, outcome: Outcome) -> dict[str, Any]:
    fields: dict[str, Any] = {"url": event.url}
    for name in ("old_sha256", "new_sha256", "status", "error"):
        value = getattr(event, name)
        if value is not None:
            fields[name] = value
    fields.update({k: v for k, v in event.details.items() if v is not None})
    if event.kind == DOCUMENT_CHANGED and outcome.diff is not None and outcome.diff.unified:
        fields["diff"] = outcome.diff.unified
    return fields


def _log_check(result: FetchResult, outcome: Outcome) -> None:
    if result.error is not None and result.error.kind == ROBOTS_ERROR:
        logger.info(CHECK_SKIPPED, url=result.url, error=ROBOTS_ERROR, message=result.error.message)
    elif result.error is not None:
        logger.warning(
            CHECK_FAILED,
            url=result.url,
            status=result.status,
            error=result.error.kind,
            message=result.error.message,
            consecutive_failures=outcome.state.consecutive_failures,
        )
    for event in outcome.events:
        level = "warning" if event.details.get("suspicious") else _LEVELS.get(event.kind, "info")
        getattr(logger, level)(event.kind, **_event_fields(event, outcome))
    logger.debug(CHECK_DONE, outcome=str(outcome.kind), seconds=round(result.elapsed, 3))


def _forbidden(url: str, now: datetime) -> FetchResult:
    """Return the result of a fetch that robots.txt forbids: nothing was sent."""
    failure = FetchFailure(ROBOTS_ERROR, "robots.txt disallows this URL for our user agent")
    return FetchResult(url, url, None, {}, None, None, failure, now, 0.0)


def _check_report(result: FetchResult, outcome: Outcome, found: int = 0) -> CheckReport:
    return CheckReport(
        url=result.url,
        outcome=str(outcome.kind),
        status=str(outcome.state.status),
        version=outcome.state.current_version,
        sha256=outcome.state.current_sha256,
        http_status=result.status,
        error=result.error.kind if result.error else None,
        events=tuple(e.kind for e in outcome.events),
        discovered=found,
    )
