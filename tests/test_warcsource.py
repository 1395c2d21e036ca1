"""A folder of WARC files as a repair source, and hostile files read without a traceback (no database)."""

from __future__ import annotations

import gzip
import hashlib
from io import BytesIO
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from mirror.warcimport import read_file
from mirror.warcread import Capture, Refusal
from mirror.warcsource import WarcFolder

DATA = Path(__file__).parent / "data" / "warc"
BODY = b"<html>hello</html>"
CHUNKED = b"5\r\n<html\r\nd\r\n>hello</html>\r\n0\r\n\r\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_chunked(path: Path, *, gzipped: bool) -> None:
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=gzipped)
        http = StatusAndHeaders("200 OK", [("Transfer-Encoding", "chunked")], protocol="HTTP/1.1")
        record = writer.create_warc_record(
            "http://example.org/c",
            "response",
            payload=BytesIO(CHUNKED),
            length=len(CHUNKED),
            http_headers=http,
        )
        writer.write_record(record)


def test_a_warc_folder_finds_a_payload_under_either_reading_once_and_names_itself(tmp_path):
    folder = tmp_path / "backups"
    (folder / "deeper").mkdir(parents=True)
    write_chunked(folder / "a.warc.gz", gzipped=True)
    write_chunked(folder / "deeper" / "b.warc", gzipped=False)  # the same payload again: yielded once
    (folder / "notes.txt").write_text("not a WARC")
    for name in ("dupes.warc.gz", "example.arc.gz"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    source = WarcFolder(folder)
    assert source.describe() == "WARC folder backups/ (4 files)"
    example = (
        "3587cb776ce0e4e8237f215800b7dffba0f25865cb84550e87ea8bbac838c423"  # example.com, in both samples
    )
    wanted = [sha(BODY), sha(CHUNKED).upper(), example, "0" * 64]
    found = list(source.find(wanted))
    assert sorted(d for d, _ in found) == sorted([sha(BODY), sha(CHUNKED), example])
    assert all(sha(data) == digest for digest, data in found)
    assert (
        list(WarcFolder(tmp_path / "deeper-nothing").find(wanted)) == []
        if (tmp_path / "deeper-nothing").mkdir() is None
        else False
    )


def test_a_file_that_is_no_warc_or_breaks_off_is_a_refusal_not_a_traceback(tmp_path):
    junk = tmp_path / "junk.warc"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR not a WARC file\r\n\r\n")
    reads = list(read_file(junk))
    assert len(reads) == 1 and isinstance(reads[0], Refusal) and reads[0].source.offset == 0, reads
    cut = tmp_path / "cut.warc.gz"
    whole = (DATA / "dupes.warc.gz").read_bytes()
    cut.write_bytes(whole[:1000])  # ends inside the gzip member of example.com's response (offset 334)
    reads = list(read_file(cut))
    assert isinstance(reads[-1], Refusal) and reads[-1].source.offset == 334, reads
    assert not any(isinstance(r, Capture) for r in reads)
    assert gzip.decompress(whole)  # the sample itself is whole
