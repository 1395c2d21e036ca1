"""A folder of WARC files as a repair source: the payloads they hold, by SHA-256.

`mirror verify --repair-from FOLDER` asks it for the blobs it lacks. Each payload is read
under both common readings (as transferred, and as warcio decodes it: dechunked, content
coding undone), so a blob is found whichever a writer kept; a record whose payload digest
fails is passed over (`mirror.warcmap.read_record`), as a broken file is from where it breaks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator
from pathlib import Path

from mirror.warcimport import read_file
from mirror.warcread import Capture

SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")


class WarcFolder:
    """Repair source: payloads found in the WARC files (*.warc, *.warc.gz, also .arc/.arc.gz) under a folder."""  # noqa: E501

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))

    def describe(self) -> str:
        """Return what this source is, for a report: `WARC folder backups/ (12 files)`."""
        count = len(self.files)
        return f"WARC folder {self.folder.name or self.folder}/ ({count} file{'' if count == 1 else 's'})"

    def find(self, wanted: Collection[str]) -> Iterator[tuple[str, bytes]]:
        """Yield (sha256 lower-case hex, payload bytes) for each wanted digest found (any reading), once."""
        left = {w.lower() for w in wanted}
        for path in self.files:
            if not left:
                return
            for read in read_file(path):
                if not isinstance(read, Capture):
                    continue
                for body in (read.body, *read.readings):
                    digest = hashlib.sha256(body).hexdigest()
                    if digest in left:
                        left.discard(digest)
                        yield digest, body
