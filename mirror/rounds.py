"""Rounds of checks: `mirror check`'s round over the one worker pool, and the config's targets synced.

`check_round` is what the command line asks for: sync the configured targets, read the
sitemaps, claim and check every target once over the pool of workers (`mirror.workers`)
with one writer thread (`mirror.writer`), and go on while crawl sources find new pages.
The daemon (`mirror.service`) runs the same pool forever.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from mirror.archive import Archive
from mirror.check import DEFAULT_LEASE, Checker, CheckReport
from mirror.claims import Claims, Feed
from mirror.config import Config
from mirror.diff import texts_kept
from mirror.domain import Target, TargetState
from mirror.errors import StoreError
from mirror.events import (
    ROUND_FINISHED,
    ROUND_SKIPPED_CLAIMED,
    ROUND_STARTED,
    TARGETS_DISCOVERED,
    TARGETS_SYNCED,
)
from mirror.progress import progress_bar
from mirror.workers import Workers
from mirror.writer import BatchWriter

if TYPE_CHECKING:
    from tqdm import tqdm

    from mirror.team import Team

logger = structlog.get_logger("mirror.check")

# Targets a round claims at once, at least: each claim is a write transaction, and then a read
# of their states. Measured, 2000 unchanged loopback pages: chunks of 16 made the round ~20%
# slower than claiming nothing; chunks of 100 are within noise.
CLAIM_CHUNK = 100


@dataclass(frozen=True, slots=True)
class RoundReport:
    """A round of checks: counts by outcome, each check, and any crash."""

    checks: tuple[CheckReport, ...]
    elapsed: float
    crashed: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    skipped_claimed: int = 0  # targets another process held (leased): left to it, not checked
    lost_processes: int = 0  # processes of the round that died (killed): their claimed targets wait
    # for their leases to expire


@dataclass(frozen=True, slots=True)
class Share:
    """This process's part in a round that several processes share (`mirror.team`).

    `next_chunk` hands out the next chunk of targets no process has taken (empty: no more);
    `stopped` says the round must stop (Ctrl-C); `finished` counts one target done for the
    whole round's progress; `poll` runs every `POLL` seconds while this process checks.
    """

    next_chunk: Callable[[], list[Target]]
    stopped: Callable[[], bool]
    finished: Callable[[], object]
    poll: Callable[[], object] = lambda: None


POLL = 0.25  # seconds between looks at a shared round's stop flag and progress


def _tick(bar: tqdm[Any] | None, lock: threading.Lock) -> None:
    """Count one target done on the round's progress bar, if it has one."""
    if bar is not None:
        with lock:
            bar.update(1)


def run_round(
    checker: Checker,
    targets: Sequence[Target],
    concurrency: int,
    *,
    progress: bool = False,
    lease: timedelta = DEFAULT_LEASE,
    share: Share | None = None,
) -> RoundReport:
    """Check every target no other process holds once, over `concurrency` threads; return the report.

    With a `share`, this process checks only the chunks it takes from the share, logs no
    `round.*` event and shows no progress (`mirror.team` does, for all processes together).

    Targets are claimed with leases (owner `checker.worker`) a chunk at a time, due or
    not, just before they are checked; one another process holds is skipped and
    counted. Leases still held are extended while the round runs and freed at its end.
    A store failure stops the round and is raised; any other crash of one check
    is logged with its traceback and reported, and the round goes on.

    Raises:
        StoreError: the database failed (after the store's own retries).
    """
    started = time.monotonic()
    if share is None:
        logger.info(ROUND_STARTED, targets=len(targets), concurrency=concurrency, processes=1)
    claims = Claims(checker.archive, checker.worker, lease)  # wall-clock time, as other processes read it
    chunk = max(CLAIM_CHUNK, 2 * concurrency)
    feed = Feed(claims, targets, chunk, next_chunk=share.next_chunk if share is not None else None)
    reports: list[CheckReport] = []
    crashed: list[str] = []
    bar = progress_bar(progress and share is None, "checking", "page", total=len(targets))
    writer = BatchWriter(checker.archive)
    workers = Workers(
        checker,
        writer,
        claims,
        min(concurrency, len(targets)),
        on_report=reports.append,
        on_crash=crashed.append,
        on_finished=share.finished if share is not None else functools.partial(_tick, bar, threading.Lock()),
    )
    poll = POLL if share is not None else min(1.0, lease.total_seconds() / 4)
    writer.start()
    try:
        workers.start(feed.next if share is None else functools.partial(_unless_stopped, share, feed))
        try:
            while not workers.wait(poll):
                claims.keep()  # a long round keeps what it holds
                if share is not None:
                    share.poll()
                    if share.stopped():  # the checks under way finish and are written, no more start
                        workers.stop.set()
        except BaseException:  # Ctrl-C: the checks under way finish and are written, no more start
            workers.stop.set()
            workers.wait()
            raise
        if workers.failed:
            raise workers.failed[0]
        writer.flush()
    finally:
        writer.close()
        with contextlib.suppress(StoreError):  # the database failed: the leases expire on their own
            claims.release_all()
        if bar is not None:
            bar.close()
    counts = dict(Counter(r.outcome for r in reports))
    report = RoundReport(tuple(reports), time.monotonic() - started, tuple(crashed), counts, feed.skipped)
    if share is None:
        log_finished(report)
    return report


def _unless_stopped(share: Share, feed: Feed) -> tuple[Target, TargetState] | None:
    """Take the next target from `feed`, or none once the shared round is told to stop."""
    return None if share.stopped() else feed.next()


def log_finished(report: RoundReport) -> None:
    """Log the end of a round: `round.skipped_claimed` if it left targets to others, and `round.finished`."""
    if report.skipped_claimed:
        logger.info(ROUND_SKIPPED_CLAIMED, skipped_claimed=report.skipped_claimed)
    extra = {"lost_processes": report.lost_processes} if report.lost_processes else {}
    logger.info(
        ROUND_FINISHED,
        checked=len(report.checks),
        crashed=len(report.crashed),
        skipped_claimed=report.skipped_claimed,
        seconds=round(report.elapsed, 3),
        **extra,
        **report.counts,
    )


def sync_config(config: Config, archive: Archive, now: datetime) -> None:
    """Store the config's targets (and the start pages of its crawl sources)."""
    report = archive.sync_targets(config.targets, now, scopes=[s.scope for s in config.sources])
    seeds = archive.add_discovered(config.discovery_seeds(), now)
    # A destination's cursor starts at the head when it is first configured: what a `check`
    # records from now on waits for it in the outbox (the daemon, or `notify send`, delivers).
    archive.register_destinations([d.name for d in config.notify], now)
    logger.info(
        TARGETS_SYNCED, added=report.added + seeds, removed=report.removed, total=report.total + seeds
    )


def read_sitemaps(checker: Checker) -> int:
    """Add the pages the sitemap sources list; return how many were new."""
    discovery = checker.discovery
    if discovery is None or not discovery.sitemaps:
        return 0
    found = discovery.sitemap_targets(
        checker.sessions.get(),  # the calling thread's, closed with the checker
        checker.limits,
        known_count=checker.archive.count_under,
        known=checker.archive.known_urls,
        robots=checker.robots,
        gate=checker.gate.slot,
    )
    added = checker.archive.add_discovered(found, datetime.now(UTC)) if found else 0
    logger.info(TARGETS_DISCOVERED, source="sitemap", added=added)
    return added


def check_round(config: Config, archive: Archive, urls: list[str], *, progress: bool = False) -> RoundReport:
    """Sync the configured targets, then check all active targets (or `urls`) once; return the report.

    With crawl or sitemap sources and no `urls`, pages found during the round are
    checked in the same round, until nothing new turns up (`max_pages` bounds it).

    Targets another process holds (a daemon, another `check`) are skipped and counted
    in `RoundReport.skipped_claimed`; the rest are checked now, due or not.

    Raises:
        TargetNotFound: a URL in `urls` is not a target.
        StoreError: the database failed.
    """
    # Each page is checked once, and the command ends with the round: a text kept for a
    # page's next change would never be read (the daemon keeps them).
    with texts_kept(0):
        return _check_round(config, archive, urls, progress)


def _check_round(config: Config, archive: Archive, urls: list[str], progress: bool) -> RoundReport:
    from mirror.team import Team, processes_for  # it runs rounds of this module in each process

    sync_config(config, archive, datetime.now(UTC))
    checker = Checker.from_config(config, archive)
    team: Team | None = None
    try:
        if not urls:
            read_sitemaps(checker)
        targets = archive.active_targets(urls or None)
        concurrency, lease = config.fetch.concurrency, config.schedule.lease
        processes = processes_for(config, len(targets))
        if processes > 1:  # forked now, before any thread of the round starts
            team = Team(config, archive, checker, processes, lease)

        def one_round(these: Sequence[Target]) -> RoundReport:
            if team is not None:
                return team.round(these, progress=progress)
            return run_round(checker, these, concurrency, progress=progress, lease=lease)

        report = one_round(targets)
        seen = {t.url for t in targets}
        while not urls and any(r.discovered for r in report.checks):
            more = [t for t in archive.active_targets() if t.url not in seen]
            if not more:
                break
            seen.update(t.url for t in more)
            then = one_round(more)
            report = merged((report, then), report.elapsed + then.elapsed)
        return report
    finally:
        if team is not None:
            team.close()
        checker.close()


def merged(reports: Sequence[RoundReport], elapsed: float, lost_processes: int = 0) -> RoundReport:
    """Return one report of `reports` (counts summed, checks in order), `elapsed` long.

    The rounds of one `check` one after another (crawl follow-ups), or the parts several
    processes checked of one round (`mirror.team`, with the processes that died instead).
    """
    counts: Counter[str] = Counter()
    for report in reports:
        counts.update(report.counts)
    return RoundReport(
        tuple(c for r in reports for c in r.checks),
        elapsed,
        tuple(u for r in reports for u in r.crashed),
        dict(counts),
        sum(r.skipped_claimed for r in reports),
        sum(r.lost_processes for r in reports) + lost_processes,
    )
