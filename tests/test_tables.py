"""The store's column types write what SQLAlchemy's own types would write."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from mirror.tables import UTCDateTime

T0 = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_utc_datetime_writes_sqlite_datetime_text_exactly() -> None:
    # The writer binds several datetimes per check: UTCDateTime writes SQLite's DATETIME text in
    # one step; it must be the text SQLAlchemy's own processors write, or old rows would sort apart.
    dialect = sqlite.dialect()
    fast = UTCDateTime()._cached_bind_processor(dialect)
    reference = TypeDecorator.bind_processor(UTCDateTime().dialect_impl(dialect), dialect)
    assert fast is not None and reference is not None
    rng = random.Random(17)
    zones = [UTC, timezone(timedelta(hours=-11)), timezone(timedelta(hours=5, minutes=30))]
    values: list[datetime | None] = [None, datetime(5, 1, 2, 3, 4, 5, tzinfo=UTC), T0]
    values += [
        datetime(
            rng.randint(2, 9998),
            rng.randint(1, 12),
            rng.randint(1, 28),
            rng.randint(0, 23),
            rng.randint(0, 59),
            rng.randint(0, 59),
            rng.choice([0, rng.randint(0, 999_999)]),
            tzinfo=rng.choice(zones),
        )
        for _ in range(5000)
    ]
    assert [fast(v) for v in values] == [reference(v) for v in values]
    assert fast(T0) == "2026-05-01 12:30:15.123456"
    with pytest.raises(ValueError, match="naive"):
        fast(datetime(2026, 5, 1))
