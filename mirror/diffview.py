"""A unified diff laid out for a page: inline rows, or side by side. Pure.

`mirror.diff.unified` writes the diff once; this reads it back into rows with line
numbers. Side by side pairs each run of removed lines with the run of added lines that
follows it (a replaced paragraph sits beside its replacement); a line with no partner
faces an empty cell. A `#` note (texts too costly to align) is kept as a note row, and
its lines have no numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")

# Row kinds
SAME, REMOVED, ADDED, CHANGED, HUNK, NOTE = "same", "removed", "added", "changed", "hunk", "note"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the inline view: its kind (same, removed, added, hunk, note), numbers and text."""

    kind: str
    old_no: int | None
    new_no: int | None
    text: str


@dataclass(frozen=True, slots=True)
class Pair:
    """One row of the side-by-side view: the old line and the new one (either may be missing)."""

    kind: str  # same, removed, added, changed (both sides, different), hunk, note
    old_no: int | None
    old: str | None
    new_no: int | None
    new: str | None


def _start(number: str, length: str | None) -> int:
    # A hunk of length 0 names the line before it ("-3,0"): its next line is number + 1.
    return int(number) + 1 if length == "0" else int(number)


def inline(unified: str) -> list[Line]:
    """Return the rows of a unified diff (headers `---`/`+++` left out), numbered on each side."""
    rows: list[Line] = []
    old_no = new_no = 1
    header = True
    for raw in unified.split("\n"):
        if header and raw.startswith(("--- ", "+++ ")):
            continue
        header = False
        m = _HUNK.match(raw)
        if m:
            old_no, new_no = _start(m[1], m[2]), _start(m[3], m[4])
            rows.append(Line(HUNK, None, None, raw))
        elif raw.startswith("#"):
            rows.append(Line(NOTE, None, None, raw[1:].strip()))
            old_no = new_no = 0  # lines after the note are not aligned: no numbers
        elif raw.startswith("-"):
            rows.append(Line(REMOVED, old_no or None, None, raw[1:]))
            old_no += 1 if old_no else 0
        elif raw.startswith("+"):
            rows.append(Line(ADDED, None, new_no or None, raw[1:]))
            new_no += 1 if new_no else 0
        elif raw.startswith(" "):
            rows.append(Line(SAME, old_no or None, new_no or None, raw[1:]))
            old_no += 1 if old_no else 0
            new_no += 1 if new_no else 0
    return rows


def side_by_side(unified: str) -> list[Pair]:
    """Return the rows of a unified diff side by side: removed runs beside the added runs after them."""
    pairs: list[Pair] = []
    removed: list[Line] = []
    added: list[Line] = []

    def flush() -> None:
        for i in range(max(len(removed), len(added))):
            old = removed[i] if i < len(removed) else None
            new = added[i] if i < len(added) else None
            kind = CHANGED if old and new else (REMOVED if old else ADDED)
            pairs.append(
                Pair(
                    kind,
                    old.old_no if old else None,
                    old.text if old else None,
                    new.new_no if new else None,
                    new.text if new else None,
                )
            )
        removed.clear()
        added.clear()

    for line in inline(unified):
        if line.kind == REMOVED:
            if added:  # a removal after additions starts a new run
                flush()
            removed.append(line)
        elif line.kind == ADDED:
            added.append(line)
        else:
            flush()
            if line.kind == SAME:
                pairs.append(Pair(SAME, line.old_no, line.text, line.new_no, line.text))
            else:
                pairs.append(Pair(line.kind, None, line.text, None, line.text))
    flush()
    return pairs
