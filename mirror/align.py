"""Line or word alignment with a bound on its work: difflib's matcher, made to give up. Pure.

`difflib.SequenceMatcher` is quadratic at worst; a worker must never stall on one page.
`BudgetedMatcher` counts the steps of `find_longest_match`'s inner loop and raises
`OverBudget` past its budget (about 0.1 µs a step); callers then compare multisets.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate


class OverBudget(Exception):
    """The alignment would cost more steps than allowed."""


class BudgetedMatcher(difflib.SequenceMatcher[str]):
    """A SequenceMatcher that gives up, raising `OverBudget`, once it has spent `budget` steps."""

    def __init__(self, a: Sequence[str], b: Sequence[str], budget: int) -> None:
        super().__init__(None, a, b)
        counts = Counter(b)
        # difflib's autojunk rule: in a b of 200 lines or more, a line found more than 1% of
        # the time (blank lines, mostly) is "popular" and never visited by the inner loop.
        limit = len(b) // 100 + 1 if len(b) >= 200 else len(b)
        # One find_longest_match call visits, for each line of a in its range, the positions
        # of that line in b: prefix sums bound the steps of any call in O(1).
        weights = (1 + (counts[x] if counts[x] <= limit else 0) for x in a)
        self._steps = list(accumulate(weights, initial=0))
        self._left = budget

    def find_longest_match(
        self, alo: int = 0, ahi: int | None = None, blo: int = 0, bhi: int | None = None
    ) -> difflib.Match:
        high = len(self._steps) - 1 if ahi is None else ahi
        self._left -= self._steps[high] - self._steps[alo]
        if self._left < 0:
            raise OverBudget
        return super().find_longest_match(alo, high, blo, bhi)

    @property
    def left(self) -> int:
        """The steps left of the budget."""
        return self._left


def only_in(lines: Sequence[str], extra: Counter[str]) -> list[str]:
    """Return the lines counted in `extra`, in the order they appear in `lines`."""
    left = extra.copy()
    found = []
    for line in lines:
        if left[line] > 0:
            left[line] -= 1
            found.append(line)
    return found
