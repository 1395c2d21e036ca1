"""The targets and sources of a config file: the three forms of targets, `[[sources]]`, ignore rules.

`Targets` gathers targets in the order found and refuses duplicates, naming where each came
from; `source()` reads one `[[sources]]` table. Errors are `ConfigError`s naming file and key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO, Literal, overload

from pydantic import Field, ValidationError

from mirror.config_values import TOP_LEVEL_KEYS, PositiveDuration, Section, config_error
from mirror.discover import canonical_url, folder_of, in_scope
from mirror.domain import Target
from mirror.errors import ConfigError
from mirror.ignore import NO_RULES, BadRule, IgnoreRules, make_rules
from mirror.urls import BadURL, normalize_url

DEFAULT_MAX_PAGES = 10_000


class TargetTable(Section):
    url: str
    interval: PositiveDuration | None = None
    ignore_lines: list[str] = Field(default_factory=list)
    ignore_selectors: list[str] = Field(default_factory=list)


class SourceTable(Section):
    start: str | None = None
    sitemap: str | None = None
    scope: str | None = None
    max_pages: int = Field(default=DEFAULT_MAX_PAGES, ge=1)
    interval: PositiveDuration | None = None
    robots: bool = True
    ignore_lines: list[str] = Field(default_factory=list)
    ignore_selectors: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Source:
    """One `[[sources]]` table: where more targets are found, and the bounds of that search.

    - `kind` "crawl": `url` is the start page; pages it links to under `scope` become
      targets (source "crawl"), and so do the pages they link to, and so on.
    - `kind` "sitemap": `url` is a sitemap (or sitemap index); its pages under `scope`
      become targets (source "sitemap").
    - `scope`: a canonical URL prefix; by default the folder of `url`.
    - `max_pages`: at most this many targets under `scope` in the store.
    - `interval`: how often the pages found are checked (default `[schedule] interval`).
    - `robots`: honour robots.txt (false for archives one maintains oneself).
    - `ignore`: what is set aside when a change of a page under `scope` is weighed.
    """

    kind: Literal["crawl", "sitemap"]
    url: str
    scope: str
    max_pages: int
    interval: timedelta
    robots: bool = True
    ignore: IgnoreRules = NO_RULES


class TargetList(Sequence[Target]):
    """The configured targets, in order: a URL each, and the intervals that differ from the default.

    A sequence of `Target`s made on access: a million configured targets cost their URLs and
    a list, not a million objects (~55 MB).
    """

    __slots__ = ("_interval", "_intervals", "_urls")

    def __init__(self, urls: list[str], interval: timedelta, intervals: dict[int, timedelta]) -> None:
        self._urls = urls
        self._interval = interval
        self._intervals = intervals

    def __len__(self) -> int:
        return len(self._urls)

    @overload
    def __getitem__(self, index: int) -> Target: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Target]: ...

    def __getitem__(self, index: int | slice) -> Target | Sequence[Target]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self._urls))))
        if index < 0:
            index += len(self._urls)
        url = self._urls[index]  # IndexError beyond the end, as a tuple's
        return Target(url, self._intervals.get(index, self._interval), source="config")

    def __iter__(self) -> Iterator[Target]:
        interval, intervals = self._interval, self._intervals
        for index, url in enumerate(self._urls):
            yield Target(url, intervals.get(index, interval), source="config")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash((tuple(self._urls), self._interval, tuple(sorted(self._intervals.items()))))

    def __repr__(self) -> str:
        return f"TargetList({len(self)} targets)"


class Targets:
    """Targets in the order found, refusing duplicates, naming where each came from."""

    def __init__(self, config_name: str, interval: timedelta) -> None:
        self.config_name = config_name
        self.interval = interval
        self._urls: list[str] = []
        self._intervals: dict[int, timedelta] = {}  # index → interval, where one differs from `interval`
        # Where each URL came from, for naming the first of a duplicate: the config's own entries
        # here (a handful); a targets file's lines (a million, maybe) are found again by reading
        # the files once more, on that error only.
        self.where: dict[str, str] = {}  # normalised URL → "file: key"
        self.ignore: dict[str, IgnoreRules] = {}  # normalised URL → its ignore rules, when it has any
        self._seen: set[str] = set()
        self._files: list[str] = []  # the targets files read, in order

    def add_entries(self, entries: list[Any]) -> None:
        for index, entry in enumerate(entries):
            key = f"targets[{index}]"
            if isinstance(entry, str):
                self._add(entry, None, self.config_name, key)
            elif isinstance(entry, dict):
                try:
                    table = TargetTable.model_validate(entry)
                except ValidationError as exc:
                    raise config_error(self.config_name, exc, TargetTable, ("targets", index)) from None
                rules = ignore_rules(self.config_name, key, table.ignore_lines, table.ignore_selectors)
                self._add(table.url, table.interval, self.config_name, f"{key}.url", rules)
            else:
                problem = f"expected a URL or a table with url = ..., got {entry!r}"
                raise ConfigError(self.config_name, key, problem)

    def add_file(self, relative: str) -> None:
        name = os.path.join(os.path.dirname(self.config_name), relative)
        self._files.append(name)
        for number, url in _file_urls(self.config_name, name):
            self._add(url, None, f"{name}:{number}", "")

    def _add(
        self, url: str, interval: timedelta | None, file: str, key: str, rules: IgnoreRules = NO_RULES
    ) -> None:
        try:
            normal = normalize_url(url)
        except BadURL as exc:
            raise ConfigError(file, key, str(exc)) from None
        if normal in self._seen:
            raise ConfigError(file, key, f"duplicate target {normal} (also {self._first(normal)})")
        self._seen.add(normal)
        if key:
            self.where[normal] = f"{file}: {key}"
        if rules:
            self.ignore[normal] = rules
        if interval is not None and interval != self.interval:
            self._intervals[len(self._urls)] = interval
        self._urls.append(normal)

    @property
    def found(self) -> TargetList:
        """The targets found so far, in order."""
        return TargetList(self._urls, self.interval, self._intervals)

    def _first(self, normal: str) -> str:
        """Return where `normal` was first found: a config key, or a targets file's line."""
        if normal in self.where:
            return self.where[normal]
        for name in self._files:
            for number, url in _file_urls(self.config_name, name):
                if normalize_url(url) == normal:  # every line before the duplicate's was read well
                    return f"{name}:{number}"
        return "an earlier entry"  # not reached: a URL seen was in the config or in a file


def source(file: str, index: int, entry: Any, interval: timedelta) -> Source:
    """Return the `Source` of the `index`th `[[sources]]` table.

    Raises:
        ConfigError: not a table, neither or both of start/sitemap, a bad URL or value,
            or a start page outside its scope.
    """
    key = f"sources[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(file, key, f"expected a table with start = URL or sitemap = URL, got {entry!r}")
    try:
        table = SourceTable.model_validate(entry)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = error["loc"][-1] if error["loc"] else ""
        if error["type"] == "extra_forbidden" and name in TOP_LEVEL_KEYS:
            # TOML puts every key after `[[sources]]` into the last source table.
            problem = "unknown key (a top-level key: move it above the first [[sources]] table)"
            raise ConfigError(file, f"{key}.{name}", problem) from None
        raise config_error(file, exc, SourceTable, ("sources", index)) from None
    if (table.start is None) == (table.sitemap is None):
        which = "both start and sitemap" if table.start else "neither start nor sitemap"
        raise ConfigError(
            file, key, f"has {which}: give exactly one (start = URL crawls, sitemap = URL reads)"
        )
    kind: Literal["crawl", "sitemap"] = "crawl" if table.start is not None else "sitemap"
    field = "start" if kind == "crawl" else "sitemap"
    url = canonical(file, f"{key}.{field}", table.start or table.sitemap or "")
    scope = folder_of(url) if table.scope is None else canonical(file, f"{key}.scope", table.scope)
    if kind == "crawl" and not in_scope(url, scope):
        raise ConfigError(file, f"{key}.start", f"the start page {url} is not under scope {scope}")
    rules = ignore_rules(file, key, table.ignore_lines, table.ignore_selectors)
    return Source(kind, url, scope, table.max_pages, table.interval or interval, table.robots, rules)


def ignore_rules(file: str, key: str, lines: list[str], selectors: list[str]) -> IgnoreRules:
    """Return the checked ignore rules of the table at `key`.

    Raises:
        ConfigError: a regex or a selector does not compile, naming it (`targets[0].ignore_lines[1]`).
    """
    try:
        return make_rules(lines, selectors)
    except BadRule as exc:
        problem, index, which = exc.args
        raise ConfigError(file, f"{key}.ignore_{which}[{index}]", problem) from None


def canonical(file: str, key: str, url: str) -> str:
    try:
        return canonical_url(url)
    except BadURL as exc:
        raise ConfigError(file, key, str(exc)) from None


def _file_urls(config_name: str, name: str) -> Iterator[tuple[int, str]]:
    """Yield the line number and URL of each target line of the targets file `name`.

    Read a line at a time: a million lines held at once (as text or as a list) would cost
    60-100 MB more at the config's peak.

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8 text.
    """
    try:
        file = open(name, "rb")  # noqa: SIM115 (closed below: a generator's with would be held open across yields anyway)
    except FileNotFoundError:
        raise ConfigError(config_name, "targets_file", f"no such file: {name!r}") from None
    except OSError as exc:
        raise ConfigError(config_name, "targets_file", f"cannot read {name!r}: {exc.strerror}") from None
    with file:
        offset, number = 0, 0
        for raw in _lines(file, name, config_name):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(name, "", f"not UTF-8 text (byte {offset + exc.start})") from None
            offset += len(raw)
            if number == 0 and text.startswith("\ufeff"):
                text = text[1:]  # the byte order mark some editors write (utf-8-sig)
            # The same lines as str.splitlines() of the whole text (CR, CRLF and the rest).
            for line in text.splitlines() or [""]:
                number += 1
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                # A URL holds no spaces, so "URL  # note" is a URL and a comment.
                first, _, rest = line.partition(" ")
                yield number, first if rest.strip().startswith("#") else line


def _lines(file: BinaryIO, name: str, config_name: str) -> Iterator[bytes]:
    """Yield `file`'s lines as bytes, each with its LF; a read error is a `ConfigError`."""
    try:
        yield from file
    except OSError as exc:
        raise ConfigError(config_name, "targets_file", f"cannot read {name!r}: {exc.strerror}") from None
