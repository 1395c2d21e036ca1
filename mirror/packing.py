"""Packing a check's blobs before the write: the one place a delta base is chosen.

A new version is stored as a zstd delta against a base when that is smaller (`codec.pack`).
The base is chosen here, and only here, in this order:

1. the version the new one was diffed against (`outcome.diff_from`), whose content the
   check has read already for the diff;
2. else the target's current version (a reappearance, a move);
3. else, for a new document, a whole page of its site kept in memory (`HostBases`): a page
   of the same host and media type, or an earlier binary of the same file name.

A stored base is used only while its chain is shorter than `codec.MAX_CHAIN`, both are at
most `codec.MAX_DELTA_BYTES`, and its content reads back whole (a damaged base must not take
a new version down with it). A site's base may still be queued, not yet written: its whole
packed blob then travels with the record (`CheckRecord.base_blob`), and the store writes it
first if it has not got it (its own check may have been superseded). The store stores; it
never packs. Runs outside any write transaction, so workers compress in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from mirror import codec
from mirror.codec import DeltaBase, Packed
from mirror.dictionaries import HostBases
from mirror.domain import FetchResult, Outcome, OutcomeKind, TargetState
from mirror.errors import StoreError
from mirror.recording import CheckRecord


class BlobSource(Protocol):
    """The store's read side as packing needs it: a stored blob's chain facts, and its content."""

    def delta_base(self, sha256: str) -> DeltaBase | None: ...

    def read(self, sha256: str) -> bytes: ...


class Packer:
    """Chooses each check's delta base and packs its blobs; remembers new pages as their site's bases."""

    def __init__(self, store: BlobSource, bases: HostBases | None = None) -> None:
        self.store = store
        self.bases = bases if bases is not None else HostBases()

    def record(
        self,
        url: str,
        result: FetchResult,
        outcome: Outcome,
        now: datetime,
        *,
        state: TargetState | None = None,
        old: bytes | None = None,
        worker: str | None = None,
        next_check_in: timedelta | None = None,
        judged: TargetState | None = None,
    ) -> CheckRecord:
        """Return the check ready for the store: a new version's blob (or a soft 404's page) packed now.

        `state` is the target's state before the check (its current version is the base
        when nothing was diffed); `old` the content of `outcome.diff_from`, when read
        already. `judged` is the state the check was judged against: the store records
        the check only while it still holds it.

        Raises:
            StoreError: a new version has no body.
        """
        packed = evidence = base_blob = None
        if outcome.new_version:
            if result.body is None:
                raise StoreError(f"{url}: a new version needs a body")
            base, base_bytes, base_blob = self._base(url, result, outcome, state, old)
            packed = codec.pack(result.body, result.body_sha256, base=base, base_bytes=base_bytes)
            if packed.base_sha256 is None:
                base_blob = None  # stored whole: it depends on nothing
        elif outcome.evidence and result.body is not None:
            evidence = codec.pack(result.body, result.body_sha256)  # whole: no version is its base
        return CheckRecord(
            url, result, outcome, now, worker, next_check_in, packed, judged, evidence, base_blob
        )

    def offer(self, record: CheckRecord) -> None:
        """Offer a recorded (or queued) new page's whole blob as the delta base of its site's new pages."""
        if record.outcome.kind is OutcomeKind.NEW:
            self.bases.offer(record.url, record.result.content_type, record.blob, record.result.body)

    def _base(
        self,
        url: str,
        result: FetchResult,
        outcome: Outcome,
        state: TargetState | None,
        old: bytes | None,
    ) -> tuple[DeltaBase | None, bytes | None, Packed | None]:
        """Return the delta base, its content, and its whole blob when it may not be stored yet."""
        assert result.body is not None  # checked by the caller
        if len(result.body) > codec.MAX_DELTA_BYTES:
            return None, None, None
        stored = outcome.diff_from or (state.current_sha256 if state is not None else None)
        if stored is not None:
            content = old if stored == outcome.diff_from else None
            base, data = self._stored(stored, content)
            return base, data, None
        shared = self.bases.base_for(url, result.content_type)
        if shared is None:
            return None, None, None
        return shared

    def _stored(self, sha256: str, content: bytes | None) -> tuple[DeltaBase | None, bytes | None]:
        """Return a stored blob as a base, with its content: none when missing, too big, too deep, damaged."""
        info = self.store.delta_base(sha256)
        if info is None or info.chain_length >= codec.MAX_CHAIN or info.size > codec.MAX_DELTA_BYTES:
            return None, None
        if content is None:
            try:
                content = self.store.read(sha256)
            except StoreError:  # a damaged base must not take a new version down with it
                return None, None
        return info, content


def pack_alone(
    store: BlobSource,
    state_of: Callable[[str], TargetState],
    url: str,
    result: FetchResult,
    outcome: Outcome,
    now: datetime,
    *,
    worker: str | None = None,
    next_check_in: timedelta | None = None,
) -> CheckRecord:
    """Return one check packed as a lone caller (a test, a benchmark) would: against stored versions."""
    state = state_of(url) if outcome.new_version and outcome.diff_from is None else None
    return Packer(store).record(
        url, result, outcome, now, state=state, worker=worker, next_check_in=next_check_in
    )
