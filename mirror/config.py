"""The config file: TOML in, one frozen typed `Config` out, parsed once.

Durations ("30s", "1h30m") and sizes ("100MB", "1 GiB") are parsed here and
nowhere else; the rest of the code sees `timedelta`s and `int`s. Every problem
becomes one `ConfigError` whose one-line message names the file, the key and
the bad value.

Targets come in three forms:

- `targets = ["https://...", { url = "https://...", interval = "1d" }]`, a list of URLs
  and inline tables;
- `[[targets]]` tables with `url` and an optional `interval` (TOML allows the key once:
  this form or the list, not both; a file with both is one `ConfigError` on `targets`);
- `targets_file = "targets.txt"` (relative to the config file's folder): one URL
  a line, `#` comments and blank lines ignored; it combines with either.

A URL listed twice (after normalisation) is an error naming both places. Target and
source tables may carry ignore rules (`ignore_lines`, `ignore_selectors`; `mirror.ignore`),
checked here: `Config.ignore` gives each URL its rules.

`[[sources]]` tables find more targets (see `Source`): `start = URL` crawls the pages
linked from it under a `scope` prefix, `sitemap = URL` reads a sitemap. Their pages are
discovered targets, not configured ones: `Config.targets` never lists them, and
`Config.discovery_seeds()` gives the crawl start pages to add as discovered targets.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, ByteSize, Field, ValidationError

from mirror import PROJECT_URL, __version__
from mirror.config_cache import DATABASE_ENV, DEFAULT_DATABASE
from mirror.config_cache import DEFAULT_CONFIG_PATH as DEFAULT_CONFIG_PATH  # where it was always named
from mirror.config_cache import config_path as config_path
from mirror.config_values import (
    TOP_LEVEL_KEYS,
    Duration,
    HeaderValue,
    PositiveDuration,
    Section,
    config_error,
    database_url,
    positive_duration,
    problem_of,
)
from mirror.domain import KEPT_HEADERS, BlockRule, DetectPolicy, FetchLimits, Target
from mirror.errors import ConfigError
from mirror.ignore import EMPTY_INDEX, IgnoreIndex

if TYPE_CHECKING:  # loaded by `load_config` when it reads targets: `status` and `history` never need them
    from mirror.config_notify import Destination
    from mirror.config_targets import Source


# A relative SQLite path is relative to the working directory, as SQLAlchemy reads it.
DEFAULT_INTERVAL = timedelta(hours=6)
DEFAULT_CHECK_RETENTION = timedelta(days=90)
DEFAULT_TICK = timedelta(seconds=5)
DEFAULT_LEASE = timedelta(minutes=5)  # a killed daemon's claimed targets wait this long for another
DEFAULT_SUMMARY = timedelta(minutes=1)  # how often `mirror run` says at info that it is alive
DEFAULT_CONCURRENCY = 8
DEFAULT_PER_HOST_CONCURRENCY = 2
DEFAULT_PER_HOST_DELAY = timedelta(seconds=1)
DEFAULT_TIMEOUT = timedelta(seconds=30)
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)
DEFAULT_MAX_BYTES = 104_857_600
DEFAULT_MAX_REDIRECTS = 10
DEFAULT_RETRIES = 2
DEFAULT_USER_AGENT = f"mirror/{__version__} (+{PROJECT_URL})"
DEFAULT_MISSING_AFTER = 3


def usable_cores() -> int:
    """Return how many cores this process may run on (its affinity: a container or `taskset` narrows it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class StorageConfig(Section):
    """`[storage]`: where the archive lives."""

    database: Annotated[str, BeforeValidator(database_url)] = DEFAULT_DATABASE


class ScheduleConfig(Section):
    """`[schedule]`: how often targets are checked and how long check rows are kept."""

    interval: PositiveDuration = DEFAULT_INTERVAL
    check_retention: PositiveDuration = DEFAULT_CHECK_RETENTION
    tick: PositiveDuration = DEFAULT_TICK
    lease: PositiveDuration = DEFAULT_LEASE
    summary: PositiveDuration = DEFAULT_SUMMARY


class FetchConfig(Section):
    """`[fetch]`: how hard and how politely pages are fetched."""

    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1)
    per_host_concurrency: int = Field(default=DEFAULT_PER_HOST_CONCURRENCY, ge=1)
    per_host_delay: Duration = DEFAULT_PER_HOST_DELAY  # 0 disables
    # `mirror check`'s processes (`mirror.team`): the cores it may use; 1 checks in one process.
    processes: int = Field(default_factory=usable_cores, ge=1)
    timeout: PositiveDuration = DEFAULT_TIMEOUT
    connect_timeout: PositiveDuration = DEFAULT_CONNECT_TIMEOUT
    max_bytes: Annotated[ByteSize, Field(gt=0)] = ByteSize(DEFAULT_MAX_BYTES)
    max_redirects: int = Field(default=DEFAULT_MAX_REDIRECTS, ge=0)
    retries: int = Field(default=DEFAULT_RETRIES, ge=0)
    user_agent: HeaderValue = Field(default=DEFAULT_USER_AGENT, min_length=1)

    def limits(self) -> FetchLimits:
        """Return the `FetchLimits` for `fetch`, with seconds as floats."""
        return FetchLimits(
            timeout=self.timeout.total_seconds(),
            connect_timeout=self.connect_timeout.total_seconds(),
            max_bytes=int(self.max_bytes),
            max_redirects=self.max_redirects,
            retries=self.retries,
            user_agent=self.user_agent,
        )


def _missing_after(value: object) -> object:
    """Return a count as it is, or a string read as a duration ("2d")."""
    problem = f"expected a count of checks like 3 or a duration like '2d', got {value!r}"
    if isinstance(value, str):
        try:
            return positive_duration(value)
        except ValueError:
            raise ValueError(problem) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(problem)
    return value


class BlockRuleTable(Section):
    """One `[[detect.block_rules]]` table: a user's sign of a bot wall (see `mirror.blocking`)."""

    name: str = Field(min_length=1)
    status: list[int] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    title: str | None = None
    body: str | None = None
    empty_body: bool = False


class DetectConfig(Section):
    """`[detect]`: when a failing document counts as disappeared, and what a bot wall looks like."""

    # A count of checks in a row, or a span ("2d") every check over which found it not served.
    missing_after: Annotated[int | timedelta, BeforeValidator(_missing_after)] = DEFAULT_MISSING_AFTER
    block_rules: list[BlockRuleTable] = Field(default_factory=list)

    def policy(self) -> DetectPolicy:
        """Return the `DetectPolicy` for `judge`."""
        rules = tuple(_block_rule(table) for table in self.block_rules)
        if isinstance(self.missing_after, timedelta):
            return DetectPolicy(missing_for=self.missing_after, block_rules=rules)
        return DetectPolicy(missing_after=self.missing_after, block_rules=rules)


def _block_rule(table: BlockRuleTable) -> BlockRule:
    """Return the rule of a checked table (its patterns compiled by `_check_block_rules`)."""
    return BlockRule(
        table.name,
        frozenset(table.status),
        tuple((name.lower(), value) for name, value in table.headers.items()),
        title=re.compile(table.title, re.IGNORECASE) if table.title is not None else None,
        body=re.compile(table.body, re.IGNORECASE) if table.body is not None else None,
        empty_body=table.empty_body,
    )


def _check_block_rules(file: str, detect: DetectConfig) -> None:
    """Refuse a rule that matches everything, names a header mirror does not keep, or has a bad pattern.

    Raises:
        ConfigError: naming `detect.block_rules[N].key`.
    """
    for index, table in enumerate(detect.block_rules):
        key = f"detect.block_rules[{index}]"
        if not (table.status or table.headers or table.title or table.body or table.empty_body):
            problem = "matches every answer: give at least one of status, headers, title, body, empty_body"
            raise ConfigError(file, key, problem)
        for status in table.status:
            if not 100 <= status <= 599:
                problem = f"expected HTTP statuses (100 to 599), got {status!r}"
                raise ConfigError(file, f"{key}.status", problem)
        for name in table.headers:
            if name.lower() not in KEPT_HEADERS:
                kept = ", ".join(KEPT_HEADERS)
                raise ConfigError(
                    file, f"{key}.headers.{name}", f"not a header mirror keeps; a rule can match: {kept}"
                )
        for field in ("title", "body"):
            pattern = getattr(table, field)
            if pattern is None:
                continue
            try:
                re.compile(pattern)
            except re.error as exc:
                problem = f"not a regular expression ({exc}): {pattern!r}"
                raise ConfigError(file, f"{key}.{field}", problem) from None


class _File(Section):
    """The whole file. Targets are checked by hand below: they mix forms and files."""

    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    fetch: FetchConfig = FetchConfig()
    detect: DetectConfig = DetectConfig()
    targets: list[Any] = Field(default_factory=list)
    targets_file: str | None = None
    sources: list[Any] = Field(default_factory=list)
    notify: list[Any] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Config:
    """The parsed config file. `path` is the file it came from, as given."""

    path: str
    storage: StorageConfig
    schedule: ScheduleConfig
    fetch: FetchConfig
    detect: DetectConfig
    targets: Sequence[Target]  # a `TargetList`: made on access, compact for a million
    sources: tuple[Source, ...] = ()
    ignore: IgnoreIndex = EMPTY_INDEX  # the ignore rules of targets and sources, by URL
    notify: tuple[Destination, ...] = ()  # `[[notify]]` destinations (`mirror.config_notify`)

    def discovery_seeds(self) -> tuple[Target, ...]:
        """Return the start pages of the crawl sources, as discovered targets (source "crawl").

        Add them with `Archive.add_discovered` (not `sync_targets`, which keeps configured
        targets only): a crawl begins when its start page is first checked.
        """
        seeds = {s.url: Target(s.url, s.interval, "crawl") for s in self.sources if s.kind == "crawl"}
        return tuple(seeds.values())


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, targets: bool = True
) -> Config:
    """Return the config read from `path`, `$MIRROR_DATABASE_URL` from `env` (default `os.environ`) applied.

    With `targets=False` the targets (and their file) and sources are neither read nor checked:
    what the commands that only open the store need (a million targets take ~10 s to check).

    Raises:
        ConfigError: the file or its targets file is missing, unreadable, not TOML,
            or holds a bad key or value. The message is one line naming file, key and value.
    """
    name = os.fspath(path)
    env = os.environ if env is None else env
    raw = _read_toml(name)
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        raise config_error(name, exc, _File) from None
    storage = parsed.storage
    override = env.get(DATABASE_ENV)
    if override:
        try:
            storage = StorageConfig(database=override)
        except ValidationError as exc:
            problem = problem_of(exc.errors(include_url=False)[0], StorageConfig)
            raise ConfigError(name, "storage.database", f"${DATABASE_ENV}: {problem}") from None
    _check_block_rules(name, parsed.detect)
    if not targets:
        return Config(name, storage, parsed.schedule, parsed.fetch, parsed.detect, ())
    from mirror.config_notify import destinations
    from mirror.config_targets import Targets, source

    found = Targets(name, parsed.schedule.interval)
    found.add_entries(parsed.targets)
    if parsed.targets_file is not None:
        found.add_file(parsed.targets_file)
    sources = tuple(
        source(name, index, entry, parsed.schedule.interval) for index, entry in enumerate(parsed.sources)
    )
    ignore = IgnoreIndex(found.ignore, tuple((s.scope, s.ignore) for s in sources if s.ignore))
    notify = destinations(name, parsed.notify, env)
    return Config(
        name,
        storage,
        parsed.schedule,
        parsed.fetch,
        parsed.detect,
        found.found,
        sources,
        ignore,
        notify,
    )


_BOTH_TARGET_FORMS = (
    "given both as a list (targets = [...]) and as [[targets]] tables, and TOML allows the key once: "
    'use one; the list may hold inline tables: targets = ["URL", { url = "URL", interval = "1d" }]'
)


def _read_toml(name: str) -> dict[str, Any]:
    try:
        with open(name, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(name, "", "no such file (give one with --config FILE or $MIRROR_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        if "('targets',)" in str(exc):  # `targets = [...]` and then `[[targets]]`
            raise ConfigError(name, "targets", _BOTH_TARGET_FORMS) from None
        raise ConfigError(name, "", f"invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(name, "", f"not UTF-8 text (byte {exc.start})") from None


if set(_File.model_fields) != TOP_LEVEL_KEYS:  # a new top-level key must be named there too
    raise RuntimeError(f"config_values.TOP_LEVEL_KEYS is not the file's keys {sorted(_File.model_fields)}")
