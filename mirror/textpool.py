"""Large changes rendered to text and diffed in a helper process, so worker threads keep the GIL.

Rendering a 90 KB page to text takes ~4 ms during which resiliparse holds the interpreter
lock: in a round where hundreds of pages changed, the fetching threads wait seconds for
it (benchmark, mutated round of 2,000 pages: 6.8 s with rendering in the threads, 4.6 s
without any rendering). A `TextPool` sends both sides of a change to a helper process
(spawned when changes keep coming, then reused), which renders them and aligns their
lines (difflib, ~1.5 ms more of Python per change); the calling thread waits without the
lock, so the fetchers go on and a second core does that work.

Small bodies are rendered in place: shipping them costs more than it saves. So are the
first START_AFTER large changes (a `mirror check` that finds one or two changes must not
start a process and wait for it to import, ~0.3 s), and the changes met while a new
helper is still starting. A helper that dies (killed, out of memory) is replaced for the
next change; the change at hand is rendered in place. Where no process or semaphore can
be made (a tight sandbox), or helpers died MAX_BROKEN times, every change is rendered in
place, after one `textpool.unavailable` warning.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import structlog

from mirror.events import TEXTPOOL_BROKEN, TEXTPOOL_UNAVAILABLE
from mirror.heap import given_back
from mirror.text import to_texts

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

logger = structlog.get_logger("mirror.textpool")

MIN_POOL_BYTES = 64 * 1024  # sides smaller than this together are rendered in place
START_AFTER = 3  # large changes rendered in place before a helper is started: one or two never pay for it
# Helper deaths before the pool gives up: one that cannot even start must not respawn forever.
MAX_BROKEN = 3
P = ParamSpec("P")
R = TypeVar("R")


def default_workers() -> int:
    """Half the cores (at least one): the other half fetches, compresses and serves."""
    return max(1, (os.cpu_count() or 2) // 2)


class TextPool:
    """Runs the comparison of large changes in `workers` helper processes; `run` is safe from any thread."""

    def __init__(self, workers: int | None = None, start_after: int = START_AFTER) -> None:
        self.workers = workers or default_workers()
        self.start_after = start_after
        self._pool: ProcessPoolExecutor | None = None
        self._warm: Future[list[str | None]] | None = None  # the helper's first answer: it has started
        self._lock = threading.Lock()
        self._closed = False
        self._broken = 0
        self._large = 0  # large changes asked for so far

    def start(self, timeout: float | None = None) -> bool:
        """Start the helpers if they are not running; return True once one answers within `timeout`."""
        if self._get() is None or self._warm is None:
            return False
        try:
            self._warm.result(timeout)
        except Exception:  # a timeout, a dead helper or a closed pool: `run` deals with each
            return False
        return True

    def run(self, size: int, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Return `fn(*args, **kwargs)`, computed by a helper when its input is `size` >= MIN_POOL_BYTES.

        `fn` and its arguments must pickle (a module-level function, bytes and strings).
        """
        if size < MIN_POOL_BYTES:
            return fn(*args, **kwargs)
        with self._lock:
            self._large += 1
            early = self._large <= self.start_after
        if early:
            return fn(*args, **kwargs)
        pool = self._get()
        if pool is None or self._warm is None or not self._warm.done():
            # A new helper imports for ~0.3 s: changes met meanwhile are computed here, not queued.
            return fn(*args, **kwargs)
        from concurrent.futures.process import BrokenProcessPool  # loaded with the pool, by _get

        try:
            return pool.submit(given_back, fn, *args, **kwargs).result()
        except BrokenProcessPool:  # a helper died, now or before this call: the next call gets new ones
            self._lost(pool)
        except CancelledError:  # closed while this change waited: a reload or a shutdown
            pass
        except OSError as exc:  # no process or semaphore may be made here (a sandbox)
            logger.warning(TEXTPOOL_UNAVAILABLE, error=str(exc))
            self.close()
        return fn(*args, **kwargs)

    def close(self) -> None:
        """Stop the helpers; later calls render in place."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _get(self) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._closed:
                return None
            if self._pool is None:
                # Loaded here, not at start-up (~40 ms): most rounds change no large page.
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                # spawn: a fork would copy this process's threads' locks in whatever state they are.
                context = multiprocessing.get_context("spawn")
                try:
                    self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
                    self._warm = self._pool.submit(to_texts, [])
                except (OSError, RuntimeError) as exc:  # RuntimeError: BrokenProcessPool at once
                    logger.warning(TEXTPOOL_UNAVAILABLE, error=str(exc))
                    self._closed = True
                    return None
            return self._pool

    def _lost(self, pool: ProcessPoolExecutor) -> None:
        """Count a broken pool once (several threads may meet it) and replace it, or give up."""
        with self._lock:
            if self._pool is not pool:
                return  # another thread counted it already
            self._pool = None
            self._broken += 1
            broken = self._broken
        logger.warning(TEXTPOOL_BROKEN, workers=self.workers, times=broken)
        if broken >= MAX_BROKEN:
            logger.warning(TEXTPOOL_UNAVAILABLE, error=f"helpers died {broken} times")
            self.close()
        pool.shutdown(wait=False, cancel_futures=True)
