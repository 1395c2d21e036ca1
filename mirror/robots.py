"""robots.txt: whether we may fetch a URL, per site, cached, fetched through `fetch` (RFC 9309).

The rules, per origin (scheme, host and port: each has its own robots.txt):

- 2xx: its rules apply to our product token (`mirror`, from the User-Agent), else to `*`.
  The parser is Protego (Scrapy's): wildcards, `$`, longest match wins, Crawl-delay.
- 4xx (but 429), or more redirects than a fetch follows: no robots.txt, everything is allowed.
- 5xx, 429 or a network failure: the site is unreachable, so nothing is allowed for now
  (RFC 9309 2.3.1.4), and robots.txt is asked again after `retry_ttl`, not `ttl`.
- A robots.txt larger than `MAX_ROBOTS_BYTES` is refused the same way, kept for `ttl`.

An answer is kept for `ttl` (24 h by default, RFC 9309 2.4). One fetch per origin runs at
a time: threads asking about the same site wait for it, threads asking about others don't.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import requests
import structlog
from protego import Protego

from mirror.domain import FetchLimits, FetchResult
from mirror.events import ROBOTS_FETCHED, ROBOTS_UNREACHABLE
from mirror.fetch import fetch
from mirror.urls import BadURL, normalize_url

logger = structlog.get_logger("mirror.robots")

MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309 2.5: parse at least 500 KiB
DEFAULT_TTL = 24 * 3600.0
DEFAULT_RETRY_TTL = 15 * 60.0
DEFAULT_PRODUCT = "mirror"
MAX_SITES = 10_000  # past this many cached sites, expired answers are dropped


@dataclass(frozen=True, slots=True)
class _Entry:
    rules: Protego | None  # None: no robots.txt, everything allowed
    expires: float  # clock time


_DISALLOW_ALL = Protego.parse("User-agent: *\nDisallow: /\n")


def product_token(user_agent: str) -> str:
    """Return the product token robots.txt groups are matched with: `mirror` of `mirror/0.1 (+url)`."""
    token = user_agent.strip().split("/", 1)[0].split(" ", 1)[0]
    return token.lower() or DEFAULT_PRODUCT


def robots_url(url: str) -> str:
    """Return the robots.txt URL that governs `url`.

    Raises:
        BadURL: not an absolute http(s) URL.
    """
    parts = urlsplit(normalize_url(url))
    return f"{parts.scheme}://{parts.netloc}/robots.txt"


class RobotsCache:
    """robots.txt per origin, fetched when first needed and kept for a while. Thread-safe.

    `allowed(url, session, limits)` before a fetch; `crawl_delay(host)` for politeness.
    The clock is injected so expiry is tested without waiting.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        retry_ttl: float = DEFAULT_RETRY_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.retry_ttl = retry_ttl
        self._clock = clock
        self._entries: dict[str, _Entry] = {}  # robots.txt URL → answer
        self._locks: dict[str, threading.Lock] = {}  # robots.txt URL → one fetch at a time
        self._lock = threading.Lock()  # guards both dicts

    def allowed(self, url: str, session: requests.Session, limits: FetchLimits) -> bool:
        """Return True when the site's robots.txt lets our User-Agent fetch `url`.

        Fetches robots.txt (through `fetch`: deadline, size cap, our User-Agent) when it is
        not cached or has expired. A URL that is not http(s) is not allowed. Never raises
        for a network problem: an unreachable site is disallowed for now.
        """
        try:
            key = robots_url(url)
        except BadURL:
            return False
        entry = self._entry(key, session, limits)
        if entry.rules is None:
            return True
        return bool(entry.rules.can_fetch(normalize_url(url), product_token(limits.user_agent)))

    def crawl_delay(self, host: str, user_agent: str = DEFAULT_PRODUCT) -> float | None:
        """Return the Crawl-delay (seconds) a cached robots.txt of `host` asks of us, or None.

        `host` is a host as `urls.host_of` gives it (with a non-default port); when both the
        http and https sites of it are cached, the longer delay wins. Fetches nothing.
        """
        now = self._clock()
        token = product_token(user_agent)
        delays: list[float] = []
        with self._lock:
            entries = [
                e for k, e in self._entries.items() if urlsplit(k).netloc == host.lower() and e.expires > now
            ]
        for entry in entries:
            if entry.rules is not None:
                delay = entry.rules.crawl_delay(token)
                if delay is not None:
                    delays.append(float(delay))
        return max(delays) if delays else None

    def _entry(self, key: str, session: requests.Session, limits: FetchLimits) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > self._clock():
                return entry
            site_lock = self._locks.setdefault(key, threading.Lock())
        with site_lock:
            with self._lock:  # another thread may have fetched it while we waited
                entry = self._entries.get(key)
                if entry is not None and entry.expires > self._clock():
                    return entry
            entry = self._fetch(key, session, limits)
            with self._lock:
                self._entries[key] = entry
                if len(self._entries) > MAX_SITES:
                    self._forget_expired()
            return entry

    def _forget_expired(self) -> None:
        # Called with self._lock held. A lock in use is kept: a thread may be waiting on it.
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            del self._entries[key]
            if not self._locks[key].locked():
                del self._locks[key]

    def _fetch(self, key: str, session: requests.Session, limits: FetchLimits) -> _Entry:
        # No retries: a failed robots.txt is asked again after retry_ttl, and a worker waits meanwhile.
        capped = replace(limits, max_bytes=min(limits.max_bytes, MAX_ROBOTS_BYTES), retries=0)
        result = fetch(key, session, capped)
        entry = self._interpret(result)
        logger.debug(ROBOTS_FETCHED, url=key, status=result.status, rules=entry.rules is not None)
        return entry

    def _interpret(self, result: FetchResult) -> _Entry:
        now = self._clock()
        status, error = result.status, result.error
        if error is None and result.body is not None:
            text = result.body.decode("utf-8", "replace")  # RFC 9309 2.3: UTF-8
            return _Entry(Protego.parse(text), now + self.ttl)
        if error is not None and error.kind == "too_many_redirects":
            return _Entry(None, now + self.ttl)  # RFC 9309 2.3.1.2: as if unavailable
        if status is not None and 400 <= status < 500 and status != 429:
            return _Entry(None, now + self.ttl)  # RFC 9309 2.3.1.3: unavailable, crawl freely
        too_large = error is not None and error.kind == "too_large"
        logger.warning(
            ROBOTS_UNREACHABLE,
            url=result.url,
            status=status,
            error=error.kind if error else None,
            retry_in=self.ttl if too_large else self.retry_ttl,
        )
        return _Entry(_DISALLOW_ALL, now + (self.ttl if too_large else self.retry_ttl))
