"""Repair from a second copy: every damaged or missing blob a source holds is put back, re-hashed.

`run(archive, source)`:

1. verifies the store (`Reader.verify`); its report names every blob that does not read
   back intact, or that a snapshot names but is missing, with the blob whose damage spoils
   it: itself, or a base it is rebuilt from through delta chains (`damaged_blobs`);
2. asks the source for those culprits, re-hashes each copy it gives, and has the store put
   it back whole, one transaction each, with a `document.repaired` event on the hash chain
   for every document whose versions it gives back (`mirror.mending`);
3. asks again for every blob still unreadable: a delta whose base the source had not got
   is put back whole itself, so each of its versions reads again without that base;
4. verifies again: what is still damaged is listed, with why.

A source is anything with `describe` and `find` (`RepairSource`): another `mirror` store,
opened read-only (`StoreSource`), or a folder of WARC files (`mirror.warcsource.WarcFolder`).
A source is never trusted: bytes that do not hash to the digest asked for are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import structlog

from mirror.codec import sha256_of
from mirror.errors import DatabaseUnavailable, StoreError, UsageError
from mirror.events import DOCUMENT_REPAIRED, REPAIR_FINISHED, REPAIR_UNREPAIRED
from mirror.integrity import MISSING_BLOB, VerifyReport
from mirror.mending import NotMended

if TYPE_CHECKING:
    from mirror.archive import Archive
    from mirror.reader import Reader

logger = structlog.get_logger("mirror.repair")

Progress = Callable[[int], object]
NOT_IN_SOURCE = "not in the source (or damaged there too)"


class RepairSource(Protocol):
    """Where lost bytes come back from: another copy of the archive."""

    def describe(self) -> str:
        """Return what the source is, for the events and the report (`mirror store sqlite:///...`)."""
        ...

    def find(self, wanted: Collection[str]) -> Iterator[tuple[str, bytes]]:
        """Yield (sha256 lowercase hex, bytes) for each wanted digest it has, each at most once."""
        ...


class StoreSource:
    """Another `mirror` store, read through its read side (read-only transactions, nothing migrated).

    Its blobs are read as `show` reads them: rebuilt through their deltas and re-hashed,
    so one damaged there is not given.
    """

    def __init__(self, store: Reader) -> None:
        self.store = store

    def describe(self) -> str:
        return f"mirror store {self.store.database}"

    def find(self, wanted: Collection[str]) -> Iterator[tuple[str, bytes]]:
        for sha256 in sorted(set(wanted)):
            try:
                data = self.store.read(sha256)
            except DatabaseUnavailable:
                raise
            except StoreError:  # not there, or damaged there too
                continue
            yield sha256, data


def source_kind(text: str) -> tuple[Literal["store", "warc"], str]:
    """Return what a `--repair-from SOURCE` names: ("store", database URL) or ("warc", folder).

    A URL (`sqlite:///...`, `postgresql://...`) or a SQLite file is a store; a folder, WARC files.

    Raises:
        UsageError: none of these.
    """
    if "://" in text:
        return "store", text
    path = Path(text)
    if path.is_dir():
        return "warc", text
    if not path.is_file():
        raise UsageError(f"--repair-from {text}: no such file or folder")
    with path.open("rb") as f:
        if f.read(16) == b"SQLite format 3\x00":
            return "store", f"sqlite:///{path.resolve()}"
    raise UsageError(f"--repair-from {text}: not a database URL, a SQLite store or a folder of WARC files")


@dataclass(frozen=True, slots=True)
class Repaired:
    """A blob put back: what was wrong with it, the versions it gives back, the events that say so."""

    sha256: str
    size: int
    problem: str
    snapshots: tuple[str, ...]
    events: tuple[int, ...]  # their sequence numbers in the chain


@dataclass(frozen=True, slots=True)
class Unrepaired:
    """A blob still damaged or missing after the repair, and why."""

    sha256: str
    problem: str
    reason: str
    snapshots: tuple[str, ...]


@dataclass
class RepairReport:
    """What `verify --repair-from` did, and the store's verification after it."""

    source: str
    verify: VerifyReport
    repaired: list[Repaired] = field(default_factory=list)
    unrepaired: list[Unrepaired] = field(default_factory=list)


def run(
    archive: Archive,
    source: RepairSource,
    *,
    verify: Callable[[], VerifyReport] | None = None,
    progress: Progress | None = None,
    now: Callable[[], datetime] | None = None,
) -> RepairReport:
    """Return what was repaired from `source` and the verification after (see the module's steps).

    `verify` runs a verification (default `archive.verify()`; the command line adds its
    progress bar); `progress(n)` is called with each blob the source gave.

    Raises:
        StoreError: the database (this store's or the source's) failed.
    """
    verify = verify or archive.verify
    clock = now or (lambda: datetime.now(UTC))
    before = verify()
    described = source.describe()
    report = RepairReport(described, before)
    damaged = dict(before.damaged_blobs)
    if not damaged:
        return report
    problems = _problems(before)
    refused: dict[str, str] = {}
    done: dict[str, Repaired] = {}

    def put_back(wanted: Collection[str]) -> None:
        for sha256, data in source.find(wanted):
            if progress is not None:
                progress(1)
            actual = sha256_of(data)
            if sha256 not in wanted or sha256 in done:
                continue
            if actual != sha256:
                refused[sha256] = f"the source's copy hashes to {actual}"
                continue
            problem = problems.get(sha256, ("missing", ()))[0]
            try:
                mended = archive.mend_blob(sha256, data, source=described, problem=problem, now=clock())
            except NotMended as exc:
                refused[sha256] = str(exc)
                continue
            if mended is None:
                continue
            done[sha256] = Repaired(
                sha256, mended.size, problem, mended.snapshots, tuple(e.seq for e in mended.events)
            )
            for event in mended.events:
                logger.warning(
                    DOCUMENT_REPAIRED,
                    url=event.url,
                    seq=event.seq,
                    new_sha256=sha256,
                    **event.details,
                )

    culprits = set(damaged.values())
    put_back(culprits)
    still = archive.unreadable_blobs(set(damaged) | culprits)
    if still - done.keys():
        put_back(still - done.keys())
    report.repaired = sorted(done.values(), key=lambda r: r.sha256)
    after = verify() if done else before
    report.verify = after
    now_found = _problems(after) if done else problems
    for sha256 in sorted(after.damaged_blobs):
        problem, snapshots = now_found.get(sha256) or problems.get(sha256, ("missing", ()))
        reason = refused.get(sha256) or _why_not(sha256, after.damaged_blobs, refused)
        report.unrepaired.append(Unrepaired(sha256, problem, reason, snapshots))
        logger.warning(
            REPAIR_UNREPAIRED, sha256=sha256, problem=problem, reason=reason, snapshots=list(snapshots)
        )
    logger.info(
        REPAIR_FINISHED, source=described, repaired=len(report.repaired), unrepaired=len(report.unrepaired)
    )
    return report


def _why_not(sha256: str, damaged: dict[str, str], refused: dict[str, str]) -> str:
    culprit = damaged.get(sha256, sha256)
    if culprit == sha256:
        return NOT_IN_SOURCE
    return f"{NOT_IN_SOURCE}, nor its base {culprit}" + (
        f" ({refused[culprit]})" if culprit in refused else ""
    )


def _problems(report: VerifyReport) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Return blob → (what verify found wrong with it, the versions it spoils) from a report."""
    found = {p.key: (p.problem, p.snapshots) for p in report.problems if p.item == "blob"}
    missing = {MISSING_BLOB.format(sha256): sha256 for sha256 in report.damaged_blobs if sha256 not in found}
    for p in report.problems:
        if p.item == "snapshot" and p.problem in missing:
            sha256 = missing[p.problem]
            found[sha256] = ("missing", (*found.get(sha256, ("", ()))[1], *p.snapshots))
    return found
