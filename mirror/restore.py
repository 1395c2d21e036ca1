"""Restore stored bytes to disk: safe paths, a temporary file, fsync, atomic rename."""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mirror.errors import FileExists, RestoreError, UnsafePath

if TYPE_CHECKING:
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
MANIFEST = "manifest-sha256.txt"
INDEX = "restore-index.tsv"
LEFT_OUT = "left-out.tsv"


def _safe_segment(raw: str) -> str:
    """Return one path segment made safe: decoded once, unsafe characters percent-encoded, bounded."""
    text = unquote(raw)
    name = "".join(c if c in _SAFE or (c.isalnum() and c.isprintable()) else _pct(c) for c in text)
    if name in ("", ".", ".."):
        name = name.replace(".", "%2E") or "_"
    encoded = name.encode()
    if len(encoded) > MAX_NAME_BYTES:
        digest = hashlib.sha256(encoded).hexdigest()[:16]
        name = encoded[: MAX_NAME_BYTES - 17].decode(errors="ignore") + "-" + digest
    return name


def _pct(c: str) -> str:
    return "".join(f"%{b:02X}" for b in c.encode())


def site_path(url: str) -> PurePosixPath:
    """Return the relative path `<host>/<path>` that a URL restores to; never absolute, never `..`.

    A URL ending in `/` becomes `index.html`; a query string becomes part of the
    file name (percent-encoded); every segment is decoded once and re-encoded, so
    encoded slashes, NUL and `..` cannot leave the folder; long names are cut and
    given a hash suffix.
    """
    parts = urlsplit(url)
    host = _safe_segment(parts.netloc.replace(":", "_"))
    segments = parts.path.split("/")[1:] or [""]
    if segments[-1] == "":
        segments[-1] = "index.html"
    if parts.query:
        segments[-1] += "%3F" + parts.query
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


@dataclass(frozen=True, slots=True)
class SiteRestore:
    """A whole site written as it was at a time."""

    at: datetime
    folder: str
    files: int
    bytes: int
    left_out: tuple[tuple[str, datetime], ...]  # (url, gone since) of documents gone at that time
    manifest: str
    created: bool = False  # the folder did not exist and was made


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
    - A host folder named like one of the files written beside the hosts (`MANIFEST`...)
      gets `~host` appended.
    """
    wanted: dict[str, tuple[PurePosixPath, bool]] = {}  # url → (path, moved into a folder)
    for url, path in entries:
        if _fold(path.parts[0]) in _RESERVED:
            path = PurePosixPath(path.parts[0] + "~host", *path.parts[1:])
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


_RESERVED = frozenset((MANIFEST, INDEX, LEFT_OUT))  # written beside the host folders


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


def restore_site(
    archive: Reader,
    at: datetime,
    dest: Path,
    *,
    force: bool = False,
    progress: Callable[[int], object] | None = None,
) -> SiteRestore:
    """Write every document as it was at `at` under `dest/<host>/<path>`, with a SHA-256 manifest.

    Each document gets a file of its own (see `plan_site`); `restore-index.tsv` maps
    paths to URLs. Documents that had disappeared by `at` are left out and listed in
    `left-out.tsv`. `dest` is created when missing, but not its parent. Nothing is
    written when any target file exists and `force` is false.

    Raises:
        FileExists: a file would be overwritten and `force` is false.
        UnsafePath: a path would leave `dest`.
        RestoreError: a file cannot be written or its bytes do not match.
    """
    present: list[tuple[str, PurePosixPath]] = []
    versions = {}
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
    created = not dest.exists()
    if created and not dest.parent.is_dir():  # a typo in --to must not grow a tree of folders
        raise RestoreError(str(dest.parent), "no such folder (create it first)")
    if not created and not dest.is_dir():
        raise RestoreError(str(dest), "not a folder")
    targets = {url: _inside(dest, dest.joinpath(*rel.parts)) for url, rel in plan.items()}
    if not force:
        clash = next((p for p in targets.values() if p.exists()), None)
        if clash is not None:
            raise FileExists(str(clash), "exists; use --force to overwrite (nothing was written)")
    if created:
        try:
            dest.mkdir()
        except OSError as exc:
            raise RestoreError(str(dest), f"cannot create: {exc.strerror or exc}") from None
    lines, index, total = [], [], 0
    for url, path in sorted(targets.items(), key=lambda item: str(plan[item[0]])):
        version = versions[url]
        data = archive.read(version.sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(_inside(dest, path), data, force=True)
        if hashlib.sha256(path.read_bytes()).hexdigest() != version.sha256:
            raise RestoreError(str(path), f"written bytes do not hash to {version.sha256}")
        rel = str(plan[url])
        lines.append(f"{version.sha256}  {rel}\n")
        index.append(f"{rel}\t{url}\t{version.number}\t{version.first_seen.isoformat()}\n")
        total += len(data)
        if progress is not None:
            progress(1)
    write_atomically(dest / INDEX, ("path\turl\tversion\tfirst_seen\n" + "".join(index)).encode(), force=True)
    gone = "".join(f"{url}\t{since.isoformat()}\n" for url, since in left_out)
    write_atomically(dest / LEFT_OUT, ("url\tgone_since\n" + gone).encode(), force=True)
    write_atomically(dest / MANIFEST, "".join(lines).encode(), force=True)
    return SiteRestore(at, str(dest), len(lines), total, tuple(left_out), str(dest / MANIFEST), created)
