"""Restore stored bytes to disk: safe paths, a temporary file or folder, fsync, atomic rename.

One version goes to a file; a whole site (`restore --all`) to a BagIt bag (`mirror.bag`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mirror import bag
from mirror.errors import FileExists, RestoreError, UnsafePath
from mirror.sitenames import plan_site, site_path

__all__ = [
    "INDEX",
    "LEFT_OUT",
    "MANIFEST",
    "Restored",
    "SiteRestore",
    "default_file_name",
    "plan_site",
    "restore_site",
    "restore_version",
    "site_path",
    "write_atomically",
]

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


MANIFEST = "manifest-sha256.txt"
INDEX = "restore-index.tsv"
LEFT_OUT = "left-out.tsv"


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
    shown, dest = str(dest), Path(os.path.abspath(dest))  # `--to .` or `site/..` name a folder too
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
    manifest = str(Path(shown) / MANIFEST)
    return SiteRestore(at, shown, len(files), total, tuple(left_out), manifest, created, head_seq, head_hash)


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
        return work.resolve()  # as `_inside` gives the paths in it: every link resolved


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
