"""Per-host politeness: at most N requests in flight to one host, and a delay between their starts.

The clock and sleep are injected so the rules are tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class _Host:
    slots: threading.BoundedSemaphore
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_start: float = 0.0


class HostGate:
    """Admits requests per host: `with gate.slot(host): fetch(...)`.

    - at most `concurrency` requests to one host at once;
    - starts of requests to one host are at least `delay` seconds apart (0 disables).
    """

    def __init__(
        self,
        concurrency: int,
        delay: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError("per-host concurrency must be at least 1")
        self.concurrency = concurrency
        self.delay = delay
        self._clock = clock
        self._sleep = sleep
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()

    def _host(self, host: str) -> _Host:
        with self._lock:
            entry = self._hosts.get(host)
            if entry is None:
                entry = self._hosts[host] = _Host(threading.BoundedSemaphore(self.concurrency))
            return entry

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Wait for a free slot and the host's delay, then hold the slot for the block."""
        entry = self._host(host)
        with entry.slots:
            with entry.lock:
                now = self._clock()
                start = max(now, entry.next_start)
                entry.next_start = start + self.delay
            if start > now:
                self._sleep(start - now)
            yield

    def defer(self, host: str, seconds: float) -> None:
        """Push the host's next start at least `seconds` into the future (Retry-After)."""
        entry = self._host(host)
        with entry.lock:
            entry.next_start = max(entry.next_start, self._clock() + seconds)
