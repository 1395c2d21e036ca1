"""The workload: real HTML that no one on this team wrote, copied under many paths, plus some PDFs.

The HTML is Debian's packaged Python documentation (Sphinx output, ~530 pages of
13 KB to 2.5 MB); the PDFs are the manuals Debian ships in `libtasn1-doc` and
`shared-mime-info`. Each copy of a file gets a one-line marker, so that no two
pages are byte-identical (an archive's pages are distinct documents, and
identical bytes would let content addressing store them once, flattering it).

`mutate` is the seeded script run between rounds: it rewrites one paragraph of
10% of the HTML pages and deletes 2% of all pages; the rest are left untouched
(their mtime, and so nginx's ETag, unchanged).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from benchmarks.debian import ensure_packages

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
DOCS_PACKAGE = f"python{PY}-doc"
DOCS_ROOT = Path(f"/usr/share/doc/python{PY}/html")
PDFS = {
    "libtasn1-doc": Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf"),
    "shared-mime-info": Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf"),
}
PDF_SHARE = 100  # one page in this many is a PDF
REFERENCE_ZSTD_LEVEL = 3
CHANGE_SHARE = 0.10
DELETE_SHARE = 0.02
SEED = 20261125

_PARAGRAPH = re.compile(rb"<p>(.{40,}?)</p>", re.DOTALL)
_WORDS = [
    *("archive", "collection", "pamphlet", "censorship", "prison", "letter", "chapter", "review"),
    *("statement", "committee", "minutes", "correspondence", "edition", "reprint", "translation"),
    *("index", "volume", "issue", "appendix", "notes"),
]


@dataclass(frozen=True, slots=True)
class Corpus:
    """A folder served by nginx and the relative paths of its pages (HTML first, then PDFs)."""

    root: Path
    paths: tuple[str, ...]
    total_bytes: int

    def urls(self, base: str) -> list[str]:
        """Return the absolute URL of every page under `base` (no trailing slash)."""
        return [f"{base}/{p}" for p in self.paths]

    def file(self, path: str) -> Path:
        """Return the file that serves `path`."""
        return self.root / path


@dataclass(frozen=True, slots=True)
class Mutation:
    """What `mutate` did: the paths of the changed and of the deleted pages."""

    changed: frozenset[str]
    deleted: frozenset[str]


def source_files() -> tuple[list[Path], list[Path]]:
    """Return the HTML and PDF files the corpus is built from, installing their Debian packages if missing.

    Raises:
        RuntimeError: a package is missing and cannot be installed.
    """
    ensure_packages([DOCS_PACKAGE, *PDFS])
    html = sorted(DOCS_ROOT.rglob("*.html"))
    html = [p for p in html if "_sources" not in p.parts]
    if len(html) < 100:
        raise RuntimeError(f"{DOCS_ROOT}: expected hundreds of HTML pages, found {len(html)}")
    return html, [p for p in PDFS.values() if p.exists()]


def _marked(data: bytes, copy: int, pdf: bool) -> bytes:
    if pdf:  # bytes after %%EOF are ignored by PDF readers
        return data + f"\n%mirror-bench copy {copy}\n".encode()
    marker = f'<meta name="mirror-bench-copy" content="{copy}">'.encode()
    head = data.find(b"<head>")
    if head < 0:
        return marker + data
    return data[: head + 6] + marker + data[head + 6 :]


def build(root: Path, pages: int) -> Corpus:
    """Write a corpus of `pages` pages under `root` (about 1% PDFs) and return it.

    Raises:
        RuntimeError: the source documents are missing and cannot be installed.
    """
    html, pdfs = source_files()
    n_pdf = max(len(pdfs), pages // PDF_SHARE) if pdfs else 0
    n_html = pages - n_pdf
    paths: list[str] = []
    total = 0
    cache: dict[Path, bytes] = {}
    jobs: list[tuple[int, list[Path], Path | None, str, bool]]
    jobs = [(i, html, DOCS_ROOT, "c", False) for i in range(n_html)]
    jobs += [(i, pdfs, None, "pdf/c", True) for i in range(n_pdf)]
    for i, sources, base, prefix, pdf in jobs:
        copy, index = divmod(i, len(sources))
        source = sources[index]
        relative = source.relative_to(base).as_posix() if base is not None else source.name
        path = f"{prefix}{copy:03d}/{relative}"
        data = cache.get(source)
        if data is None:
            data = cache[source] = source.read_bytes()
        body = _marked(data, copy, pdf)
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        paths.append(path)
        total += len(body)
    return Corpus(root, tuple(paths), total)


def zstd_stream_size(files: Iterable[Path], level: int = REFERENCE_ZSTD_LEVEL) -> int:
    """Return the size of `files` concatenated and compressed as ONE zstd stream at `level`."""
    stream = zstandard.ZstdCompressor(level=level).compressobj()
    size = sum(len(stream.compress(path.read_bytes())) for path in files)
    return size + len(stream.flush())


def zstd_size(data: bytes, level: int = REFERENCE_ZSTD_LEVEL) -> int:
    """Return the size of `data` compressed alone with zstd at `level`."""
    return len(zstandard.ZstdCompressor(level=level).compress(data))


def new_paragraph(rng: random.Random) -> bytes:
    """Return a fresh sentence of about 20 words, the same for the same `rng` state."""
    words = [rng.choice(_WORDS) for _ in range(20)]
    return (" ".join(words).capitalize() + f" ({rng.randrange(10**9)}).").encode()


def change_paragraph(data: bytes, rng: random.Random) -> bytes | None:
    """Return `data` with one `<p>` paragraph's text replaced, or None when it has no paragraph."""
    found = list(_PARAGRAPH.finditer(data))
    if not found:
        return None
    match = rng.choice(found)
    return data[: match.start(1)] + new_paragraph(rng) + data[match.end(1) :]


def write_bumped(path: Path, data: bytes) -> None:
    """Write `data` to `path` with an mtime a minute later than before, so nginx's ETag changes."""
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_bytes(data)
    later = max(before + 60, path.stat().st_mtime)
    os.utime(path, (later, later))


def mutate(corpus: Corpus, seed: int = SEED) -> Mutation:
    """Change one paragraph in 10% of the HTML pages and delete 2% of all pages; return which."""
    rng = random.Random(seed)
    order = list(corpus.paths)
    rng.shuffle(order)
    n_delete = round(len(order) * DELETE_SHARE)
    deleted = order[:n_delete]
    want = round(len(order) * CHANGE_SHARE)
    changed: list[str] = []
    for path in order[n_delete:]:
        if len(changed) >= want:
            break
        if not path.endswith(".html"):
            continue
        file = corpus.file(path)
        new = change_paragraph(file.read_bytes(), rng)
        if new is not None:
            write_bumped(file, new)
            changed.append(path)
    for path in deleted:
        corpus.file(path).unlink()
    return Mutation(frozenset(changed), frozenset(deleted))


def pick_page(sources: Sequence[Path], size: int, paragraphs: int = 50) -> Path:
    """Return the source HTML page closest to `size` bytes that has at least `paragraphs` paragraphs."""
    for path in sorted(sources, key=lambda p: abs(p.stat().st_size - size)):
        if len(_PARAGRAPH.findall(path.read_bytes())) >= paragraphs:
            return path
    raise RuntimeError(f"no page near {size} bytes with {paragraphs} paragraphs")


def remove(root: Path) -> None:
    """Delete a corpus folder."""
    shutil.rmtree(root, ignore_errors=True)
