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

import difflib
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ByteSize, ConfigDict, Field, ValidationError

from mirror import PROJECT_URL, __version__
from mirror.discover import canonical_url, folder_of, in_scope
from mirror.domain import KEPT_HEADERS, BlockRule, DetectPolicy, FetchLimits, Target
from mirror.errors import ConfigError
from mirror.ignore import EMPTY_INDEX, NO_RULES, BadRule, IgnoreIndex, IgnoreRules, make_rules
from mirror.urls import BadURL, normalize_url

DEFAULT_CONFIG_PATH = "config/mirror.toml"
CONFIG_ENV = "MIRROR_CONFIG"
DATABASE_ENV = "MIRROR_DATABASE_URL"

# A relative SQLite path is relative to the working directory, as SQLAlchemy reads it.
DEFAULT_DATABASE = "sqlite:///state/mirror.db"
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
DEFAULT_MAX_PAGES = 10_000
MAX_HEADER_VALUE = 1000  # characters of a header value we send (servers refuse lines of 8 KB and more)

_UNITS = {"w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# "ms" comes before "m" so that "500ms" is not read as 500 minutes and a stray "s".
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|w|d|h|m|s)")
_NUMBER = re.compile(r"\s*\d+(?:\.\d+)?\s*")
_DATABASE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+_.-]*://")


def parse_duration(text: str | int | float) -> timedelta:
    """Return the timedelta for "30s", "1.5s", "15m", "6h", "1d", "2w", "1h30m", "0" or bare seconds.

    Raises:
        ValueError: not a non-negative duration; the message quotes the value.
    """
    problem = f"expected a duration like '30s', got {text!r}"
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(problem)
    if isinstance(text, str):
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(_DURATION_PART.sub("", text).split()):
                raise ValueError(problem)
            seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    else:
        seconds = float(text) if -1e18 < text < 1e18 else math.inf  # float() of a huge int overflows
    if not math.isfinite(seconds):
        raise ValueError(problem)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {text!r}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{problem} (too long)") from None


def _positive_duration(text: str | int | float) -> timedelta:
    value = parse_duration(text)
    if value <= timedelta(0):
        raise ValueError(f"expected a duration longer than 0, got {text!r}")
    return value


def _database_url(value: object) -> object:
    if isinstance(value, str) and not _DATABASE_URL.match(value):
        # A malformed URL may still hold a password; the message goes to logs.
        shown = f"***@{value.rpartition('@')[2]}" if "@" in value else value
        raise ValueError(f"expected a database URL like {DEFAULT_DATABASE!r}, got {shown!r}")
    return value


def _header_value(value: object) -> object:
    """Refuse a string that cannot be sent as an HTTP header value as it is written.

    requests would send a CR LF on as a second header (or refuse it on every request), and
    characters outside Latin-1 cannot be encoded at all: every check would fail, and the
    failures would make documents "disappear". RFC 9110 5.5: visible characters and spaces.
    """
    if not isinstance(value, str):
        return value  # the type check comes after
    if value != value.strip():
        raise ValueError(f"leading or trailing white space, got {value!r}")
    if len(value) > MAX_HEADER_VALUE:
        raise ValueError(f"longer than {MAX_HEADER_VALUE} characters ({len(value)})")
    for char in value:
        if char < " " or char == "\x7f":
            raise ValueError(
                f"a control character (U+{ord(char):04X}) cannot be sent in a header, got {value!r}"
            )
        if char > "\xff":
            raise ValueError(
                f"{char!r} (U+{ord(char):04X}) cannot be sent in a header (Latin-1 only), got {value!r}"
            )
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
HeaderValue = Annotated[str, BeforeValidator(_header_value)]
PositiveDuration = Annotated[timedelta, BeforeValidator(_positive_duration)]


class _Section(BaseModel):
    # strict: `concurrency = "8"` or `retries = true` is a mistake worth naming, not a value to guess at.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StorageConfig(_Section):
    """`[storage]`: where the archive lives."""

    database: Annotated[str, BeforeValidator(_database_url)] = DEFAULT_DATABASE


class ScheduleConfig(_Section):
    """`[schedule]`: how often targets are checked and how long check rows are kept."""

    interval: PositiveDuration = DEFAULT_INTERVAL
    check_retention: PositiveDuration = DEFAULT_CHECK_RETENTION
    tick: PositiveDuration = DEFAULT_TICK
    lease: PositiveDuration = DEFAULT_LEASE
    summary: PositiveDuration = DEFAULT_SUMMARY


class FetchConfig(_Section):
    """`[fetch]`: how hard and how politely pages are fetched."""

    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1)
    per_host_concurrency: int = Field(default=DEFAULT_PER_HOST_CONCURRENCY, ge=1)
    per_host_delay: Duration = DEFAULT_PER_HOST_DELAY  # 0 disables
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
            return _positive_duration(value)
        except ValueError:
            raise ValueError(problem) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(problem)
    return value


class BlockRuleTable(_Section):
    """One `[[detect.block_rules]]` table: a user's sign of a bot wall (see `mirror.blocking`)."""

    name: str = Field(min_length=1)
    status: list[int] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    title: str | None = None
    body: str | None = None
    empty_body: bool = False


class DetectConfig(_Section):
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


class _File(_Section):
    """The whole file. Targets are checked by hand below: they mix forms and files."""

    storage: StorageConfig = StorageConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    fetch: FetchConfig = FetchConfig()
    detect: DetectConfig = DetectConfig()
    targets: list[Any] = Field(default_factory=list)
    targets_file: str | None = None
    sources: list[Any] = Field(default_factory=list)


class _TargetTable(_Section):
    url: str
    interval: PositiveDuration | None = None
    ignore_lines: list[str] = Field(default_factory=list)
    ignore_selectors: list[str] = Field(default_factory=list)


class _SourceTable(_Section):
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


@dataclass(frozen=True, slots=True)
class Config:
    """The parsed config file. `path` is the file it came from, as given."""

    path: str
    storage: StorageConfig
    schedule: ScheduleConfig
    fetch: FetchConfig
    detect: DetectConfig
    targets: tuple[Target, ...]
    sources: tuple[Source, ...] = ()
    ignore: IgnoreIndex = EMPTY_INDEX  # the ignore rules of targets and sources, by URL

    def discovery_seeds(self) -> tuple[Target, ...]:
        """Return the start pages of the crawl sources, as discovered targets (source "crawl").

        Add them with `Archive.add_discovered` (not `sync_targets`, which keeps configured
        targets only): a crawl begins when its start page is first checked.
        """
        seeds = {s.url: Target(s.url, s.interval, "crawl") for s in self.sources if s.kind == "crawl"}
        return tuple(seeds.values())


def config_path(cli_value: str | None, env: Mapping[str, str]) -> str:
    """Return the config file to read: `--config`, else `$MIRROR_CONFIG`, else `config/mirror.toml`."""
    return cli_value or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Return the config read from `path`, `$MIRROR_DATABASE_URL` from `env` (default `os.environ`) applied.

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
        raise _config_error(name, exc, _File) from None
    storage = parsed.storage
    override = env.get(DATABASE_ENV)
    if override:
        try:
            storage = StorageConfig(database=override)
        except ValidationError as exc:
            problem = _problem(exc.errors(include_url=False)[0], StorageConfig)
            raise ConfigError(name, "storage.database", f"${DATABASE_ENV}: {problem}") from None
    _check_block_rules(name, parsed.detect)
    targets = _Targets(name, parsed.schedule.interval)
    targets.add_entries(parsed.targets)
    if parsed.targets_file is not None:
        targets.add_file(parsed.targets_file)
    sources = tuple(
        _source(name, index, entry, parsed.schedule.interval) for index, entry in enumerate(parsed.sources)
    )
    ignore = IgnoreIndex(targets.ignore, tuple((s.scope, s.ignore) for s in sources if s.ignore))
    return Config(
        name, storage, parsed.schedule, parsed.fetch, parsed.detect, tuple(targets.found), sources, ignore
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


class _Targets:
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
                    table = _TargetTable.model_validate(entry)
                except ValidationError as exc:
                    raise _config_error(self.config_name, exc, _TargetTable, ("targets", index)) from None
                rules = _rules(self.config_name, key, table.ignore_lines, table.ignore_selectors)
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


def _source(file: str, index: int, entry: Any, interval: timedelta) -> Source:
    """Return the `Source` of the `index`th `[[sources]]` table.

    Raises:
        ConfigError: not a table, neither or both of start/sitemap, a bad URL or value,
            or a start page outside its scope.
    """
    key = f"sources[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(file, key, f"expected a table with start = URL or sitemap = URL, got {entry!r}")
    try:
        table = _SourceTable.model_validate(entry)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = error["loc"][-1] if error["loc"] else ""
        if error["type"] == "extra_forbidden" and name in _File.model_fields:
            # TOML puts every key after `[[sources]]` into the last source table.
            problem = "unknown key (a top-level key: move it above the first [[sources]] table)"
            raise ConfigError(file, f"{key}.{name}", problem) from None
        raise _config_error(file, exc, _SourceTable, ("sources", index)) from None
    if (table.start is None) == (table.sitemap is None):
        which = "both start and sitemap" if table.start else "neither start nor sitemap"
        raise ConfigError(
            file, key, f"has {which}: give exactly one (start = URL crawls, sitemap = URL reads)"
        )
    kind: Literal["crawl", "sitemap"] = "crawl" if table.start is not None else "sitemap"
    field = "start" if kind == "crawl" else "sitemap"
    url = _canonical(file, f"{key}.{field}", table.start or table.sitemap or "")
    scope = folder_of(url) if table.scope is None else _canonical(file, f"{key}.scope", table.scope)
    if kind == "crawl" and not in_scope(url, scope):
        raise ConfigError(file, f"{key}.start", f"the start page {url} is not under scope {scope}")
    rules = _rules(file, key, table.ignore_lines, table.ignore_selectors)
    return Source(kind, url, scope, table.max_pages, table.interval or interval, table.robots, rules)


def _rules(file: str, key: str, lines: list[str], selectors: list[str]) -> IgnoreRules:
    """Return the checked ignore rules of the table at `key`.

    Raises:
        ConfigError: a regex or a selector does not compile, naming it (`targets[0].ignore_lines[1]`).
    """
    try:
        return make_rules(lines, selectors)
    except BadRule as exc:
        problem, index, which = exc.args
        raise ConfigError(file, f"{key}.ignore_{which}[{index}]", problem) from None


def _canonical(file: str, key: str, url: str) -> str:
    try:
        return canonical_url(url)
    except BadURL as exc:
        raise ConfigError(file, key, str(exc)) from None


def _config_error(
    file: str, exc: ValidationError, model: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> ConfigError:
    """Return the first pydantic error as one ConfigError line, its location dotted."""
    error = exc.errors(include_url=False)[0]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (*prefix, *error["loc"])).lstrip(".")
    return ConfigError(file, key, _problem(error, model))


def _problem(error: Any, model: type[BaseModel]) -> str:
    """Return one pydantic error in our words, always quoting the bad value."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key" + _did_you_mean(error["loc"], model)
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "byte_size":
        return f"expected a size like 104857600, '100MB' or '1 GiB', got {value!r}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        return f"must be {'at least' if kind == 'greater_than_equal' else 'more than'} {bound}, got {value!r}"
    expected = {
        "int_type": "an integer",
        "string_type": "a string",
        "list_type": "a list",
        "model_type": "a table",
        "string_too_short": "a non-empty string",
        "bool_type": "true or false",
    }.get(kind)
    if expected:
        return f"expected {expected}, got {value!r}"
    message = str(error["msg"])
    return f"{message[:1].lower()}{message[1:]}, got {value!r}"


def _did_you_mean(loc: tuple[str | int, ...], model: type[BaseModel]) -> str:
    """Return " (did you mean 'timeout'?)" for a misspelt key, or ""."""
    if len(loc) > 1 and loc[-1] in _File.model_fields:
        # TOML puts every key after `[fetch]` into fetch: a classic slip for `targets = [...]`.
        return " (a top-level key: move it above the first [section])"
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of tables: the list's field named the model
            continue
        field = model.model_fields.get(str(part))
        inner = field.annotation if field else None
        if typing.get_origin(inner) is list:
            (inner,) = typing.get_args(inner)
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ""
        model = inner
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
