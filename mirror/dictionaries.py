"""Whole blobs kept in memory as delta bases for new documents: a site's page, or an earlier copy.

A new document has no previous version to be a delta against, yet:

- the pages of one site share their boilerplate (navigation, headers, scripts, footers).
  Stored as a zstd delta against one whole page of the same host and media type (a
  raw-content dictionary), a new page costs about its own words: on the benchmark corpus
  (Sphinx HTML) 8.4x smaller than the page at level 6, against 6.8x for the page alone;
- binary documents (PDF, zip, images) share nothing with other documents but their own
  copies: the same report under a second folder, a re-upload with a new trailer. Like
  git's delta search, which pairs objects by name, a new binary is tried against the
  last one of its site with the same file name, and against nothing else (a delta of one
  PDF against another PDF costs the compression and saves nothing).

A base is a whole blob, so a read decodes at most one extra blob; `blobs.pack` keeps the
delta only when it is smaller. A blob becomes a base once it is committed or queued for
the writer; its whole packed blob is kept with it and travels with each dependant, so the
store can write it first should its own check never be written (`mirror.packing`).
Pure: no database; the checker offers each new document after it is queued.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from urllib.parse import urlsplit

from mirror.codec import ZSTD, ZSTD_LEVEL, DeltaBase, Packed
from mirror.urls import host_of

MIN_BASE_BYTES = 8 * 1024  # a smaller page shares too little to be worth a dependency
MAX_BASE_BYTES = 2 * 1024 * 1024  # a larger one costs more to load as a dictionary than it saves
NAMED_BASES_BYTES = 32 * 1024 * 1024  # binaries kept by file name, least recently used dropped first

# Media types whose documents of one site share markup: any page of the site is a good base.
_SHARED_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "application/xml", "application/json", "application/javascript"}
)


# A base, its content, and its whole packed blob (written with a dependant if it is not yet stored).
_Base = tuple[DeltaBase, bytes, Packed]


def media_type(content_type: str | None) -> str:
    """Return the media type of a Content-Type header, lower-cased, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _shares_markup(media: str) -> bool:
    return media in _SHARED_TYPES or media.startswith("text/") or media.endswith(("+xml", "+json"))


def _file_name(url: str) -> str:
    return urlsplit(url).path.rpartition("/")[2]


class HostBases:
    """Delta bases of new documents: per (host, media type) for markup, per (host, file name) for binaries."""

    def __init__(self, named_budget: int = NAMED_BASES_BYTES) -> None:
        self._bases: dict[tuple[str, str], _Base] = {}
        self._named: OrderedDict[tuple[str, str, str], _Base] = OrderedDict()
        self._named_bytes = 0
        self._named_budget = named_budget
        self._lock = threading.Lock()

    def _key(self, url: str, content_type: str | None) -> tuple[str, str, str]:
        """Return (host, media type, file name); the name is empty for markup, shared by the whole site."""
        media = media_type(content_type)
        return host_of(url), media, "" if _shares_markup(media) else _file_name(url)

    def base_for(self, url: str, content_type: str | None) -> _Base | None:
        """Return the base, its content and its whole blob for a new document at `url`; None if none yet."""
        host, media, name = self._key(url, content_type)
        with self._lock:
            if not name:
                return self._bases.get((host, media))
            found = self._named.get((host, media, name))
            if found is not None:
                self._named.move_to_end((host, media, name))
            return found

    def offer(self, url: str, content_type: str | None, packed: Packed | None, body: bytes | None) -> None:
        """Keep a whole blob as the base of its host and media type (or file name), if they have none yet."""
        if packed is None or body is None or packed.codec != ZSTD:
            return
        if not MIN_BASE_BYTES <= packed.size <= MAX_BASE_BYTES:
            return
        host, media, name = self._key(url, content_type)
        # Deltas against a base at the whole-blob level: every new document that uses it pays it.
        base = (DeltaBase(packed.sha256, packed.size, 0, packed.sha256, level=ZSTD_LEVEL), body, packed)
        with self._lock:
            if not name:
                self._bases.setdefault((host, media), base)
                return
            key = (host, media, name)
            if key in self._named or len(body) > self._named_budget:
                return
            self._named[key] = base
            self._named_bytes += len(body) + packed.stored_size
            while self._named_bytes > self._named_budget:
                _, (_, dropped, dropped_packed) = self._named.popitem(last=False)
                self._named_bytes -= len(dropped) + dropped_packed.stored_size
