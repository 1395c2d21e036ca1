"""Memento (RFC 7089) as pure functions: HTTP dates, TimeMaps in link format, the TimeGate's choice.

The web page (`mirror.web`) answers the protocol's requests by calling these with what
the store's read side returned; nothing here does I/O, reads a clock or logs.

- A memento's URI is `/<14-digit UTC time>/<original URL>` (the Wayback form, which
  replay tools and browser extensions know); its time is the version's first seen time,
  to the second.
- `timemap` writes `application/link-format` (RFC 6690) as RFC 7089 section 5 shows it:
  the `original`, `self` (with `from` and `until`), `timegate`, then every memento with
  its `datetime`, the first marked `first memento` and the last `last memento` (one
  alone is `first last memento`).
- `choose` is the TimeGate's choice (section 4.1): of the mementos, the one whose time is
  closest to the `Accept-Datetime` asked for; a tie goes to the earlier one, the version
  that was being served at that moment. Before the first it is the first; after the last,
  the last.
- `parse_http_date` accepts exactly the IMF-fixdate form RFC 7231 requires of
  `Accept-Datetime` (`Thu, 31 May 2007 20:35:00 GMT`) and refuses anything else with
  `BadDatetime`, for a 400.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

LINK_FORMAT = "application/link-format"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_HTTP_DATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{2}) (" + "|".join(_MONTHS) + r") (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT"
)
_STAMP = re.compile(r"\d{14}")


class BadDatetime(ValueError):
    """An `Accept-Datetime` or a 14-digit time that is not one; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class Memento:
    """One memento of a TimeMap: its URI and its datetime (aware UTC)."""

    uri: str
    datetime: datetime


def http_date(when: datetime) -> str:
    """Return `when` as an HTTP date (IMF-fixdate, GMT): `Tue, 20 Jun 2000 18:02:59 GMT`."""
    t = when.astimezone(UTC)
    return (
        f"{_DAYS[t.weekday()]}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} GMT"
    )


def parse_http_date(text: str) -> datetime:
    """Return the aware UTC datetime of an IMF-fixdate (`Thu, 31 May 2007 20:35:00 GMT`).

    Raises:
        BadDatetime: anything else (another form, a wrong weekday, a date that does not exist).
    """
    m = _HTTP_DATE.fullmatch(text.strip())
    if m is None:
        raise BadDatetime(f"expected an HTTP date like 'Thu, 31 May 2007 20:35:00 GMT', got {text[:80]!r}")
    day, day_no, month, year, hh, mm, ss = m.groups()
    try:
        when = datetime(
            int(year), _MONTHS.index(month) + 1, int(day_no), int(hh), int(mm), int(ss), tzinfo=UTC
        )
    except ValueError:
        raise BadDatetime(f"no such date: {text[:80]!r}") from None
    if _DAYS[when.weekday()] != day:
        raise BadDatetime(f"{text[:80]!r} was a {_DAYS[when.weekday()]}, not a {day}")
    return when


def timestamp14(when: datetime) -> str:
    """Return `when` (UTC) as the 14 digits of a memento URI: `20001020180259`."""
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def parse_timestamp14(text: str) -> datetime:
    """Return the aware UTC datetime of 14 digits `YYYYMMDDhhmmss`.

    Raises:
        BadDatetime: not 14 digits, or not a date.
    """
    if not _STAMP.fullmatch(text):
        raise BadDatetime(f"expected 14 digits YYYYMMDDhhmmss, got {text[:40]!r}")
    try:
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise BadDatetime(f"no such time: {text!r}") from None


def memento_path(when: datetime, url: str) -> str:
    """Return the path of the memento of `url` first seen at `when`: `/<14 digits>/<url>`."""
    return f"/{timestamp14(when)}/{url}"


def same_second(when: datetime, stamp: datetime) -> bool:
    """Return True when `when` falls within the second that the 14-digit time `stamp` names."""
    return stamp <= when.astimezone(UTC) < stamp + timedelta(seconds=1)


def choose(times: Sequence[datetime], wanted: datetime) -> int:
    """Return the index, in `times` (ascending, not empty), of the one closest to `wanted`.

    A tie goes to the earlier one. Raises ValueError when `times` is empty.
    """
    if not times:
        raise ValueError("a TimeGate chooses among one memento at least")
    after = bisect_right(times, wanted)  # times[after - 1] <= wanted < times[after]
    if after == 0:
        return 0
    if after == len(times):
        return len(times) - 1
    before = after - 1
    return before if wanted - times[before] <= times[after] - wanted else after


def _link(uri: str, *params: tuple[str, str]) -> str:
    return f"<{uri}>" + "".join(f'; {name}="{value}"' for name, value in params)


def _rel(index: int, count: int) -> str:
    marks = (["first"] if index == 0 else []) + (["last"] if index == count - 1 else [])
    return " ".join([*marks, "memento"])


def timemap(original: str, self_uri: str, timegate: str, mementos: Sequence[Memento]) -> str:
    """Return the TimeMap of `original` in link format: one link a line, `,` between them.

    `mementos` are in ascending time; `self` carries `from` and `until` (their first and
    last datetimes) when there is one at least.
    """
    self_params = [("type", LINK_FORMAT)]
    if mementos:
        self_params += [
            ("from", http_date(mementos[0].datetime)),
            ("until", http_date(mementos[-1].datetime)),
        ]
    links = [
        _link(original, ("rel", "original")),
        _link(self_uri, ("rel", "self"), *self_params),
        _link(timegate, ("rel", "timegate")),
    ]
    count = len(mementos)
    links += [
        _link(m.uri, ("rel", _rel(i, count)), ("datetime", http_date(m.datetime)))
        for i, m in enumerate(mementos)
    ]
    return ",\n".join(links) + "\n"


def memento_links(original: str, timegate: str, timemap_uri: str, *extra: Memento) -> str:
    """Return the `Link` header of a memento or a TimeGate answer: original, timegate, timemap, mementos."""
    links = [
        _link(original, ("rel", "original")),
        _link(timegate, ("rel", "timegate")),
        _link(timemap_uri, ("rel", "timemap"), ("type", LINK_FORMAT)),
    ]
    links += [_link(m.uri, ("rel", "memento"), ("datetime", http_date(m.datetime))) for m in extra]
    return ", ".join(links)
