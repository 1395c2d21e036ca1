"""How much a change matters: a number from 0 to 1, and what a change of no matter was. Pure.

`weigh(old_view, new_view, rules)` compares two views of a document (`mirror.pageview`:
its text, then a line per link target and image) and returns `(significance, noise)`.

What is set aside, never counted as changed:
- lines matching one of the target's `ignore_lines` (searched anywhere in the line), and
  the elements its `ignore_selectors` chose ("ignored");
- in text lines, a date (`2026-12-03`, `3 December 2026`, `Dec. 3, 2026`, `03/12/2026`, a
  month or weekday name, "yesterday"), a time (`14:05`, `2:05 pm UTC`, "5 minutes ago") or
  a number (`1,234`, `12.5%`) changed in place for another one ("date", "time", "number");
- a session-like token (8 or more hex digits, or 16 or more letters and digits mixed,
  such as `sid=4f3a9c2e`) changed in place, in text and in link targets ("token");
- case ("case") and white space, line breaks included ("whitespace");
- a change of the bytes that leaves the view as it was: markup, scripts, styles ("markup").
In link and image lines only tokens are set aside: a link from `2024.csv` to `2025.csv`
is a change.

Everything else counts. A word of text weighs 1, a link target or an image
`MEDIA_WEIGHT` (10, about a sentence). The lines found in one version only are paired
word by word, in order (so a date changed in a footer line is found in place); the
changed share is the weight removed plus the weight added over the weight of both
versions. Lines that only moved count as one word in all.
`significance` is its square root, rounded to 3 decimals (a change that counts is at
least 0.001), so that small real changes stand out: 1% changed reads 0.1, 4% reads 0.2,
25% reads 0.5, everything 1. On a report page of 800 words and 15 links
(`tests/data/significance/report.html`): one word replaced 0.03, a link unlinked (its
words kept) 0.07, a download line removed 0.10, an image with its caption 0.15, a
paragraph rewritten 0.10, a section removed 0.22. A change is noise exactly when its
significance is 0, and then `noise` names what it consisted of (sorted: "case", "date",
"ignored", "markup", "number", "time", "token", "whitespace"); otherwise `noise` is
empty. A binary (PDF, zip, image) has no view: 1, no noise.

Bounded work, as the diff's: lines are compared as multisets (linear), then the words of
changed lines aligned; past `BUDGET` steps or `MAX_WORDS` changed words, the changed
words are counted as multisets (digits alike: numbers changed in place are still noise).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mirror.align import BudgetedMatcher, OverBudget, only_in
from mirror.ignore import IgnoreRules
from mirror.pageview import IGNORED

BUDGET = 3_000_000  # steps aligning the words of changed lines (about 0.3 s)
LINK, IMAGE, TEXT = "link: ", "image: ", ""
# A link target or an image weighs as much as this many words (about a sentence): the text
# shows neither, and a removed dataset link or photograph must stand out on a long page.
MEDIA_WEIGHT = 10

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_WEEKDAY = r"(?:mon|tue|wed|thu|fri|sat|sun)(?:day|sday|nesday|rsday|urday)?\.?"
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_DATE = (
    rf"\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[/.]\d{{1,2}}[/.]\d{{2,4}}|"
    rf"(?:{_WEEKDAY},?\s+)?{_DAY}\s+(?:of\s+)?{_MONTH},?\s+\d{{4}}|"
    rf"(?:{_WEEKDAY},?\s+)?{_MONTH}\s+{_DAY},?\s+\d{{4}}|{_MONTH}\s+\d{{4}}|{_DAY}\s+{_MONTH}|{_MONTH}\s+{_DAY}|"
    rf"{_WEEKDAY}|{_MONTH}|yesterday|today|tomorrow"
)
_TIME = (
    r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s*[ap]\.?m\.?)?(?:\s*(?:utc|gmt|[a-z]{1,4}t|z)\b)?|"
    r"\d{1,2}\s*[ap]\.?m\.?|t\d{2}:\d{2}|"
    r"(?:\d+|an?|one)\s+(?:second|sec|minute|min|hour|hr|day|week|month|year)s?\s+ago|just now"
)
# A session id or cache key, not a password: S105 reads "TOKEN" as one.
_TOKEN = r"(?=[a-z0-9_-]*\d)(?=[a-z0-9_-]*[a-z])(?:[0-9a-f]{8,}|[a-z0-9_-]{16,})"  # noqa: S105
_NUMBER = r"[-+\u2212]?\d+(?:[.,\u00a0\u202f']\d+)*%?"
# Dates and times first: "3 December 2026" is one date, not a number and two words.
_MASK_RE = re.compile(
    rf"(?P<date>\b(?:{_DATE})\b)|(?P<time>\b(?:{_TIME})(?!\w))|(?P<token>\b{_TOKEN}\b)|(?P<number>{_NUMBER})",
    re.IGNORECASE,
)
_TOKEN_RE = re.compile(rf"\b{_TOKEN}\b", re.IGNORECASE)
# _MASK_RE costs ~50 µs a line of prose; a line with no digit and none of these words has
# nothing to mask, and is split in ~1 µs.
_DIGIT_RE = re.compile(r"\d")
_DIGITS_RE = re.compile(r"\d[\d,.]*")
_LETTERS_RE = re.compile(r"[a-z]+")
_DATE_WORDS = frozenset(
    (  # noqa: SIM905 (a list of 42 words reads better as one string)
        "jan january feb february mar march apr april may jun june jul july aug august sep sept september "
        "oct october nov november dec december mon monday tue tuesday wed wednesday thu thursday fri friday "
        "sat saturday sun sunday yesterday today tomorrow now"
    ).split()
)
# Words of changed lines that are compared one by one; past this, a change is so large that
# its lines are compared as multisets of lower-case words (0.3 s at most, as the diff's budget).
MAX_WORDS = 5_000


@dataclass(frozen=True, slots=True)
class _Unit:
    key: str  # what is compared: a lower-case word, or a placeholder for a date, time, number, token
    raw: str  # as written
    kind: str  # TEXT, LINK or IMAGE
    noise: str  # what it is when it changes in place with the same key: "case", "date", ...


@functools.lru_cache(maxsize=64)
def _patterns(lines: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in lines)) if lines else None


def _kind(line: str) -> str:
    return LINK if line.startswith(LINK) else IMAGE if line.startswith(IMAGE) else TEXT


def _units(line: str) -> list[_Unit]:
    kind = _kind(line)
    if kind is not TEXT:  # one unit; only tokens are set aside in a URL
        key = _TOKEN_RE.sub("\x00token", line)
        return [_Unit(key, line, kind, "token")]
    if not _DIGIT_RE.search(line) and _DATE_WORDS.isdisjoint(_LETTERS_RE.findall(line.lower())):
        return [_Unit(w.lower(), w, TEXT, "case") for w in line.split()]
    units: list[_Unit] = []
    at = 0
    for match in _MASK_RE.finditer(line):
        units += [_Unit(w.lower(), w, TEXT, "case") for w in line[at : match.start()].split()]
        name = match.lastgroup or "number"
        units.append(_Unit("\x00" + name, match.group(), TEXT, name))
        at = match.end()
    units += [_Unit(w.lower(), w, TEXT, "case") for w in line[at:].split()]
    return units


def _weight(lines: list[str]) -> int:
    """Return the weight of a version's lines: its words, and MEDIA_WEIGHT per link or image line."""
    media = [line for line in lines if line.startswith((LINK, IMAGE))]
    words = len("\n".join(lines).split()) - len("\n".join(media).split())
    return words + MEDIA_WEIGHT * len(media)


class _Tally:
    """What a change consists of: weight changed per kind, and the kinds of noise met."""

    def __init__(self) -> None:
        self.changed: Counter[str] = Counter()
        self.noise: set[str] = set()

    def lines(self, old: Sequence[str], new: Sequence[str]) -> None:
        """Count the changed units of the lines found in one version only (each side in its order)."""
        if sum(len(line.split()) for line in (*old, *new)) > MAX_WORDS:
            self.multisets(old, new)
            return
        old_units = [u for line in old for u in _units(line)]
        new_units = [u for line in new for u in _units(line)]
        a, b = [u.key for u in old_units], [u.key for u in new_units]
        try:
            opcodes = (
                BudgetedMatcher(a, b, BUDGET).get_opcodes() if a != b else [("equal", 0, len(a), 0, len(b))]
            )
        except OverBudget:
            self.multisets(old, new)
            return
        for tag, i1, i2, j1, j2 in opcodes:
            if tag == "equal":  # equal keys: the same placeholder, or words equal but for case
                self.noise.update(
                    x.noise for x, y in zip(old_units[i1:i2], new_units[j1:j2], strict=True) if x.raw != y.raw
                )
            else:
                for unit in (*old_units[i1:i2], *new_units[j1:j2]):
                    self.changed[unit.kind] += 1

    def multisets(self, old: Sequence[str], new: Sequence[str]) -> None:
        """Count the words found in one side only (lower case, digits as `#`; link and image lines whole)."""
        masked: list[list[str]] = [[], []]
        counts: list[Counter[tuple[str, str]]] = [Counter(), Counter()]
        for lines, shapes, words in zip((old, new), masked, counts, strict=True):
            for line in lines:
                kind = _kind(line)
                shape = _DIGITS_RE.sub("#", line.lower()) if kind is TEXT else line
                shapes.append(shape)
                words.update((kind, w) for w in (shape.split() if kind is TEXT else [shape]))
        extra = (counts[0] - counts[1]) + (counts[1] - counts[0])
        for (kind, _), n in extra.items():
            self.changed[kind] += n
        if not extra:  # the same words: numbers changed in place, or words that moved (a change)
            if masked[0] == masked[1]:
                self.noise.add("number")
            else:
                self.changed[TEXT] += 1


def _split(view: str, pattern: re.Pattern[str] | None) -> tuple[list[str], Counter[str]]:
    """Return the lines that count, and the lines set aside by the ignore rules."""
    kept: list[str] = []
    ignored: Counter[str] = Counter()
    for line in view.split("\n"):
        if line.startswith(IGNORED) or (pattern is not None and pattern.search(line)):
            ignored[line.lstrip(IGNORED)] += 1
        elif line.strip():
            kept.append(line)
    return kept, ignored


def weigh(old_view: str | None, new_view: str | None, rules: IgnoreRules) -> tuple[float, tuple[str, ...]]:
    """Return (significance, noise) of a change from `old_view` to `new_view` (see the module's rules)."""
    if old_view is None or new_view is None:
        return 1.0, ()
    pattern = _patterns(rules.lines)
    old, old_ignored = _split(old_view, pattern)
    new, new_ignored = _split(new_view, pattern)
    tally = _Tally()
    if old_ignored != new_ignored:
        tally.noise.add("ignored")
    # The lines found in one version only, in order: what changed in place pairs up word by
    # word (a date in a footer), without aligning the whole page a second time (the diff did).
    old_counts, new_counts = Counter(old), Counter(new)
    old_only, new_only = only_in(old, old_counts - new_counts), only_in(new, new_counts - old_counts)
    if old_only or new_only:
        tally.lines(old_only, new_only)
    elif old != new:  # the same lines in another order: a change, if a small one
        tally.changed[TEXT] += 1
    total = _weight(old) + _weight(new)
    changed = sum(n * (1 if kind is TEXT else MEDIA_WEIGHT) for kind, n in tally.changed.items())
    share = min(1.0, changed / total) if total else float(changed > 0)
    if share > 0:
        return max(0.001, round(math.sqrt(share), 3)), ()
    if not tally.noise:
        tally.noise.add("markup" if old_view == new_view else "whitespace")
    return 0.0, tuple(sorted(tally.noise))
