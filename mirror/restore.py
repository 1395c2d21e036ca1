"""Restore stored bytes to disk: safe paths, a temporary file, fsync, atomic rename."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mirror.errors import FileExists, RestoreError, UnsafePath

if TYPE_CHECKING:
    from mirror.archive import Archive


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

    Raises:
        FileExists: `path` exists and `force` is false.
        RestoreError: the folder cannot be written.
    """
    if path.exists() and not force:
        raise FileExists(str(path), "exists; use --force to overwrite")
    if path.is_dir():
        raise RestoreError(str(path), "is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mirror-", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise RestoreError(str(path.parent), f"cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def restore_version(
    archive: Archive,
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
    data = archive.read(version.sha256)
    path = dest / default_file_name(url) if dest.is_dir() else dest
    write_atomically(path, data, force=force)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != version.sha256:
        raise RestoreError(str(path), f"written bytes hash to {digest}, expected {version.sha256}")
    return Restored(url, str(path), version.number, digest, len(data))


MANIFEST = "manifest-sha256.txt"
INDEX = "restore-index.tsv"
LEFT_OUT = "left-out.tsv"


@dataclass(frozen=True, slots=True)
class SiteRestore:
    """A whole site written as it was at a time."""

    at: datetime
    folder: str
    files: int
    bytes: int
    left_out: tuple[tuple[str, datetime], ...]  # (url, gone since) of documents gone at that time
    manifest: str


def plan_site(entries: list[tuple[str, PurePosixPath]]) -> dict[str, PurePosixPath]:
    """Return url → relative path; a file whose path is a folder of another URL goes in it as index.html."""
    folders = {str(parent) for _, path in entries for parent in path.parents}
    taken = {str(path) for _, path in entries}
    plan: dict[str, PurePosixPath] = {}
    for url, path in entries:
        if str(path) in folders:
            inside = path / "index.html"
            path = inside if str(inside) not in taken else path / "%3Ffile"
            taken.add(str(path))
        plan[url] = path
    return plan


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
    archive: Archive,
    at: datetime,
    dest: Path,
    *,
    force: bool = False,
    progress: Callable[[int], object] | None = None,
) -> SiteRestore:
    """Write every document as it was at `at` under `dest/<host>/<path>`, with a SHA-256 manifest.

    Documents that had disappeared by `at` are left out and listed in `left-out.tsv`.
    Nothing is written when any target file exists and `force` is false.

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
    dest.mkdir(parents=True, exist_ok=True)
    targets = {url: _inside(dest, dest.joinpath(*rel.parts)) for url, rel in plan.items()}
    if not force:
        clash = next((p for p in targets.values() if p.exists()), None)
        if clash is not None:
            raise FileExists(str(clash), "exists; use --force to overwrite (nothing was written)")
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
    return SiteRestore(at, str(dest), len(lines), total, tuple(left_out), str(dest / MANIFEST))
