"""The values of a config file: durations, header values, database URLs, and pydantic's errors in our words.

Pure: parsing and wording only; `mirror.config` assembles the `Config`.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from mirror.config_cache import DEFAULT_DATABASE
from mirror.errors import ConfigError

MAX_HEADER_VALUE = 1000  # characters of a header value we send (servers refuse lines of 8 KB and more)
# The keys of the file's top level (`mirror.config` holds its model equal to them): a key that TOML
# put into a section because it came after `[fetch]` is named as a slip.
TOP_LEVEL_KEYS = frozenset(
    {"storage", "schedule", "fetch", "detect", "targets", "targets_file", "sources", "notify"}
)

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


def positive_duration(text: str | int | float) -> timedelta:
    value = parse_duration(text)
    if value <= timedelta(0):
        raise ValueError(f"expected a duration longer than 0, got {text!r}")
    return value


def database_url(value: object) -> object:
    if isinstance(value, str) and not _DATABASE_URL.match(value):
        # A malformed URL may still hold a password; the message goes to logs.
        shown = f"***@{value.rpartition('@')[2]}" if "@" in value else value
        raise ValueError(f"expected a database URL like {DEFAULT_DATABASE!r}, got {shown!r}")
    return value


def header_value(value: object) -> object:
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
HeaderValue = Annotated[str, BeforeValidator(header_value)]
PositiveDuration = Annotated[timedelta, BeforeValidator(positive_duration)]


class Section(BaseModel):
    # strict: `concurrency = "8"` or `retries = true` is a mistake worth naming, not a value to guess at.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def config_error(
    file: str, exc: ValidationError, model: type[BaseModel], prefix: tuple[str | int, ...] = ()
) -> ConfigError:
    """Return the first pydantic error as one ConfigError line, its location dotted."""
    error = exc.errors(include_url=False)[0]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (*prefix, *error["loc"])).lstrip(".")
    return ConfigError(file, key, problem_of(error, model))


def problem_of(error: Any, model: type[BaseModel]) -> str:
    """Return one pydantic error in our words, always quoting the bad value."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key" + did_you_mean(error["loc"], model)
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "byte_size":
        return f"expected a size like 104857600, '100MB' or '1 GiB', got {value!r}"
    if kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        return f"must be {'at most' if kind == 'less_than_equal' else 'less than'} {bound}, got {value!r}"
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


def did_you_mean(loc: tuple[str | int, ...], model: type[BaseModel]) -> str:
    """Return " (did you mean 'timeout'?)" for a misspelt key, or ""."""
    if len(loc) > 1 and loc[-1] in TOP_LEVEL_KEYS:
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
