"""Reads that combine the store with the pure text tools: the diff of two stored versions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mirror.diff import unified
from mirror.domain import Version
from mirror.errors import VersionNotFound
from mirror.events import DOCUMENT_CHANGED
from mirror.ignore import NO_RULES, IgnoreRules
from mirror.pageview import view
from mirror.reader import History, Reader
from mirror.significance import weigh
from mirror.text import to_text


def is_noise(details: Mapping[str, Any]) -> bool:
    """Return True for the details of a `document.changed` weighed as noise (significance 0).

    Changes recorded before significance was weighed carry none, and are not noise.
    """
    return details.get("significance") == 0


def significant_only(history: History) -> History:
    """Return `history` without its `document.changed` events of significance 0 (its versions all kept)."""
    events = [e for e in history.events if not (e.kind == DOCUMENT_CHANGED and is_noise(e.details))]
    return replace(history, events=events)


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """Two versions of one URL compared: the unified diff of their text and the change's weight.

    `unified` is empty when both have the same content, and for `binary` content (PDF,
    zip), where `significance` is None: such content is compared by size and hash only.
    """

    url: str
    old: Version
    new: Version
    unified: str
    binary: bool = False
    significance: float | None = None
    noise: tuple[str, ...] = ()


def compare_versions(
    archive: Reader,
    url: str,
    from_spec: str | None = None,
    to_spec: str | None = None,
    rules: IgnoreRules = NO_RULES,
) -> VersionDiff:
    """Return two versions of `url` compared (default: the last two), weighed with `rules`.

    Text comes from `mirror.text` (charset from header, BOM and `<meta>`, then detection),
    so legacy charsets read right; the weight is `mirror.significance`'s over `pageview`.

    Raises:
        TargetNotFound, VersionNotFound: the URL or a version is not in the store.
    """
    new = archive.version(url, to_spec or "-1")
    if from_spec is None and to_spec is None and new.number < 2:
        raise VersionNotFound(url, "-2", "there is only one version; nothing to diff")
    old = archive.version(url, from_spec or "-2")
    if old.sha256 == new.sha256:
        return VersionDiff(url, old, new, "", significance=0.0)
    old_bytes, new_bytes = archive.read(old.sha256), archive.read(new.sha256)
    old_text, new_text = to_text(old_bytes, old.content_type), to_text(new_bytes, new.content_type)
    if old_text is None or new_text is None:
        return VersionDiff(url, old, new, "", binary=True)
    old_view = view(old_bytes, old.content_type, old_text, rules)
    significance, noise = weigh(old_view, view(new_bytes, new.content_type, new_text, rules), rules)
    text = unified(old_text, new_text, f"{url} v{old.number}", f"{url} v{new.number}")
    text = text if not text or text.endswith("\n") else text + "\n"
    return VersionDiff(url, old, new, text, significance=significance, noise=tuple(noise))


def version_diff(
    archive: Reader,
    url: str,
    from_spec: str | None = None,
    to_spec: str | None = None,
    rules: IgnoreRules = NO_RULES,
) -> str:
    """Return the unified diff of the text of two versions of `url` (default: the last two).

    A first line `# significance S` (and `(noise: date, number)` when S is 0) weighs the
    change between the two versions with `rules`, the target's ignore rules now (see
    `mirror.significance`). Binaries (PDF, zip) get a one-line summary of sizes and hashes
    instead of a diff.

    Raises:
        TargetNotFound, VersionNotFound: the URL or a version is not in the store.
    """
    d = compare_versions(archive, url, from_spec, to_spec, rules)
    old, new = d.old, d.new
    if old.sha256 == new.sha256:
        return ""
    if d.binary:
        return (
            f"binary content differs: v{old.number} {old.sha256[:12]} ({old.size} bytes) -> "
            f"v{new.number} {new.sha256[:12]} ({new.size} bytes)\n"
        )
    noise = f" (noise: {', '.join(d.noise)})" if d.noise else ""
    return f"# significance {d.significance:g}{noise}\n" + d.unified
