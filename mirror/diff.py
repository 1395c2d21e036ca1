"""Unified diffs between the texts of two versions, and their line counts. Pure.

`difflib` aligns lines with `SequenceMatcher`, whose worst case is quadratic: two texts of
10,000 interleaved lines take 2.5 s, twice that 10 s. A worker must never
stall on one page, so the alignment runs under a work budget counted in the steps of
`find_longest_match`'s inner loop. Past the budget, the diff falls back to comparing the
two texts as multisets of lines (which is linear) and says so in a `#` line.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ParamSpec, Protocol, TypeVar

from mirror.align import BudgetedMatcher as _BudgetedMatcher
from mirror.align import OverBudget as _OverBudget
from mirror.align import only_in
from mirror.domain import ChangeDiff
from mirror.ignore import NO_RULES, IgnoreRules
from mirror.pageview import view
from mirror.significance import weigh
from mirror.text import to_texts

# About 0.1 µs a step: the check's budget caps an alignment near 0.3 s, the
# budget of `mirror diff` (a person is waiting, and wants the real diff) near five.
CHECK_BUDGET = 3_000_000
FULL_BUDGET = 50_000_000
MAX_LINE_CHARS = 1000  # per line of the short diff: one minified 1 MB line must not fill an event


@dataclass(frozen=True, slots=True)
class _Diff:
    lines: list[str]  # the unified diff, headers included; empty when the texts are equal
    added: int  # lines with text: blank lines are layout (paragraph margins), not content
    removed: int


def _count(lines: Sequence[str]) -> int:
    return sum(1 for line in lines if line and not line.isspace())


def _range(start: int, stop: int) -> str:
    # The "ed" range of a hunk header, as difflib writes it.
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start if length == 0 else start + 1},{length}"


def _aligned(a: Sequence[str], b: Sequence[str], labels: tuple[str, str], context: int, budget: int) -> _Diff:
    if len(a) > budget:
        raise _OverBudget
    lines: list[str] = []
    added = removed = 0
    for group in _BudgetedMatcher(a, b, budget).get_grouped_opcodes(context):
        if not lines:
            lines += [f"--- {labels[0]}", f"+++ {labels[1]}"]
        first, last = group[0], group[-1]
        lines.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [" " + line for line in a[i1:i2]]
                continue
            if tag in {"replace", "delete"}:
                lines += ["-" + line for line in a[i1:i2]]
                removed += _count(a[i1:i2])
            if tag in {"replace", "insert"}:
                lines += ["+" + line for line in b[j1:j2]]
                added += _count(b[j1:j2])
    return _Diff(lines, added, removed)


def _unaligned(a: Sequence[str], b: Sequence[str], labels: tuple[str, str]) -> _Diff:
    if a == b:
        return _Diff([], 0, 0)
    old, new = Counter(a), Counter(b)
    removed, added = only_in(a, old - new), only_in(b, new - old)
    note = (
        f"# {len(a)} -> {len(b)} lines: too costly to align line by line; what follows are the lines "
        "found in only one version (lines that only moved are not shown or counted)"
    )
    lines = [f"--- {labels[0]}", f"+++ {labels[1]}", note]
    lines += ["-" + line for line in removed]
    lines += ["+" + line for line in added]
    return _Diff(lines, _count(added), _count(removed))


def _diff(old_text: str, new_text: str, labels: tuple[str, str], context: int, budget: int) -> _Diff:
    a, b = _lines(old_text), _lines(new_text)
    try:
        return _aligned(a, b, labels, context, budget)
    except _OverBudget:
        return _unaligned(a, b, labels)


def _lines(text: str) -> list[str]:
    # Split on "\n" only: str.splitlines() also breaks at form feeds and U+2028, which
    # would make the diff disagree with what `mirror show` and a text editor count.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _shorten(lines: list[str], max_lines: int) -> str:
    cut = MAX_LINE_CHARS
    shown = [line if len(line) <= cut else line[:cut] + "…" for line in lines[:max_lines]]
    if len(lines) > max_lines:
        shown.append(f"... {len(lines) - max_lines} more lines")
    return "\n".join(shown)


def unified(old_text: str, new_text: str, from_label: str, to_label: str, *, context: int = 3) -> str:
    """Return the full unified diff of two texts ("" when they are equal), without a final newline.

    For `mirror diff`. Texts too costly to align within a few seconds get the lines found
    in only one version instead, after a `#` note saying so.
    """
    return "\n".join(_diff(old_text, new_text, (from_label, to_label), context, FULL_BUDGET).lines)


HEAD_CHARS = 2000  # of the new text, kept for placeholder detection in judge
# Bytes of texts kept per cache (a text's size in memory: 1, 2 or 4 bytes a character, as
# Python stores it). Kept texts serve a page's NEXT change, so a round where every page
# changes once hits none of them, and each kept text is memory the round holds to its end:
# bounded at 16,000,000 characters, the texts and views of the benchmark's mutated round of
# 10,000 pages (1,000 changes, curly quotes: 2 bytes a character) held ~64 MiB of the peak.
# 4 MiB each keeps the last ~40 changed pages of 50 KB of text.
TEXT_CACHE_BYTES = 4 * 1024 * 1024


class TextCache:
    """A thread-safe LRU of documents' normalised texts by (sha256, content type), bounded in bytes.

    Rendering HTML to text is most of a change's cost (~15 ms for a 90 KB page); content
    is immutable per sha256, so the text of a version compared once serves its next change.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._texts: OrderedDict[tuple[str, str | None], str] = OrderedDict()
        self._bytes = 0  # of the texts kept, as `sys.getsizeof` counts them
        self._lock = threading.Lock()
        self.hits = 0

    @property
    def size(self) -> int:
        """Return the bytes of the texts kept now."""
        return self._bytes

    def get(self, sha256: str, content_type: str | None) -> str | None:
        """Return the cached text of this content, or None."""
        with self._lock:
            text = self._texts.get((sha256, content_type))
            if text is not None:
                self._texts.move_to_end((sha256, content_type))
                self.hits += 1
            return text

    def put(self, sha256: str, content_type: str | None, text: str) -> None:
        """Keep `text` as the text of this content, dropping the least recently used past the bound."""
        size = sys.getsizeof(text)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._texts.pop((sha256, content_type), None)
            self._bytes += size - (sys.getsizeof(old) if old is not None else 0)
            self._texts[(sha256, content_type)] = text
            while self._bytes > self.max_bytes:
                _, dropped = self._texts.popitem(last=False)
                self._bytes -= sys.getsizeof(dropped)


TEXTS = TextCache(TEXT_CACHE_BYTES)
# What changes are weighed on (`mirror.pageview`), by (sha256, content type and ignore rules).
VIEWS = TextCache(TEXT_CACHE_BYTES)


@contextmanager
def texts_kept(max_bytes: int) -> Iterator[None]:
    """Bound the process's caches of texts and views at `max_bytes` each within (0: keep none).

    A `mirror check` round checks each page once and the command ends with it: a text kept
    for the page's next change is memory held to the end for nothing (8 MiB a process).
    """
    bounds = TEXTS.max_bytes, VIEWS.max_bytes
    TEXTS.max_bytes = VIEWS.max_bytes = max_bytes
    try:
        yield
    finally:
        TEXTS.max_bytes, VIEWS.max_bytes = bounds


P = ParamSpec("P")
R = TypeVar("R")


class Runner(Protocol):
    """Runs `fn(*args)` somewhere and returns its result: `textpool.TextPool.run` (a helper process)."""

    def __call__(self, size: int, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...


def compare(
    old: bytes,
    old_content_type: str | None,
    new: bytes,
    new_content_type: str | None,
    *,
    context: int = 3,
    max_lines: int = 60,
    old_sha256: str | None = None,
    new_sha256: str | None = None,
    run: Runner | None = None,
    rules: IgnoreRules = NO_RULES,
) -> ChangeDiff:
    """Return how two versions differ: sizes, how much it matters, for texts line counts and a short diff.

    The counts cover the whole diff and leave out blank lines, which are layout (one
    paragraph added is one line added); `unified` holds the diff's first `max_lines` lines
    and then `... N more lines`. `significance` and `noise` weigh the change
    (`mirror.significance`) with the target's ignore `rules`. When either side is binary
    (PDF, zip, image) the result has `text=False`, sizes only and significance 1. Fast
    enough for a worker: an alignment that would take more than about 0.3 s falls back to
    a line multiset comparison.

    Given the sha256 of a side, its text and view are looked up in (and the new side's are
    kept in) small process-wide caches: the next change of the page then renders only its
    new body. `run` computes the rendering and the diff (`change_diff`) elsewhere:
    `TextPool.run` sends a large change to a helper process. By default they are computed here.
    """
    view_type = f"{old_content_type}\x1e{rules.key}"
    old_text = TEXTS.get(old_sha256, old_content_type) if old_sha256 else None
    old_view = VIEWS.get(old_sha256, view_type) if old_sha256 and old_text is not None else None
    args = (old_text, old_view, old, old_content_type, new, new_content_type, context, max_lines, rules)
    if run is None:
        diff, new_text, new_view = change_diff(*args)
    else:
        size = len(new) + (len(old) if old_view is None else 0)
        diff, new_text, new_view = run(size, change_diff, *args)
    if new_sha256 is not None and new_text is not None:
        TEXTS.put(new_sha256, new_content_type, new_text)
        if new_view is not None:
            VIEWS.put(new_sha256, f"{new_content_type}\x1e{rules.key}", new_view)
    return diff


def change_diff(
    old_text: str | None,
    old_view: str | None,
    old: bytes,
    old_content_type: str | None,
    new: bytes,
    new_content_type: str | None,
    context: int,
    max_lines: int,
    rules: IgnoreRules = NO_RULES,
) -> tuple[ChangeDiff, str | None, str | None]:
    """Return `compare`'s result and the new text and view; the old ones are made unless given. Pure."""
    if old_text is None:
        old_text, new_text = to_texts([(old, old_content_type), (new, new_content_type)])
    else:
        (new_text,) = to_texts([(new, new_content_type)])
    if old_text is None or new_text is None:
        return ChangeDiff(old_size=len(old), new_size=len(new), text=False), new_text, None
    if old_view is None:
        old_view = view(old, old_content_type, old_text, rules)
    new_view = view(new, new_content_type, new_text, rules)
    significance, noise = weigh(old_view, new_view, rules)
    diff = _diff(old_text, new_text, ("old", "new"), context, CHECK_BUDGET)
    change = ChangeDiff(
        old_size=len(old),
        new_size=len(new),
        text=True,
        lines_added=diff.added,
        lines_removed=diff.removed,
        unified=_shorten(diff.lines, max_lines),
        old_chars=len(old_text),
        new_chars=len(new_text),
        new_head=new_text[:HEAD_CHARS],
        significance=significance,
        noise=noise,
    )
    return change, new_text, new_view
