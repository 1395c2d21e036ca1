"""Discovery: which new targets the `[[sources]]` of the config find. Returns values; stores nothing.

Two ways in, both ending in `Archive.add_discovered(targets, now)` by the caller:

- `Discovery.found(url, result, known_count)`: after a check of a page under a crawl
  source's scope gave a new version, the in-scope pages it links to (source "crawl").
  Round after round, a crawl spreads from its start page through the scope.
- `Discovery.sitemap_targets(session, limits)`: for a periodic job, the pages listed by
  each sitemap source (source "sitemap"), following a sitemap index a bounded number of times.

`max_pages` bounds the targets under a source's scope: `known_count(scope)` says how many
the store holds already, and no more than `max_pages` minus that are returned. Pass
`known(urls)` (the URLs of `urls` already in the store) too, and the budget is spent on
new URLs only; without it, links to known pages use up budget of that call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from urllib.parse import urlsplit

import requests
import structlog

from mirror.config_targets import Source
from mirror.discover import SitemapError, canonical_url, in_scope, links, sitemap_urls
from mirror.domain import FetchLimits, FetchResult, Target
from mirror.events import SITEMAP_FAILED, SITEMAP_READ
from mirror.fetch import fetch
from mirror.robots import RobotsCache
from mirror.urls import BadURL, host_of

logger = structlog.get_logger("mirror.crawl")

MAX_SITEMAPS = 50  # sitemap files fetched per source and run, the index included

KnownCount = Callable[[str], int]  # scope prefix → targets in the store under it
Known = Callable[[Sequence[str]], Collection[str]]  # URLs → those of them in the store
Gate = Callable[[str], AbstractContextManager[object]]  # host → a politeness slot


class Discovery:
    """The discovery rules of one config's `sources`."""

    def __init__(self, sources: Sequence[Source], *, max_sitemaps: int = MAX_SITEMAPS) -> None:
        self.sources = tuple(sources)
        self.crawls = tuple(s for s in self.sources if s.kind == "crawl")
        self.sitemaps = tuple(s for s in self.sources if s.kind == "sitemap")
        self.max_sitemaps = max_sitemaps

    def honours_robots(self, url: str) -> bool:
        """Return True when robots.txt must be asked before fetching `url`.

        True when `url` lies under the scope of a source and no source covering it says
        `robots = false`. A target configured by hand outside every source is fetched
        because a person asked for it by name, so robots.txt is not asked for it.
        """
        covering = [s for s in self.sources if in_scope(url, s.scope)]
        return bool(covering) and all(s.robots for s in covering)

    def found(
        self,
        target_url: str,
        result: FetchResult,
        known_count: KnownCount,
        known: Known | None = None,
    ) -> list[Target]:
        """Return the targets to add for the links of a fetched page (source "crawl").

        Only a page under a crawl source's scope is read, and only its links under that
        scope are kept, at most `max_pages - known_count(scope)` of them per source, in
        document order. Links resolve against the URL that answered (`result.final_url`).
        A result without a body (a failure, a 304), or a body that is not HTML, finds nothing.
        """
        if result.body is None or result.error is not None:
            return []
        sources = [s for s in self.crawls if in_scope(target_url, s.scope)]
        if not sources:
            return []
        page = {_normal(target_url), _normal(result.final_url)}
        candidates = [u for u in links(result.body, result.content_type, result.final_url) if u not in page]
        chosen: dict[str, Target] = {}
        for source in sources:
            under = [u for u in candidates if in_scope(u, source.scope) and u not in chosen]
            for url in _within_budget(under, source, known_count, known):
                chosen[url] = Target(url, source.interval, "crawl")
        return list(chosen.values())

    def sitemap_targets(
        self,
        session: requests.Session,
        limits: FetchLimits,
        *,
        known_count: KnownCount | None = None,
        known: Known | None = None,
        robots: RobotsCache | None = None,
        gate: Gate | None = None,
    ) -> list[Target]:
        """Return the targets listed by the sitemap sources (source "sitemap"), in scope and budget.

        Each sitemap is fetched with `fetch`; a sitemap index is followed breadth first to
        sitemaps on the same site, at most `max_sitemaps` files per source. A sitemap that
        fails (network, HTTP, not a sitemap) is logged as `sitemap.failed` and skipped; the
        others still count. With `robots`, a source that honours robots.txt skips the
        sitemaps it disallows; with `gate`, each fetch holds `gate(host)`
        (e.g. `HostGate.slot`). Without `known_count`, only `max_pages` bounds a source.
        """
        chosen: dict[str, Target] = {}
        for source in self.sitemaps:
            listed = self._read_sitemaps(source, session, limits, robots, gate)
            under = [u for u in listed if in_scope(u, source.scope) and u not in chosen]
            kept = _within_budget(under, source, known_count, known)
            for url in kept:
                chosen[url] = Target(url, source.interval, "sitemap")
            logger.info(SITEMAP_READ, url=source.url, listed=len(listed), in_scope=len(under), kept=len(kept))
        return list(chosen.values())

    def _read_sitemaps(
        self,
        source: Source,
        session: requests.Session,
        limits: FetchLimits,
        robots: RobotsCache | None,
        gate: Gate | None,
    ) -> list[str]:
        site = _origin(source.url)
        queue, seen = [source.url], {source.url}
        pages: dict[str, None] = {}  # an ordered set
        fetched = 0
        while queue and fetched < self.max_sitemaps:
            url = queue.pop(0)
            if robots is not None and source.robots and not robots.allowed(url, session, limits):
                logger.warning(SITEMAP_FAILED, url=url, error="robots", message="disallowed by robots.txt")
                continue
            fetched += 1
            with gate(host_of(url)) if gate is not None else nullcontext():
                result = fetch(url, session, limits)
            if result.body is None or result.error is not None:
                error = result.error.kind if result.error else f"http {result.status}"
                message = result.error.message if result.error else "no body"
                logger.warning(SITEMAP_FAILED, url=url, status=result.status, error=error, message=message)
                continue
            try:
                found, nested = sitemap_urls(result.body)
            except SitemapError as exc:
                logger.warning(
                    SITEMAP_FAILED, url=url, status=result.status, error="bad_sitemap", message=str(exc)
                )
                continue
            pages.update(dict.fromkeys(found))
            # The sitemap protocol lets an index name sitemaps of its own site only.
            for child in nested:
                if child not in seen and _origin(child) == site:
                    seen.add(child)
                    queue.append(child)
        if queue:
            logger.warning(
                SITEMAP_FAILED,
                url=source.url,
                error="too_many_sitemaps",
                message=f"read {fetched} sitemaps, {len(queue)} more left unread",
            )
        return list(pages)


def _within_budget(
    urls: list[str], source: Source, known_count: KnownCount | None, known: Known | None
) -> list[str]:
    """Return the first of `urls` that `source.max_pages` still allows (only new ones, given `known`)."""
    if known is not None and urls:
        present = set(known(urls))
        urls = [u for u in urls if u not in present]
    left = source.max_pages - (known_count(source.scope) if known_count is not None else 0)
    return urls[: max(0, left)]


def _normal(url: str) -> str:
    try:
        return canonical_url(url)
    except BadURL:
        return url


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc
