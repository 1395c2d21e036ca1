"""The leases one process holds, from claim to write: how every way of checking takes its targets.

The daemon claims what is due (`Claims.due`); `mirror check` claims the targets of its
round a chunk at a time, due or not, just before it checks them (`Feed`), and skips
those another process holds. Either way a target's state is loaded after it is claimed,
so a check is judged against the latest recorded state. While checks run, `keep`
extends the leases still held (a third of the lease at most after the last extension);
the writer frees each target's lease as it records the check (`recording.record_many`),
`release_all` frees the rest when the process stops, and a killed process's leases expire.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta

from mirror.archive import Archive
from mirror.clock import utcnow
from mirror.domain import Target, TargetState


def lease_owner() -> str:
    """Return a name for this process's leases: host, pid and a random tag (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Claims:
    """The targets `owner` holds leases on: claimed, not yet written. Thread-safe."""

    def __init__(
        self,
        archive: Archive,
        owner: str,
        lease: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.archive = archive
        self.owner = owner
        self.lease = lease
        self.clock = clock
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._extended = time.monotonic()

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def due(self, limit: int) -> list[Target]:
        """Claim up to `limit` due targets; return them, oldest due first.

        Raises:
            StoreError: the database failed.
        """
        return self._hold(self.archive.claim_due(self.owner, self.clock(), limit, self.lease))

    def these(self, targets: Iterable[Target]) -> list[Target]:
        """Claim those of `targets` no other process holds, due or not; return them in order.

        Raises:
            StoreError: the database failed.
        """
        urls = [t.url for t in targets]
        return self._hold(self.archive.claim(self.owner, urls, self.clock(), self.lease)) if urls else []

    def done(self, url: str) -> None:
        """Stop holding `url`: its check is written (which freed the lease), or given up."""
        with self._lock:
            self._held.discard(url)

    def keep(self) -> int:
        """Extend the leases still held once a third of the lease has passed; return how many were extended.

        Raises:
            StoreError: the database failed.
        """
        if time.monotonic() - self._extended < self.lease.total_seconds() / 3:
            return 0
        with self._lock:
            held = sorted(self._held)
        self._extended = time.monotonic()
        if not held:
            return 0
        return self.archive.extend_leases(self.owner, held, self.clock() + self.lease)

    def release_all(self) -> int:
        """Free every lease this owner still holds; return how many.

        Raises:
            StoreError: the database failed (the leases then expire on their own).
        """
        with self._lock:
            self._held.clear()
        return self.archive.release_leases(self.owner)

    def _hold(self, claimed: list[Target]) -> list[Target]:
        with self._lock:
            self._held.update(t.url for t in claimed)
        return claimed


class Feed:
    """The targets of one round, claimed `chunk` at a time ahead of the workers, each with its state.

    When half a chunk is left, the worker that takes a target claims the next chunk
    (outside the feed's lock), so the others keep taking targets meanwhile and no
    worker waits on a claim's transaction (which queues behind the writer's) unless
    the feed has run dry. Targets another process holds are skipped and counted
    (`skipped`). Thread-safe. `next_chunk`, when given, hands out the chunks instead of
    `targets` (an empty list: no more).
    """

    def __init__(
        self,
        claims: Claims,
        targets: Iterable[Target],
        chunk: int,
        *,
        next_chunk: Callable[[], list[Target]] | None = None,
    ) -> None:
        self.claims = claims
        self.skipped = 0
        self._todo: Iterator[Target] = iter(targets)
        self._chunk = max(1, chunk)
        # Where the chunks come from: the round's targets in order, or (processes sharing a
        # round, `mirror.team`) whichever chunk no other process has taken yet.
        self._next_chunk = next_chunk or (lambda: list(itertools.islice(self._todo, self._chunk)))
        self._ready: deque[tuple[Target, TargetState]] = deque()
        self._cond = threading.Condition()
        self._filling = False  # a worker is claiming the next chunk (only it reads `_todo`)
        self._exhausted = False
        self._error: Exception | None = None

    def next(self) -> tuple[Target, TargetState] | None:
        """Return the next claimed target and its state, or None when the round has no more.

        Raises:
            StoreError: the database failed (claiming, or loading the states).
        """
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if self._ready and (len(self._ready) > self._chunk // 2 or self._filling or self._exhausted):
                    return self._ready.popleft()
                if self._exhausted and not self._filling and not self._ready:
                    return None
                if not self._filling:
                    self._filling = True
                    break
                self._cond.wait()
        # This worker claims the next chunk; the others go on taking what is ready.
        fresh: list[tuple[Target, TargetState]] = []
        exhausted = False
        error: Exception | None = None
        try:
            chunk = self._next_chunk()
            exhausted = not chunk
            if chunk:
                claimed = self.claims.these(chunk)
                self.skipped += len(chunk) - len(claimed)
                if claimed:
                    states = self.claims.archive.states_of([t.url for t in claimed])
                    fresh = [(t, states[t.url]) for t in claimed]
        except Exception as exc:  # raised to every worker that takes from the feed
            error = exc
        with self._cond:
            self._ready.extend(fresh)
            self._exhausted = self._exhausted or exhausted
            self._error = self._error or error
            self._filling = False
            self._cond.notify_all()
        return self.next()
