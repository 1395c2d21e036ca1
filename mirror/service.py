"""The process: one check round on demand, or the daemon with its signals and systemd notifications.

The daemon: an APScheduler job ("dispatch") ticks every few seconds, claims due
targets from the database with leases (`mirror.claims`) and hands them to a bounded
worker pool; one writer thread records the checks in batches (`mirror.writer`).
SIGTERM/SIGINT stop claiming, let in-flight checks finish within a grace period, write
them, release leases and exit 0. A store error in the writer stops the daemon (exit 3).
SIGHUP reloads the config; a bad config is logged (`config.rejected`) and the old one
kept. Every `schedule.summary` it logs `service.summary` at info: it is alive, and what it did.
Its workers are the one pool `mirror check` uses for its rounds too (`mirror.workers`),
fed from a queue that `dispatch` fills; `mirror check` claims its round's targets the same
way (`mirror.rounds`).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import queue
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO

import structlog

from mirror import render
from mirror.archive import Archive
from mirror.check import Checker, CheckReport
from mirror.claims import Claims, lease_owner
from mirror.config import Config, config_path, load_config
from mirror.db import sqlite_file
from mirror.domain import OutcomeKind, Target, TargetState
from mirror.errors import ConfigError, StoreError, StoreLocked
from mirror.events import (
    CHECKS_PRUNED,
    CONFIG_LOADED,
    CONFIG_REJECTED,
    DISPATCH_CLAIMED,
    DOCUMENT_CHANGED,
    DOCUMENT_NEW,
    GC_FINISHED,
    SERVICE_STARTED,
    SERVICE_STOPPED,
    SERVICE_STOPPING,
    SERVICE_SUMMARY,
)
from mirror.notify import Notifier, check_destinations
from mirror.rounds import read_sitemaps, sync_config
from mirror.workers import Workers
from mirror.writer import BatchWriter

logger = structlog.get_logger("mirror.service")

SHUTDOWN_GRACE = 30.0  # seconds in-flight checks get to finish after SIGTERM
_NEW_VERSION_EVENTS = frozenset({DOCUMENT_NEW, DOCUMENT_CHANGED})


def sd_notify(message: str) -> bool:
    """Send `message` to systemd's notify socket when there is one; return whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
        return True
    return False


@contextlib.contextmanager
def sqlite_single_daemon(database: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store for the daemon's life.

    Raises:
        StoreLocked: another `mirror run` already uses this SQLite file.
    """
    path = sqlite_file(database)
    if path is None:
        yield
        return
    lock_path = Path(path + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = lock_path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLocked(
                database,
                "another `mirror run` is using this SQLite store; SQLite is single-daemon "
                "(use PostgreSQL to run several)",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


@dataclass
class _Running:
    config: Config
    checker: Checker


class Daemon:
    """A running `mirror run`: dispatch ticks, a worker pool, signals."""

    def __init__(self, config: Config, config_option: str | None) -> None:
        self.config_option = config_option
        self.owner = lease_owner()
        check_destinations(config)
        self.archive = Archive.open(config.storage.database)
        self.running = _Running(config, Checker.from_config(config, self.archive, self.owner))
        self.claims = Claims(self.archive, self.owner, self.lease_length())
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.queue: queue.Queue[tuple[Target, TargetState]] = queue.Queue()
        self.in_flight = 0  # claimed targets queued for a worker or being checked
        self.reload_requested = threading.Event()
        from apscheduler.schedulers.background import BackgroundScheduler  # only the daemon ticks

        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.freed = threading.Event()  # set when a worker finishes: dispatch may claim more
        self.tally: Counter[str] = Counter()  # checks queued since the last summary: done, changed, failed
        self.new_versions = 0  # since the start: an idle daemon re-packs (`_idle`) when it grew
        self.repacked_at = -1  # `new_versions` when an idle slice last found nothing to re-pack
        self.summarised = time.monotonic()
        self.store_error: StoreError | None = None
        self.writer = BatchWriter(self.archive, on_error=self._store_failed)
        self.workers = Workers(
            self.running.checker,
            self.writer,
            self.claims,
            config.fetch.concurrency,
            stop=self.stop,
            on_report=self._tally,
            on_crash=self._crashed,
            on_finished=self._finished,
        )
        # Notifications on a thread of their own, with their own session: a receiver that is
        # slow or down holds that thread only, never a check (`mirror.notify`).
        self.notifier = Notifier(
            self.archive, config.notify, config.fetch.limits(), self.owner, self.lease_length()
        )

    # -- jobs -------------------------------------------------------------
    def lease_length(self) -> timedelta:
        """Return how long claimed targets are held; `dispatch` extends the leases of checks in flight."""
        return max(self.running.config.schedule.lease, 3 * self.running.config.schedule.tick)

    def dispatch(self) -> None:
        """Claim due targets for free workers and submit them, until none is due or the tick is over.

        Claiming goes on as workers finish within one tick, so throughput is bounded
        by the workers, not by `tick`: at most `2 * concurrency` targets are held at once.
        """
        tick = self.running.config.schedule.tick.total_seconds()
        until = time.monotonic() + 0.8 * tick  # end before the next tick is due
        while not self.stop.is_set() and time.monotonic() < until:
            self.freed.clear()
            with self.lock:
                free = self.running.config.fetch.concurrency * 2 - self.in_flight
            # Keep what we still work on (checking, or queued for the writer): an expired
            # lease would let another process check it too.
            self.claims.lease = self.lease_length()
            self.claims.keep()
            if free <= 0:
                self.freed.wait(max(0.0, until - time.monotonic()))
                continue
            claimed = self.claims.due(free)
            states = self.archive.states_of([t.url for t in claimed]) if claimed else {}
            with self.lock:
                self.in_flight += len(claimed)
            for target in claimed:
                self.queue.put((target, states[target.url]))
            if claimed:
                logger.debug(DISPATCH_CLAIMED, count=len(claimed))
            if len(claimed) < free:
                if not claimed:
                    self._idle(until)
                return  # nothing more is due now

    def _idle(self, until: float) -> None:
        """Nothing is due: re-pack blobs (`mirror gc`) until the tick is over or a check is under way.

        A slice at most as long as the rest of this tick, only with no check under way; once
        nothing is left, not again until a check records a new version.
        """
        with self.lock:
            busy, changed = self.in_flight, self.new_versions
        if busy or self.repacked_at == changed or self.stop.is_set():
            return
        seconds = until - time.monotonic()
        if seconds <= 0:
            return
        report = self.archive.repack(seconds=seconds, count_remaining=False)
        if report.examined == 0:
            self.repacked_at = changed
        if report.repacked:
            logger.info(GC_FINISHED, **render.gc_json(report))

    def _take(self) -> tuple[Target, TargetState] | None:
        """Return the next claimed target for a worker; None once the daemon stops."""
        while not self.stop.is_set():
            with contextlib.suppress(queue.Empty):
                return self.queue.get(timeout=0.5)
        return None

    def _tally(self, report: CheckReport) -> None:
        with self.lock:
            self.tally["checks"] += 1
            self.tally["changed"] += any(e in _NEW_VERSION_EVENTS for e in report.events)
            self.new_versions += any(e in _NEW_VERSION_EVENTS for e in report.events)
            self.tally["failed"] += report.error is not None and report.outcome != OutcomeKind.SKIPPED

    def _crashed(self, _url: str) -> None:
        with self.lock:
            self.tally["crashed"] += 1

    def _finished(self) -> None:
        with self.lock:
            self.in_flight -= 1
        self.freed.set()

    def _store_failed(self, error: StoreError) -> None:
        """The writer stopped on a store error: stop the daemon, which then exits 3."""
        self.store_error = error
        self.stop.set()

    def sync(self) -> None:
        sync_config(self.running.config, self.archive, datetime.now(UTC))

    def sitemaps(self) -> None:
        """Maintenance job: read the sitemap sources (daily)."""
        if not self.stop.is_set():
            read_sitemaps(self.running.checker)

    def prune(self) -> None:
        """Maintenance job: delete `checks` rows older than the retention (daily)."""
        before = datetime.now(UTC) - self.running.config.schedule.check_retention
        pruned = self.archive.prune_checks(before)
        logger.info(CHECKS_PRUNED, rows=pruned, before=before.isoformat())

    def reload(self) -> None:
        """Parse the config again; keep the old one if the new one is invalid."""
        path = config_path(self.config_option, os.environ)
        try:
            config = load_config(path, os.environ)
            check_destinations(config)
        except ConfigError as exc:
            logger.error(CONFIG_REJECTED, file=exc.file, key=exc.key, problem=exc.problem)
            return
        old = self.running
        self.running = _Running(config, Checker.from_config(config, self.archive, self.owner))
        self.workers.checker = self.running.checker  # the checks under way finish with the old one
        logger.info(CONFIG_LOADED, file=path, targets=len(config.targets))
        self.sync()
        self.notifier.destinations = config.notify  # the next pass delivers to the new set
        if config.notify:
            self.notifier.start()
        old.checker.close()

    # -- life -------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested.set()
        else:
            self.stop.set()

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT; return after a clean shutdown."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.archive.reap_abandoned(datetime.now(UTC))
        self.sync()
        tick = self.running.config.schedule.tick.total_seconds()
        self.scheduler.add_job(
            self.dispatch,
            "interval",
            seconds=tick,
            id="dispatch",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        now = datetime.now(UTC)
        for job, first in ((self.sitemaps, now), (self.prune, now + timedelta(minutes=1))):
            self.scheduler.add_job(
                job, "interval", days=1, id=job.__name__, max_instances=1, coalesce=True, next_run_time=first
            )
        self.writer.start()
        self.workers.start(self._take)
        if self.running.config.notify:
            self.notifier.start()
        self.scheduler.start()
        now = datetime.now(UTC)
        targets, _due, next_at = self.archive.schedule(now)
        logger.info(
            SERVICE_STARTED,
            owner=self.owner,
            targets=targets,
            tick=tick,
            next_check_at=next_at.isoformat() if next_at else None,
            first_check_in=in_words(next_at, now),
        )
        sd_notify("READY=1\nSTATUS=checking targets")
        self.summarised = time.monotonic()
        try:
            while not self.stop.wait(1.0):
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    sd_notify("RELOADING=1")
                    self.reload()
                    sd_notify("READY=1")
                if time.monotonic() - self.summarised >= self.running.config.schedule.summary.total_seconds():
                    self.summarise()
                sd_notify("WATCHDOG=1")
        finally:
            self.shutdown()
        if self.store_error is None and self.workers.failed:
            self.store_error = self.workers.failed[0]
        if self.store_error is not None:
            raise self.store_error

    def summarise(self) -> None:
        """Log `service.summary`: the checks since the last one, and when the next target is due."""
        with self.lock:
            tally, self.tally = self.tally, Counter()
        seconds = time.monotonic() - self.summarised
        self.summarised = time.monotonic()
        now = datetime.now(UTC)
        try:
            _targets, due, next_at = self.archive.schedule(now)
        except StoreError as exc:  # a summary never stops the daemon; the writer reports store failures
            logger.warning(SERVICE_SUMMARY, problem=str(exc))
            return
        next_in = in_words(next_at, now)
        sd_notify(
            f"STATUS={tally['checks']} checks in the last {round(seconds)}s "
            f"({tally['changed']} changed, {tally['failed']} failed); next due {next_in}"
        )
        logger.info(
            SERVICE_SUMMARY,
            seconds=round(seconds, 1),
            checks=tally["checks"],
            changed=tally["changed"],
            failed=tally["failed"],
            crashed=tally["crashed"],
            checking=self.claims.held,
            due=due,
            next_check_at=next_at.isoformat() if next_at else None,
            next_check_in=next_in,
        )

    def shutdown(self) -> None:
        sd_notify("STOPPING=1")
        logger.info(SERVICE_STOPPING, in_flight=self.in_flight)
        self.stop.set()  # the workers take no more targets; those queued keep their leases until released
        self.scheduler.shutdown(wait=True)
        self.workers.wait(SHUTDOWN_GRACE)
        self.writer.close()  # the checks done so far are written before their leases go
        self.notifier.close()  # after the send under way; its cursor's lease expires if it hangs
        released = self.claims.release_all()
        self.running.checker.close()
        self.archive.close()
        logger.info(SERVICE_STOPPED, released=released, unfinished=self.workers.alive())


def in_words(when: datetime | None, now: datetime) -> str:
    """Return when `when` is, from `now`, in words: "now", "in 45s", "in 5m", "in 1h30m", "in 2d6h"."""
    if when is None:
        return "never (no targets)"
    seconds = math.ceil((when - now).total_seconds())
    if seconds <= 0:
        return "now"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "in " + "".join(parts[:2])


def run_service(config: Config, config_option: str | None) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT.

    Raises:
        StoreLocked: another daemon uses the same SQLite store.
        StoreError: the database is unreachable.
    """
    with sqlite_single_daemon(config.storage.database):
        Daemon(config, config_option).serve()
