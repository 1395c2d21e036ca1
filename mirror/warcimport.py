"""`mirror import warc`: versions read from WARC and ARC files, through warcio, into the store's write side.

The edge for hostile files: each record is read by warcio and mapped by the pure
`mirror.warcmap.read_record`; what cannot be read is a refusal naming file and offset, never a
traceback, and the import goes on. Revisits are resolved to the payload they repeat: a record of
the files given with that payload digest (or the URL and date it names), else a stored blob when
the digest is a SHA-256. Everything is then written in capture-time order by
`Archive.import_captures` (`mirror.importing`), in batches, each ONE transaction.
The captures of the files given are held in memory until written, their payloads packed
(compressed) and each distinct payload once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from mirror import codec
from mirror.codec import Packed
from mirror.errors import StoreError, UsageError
from mirror.events import WARC_REFUSED
from mirror.warcread import (
    IMPORT_TYPES,
    Capture,
    Read,
    Refusal,
    Revisit,
    Skipped,
    Source,
    parse_date,
    read_record,
)

if TYPE_CHECKING:
    from mirror.archive import Archive
    from mirror.reader import Reader

logger = structlog.get_logger("mirror.warc")

BATCH = 200  # captures per transaction


@dataclass(slots=True)
class ImportReport:
    """What an import did: records read, versions made, repeats, records skipped or refused, targets added."""

    files: list[str]
    records: int = 0
    imported: int = 0
    repeats: int = 0
    skipped: int = 0
    targets_added: int = 0
    bytes: int = 0
    seconds: float = 0.0
    refused: list[Refusal] = field(default_factory=list)


def read_file(path: Path) -> Iterator[Read]:
    """Yield what each record of one WARC or ARC file (gzipped or not) is to the store.

    A file that stops being WARC part-way yields a refusal at the offset where it broke.

    Raises:
        UsageError: the file cannot be opened.
    """
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed below, also when the caller stops early)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    name = path.name
    with stream:
        records = ArchiveIterator(stream, arc2warc=True)
        offset = 0
        try:
            for record in records:
                try:  # read before asking the offset: warcio finishes the record to tell it
                    raw: bytes | Exception = record.raw_stream.read()
                except (ValueError, OSError, EOFError) as exc:
                    raw = exc
                offset = records.get_record_offset()
                yield _mapped(record, raw, Source(name, offset))
        except (ArchiveLoadFailed, ValueError, OSError, EOFError) as exc:
            yield Refusal("", Source(name, offset), f"the file cannot be read on from here: {exc}".strip())


def _mapped(record: object, raw: bytes | Exception, source: Source) -> Read:
    headers = record.rec_headers  # type: ignore[attr-defined]
    url = (headers.get_header("WARC-Target-URI") or "").strip()
    kind = record.rec_type  # type: ignore[attr-defined]
    if kind not in IMPORT_TYPES:
        return Skipped(f"{kind} record", source)
    try:
        at = parse_date(headers.get_header("WARC-Date") or "")
    except ValueError:
        return Refusal(url, source, f"unreadable WARC-Date {headers.get_header('WARC-Date')!r}")
    http = record.http_headers  # type: ignore[attr-defined]
    status = None
    if http is not None and http.get_statuscode():
        try:
            status = int(http.get_statuscode())
        except ValueError:
            return Refusal(url, source, f"unreadable HTTP status {http.statusline!r}")
    if isinstance(raw, Exception):
        return Refusal(url, source, f"its payload cannot be read ({raw})")
    try:
        return read_record(
            kind,
            url,
            at,
            dict(headers.headers),
            status,
            list(http.headers) if http is not None else [],
            raw,
            source,
        )
    except (ValueError, OSError, EOFError) as exc:  # a broken chunk or gzip stream in the payload
        return Refusal(url, source, f"its payload cannot be decoded ({exc})")


def resolve(
    revisits: Sequence[Revisit], captures: Sequence[Capture], store: Reader | None
) -> tuple[list[Capture], list[Refusal]]:
    """Return each revisit as a capture of the payload it repeats, and those that repeat nothing found."""
    by_digest: dict[str, Capture] = {}
    by_place: dict[tuple[str, datetime], Capture] = {}
    for capture in captures:
        for key in capture.digests:
            by_digest.setdefault(key, capture)
        by_place.setdefault((capture.url, capture.at), capture)
    found: list[Capture] = []
    refused: list[Refusal] = []
    for revisit in revisits:
        original = by_digest.get(revisit.digest or "")
        if original is None and revisit.refers_to_url and revisit.refers_to_date:
            original = by_place.get((revisit.refers_to_url, revisit.refers_to_date))
        if original is None:
            original = _stored(revisit, store)
        if original is None:
            refused.append(
                Refusal(
                    revisit.url,
                    revisit.source,
                    "a revisit of a payload in none of the files given, nor in the store",
                )
            )
            continue
        headers = revisit.headers or original.headers
        found.append(
            Capture(
                revisit.url,
                revisit.at,
                original.body,
                original.sha256,
                revisit.status or original.status,
                headers,
                revisit.source,
                "revisit",
            )
        )
    return found, refused


def _stored(revisit: Revisit, store: Reader | None) -> Capture | None:
    if store is None or not revisit.digest or not revisit.digest.startswith("sha256:"):
        return None
    import base64

    sha256 = base64.b32decode(revisit.digest.partition(":")[2]).hex()
    try:
        body = store.read(sha256)
    except StoreError:
        return None
    return Capture(
        revisit.url, revisit.at, body, sha256, revisit.status, revisit.headers, revisit.source, "revisit"
    )


def import_warc(
    archive: Archive,
    paths: Sequence[Path],
    *,
    interval_seconds: int,
    now: datetime | None = None,
    progress: Callable[[int], object] | None = None,
) -> ImportReport:
    """Seed history from WARC and ARC files: each new capture a version at its original time.

    `progress` is called with each record read.

    Raises:
        UsageError: a file cannot be opened (nothing is imported).
        StoreError: the database failed.
    """
    started = time.monotonic()
    for path in paths:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    report = ImportReport([str(p) for p in paths])
    captures: list[Capture] = []
    revisits: list[Revisit] = []
    # Each payload is packed (compressed) as it is read and kept once by SHA-256; the captures
    # keep no bytes of their own until they are written in capture-time order.
    packed: dict[str, Packed] = {}
    for path in paths:
        for read in read_file(path):
            report.records += 1
            if progress is not None:
                progress(1)
            if isinstance(read, Capture):
                if read.sha256 not in packed:
                    packed[read.sha256] = codec.pack(read.body, read.sha256)
                captures.append(replace(read, body=b"", readings=()))
            elif isinstance(read, Revisit):
                revisits.append(read)
            elif isinstance(read, Refusal):
                report.refused.append(read)
            elif isinstance(read, Skipped):
                report.skipped += 1
    resolved, unresolved = resolve(revisits, captures, archive)
    for capture in resolved:  # a revisit of a stored blob brought its bytes
        if capture.sha256 not in packed:
            packed[capture.sha256] = codec.pack(capture.body, capture.sha256)
    report.refused.extend(unresolved)
    for refusal in report.refused:
        logger.warning(
            WARC_REFUSED,
            url=refusal.url,
            file=refusal.source.file,
            offset=refusal.source.offset,
            reason=refusal.reason,
        )
    everything = sorted(captures + resolved, key=lambda c: c.at)
    when = now or datetime.now(UTC)
    for i in range(0, len(everything), BATCH):
        chunk = everything[i : i + BATCH]
        batch = archive.import_captures([(c, packed[c.sha256]) for c in chunk], when, interval_seconds)
        report.imported += len(batch.events)
        report.repeats += batch.repeats
        report.targets_added += batch.targets_added
        report.bytes += sum(packed[c.sha256].size for c in chunk)
    report.seconds = round(time.monotonic() - started, 3)
    return report
