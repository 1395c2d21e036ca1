"""Reads that combine the store with the pure text tools: the diff of two stored versions."""

from __future__ import annotations

from mirror.diff import unified
from mirror.errors import VersionNotFound
from mirror.reader import Reader
from mirror.text import to_text


def version_diff(archive: Reader, url: str, from_spec: str | None = None, to_spec: str | None = None) -> str:
    """Return the unified diff of the text of two versions of `url` (default: the last two).

    Binaries (PDF, zip) get a one-line summary of sizes and hashes instead of a diff.

    Raises:
        TargetNotFound, VersionNotFound: the URL or a version is not in the store.
    """
    new = archive.version(url, to_spec or "-1")
    if from_spec is None and to_spec is None and new.number < 2:
        raise VersionNotFound(url, "-2", "there is only one version; nothing to diff")
    old = archive.version(url, from_spec or "-2")
    if old.sha256 == new.sha256:
        return ""
    old_text = to_text(archive.read(old.sha256), old.content_type)
    new_text = to_text(archive.read(new.sha256), new.content_type)
    if old_text is None or new_text is None:
        return (
            f"binary content differs: v{old.number} {old.sha256[:12]} ({old.size} bytes) -> "
            f"v{new.number} {new.sha256[:12]} ({new.size} bytes)\n"
        )
    text = unified(old_text, new_text, f"{url} v{old.number}", f"{url} v{new.number}")
    return text if not text or text.endswith("\n") else text + "\n"
