"""The one pool of workers, for `mirror check`'s rounds and the daemon alike.

Each worker thread takes the next claimed target (and its state) from a source until the
source says there is no more: a round's `Feed` (the round is over) or the daemon's queue
(the daemon stops). It fetches, judges, diffs and packs the check and queues it for the
writer (`Checker.check_queued`); the target's lease is kept until the writer is done with
it. Workers pull their work: no future per check and no thread woken per finished check
(with thousands of checks, that signalling cost more than the checks' own Python).

A store error stops the pool (the writer has stopped, or claiming failed); any other crash
of one check is logged with its traceback (`check.crashed`), its lease is left to expire so
a crashing target is not retried at once, and the pool goes on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from mirror.claims import Claims
from mirror.domain import Target, TargetState
from mirror.errors import StoreError
from mirror.events import CHECK_CRASHED
from mirror.heap import bound_malloc_arenas
from mirror.writer import BatchWriter

if TYPE_CHECKING:
    from mirror.check import Checker, CheckReport

logger = structlog.get_logger("mirror.check")

Take = Callable[[], tuple[Target, TargetState] | None]


class Workers:
    """`size` threads checking what `take` hands them, each check queued on `writer`.

    `on_report` is told of each check queued, `on_crash` of each target whose check
    crashed, and `on_finished` after every target taken (queued, crashed or not).
    Setting `stop` makes every worker finish its check and take no other.
    """

    def __init__(
        self,
        checker: Checker,
        writer: BatchWriter,
        claims: Claims,
        size: int,
        *,
        stop: threading.Event | None = None,
        on_report: Callable[[CheckReport], object] = lambda _report: None,
        on_crash: Callable[[str], object] = lambda _url: None,
        on_finished: Callable[[], object] = lambda: None,
    ) -> None:
        self.checker = checker
        self.writer = writer
        self.claims = claims
        self.size = max(1, size)
        self.stop = stop if stop is not None else threading.Event()
        self.failed: list[StoreError] = []  # the store errors that stopped the pool
        self._on_report = on_report
        self._on_crash = on_crash
        self._on_finished = on_finished
        self._threads: list[threading.Thread] = []
        # Workers still running, under a condition: `wait` never joins a thread, because a
        # Ctrl-C that lands in `Thread.join` marks the joined thread as ended while it still
        # runs (CPython 3.11, bpo-45274's fix), and a round would then close its writer
        # under the check that thread has under way.
        self._running = 0
        self._ended = threading.Condition()
        bound_malloc_arenas()  # before the pool's (and the writer's) threads allocate

    def start(self, take: Take) -> None:
        """Start the threads; each takes targets from `take` until it returns None or `stop` is set."""
        self._threads = [
            threading.Thread(target=self._work, args=(take,), name=f"check_{n}", daemon=True)
            for n in range(self.size)
        ]
        with self._ended:
            self._running += len(self._threads)
        for thread in self._threads:
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds (None: no limit) for every worker; return whether all have ended."""
        with self._ended:
            return self._ended.wait_for(lambda: self._running == 0, timeout)

    def alive(self) -> int:
        """Return how many workers are still running."""
        with self._ended:
            return self._running

    def _work(self, take: Take) -> None:
        try:
            self._take_and_check(take)
        finally:
            with self._ended:
                self._running -= 1
                self._ended.notify_all()

    def _take_and_check(self, take: Take) -> None:
        while not self.stop.is_set():
            try:
                claimed = take()
                if claimed is None:
                    return
                self._check(*claimed)
            except StoreError as exc:
                self.failed.append(exc)
                self.stop.set()
                return

    def _check(self, target: Target, state: TargetState) -> None:
        """Check one target and queue it for the writer; a store error is raised, any other crash logged."""
        try:
            done = functools.partial(_forget, self.claims, target.url)
            report = self.checker.check_queued(target, state, self.writer, done)
        except StoreError:
            self.claims.done(target.url)
            raise
        except Exception:
            logger.exception(CHECK_CRASHED, url=target.url)
            self.claims.done(target.url)
            self._on_crash(target.url)
        else:
            self._on_report(report)
        finally:
            self._on_finished()


def _forget(claims: Claims, url: str, _stored: object) -> None:
    """Stop holding `url` once the writer is done with its check (the write freed the lease)."""
    claims.done(url)
