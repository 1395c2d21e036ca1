"""The one writer thread of a process: checks are recorded in batches, one transaction each.

Workers fetch, judge, diff and compress in parallel and `submit` the result; the
writer drains the queue and records up to `max_batch` checks, or what arrived within
`max_wait` seconds of the first, in ONE transaction (`Archive.record_many`). One
writer means no writer waits on SQLite's lock, and a batch costs about one commit.

A batch is all-or-nothing: a crash loses at most the unwritten checks, whose targets
keep their leases until they expire and are simply checked again. Each check's
`done` callback runs after its batch commits (it logs the events), or with None when
the check was not written (a store error, or superseded: see `mirror.recording`).
A store error stops the writer: `submit` and `flush` then raise it, and `on_error`
(if given) is told once. A record that cannot be written for
another reason (an event that JSON cannot hold) is retried alone so it spoils only itself.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from mirror.archive import Archive, CheckRecord
from mirror.domain import StoredEvent
from mirror.errors import StoreError
from mirror.events import CHECK_CRASHED, CHECK_SUPERSEDED, STORE_FAILED, WRITER_CALLBACK_FAILED

logger = structlog.get_logger("mirror.writer")

MAX_BATCH = 200  # checks per transaction: past ~200 a commit costs nothing more per check
MAX_WAIT = 0.25  # seconds a check waits for company before its batch is written
# Checks queued at most: workers wait (`submit` blocks) rather than memory grow with a round's pages.
MAX_QUEUED = 2 * MAX_BATCH

Done = Callable[[list[StoredEvent] | None], None]


def log_superseded(record: CheckRecord) -> None:
    """Log `check.superseded` for a check the store did not record (another process recorded the target)."""
    outcome = record.outcome
    logger.warning(
        CHECK_SUPERSEDED,
        url=record.url,
        outcome=str(outcome.kind),
        judged_version=outcome.state.current_version - int(outcome.new_version),
    )


@dataclass(frozen=True, slots=True)
class _Item:
    record: CheckRecord
    done: Done | None


_FLUSH = object()  # write what is queued now, without waiting for `max_wait`
_STOP = object()


class BatchWriter:
    """A thread that records submitted checks in batches. Use as a context manager, or `start`/`close`."""

    def __init__(
        self,
        archive: Archive,
        *,
        max_batch: int = MAX_BATCH,
        max_wait: float = MAX_WAIT,
        on_error: Callable[[StoreError], None] | None = None,
    ) -> None:
        self.archive = archive
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_error = on_error
        self.error: StoreError | None = None
        self.written = 0  # checks committed so far
        self._queue: queue.Queue[object] = queue.Queue(max(MAX_QUEUED, 2 * max_batch))
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def __enter__(self) -> BatchWriter:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: CheckRecord, done: Done | None = None) -> None:
        """Queue `record` for the next batch; `done` runs once it is written (or not).

        Waits while `MAX_QUEUED` checks are queued already (the writer is behind).

        Raises:
            StoreError: the writer has stopped on a store error.
        """
        if self.error is not None:
            raise self.error
        self._queue.put(_Item(record, done))

    def flush(self) -> None:
        """Return once every check submitted before the call is written.

        Raises:
            StoreError: the writer stopped on a store error (these checks are not all written).
        """
        if self._thread.is_alive():
            self._queue.put(_FLUSH)
            self._queue.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Write what is queued and stop the thread (idempotent; never raises: see `error`)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[_Item] = []
            taken = 1
            if first is _STOP:
                stopping = True
            elif isinstance(first, _Item):
                batch.append(first)
                more, stopping = self._collect(batch)
                taken += more
            self._write(batch)
            for _ in range(taken):  # after the write: `flush` (queue.join) returns once it is done
                self._queue.task_done()
        # Whatever is still queued (a submit racing with close) is not written: say so.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Item):
                self._call(item, None)
            self._queue.task_done()

    def _collect(self, batch: list[_Item]) -> tuple[int, bool]:
        """Add queued checks to `batch` until it is full, `max_wait` has passed or a marker comes.

        Returns how many queue entries were taken, and whether one was `_STOP`.
        """
        deadline = time.monotonic() + self.max_wait
        taken = 0
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            taken += 1
            if isinstance(item, _Item):
                batch.append(item)
            else:
                return taken, item is _STOP
        return taken, False

    def _write(self, batch: list[_Item]) -> None:
        if not batch:
            return
        if self.error is not None:
            for item in batch:
                self._call(item, None)
            return
        try:
            stored = self.archive.record_many([item.record for item in batch])
        except StoreError as exc:
            self._fail(exc, batch)
            return
        except Exception:
            # Not the database: one record is at fault (an event JSON cannot hold, an unknown URL).
            # Write them one by one so it spoils only itself.
            self._write_alone(batch)
            return
        self.written += sum(events is not None for events in stored)
        for item, events in zip(batch, stored, strict=True):
            if events is None:
                log_superseded(item.record)
            self._call(item, events)

    def _write_alone(self, batch: list[_Item]) -> None:
        for n, item in enumerate(batch):
            try:
                (events,) = self.archive.record_many([item.record])
            except StoreError as exc:
                self._fail(exc, batch[n:])
                return
            except Exception:
                logger.exception(CHECK_CRASHED, url=item.record.url)
                self._call(item, None)
                continue
            if events is None:
                log_superseded(item.record)
            self.written += events is not None
            self._call(item, events)

    def _fail(self, exc: StoreError, lost: list[_Item]) -> None:
        self.error = exc
        logger.error(STORE_FAILED, error=str(exc), unwritten=len(lost))
        for item in lost:
            self._call(item, None)
        if self.on_error is not None:
            self.on_error(exc)

    def _call(self, item: _Item, events: list[StoredEvent] | None) -> None:
        if item.done is None:
            return
        try:
            item.done(events)
        except Exception:  # a callback must not stop the writer
            logger.exception(WRITER_CALLBACK_FAILED, url=item.record.url)
