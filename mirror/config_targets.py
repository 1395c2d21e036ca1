"""The targets and sources of a config file: the three forms of targets, `[[sources]]`, ignore rules.

`Targets` gathers targets in the order found and refuses duplicates, naming where each came
from; `source()` reads one `[[sources]]` table. Errors are `ConfigError`s naming file and key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

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


class Targets:
    """Targets in the order found, refusing duplicates, naming where each came from."""

    def __init__(self, config_name: str, interval: timedelta) -> None:
        self.config_name = config_name
        self.interval = interval
        self.found: list[Target] = []
        self.where: dict[str, str] = {}  # normalised URL → "file: key" or "file:line"
        self.ignore: dict[str, IgnoreRules] = {}  # normalised URL → its ignore rules, when it has any

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
        try:
            with open(name, encoding="utf-8-sig") as file:
                lines = file.read().splitlines()
        except FileNotFoundError:
            raise ConfigError(self.config_name, "targets_file", f"no such file: {name!r}") from None
        except OSError as exc:
            raise ConfigError(
                self.config_name, "targets_file", f"cannot read {name!r}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(name, "", f"not UTF-8 text (byte {exc.start})") from None
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            # A URL holds no spaces, so "URL  # note" is a URL and a comment.
            first, _, rest = text.partition(" ")
            url = first if rest.strip().startswith("#") else text
            self._add(url, None, f"{name}:{number}", "")

    def _add(
        self, url: str, interval: timedelta | None, file: str, key: str, rules: IgnoreRules = NO_RULES
    ) -> None:
        try:
            normal = normalize_url(url)
        except BadURL as exc:
            raise ConfigError(file, key, str(exc)) from None
        here = f"{file}: {key}" if key else file
        if normal in self.where:
            raise ConfigError(file, key, f"duplicate target {normal} (also {self.where[normal]})")
        self.where[normal] = here
        if rules:
            self.ignore[normal] = rules
        self.found.append(Target(normal, interval or self.interval, source="config"))


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
