"""`mirror export warc`: a store's history written as record-gzipped WARC 1.1 files, through warcio.

The records come from the pure mapping (`mirror.warcmap.plan_target`); this module is the edge
that reads the store (its read side only) and writes files. Each file opens with a `warcinfo`
record; a new file is started when one passes `max_size`. warcio writes every record as its own
gzip member, so indexers find each by offset. A file is written as `NAME.part`, flushed to
disk and renamed when whole: an interrupted export leaves no half file under a WARC name.
Streams: one document's record and one payload in memory at a time, and a bounded cache of
decoded delta bases (`Reader.blob_reader`).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from mirror import __version__
from mirror.errors import RestoreError, TargetNotFound
from mirror.warcmap import METADATA_TYPE, RecordPlan, plan_target

if TYPE_CHECKING:
    from mirror.reader import Reader

DEFAULT_MAX_SIZE = 1_000_000_000  # 1 GB, the size the WARC standard's annex suggests
KINDS = ("warcinfo", "response", "revisit", "metadata")


@dataclass(slots=True)
class ExportReport:
    """What an export wrote: file names (in `folder`), records by type, bytes on disk, seconds."""

    folder: str
    files: list[str] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    bytes: int = 0
    payload_bytes: int = 0
    documents: int = 0
    seconds: float = 0.0


class _Files:
    """The WARC files of one export: a new one, opened with its warcinfo, when one passes `max_size`."""

    def __init__(self, folder: Path, stem: str, max_size: int, report: ExportReport) -> None:
        self.folder, self.stem, self.max_size, self.report = folder, stem, max_size, report
        self.out: IO[bytes] | None = None
        self.writer: WARCWriter | None = None
        self.name = ""

    def writer_for_next(self) -> WARCWriter:
        if self.out is not None and self.out.tell() >= self.max_size:
            self.close()
        if self.writer is None:
            self.name = f"{self.stem}-{len(self.report.files) + 1:05d}.warc.gz"
            if (self.folder / self.name).exists():
                raise RestoreError(str(self.folder / self.name), "exists; export to another folder")
            self.out = open(self.folder / f"{self.name}.part", "xb")  # noqa: SIM115 (closed by close())
            self.writer = WARCWriter(self.out, gzip=True, warc_version="1.1")
            info = {
                "software": f"mirror/{__version__}",
                "format": "WARC File Format 1.1",
                "conformsTo": "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/",
                "description": "versions of documents kept by mirror, with their re-checks and events",
            }
            self.writer.write_record(self.writer.create_warcinfo_record(self.name, info))
            self.report.records["warcinfo"] += 1
        return self.writer

    def close(self) -> None:
        if self.out is None:
            return
        self.out.flush()
        os.fsync(self.out.fileno())
        size = self.out.tell()
        self.out.close()
        os.replace(self.folder / f"{self.name}.part", self.folder / self.name)
        self.report.files.append(self.name)
        self.report.bytes += size
        self.out = self.writer = None

    def abandon(self) -> None:
        if self.out is not None:
            self.out.close()
            (self.folder / f"{self.name}.part").unlink(missing_ok=True)
            self.out = self.writer = None


def export_warc(
    store: Reader,
    folder: Path,
    *,
    urls: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    now: datetime | None = None,
    progress: Callable[[int], object] | None = None,
) -> ExportReport:
    """Write the history of `urls` (all when None) between `since` and `until` as WARC files in `folder`.

    `folder` is created when missing (not its parent). `progress` is called with each document done.

    Raises:
        RestoreError: `folder`'s parent is missing, or a file of this export's name exists.
        TargetNotFound: one of `urls` is not in the store.
        StoreError: a stored blob is damaged (run `mirror verify`).
    """
    started = time.monotonic()
    if not folder.parent.is_dir():
        raise RestoreError(str(folder), "its parent folder does not exist")
    folder.mkdir(exist_ok=True)
    if urls is not None:
        unknown = [u for u in urls if u not in store.known_urls(urls)]
        if unknown:
            raise TargetNotFound(unknown[0])
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    report = ExportReport(str(folder))
    files = _Files(folder, f"mirror-{stamp}", max_size, report)
    read = store.blob_reader()
    try:
        for document in store.documents(urls):
            plans = plan_target(
                document.url, document.versions, document.events, document.rechecks, since, until
            )
            for plan in plans:
                _write(files.writer_for_next(), plan, read, report)
            report.documents += 1
            if progress is not None:
                progress(1)
        files.close()
    except BaseException:
        files.abandon()
        raise
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _write(writer: WARCWriter, plan: RecordPlan, read: Callable[[str], bytes], report: ExportReport) -> None:
    fields = list(plan.warc_headers)
    if plan.kind == "response":
        assert plan.sha256 is not None and plan.http is not None
        payload = read(plan.sha256)
        http = StatusAndHeaders(plan.http[0], list(plan.http[1]), protocol="HTTP/1.1")
        block = hashlib.sha256(http.to_bytes())
        block.update(payload)
        fields.append(("WARC-Block-Digest", f"sha256:{block.hexdigest()}"))
        record = writer.create_warc_record(
            plan.url,
            "response",
            payload=io.BytesIO(payload),
            length=len(payload),
            warc_headers=StatusAndHeaders("", fields, protocol="WARC/1.1"),
            http_headers=http,
        )
        report.payload_bytes += len(payload)
    elif plan.kind == "revisit":
        assert plan.http is not None
        http = StatusAndHeaders(plan.http[0], list(plan.http[1]), protocol="HTTP/1.1")
        fields.append(("WARC-Block-Digest", f"sha256:{hashlib.sha256(http.to_bytes()).hexdigest()}"))
        record = writer.create_warc_record(
            plan.url,
            "revisit",
            warc_headers=StatusAndHeaders("", fields, protocol="WARC/1.1"),
            http_headers=http,
        )
    else:
        payload = plan.payload or b""
        record = writer.create_warc_record(
            plan.url,
            "metadata",
            payload=io.BytesIO(payload),
            length=len(payload),
            warc_content_type=METADATA_TYPE,
            warc_headers=StatusAndHeaders("", fields, protocol="WARC/1.1"),
        )
    writer.write_record(record)
    report.records[plan.kind] += 1
