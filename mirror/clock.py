"""The wall clock, read in one place: `utcnow` is the default of every `clock=` parameter.

Everything that decides takes `now` as a parameter (tests pass their own); only the
edges that start work ask this clock.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)
