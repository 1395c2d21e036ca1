"""Restore stored bytes to disk: safe paths, a temporary file or folder, fsync, atomic rename.

One version goes to a file; a whole site (`restore --all`) to a BagIt bag (`mirror.bag`).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mirror import bag
from mirror.errors import FileExists, RestoreError, UnsafePath

if TYPE_CHECKING:
    from mirror.domain import Version
    from mirror.reader import Reader


@dataclass(frozen=True, slots=True)
class Restored:
    """One file written: where, which version, its SHA-256 (re-read from disk) and size."""

    url: str
    path: str
    version: int
    sha256: str
    size: int


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~+,=@")
MAX_NAME_BYTES = 200  # below the usual 255-byte limit, with room for a hash suffix
ESCAPE = "^"  # never `%`, CR or LF in a name: every BagIt validator reads its manifest line alike
MANIFEST = "manifest-sha256.txt"
INDEX = "restore-index.tsv"
LEFT_OUT = "left-out.tsv"


def _safe_segment(raw: str) -> str:
    """Return one path segment made safe: decoded once, unsafe characters `^`-encoded, bounded."""
    text = unquote(raw)
    name = "".join(c if c in _SAFE or (c.isalnum() and c.isprintable()) else _escaped(c) for c in text)
    if name in ("", ".", ".."):
        name = name.replace(".", "^2E") or "_"
    encoded = name.encode()
    if len(encoded) > MAX_NAME_BYTES:
        digest = hashlib.sha256(encoded).hexdigest()[:16]
        name = encoded[: MAX_NAME_BYTES - 17].decode(errors="ignore") + "-" + digest
    return name


def _escaped(c: str) -> str:
    # `^` and hex, not `%`: BagIt validators disagree on `%` in manifest paths (see `mirror.bag`).
    return "".join(f"{ESCAPE}{b:02X}" for b in c.encode())


def site_path(url: str) -> PurePosixPath:
    """Return the relative path `<host>/<path>` that a URL restores to; never absolute, never `..`.

    A URL ending in `/` becomes `index.html`; a query string becomes part of the
    file name; every segment is decoded once and re-encoded (each unsafe byte as `^`
    and two hex digits: `?` is `^3F`), so encoded slashes, NUL and `..` cannot leave
    the folder, and no name holds `%`, CR or LF; long names are cut and given a hash suffix.
    """
    parts = urlsplit(url)
    host = _safe_segment(parts.netloc.replace(":", "_"))
    segments = parts.path.split("/")[1:] or [""]
    if segments[-1] == "":
        segments[-1] = "index.html"
    if parts.query:
        segments[-1] += "?" + parts.query
    return PurePosixPath(host, *(_safe_segment(s) for s in segments))


def default_file_name(url: str) -> str:
    """Return a safe file name for a URL's last path segment (`index.html` for a folder URL)."""
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in segment).lstrip(".")
    return cleaned[:200] or "index.html"


def write_atomically(path: Path, data: bytes, *, force: bool) -> None:
    """Write `data` to `path` through a temporary file in the same folder and an atomic rename.

    The file gets the mode any new file gets (0666 less the process umask: 0644 under the
    usual 022), not `mkstemp`'s 0600. The folder must exist: nothing is created on the way.

    Raises:
        FileExists: `path` exists and `force` is false.
        RestoreError: the folder does not exist or cannot be written.
    """
    if path.exists() and not force:
        raise FileExists(str(path), "exists; use --force to overwrite")
    if path.is_dir():
        raise RestoreError(str(path), "is a folder")
    if not path.parent.is_dir():
        raise RestoreError(str(path.parent), "no such folder (create it first)")
    try:
        fd, tmp = _create_temporary(path.parent)
    except OSError as exc:
        raise RestoreError(str(path.parent), f"cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temporary(folder: Path) -> tuple[int, Path]:
    """Return the descriptor and path of a new hidden file in `folder`, made with mode 0666 less the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = folder / f".mirror-{secrets.token_hex(8)}.part"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def restore_version(
    archive: Reader,
    url: str,
    dest: Path,
    *,
    spec: str | None = None,
    at: datetime | None = None,
    force: bool = False,
) -> Restored:
    """Write one stored version of `url` to `dest` (a file, or an existing folder); return what was written.

    Raises:
        TargetNotFound, VersionNotFound: the URL or version is not in the store.
        FileExists: the file exists and `force` is false.
        RestoreError: the file cannot be written, or the bytes on disk do not match.
    """
    version = archive.version(url, spec, at)
    path = dest / default_file_name(url) if dest.is_dir() else dest
    if not path.parent.is_dir():  # a typo in --to must not grow a tree of folders
        raise RestoreError(str(path.parent), "no such folder (create it first)")
    data = archive.read(version.sha256)
    write_atomically(path, data, force=force)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != version.sha256:
        raise RestoreError(str(path), f"written bytes hash to {digest}, expected {version.sha256}")
    return Restored(url, str(path), version.number, digest, len(data))


def plan_site(entries: list[tuple[str, PurePosixPath]]) -> dict[str, PurePosixPath]:
    """Return url → relative path, one distinct file per URL, whatever order `entries` come in.

    - A file whose path is also a folder of another URL goes inside it as `index.html`.
    - Paths that differ only in case (or Unicode normal form) count as the same name, so a
      restore copied to a case-insensitive file system (macOS, Windows, a USB stick) loses
      nothing either.
    - Of the URLs that want one name, the one that moved least (not into a folder), then
      the shortest, then the first in order keeps it; each other gets `~` and the first
      8 hex digits of its URL's SHA-256 before the extension (`index~1a2b3c4d.html`),
      more digits if that is taken too.
    """
    wanted: dict[str, tuple[PurePosixPath, bool]] = {}  # url → (path, moved into a folder)
    for url, path in entries:
        wanted[url] = (path, False)
    folders = {_fold(str(parent)) for path, _ in wanted.values() for parent in path.parents}
    for url, (path, _) in wanted.items():
        if _fold(str(path)) in folders:
            wanted[url] = (path / "index.html", True)
    groups: dict[str, list[str]] = {}
    for url, (path, _) in wanted.items():
        groups.setdefault(_fold(str(path)), []).append(url)
    taken = folders | set(groups)
    plan: dict[str, PurePosixPath] = {}
    for key in sorted(groups):
        urls = sorted(groups[key], key=lambda u: (wanted[u][1], len(u), u))
        first = 0 if key not in folders else None  # a file where a folder must go: all move
        for n, url in enumerate(urls):
            path = wanted[url][0]
            plan[url] = path if n == first else _renamed(path, url, taken)
    return plan


def _fold(name: str) -> str:
    """Return the form of a path under which case-insensitive file systems compare names."""
    return unicodedata.normalize("NFC", name).casefold()


def _renamed(path: PurePosixPath, url: str, taken: set[str]) -> PurePosixPath:
    """Return `path` with a suffix from `url`'s SHA-256 whose folded form is not in `taken` (then added)."""
    digest = hashlib.sha256(url.encode()).hexdigest()
    stem, dot, ext = path.name.rpartition(".")
    if not dot or not stem or not ext.isalnum() or len(ext) > 8:
        stem, ext = path.name, ""
    for n in itertools.count():
        tag = digest[: 8 if n == 0 else 16] if n < 2 else f"{digest}-{n}"
        suffix = f"~{tag}" + (f".{ext}" if ext else "")
        room = MAX_NAME_BYTES + 40 - len(suffix.encode())  # stays below the usual 255-byte limit
        candidate = path.with_name(stem.encode()[:room].decode(errors="ignore") + suffix)
        if _fold(str(candidate)) not in taken:
            taken.add(_fold(str(candidate)))
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover


def _inside(folder: Path, path: Path) -> Path:
    """Return `path` if, with every link resolved, it stays inside `folder`.

    Raises:
        UnsafePath: it would land outside (a crafted URL, or a planted symbolic link).
    """
    real_folder = folder.resolve()
    real = path.parent.resolve() / path.name
    if not real.is_relative_to(real_folder) or real == real_folder:
        raise UnsafePath(str(path), f"outside {folder}; refusing to write")
    return real


@dataclass(frozen=True, slots=True)
class SiteRestore:
    """A whole site written as a BagIt bag, as it was at a time; the chain head that covers it."""

    at: datetime
    folder: str
    files: int
    bytes: int
    left_out: tuple[tuple[str, datetime], ...]  # (url, gone since) of documents gone at that time
    manifest: str
    created: bool = False  # the folder did not exist and was made
    head_seq: int = 0
    head_hash: str = ""


def restore_site(
    archive: Reader,
    at: datetime,
    dest: Path,
    *,
    force: bool = False,
    progress: Callable[[int], object] | None = None,
    now: datetime | None = None,
) -> SiteRestore:
    """Write every document as it was at `at` as a BagIt 1.0 bag in `dest`, under `data/<host>/<path>`.

    Each document gets a file of its own (see `plan_site`); the tag files (`mirror.bag`)
    give its SHA-256 (the version's own hash, re-checked on disk) and SHA-512 (computed
    while writing), `restore-index.tsv` maps paths to URLs, and documents that had
    disappeared by `at` are left out and listed in `left-out.tsv`. `bag-info.txt` names
    the chain head read after the documents were listed, so it covers every version in
    the bag. `now` is the bagging time (default: the clock).

    The bag is built in a hidden folder beside `dest`, every file and folder synced to
    disk, then renamed to `dest` in one step: `dest` is the whole bag or as it was, never
    half a bag. `dest` may be missing (its parent must exist) or an empty folder; with
    `force`, a bag written before is replaced (moved aside, deleted once the new one is in).

    Raises:
        FileExists: `dest` is not empty and `force` is false (nothing was written).
        UnsafePath: a path would leave the bag.
        RestoreError: `dest` is not a folder, or not empty and not a bag, or a file cannot
            be written, or its bytes on disk do not match.
    """
    present: list[tuple[str, PurePosixPath]] = []
    versions: dict[str, Version] = {}
    left_out: list[tuple[str, datetime]] = []
    for entry in archive.site_at(at):
        if entry.version is None:
            continue
        if entry.gone_since is not None:
            left_out.append((entry.url, entry.gone_since))
            continue
        present.append((entry.url, site_path(entry.url)))
        versions[entry.url] = entry.version
    plan = plan_site(present)
    head_seq, head_hash = archive.chain_head()  # after the listing: every version listed is under it
    if dest.is_symlink():
        dest = dest.resolve()
    created, replacing = _destination(dest, force)
    work = _work_folder(dest)
    try:
        files, index = [], []
        for url, rel in sorted(plan.items(), key=lambda item: str(item[1])):
            version = versions[url]
            path = _inside(work, work.joinpath(bag.DATA, *rel.parts))
            path.parent.mkdir(parents=True, exist_ok=True)
            files.append(_write_payload(path, archive.read(version.sha256), version.sha256, work))
            index.append(f"{files[-1].path}\t{url}\t{version.number}\t{version.first_seen.isoformat()}\n")
            if progress is not None:
                progress(1)
        (work / bag.DATA).mkdir(exist_ok=True)
        total = sum(f.size for f in files)
        made = now or datetime.now(UTC)
        info = bag.BagInfo(made, at, head_seq, head_hash, len(files), total, len(left_out))
        gone = "".join(f"{url}\t{since.isoformat()}\n" for url, since in left_out)
        tags = [
            (INDEX, "path\turl\tversion\tfirst_seen\n" + "".join(index)),
            (LEFT_OUT, "url\tgone_since\n" + gone),
            *(
                (name, bag.manifest(files, algo))
                for name, algo in zip(bag.MANIFESTS, bag.ALGORITHMS, strict=True)
            ),
            (bag.BAGIT, bag.DECLARATION),
            (bag.BAG_INFO, bag.bag_info(info)),
        ]
        tagged = [_write_new(work / name, text.encode(), work) for name, text in tags]
        for name, algo in zip(bag.TAG_MANIFESTS, bag.ALGORITHMS, strict=True):
            _write_new(work / name, bag.manifest(tagged, algo).encode(), work)
        _sync_folders(work)
        _put_in_place(work, dest, replacing)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    manifest = str(dest / MANIFEST)
    return SiteRestore(
        at, str(dest), len(files), total, tuple(left_out), manifest, created, head_seq, head_hash
    )


def _destination(dest: Path, force: bool) -> tuple[bool, bool]:
    """Return (whether `dest` is to be created, whether a bag there is to be replaced).

    Raises:
        FileExists, RestoreError: see `restore_site`.
    """
    if not dest.exists():
        if not dest.parent.is_dir():  # a typo in --to must not grow a tree of folders
            raise RestoreError(str(dest.parent), "no such folder (create it first)")
        return True, False
    if not dest.is_dir():
        raise RestoreError(str(dest), "not a folder")
    if next(dest.iterdir(), None) is None:
        return False, False
    if not force:
        raise FileExists(
            str(dest), "is not empty; use --force to replace a bag restored there (nothing was written)"
        )
    if not (dest / bag.BAGIT).is_file():
        raise RestoreError(
            str(dest), f"is not empty and holds no bag (no {bag.BAGIT}): restore to a new folder"
        )
    return False, True


def _work_folder(dest: Path) -> Path:
    """Return a new hidden folder beside `dest` (mode 0777 less the umask), where the bag is built."""
    while True:
        work = dest.parent / f".{dest.name}.mirror-{secrets.token_hex(8)}.part"
        try:
            work.mkdir()
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        except OSError as exc:
            raise RestoreError(str(dest.parent), f"cannot write: {exc.strerror or exc}") from None
        return work


def _write_payload(path: Path, data: bytes, sha256: str, work: Path) -> bag.Payload:
    """Write one document; return it as the manifests list it, its SHA-256 re-read from disk.

    Raises:
        RestoreError: the file cannot be written, or its bytes on disk do not hash to `sha256`.
    """
    written = _write_new(path, data, work, sha256=sha256)
    if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        raise RestoreError(str(path), f"written bytes do not hash to {sha256}")
    return written


def _write_new(path: Path, data: bytes, work: Path, *, sha256: str | None = None) -> bag.Payload:
    """Create `path` (never through a link, never over a file) with `data`, synced; return its digests.

    `sha256` is the digest the caller holds already (a version's); SHA-512 is computed here.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o666)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise RestoreError(str(path), f"cannot write: {exc.strerror or exc}") from None
    rel = path.relative_to(work).as_posix()
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return bag.Payload(rel, len(data), digest, hashlib.sha512(data).hexdigest())


def _sync_folders(work: Path) -> None:
    """fsync every folder of the bag, so that the names in them survive a crash too."""
    for folder in [work, *(p for p in work.rglob("*") if p.is_dir() and not p.is_symlink())]:
        _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _put_in_place(work: Path, dest: Path, replacing: bool) -> None:
    """Rename the finished bag to `dest` (missing, or an empty folder: one atomic step).

    A bag restored there before is first renamed aside and deleted after: a crash in
    between leaves both bags whole, hidden beside `dest`, and no half of either.
    """
    old = None
    try:
        if replacing:
            old = dest.parent / f".{dest.name}.mirror-{secrets.token_hex(8)}.old"
            os.rename(dest, old)
        os.rename(work, dest)
        _fsync_folder(dest.parent)
    except OSError as exc:
        if old is not None and not dest.exists():
            os.rename(old, dest)
        raise RestoreError(str(dest), f"cannot put the bag in place: {exc.strerror or exc}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
