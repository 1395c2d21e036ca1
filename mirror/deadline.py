"""One fetch's deadline, and the one watchdog thread that makes it hold for every byte.

A socket timeout bounds each read, not their sum: http.client reads the status line and
the headers with blocking `readline()` calls, so a server that sends one header line a
second (or the whole answer a byte at a time) holds a fetch for as long as it likes under
any per-read timeout. So:

- `Deadline.watching()` arms the deadline with the process's watchdog, one daemon thread
  over a heap of deadlines shared by every fetch (arming is a heap push under a lock;
  no thread starts per fetch), and makes it the thread's `current()` deadline.
- The connection a fetch uses is put under it with `watch(conn)` (fetch.py's connection
  pool does so whenever it hands one out).
- When the deadline passes, the watchdog shuts the socket down (`SHUT_RDWR`): the blocked
  read returns at once, with an error or an early end. The fetch sees `passed()` and
  reports a timeout, whatever the library made of the cut. The watchdog shuts the fetch's
  socket again every `REFIRE` seconds until the fetch ends, for a connection that had no
  socket yet (still connecting) when the deadline passed.

Standard library only. The one thing this module cannot cut short is a host name lookup
(`getaddrinfo` takes no timeout).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REFIRE = 0.1  # seconds between two shutdowns of a fetch that outlived its deadline
COMPACT_AT = 256  # heap entries (armed or ended fetches) before ended ones are swept out

_local = threading.local()


def current() -> Deadline | None:
    """Return the deadline of the fetch running in this thread, or None."""
    deadline: Deadline | None = getattr(_local, "deadline", None)
    return deadline


class Deadline:
    """`seconds` from now, for one fetch: connect to last byte, over every hop and retry."""

    __slots__ = ("_armed", "_conn", "_lock", "at", "fired", "seconds", "started")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.at = self.started + seconds
        self._lock = threading.Lock()
        self._conn: Any = None  # the connection in use, whose `.sock` is shut when the deadline passes
        self._armed = False
        self.fired = False  # the watchdog cut the connection

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def passed(self) -> bool:
        """Return True once the deadline has passed (whether or not the watchdog has acted yet)."""
        return self.fired or self.remaining() <= 0

    def watch(self, conn: Any) -> None:
        """Put `conn` (anything with a `.sock`) under this deadline; shut it now if the deadline has fired."""
        with self._lock:
            self._conn = conn
            if self.fired:
                _shut(conn)

    @contextmanager
    def watching(self) -> Iterator[Deadline]:
        """Arm the watchdog for this deadline while the block runs, as this thread's `current()`."""
        previous = current()
        _local.deadline = self
        with self._lock:
            self._armed = True
        _WATCHDOG.arm(self)
        try:
            yield self
        finally:
            with self._lock:
                self._armed = False
                self._conn = None
            _WATCHDOG.ended()
            _local.deadline = previous

    def _fire(self) -> bool:
        """Shut the watched connection down; return True while its fetch still runs (for the watchdog)."""
        with self._lock:
            if not self._armed:
                return False
            self.fired = True
            if self._conn is not None:
                _shut(self._conn)
            return True


def _shut(conn: Any) -> None:
    """Shut the socket of `conn` down for reading and writing, so a blocked read returns now."""
    sock = getattr(conn, "sock", None)
    if sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)  # urllib3's SSLTransport (TLS through an HTTPS proxy)
    if not isinstance(sock, socket.socket):
        return
    # Closed meanwhile, or not connected yet: the next shot (REFIRE) tries again. socket.socket's
    # own shutdown, not SSLSocket's: that one also drops the TLS object under a read in progress,
    # which then fails with a ValueError instead of an OSError.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread that fires each armed deadline when it passes (started on first use)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties in time are broken by order, never by comparing deadlines
        self._thread: threading.Thread | None = None
        self._live = 0  # armed fetches; the heap also holds ended ones until they come up

    def arm(self, deadline: Deadline, at: float | None = None) -> None:
        with self._cond:
            when = deadline.at if at is None else at
            if at is None:
                self._live += 1
            if len(self._heap) > COMPACT_AT and len(self._heap) > 4 * self._live:
                # Fetches end long before their deadlines: without this, a busy process would
                # keep every fetch of the last `timeout` seconds here.
                self._heap = [entry for entry in self._heap if entry[2]._armed]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (when, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mirror-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._cond.notify()  # it is due before what the thread is waiting for

    def ended(self) -> None:
        with self._cond:
            self._live -= 1

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._next_due()
            try:
                if due._fire():
                    self.arm(due, time.monotonic() + REFIRE)
            except Exception:  # a bug here must not end the thread: every later deadline would go unenforced
                logging.getLogger(__name__).exception("the deadline watchdog failed to fire a deadline")

    def _next_due(self) -> Deadline:
        """Return the next deadline that has passed, waiting for it; drop ended fetches on the way."""
        while True:
            while self._heap and not self._heap[0][2]._armed:
                heapq.heappop(self._heap)  # its fetch ended: no need to wait for its time
            if not self._heap:
                self._cond.wait()
                continue
            wait = self._heap[0][0] - time.monotonic()
            if wait <= 0:
                return heapq.heappop(self._heap)[2]
            self._cond.wait(wait)


_WATCHDOG = _Watchdog()


def _after_fork_in_child() -> None:
    global _WATCHDOG  # the parent's thread does not exist in a forked child
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_after_fork_in_child)
