"""Where each document of a whole-site restore goes: a safe, distinct name from its URL alone. Pure.

`site_path` maps a URL to `<host>/<path>`; `plan_site` makes the names of a whole site
distinct, even on case-insensitive file systems. Names hold no `%`, CR or LF (see `mirror.bag`).
"""

from __future__ import annotations

import hashlib
import itertools
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~+,=@")
MAX_NAME_BYTES = 200  # below the usual 255-byte limit, with room for a hash suffix
ESCAPE = "^"  # never `%`, CR or LF in a name: every BagIt validator reads its manifest line alike


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
