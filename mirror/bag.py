"""BagIt 1.0 (RFC 8493) tag files for `restore --all`: pure text from the hashes a restore holds.

A bag is a folder:

    bagit.txt                 the declaration: version 1.0, tag files in UTF-8
    bag-info.txt              Bagging-Date, Payload-Oxum, Bag-Size, the restore time, the chain head
    manifest-sha256.txt       every payload file under data/ with its SHA-256 (the versions' own hashes)
    manifest-sha512.txt       and its SHA-512, computed while the file was written
    restore-index.tsv         tag file: path, URL, version, first seen
    left-out.tsv              tag file: documents that had disappeared by the restore time
    tagmanifest-sha256.txt    every tag file above (not the tag manifests) with its SHA-256
    tagmanifest-sha512.txt    and SHA-512 (RFC 8493 2.2.1: tag manifests SHOULD use the payload's algorithms)
    data/<host>/<path>        the documents

Manifest paths percent-encode CR, LF and `%` as RFC 8493 2.1.3 asks; but validators
disagree about decoding (the Library of Congress `bagit` decodes CR and LF only, and not
`%25`), so `restore.site_path` never makes a name with any of the three: every validator
then reads the same path. Nothing here touches a file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from mirror import __version__

DATA = "data"
BAGIT = "bagit.txt"
BAG_INFO = "bag-info.txt"
ALGORITHMS = ("sha256", "sha512")
MANIFESTS = tuple(f"manifest-{a}.txt" for a in ALGORITHMS)
TAG_MANIFESTS = tuple(f"tagmanifest-{a}.txt" for a in ALGORITHMS)
DECLARATION = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"


@dataclass(frozen=True, slots=True)
class Payload:
    """One file of a bag (payload or tag file): its path relative to the bag, size and digests."""

    path: str
    size: int
    sha256: str
    sha512: str

    def digest(self, algorithm: str) -> str:
        return self.sha256 if algorithm == "sha256" else self.sha512


@dataclass(frozen=True, slots=True)
class BagInfo:
    """What `bag-info.txt` says: when it was made, of which time, and the chain head that covers it."""

    bagged_at: datetime
    restore_time: datetime
    head_seq: int
    head_hash: str
    files: int
    bytes: int
    left_out: int


def encode_path(path: str) -> str:
    """Return `path` as a manifest writes it: `%`, CR and LF percent-encoded (RFC 8493 2.1.3)."""
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def manifest(files: Iterable[Payload], algorithm: str) -> str:
    """Return a (tag) manifest: `digest  path` lines, as `sha256sum` writes them, sorted by path."""
    return "".join(f"{f.digest(algorithm)}  {encode_path(f.path)}\n" for f in sorted(files, key=_by_path))


def _by_path(f: Payload) -> str:
    return f.path


def bag_info(info: BagInfo) -> str:
    """Return `bag-info.txt`: the reserved elements of RFC 8493 2.2.2, then mirror's own."""
    gone = (
        f"; {info.left_out} that had disappeared by then are listed in left-out.tsv" if info.left_out else ""
    )
    fields = [
        ("Bag-Software-Agent", f"mirror {__version__}"),
        ("Bagging-Date", info.bagged_at.astimezone(UTC).date().isoformat()),
        ("Payload-Oxum", f"{info.bytes}.{info.files}"),
        ("Bag-Size", _size(info.bytes)),
        (
            "External-Description",
            f"{info.files} documents archived by mirror, as they were at {_iso(info.restore_time)}{gone}",
        ),
        ("Mirror-Restore-Time", _iso(info.restore_time)),
        ("Mirror-Bagged-At", _iso(info.bagged_at)),
        ("Mirror-Chain-Head-Seq", str(info.head_seq)),
        ("Mirror-Chain-Head-Hash", info.head_hash),
    ]
    return "".join(f"{label}: {value}\n" for label, value in fields)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover
