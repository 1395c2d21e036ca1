"""A `mirror check` round over several processes: both cores, where one interpreter lock bound it.

A round's page work (fetch, hash, judge, diff, compress) is independent per target, and
in one process its Python runs one thread at a time. `Team` forks `processes - 1`
children once the targets are synced and read (before any thread of the round starts:
fork copies the imports, no child imports anything). Each child is the round of
`mirror.rounds` with its own checker, sessions, writer and leases (the
store's leases already let several processes check one store: a daemon and a `check`),
and every process, this one included, takes the round's targets a chunk at a time from
one counter in shared memory: each chunk is checked by exactly one process, and the
split follows their speed. The children send their `RoundReport`s over a pipe; this
process merges them into the round's one report and logs its `round.*` events. Crawl
sources' follow-up rounds go to the same children.

Politeness holds over all processes together: each gets its share of `concurrency` and
of `per_host_concurrency` (`share_of`), so one host never has more requests in flight
than configured; a per-host delay (which only one gate can space out) or a source that
honours robots.txt (whose Crawl-delay is such a delay) keeps the round in one process
(`processes_for`), as does a round of fewer than `CLAIM_CHUNK` targets a process.

Ctrl-C (SIGINT to the process group, or to this process alone): children ignore SIGINT
and stop when this process sets the team's stop flag; each finishes and writes the checks
under way and answers, and then KeyboardInterrupt goes on up here. A child that dies
(killed) ends its pipe: the round goes on without it, and its claimed targets wait for
their leases to expire; the report counts it (`lost_processes`, `round.process_lost`).
Log lines are written whole, under a lock the processes share (`log.share_stderr`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from typing import TYPE_CHECKING, Any

import structlog

from mirror import codec
from mirror.archive import Archive
from mirror.check import Checker
from mirror.config import Config
from mirror.domain import Target
from mirror.errors import StoreError
from mirror.events import ROUND_PROCESS_LOST, ROUND_STARTED
from mirror.log import share_stderr
from mirror.politeness import HostGate
from mirror.progress import progress_bar
from mirror.rounds import CLAIM_CHUNK, POLL, RoundReport, Share, log_finished, merged, run_round

if TYPE_CHECKING:
    from tqdm import tqdm

logger = structlog.get_logger("mirror.check")

STOP_WAIT = 30.0  # seconds `close` waits for a child to end before it is terminated


def processes_for(config: Config, targets: int) -> int:
    """Return how many processes a round of `targets` targets uses under `config` (1: no child).

    One when a per-host delay applies (set, or a robots.txt Crawl-delay a source honours):
    the delay, not the CPU, bounds the rate then, and one process's gate spaces the starts.
    Never more than the per-host concurrency (each process gets a share of at least one),
    nor more than one process per `CLAIM_CHUNK` targets (a handful pays no fork).
    """
    fetching = config.fetch
    if fetching.per_host_delay > timedelta(0) or any(s.robots for s in config.sources):
        return 1
    return max(
        1,
        min(fetching.processes, fetching.per_host_concurrency, fetching.concurrency, targets // CLAIM_CHUNK),
    )


def share_of(total: int, processes: int, index: int) -> int:
    """Return process `index`'s part of `total` split between `processes` (the parts add up to `total`)."""
    return total // processes + (1 if index < total % processes else 0)


class _Chunks:
    """The round's targets, a chunk at a time, to whichever process asks first (a shared counter)."""

    def __init__(self, counter: Synchronized[int], targets: Sequence[Target], size: int) -> None:
        self._counter = counter
        self._targets = targets
        self._size = size

    def __call__(self) -> list[Target]:
        with self._counter.get_lock():
            index = self._counter.value
            self._counter.value = index + 1
        return list(self._targets[index * self._size : (index + 1) * self._size])


@dataclass(frozen=True, slots=True)
class _Failed:
    """A child's round stopped on a store error (sent instead of its report)."""

    problem: str


@dataclass(frozen=True, slots=True)
class _Shared:
    """What every process of a team reads: the config, and the counters and flag in shared memory."""

    config: Config
    processes: int
    lease: timedelta
    next: Synchronized[int]  # the index of the next chunk of the round's targets
    done: Synchronized[int]  # targets finished this round, all processes together
    stop: EventType  # set: stop the round (Ctrl-C, or a store error in this process)

    def finished(self) -> None:
        """Count one target done (any process's)."""
        with self.done.get_lock():
            self.done.value += 1


@dataclass(slots=True)
class _Member:
    process: ForkProcess
    conn: Connection
    alive: bool = True


class Team:
    """This process and `processes - 1` forked children, sharing each round's targets (see the module)."""

    def __init__(
        self, config: Config, archive: Archive, checker: Checker, processes: int, lease: timedelta
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.processes = processes
        self.checker = checker
        self._shared = _Shared(
            config, processes, lease, context.Value("q", 0), context.Value("q", 0), context.Event()
        )
        self._pending: dict[Connection, _Member] = {}  # children yet to answer this round
        share_stderr(context.Lock())  # before the fork: the children write through it too
        self._members: list[_Member] = []
        checker.gate = _gate(config, processes, 0)
        _no_text_helper(checker)
        codec.share_compressors(processes)  # before the fork: the children keep the same share
        parent = os.getpid()
        for index in range(1, processes):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_member,
                args=(theirs, index, self._shared, archive, parent),
                name=f"mirror-check-{index}",
                daemon=False,
            )
            process.start()
            theirs.close()  # only the child holds its end: its death ends the pipe (EOF) here
            self._members.append(_Member(process, ours))

    def round(self, targets: Sequence[Target], *, progress: bool = False) -> RoundReport:
        """Check `targets` once over every process of the team; return the merged report.

        Raises:
            StoreError: the database failed (here or in a child).
            KeyboardInterrupt: after every process has written the checks it had under way.
        """
        started = time.monotonic()
        shared = self._shared
        concurrency = shared.config.fetch.concurrency
        logger.info(ROUND_STARTED, targets=len(targets), concurrency=concurrency, processes=self.processes)
        shared.next.value = 0
        shared.done.value = 0
        chunk = max(CLAIM_CHUNK, 2 * share_of(concurrency, self.processes, 0))
        self._pending = {}
        for member in self._members:
            if not member.alive:
                continue
            try:
                member.conn.send((list(targets), chunk))
            except OSError:  # it died since the last round
                member.alive = False
            else:
                self._pending[member.conn] = member
        bar = progress_bar(progress, "checking", "page", total=len(targets))
        reports: list[RoundReport] = []
        failures: list[str] = []
        lost = 0
        try:
            share = Share(
                _Chunks(shared.next, targets, chunk),
                shared.stop.is_set,
                shared.finished,
                lambda: _show(bar, shared.done),
            )
            reports.append(
                run_round(
                    self.checker,
                    targets,
                    share_of(concurrency, self.processes, 0),
                    lease=shared.lease,
                    share=share,
                )
            )
            lost = self._collect(reports, failures, bar)
        except BaseException:  # Ctrl-C, or a store error here: the children stop, write and answer
            shared.stop.set()
            with contextlib.suppress(BaseException):
                self._collect([], [], None)
            raise
        finally:
            if bar is not None:
                bar.close()
        if failures:
            raise StoreError(failures[0])
        report = merged(reports, time.monotonic() - started, lost)
        log_finished(report)
        return report

    def close(self) -> None:
        """Tell the children to stop and wait for them (terminating one that does not end in `STOP_WAIT`)."""
        for member in self._members:
            if member.alive:
                with contextlib.suppress(OSError):
                    member.conn.send(None)
        for member in self._members:
            member.process.join(STOP_WAIT)
            if member.process.is_alive():
                member.process.terminate()
                member.process.join()
            member.conn.close()
        self._members = []

    def _collect(self, reports: list[RoundReport], failures: list[str], bar: tqdm[Any] | None) -> int:
        """Wait for each child's answer to the round; return how many died instead of answering."""
        pending = self._pending
        lost = 0
        while pending:
            for conn in wait(list(pending), POLL):
                member = pending.pop(conn)  # type: ignore[call-overload]
                try:
                    answer = member.conn.recv()
                except (EOFError, OSError):  # it died: killed, or out of memory
                    member.alive = False
                    member.process.join(STOP_WAIT)
                    logger.error(
                        ROUND_PROCESS_LOST, pid=member.process.pid, exit_code=member.process.exitcode
                    )
                    lost += 1
                    continue
                if isinstance(answer, _Failed):
                    failures.append(answer.problem)
                else:
                    reports.append(answer)
            _show(bar, self._shared.done)
        return lost


def _show(bar: tqdm[Any] | None, done: Synchronized[int]) -> None:
    """Move the round's progress bar to the count of targets every process has finished."""
    if bar is not None and bar.n != done.value:
        bar.n = done.value
        bar.refresh()


def _gate(config: Config, processes: int, index: int) -> HostGate:
    """Return process `index`'s gate: its share of the per-host concurrency, no delay (`processes_for`)."""
    return HostGate(share_of(config.fetch.per_host_concurrency, processes, index), 0.0)


def _no_text_helper(checker: Checker) -> None:
    """Render every change's texts in the process that met it: the team's processes already use every core.

    A text helper (`mirror.textpool`) gives a one-process round a second core; in a team it
    only adds a process and its resource tracker for each member (~30 MiB each, measured in
    the mutated round of 2,000 pages).
    """
    checker.texts.close()


def _member(conn: Connection, index: int, shared: _Shared, archive: Archive, parent: int) -> None:
    """A child's life: check the chunks it takes of each round the parent sends, answer with its report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the round (`shared.stop`): no cut write
    archive.after_fork()  # the parent's connections stay the parent's
    config = shared.config
    checker = Checker.from_config(config, archive)
    checker.gate = _gate(config, shared.processes, index)
    _no_text_helper(checker)
    concurrency = share_of(config.fetch.concurrency, shared.processes, index)

    def stopped() -> bool:
        return shared.stop.is_set() or os.getppid() != parent  # Ctrl-C, or the parent died

    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent died
                return
            if message is None:
                return
            targets, chunk = message
            share = Share(_Chunks(shared.next, targets, chunk), stopped, shared.finished)
            try:
                report: RoundReport | _Failed = run_round(
                    checker, targets, concurrency, lease=shared.lease, share=share
                )
            except StoreError as exc:
                report = _Failed(str(exc))
            conn.send(report)
    finally:
        checker.close()
