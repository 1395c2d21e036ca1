"""Ignore rules: what a user tells `mirror` to set aside when it weighs a change. Pure.

A target (`[[targets]]` table or inline table) or a source (`[[sources]]`) may carry

- `ignore_lines`: regular expressions (Python `re` syntax) searched in each line of the
  page's text (as `mirror diff` shows it) and of its link and image lines; a line in which
  one matches is set aside;
- `ignore_selectors`: CSS selectors (translated to XPath by `cssselect`, applied by lxml);
  the elements they select, and all they hold, are set aside.

Rules set aside text only when a change is weighed (`significance`); the stored bytes, the
versions and the diff are never filtered. `IgnoreIndex.rules_for(url)` gives the rules of
a target: its own and those of every source whose scope holds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mirror.discover import in_scope


class BadRule(ValueError):
    """A rule that does not compile; the message says why and quotes it."""


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """The ignore rules of one target: regex sources and CSS selectors with their XPath.

    Plain strings only, so that the rules travel to a helper process (`TextPool`).
    """

    lines: tuple[str, ...] = ()
    selectors: tuple[str, ...] = ()
    xpaths: tuple[str, ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.lines or self.selectors)

    @property
    def key(self) -> str:
        """A string that differs for different rules (caches of what a page is weighed on key on it)."""
        return "\x1f".join((*self.lines, "\x1e", *self.selectors))

    def merged(self, other: IgnoreRules) -> IgnoreRules:
        """Return the rules of both, each once, in order."""
        lines = tuple(dict.fromkeys((*self.lines, *other.lines)))
        pairs = dict(zip(self.selectors, self.xpaths, strict=True))
        pairs.update(zip(other.selectors, other.xpaths, strict=True))
        return IgnoreRules(lines, tuple(pairs), tuple(pairs.values()))


NO_RULES = IgnoreRules()


def line_rule(pattern: str) -> str:
    """Return `pattern` once it compiles as a regular expression.

    Raises:
        BadRule: it does not compile, or it matches an empty line (it would set aside every line).
    """
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise BadRule(f"not a regular expression ({exc}), got {pattern!r}") from None
    if compiled.search(""):
        raise BadRule(f"matches an empty line, so it would set aside every line, got {pattern!r}")
    return pattern


def selector_rule(selector: str) -> str:
    """Return the XPath of a CSS selector.

    Raises:
        BadRule: not a CSS selector cssselect understands (pseudo-elements are refused too).
    """
    from cssselect import GenericTranslator, SelectorError  # here: a config without selectors never needs it

    try:
        return str(GenericTranslator().css_to_xpath(selector))
    except SelectorError as exc:
        raise BadRule(f"not a CSS selector ({exc}), got {selector!r}") from None
    except Exception as exc:  # cssselect raises ExpressionError (a SelectorError) and, rarely, others
        raise BadRule(f"not a CSS selector ({exc}), got {selector!r}") from None


def make_rules(lines: Iterable[str], selectors: Iterable[str]) -> IgnoreRules:
    """Return checked rules.

    Raises:
        BadRule: a rule does not compile (see `line_rule`, `selector_rule`), with its index
            in `args[1]` and which list in `args[2]` ("lines" or "selectors").
    """
    checked_lines = []
    for index, pattern in enumerate(lines):
        try:
            checked_lines.append(line_rule(pattern))
        except BadRule as exc:
            raise BadRule(str(exc), index, "lines") from None
    pairs: dict[str, str] = {}
    for index, selector in enumerate(selectors):
        try:
            pairs[selector] = selector_rule(selector)
        except BadRule as exc:
            raise BadRule(str(exc), index, "selectors") from None
    return IgnoreRules(tuple(checked_lines), tuple(pairs), tuple(pairs.values()))


@dataclass(frozen=True, slots=True)
class IgnoreIndex:
    """The ignore rules of a config: per configured target URL, and per source scope."""

    by_url: Mapping[str, IgnoreRules] = field(default_factory=dict)
    by_scope: tuple[tuple[str, IgnoreRules], ...] = ()

    def rules_for(self, url: str) -> IgnoreRules:
        """Return the rules of `url`: its own, then those of every source whose scope holds it."""
        rules = self.by_url.get(url, NO_RULES)
        for scope, more in self.by_scope:
            if in_scope(url, scope):
                rules = rules.merged(more)
        return rules


EMPTY_INDEX = IgnoreIndex()
