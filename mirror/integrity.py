"""What `verify` reports, and reading rows as stored: shared by `verify` and `verify_versions`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, TypeDecorator
from sqlalchemy.engine import Dialect

from mirror import ledger

MISSING_BLOB = "names blob {}, which is missing"  # a snapshot's problem (`mirror.repair` reads it back)


@dataclass(frozen=True, slots=True)
class Problem:
    """One damaged item: what (`blob`, `snapshot`, `event`, `target`, `head`), which, and how.

    `url` is the first (by URL) of `urls`, every document the damage reaches; `snapshots`
    names the versions (`URL vN`) whose bytes or record it spoils.
    """

    item: str
    key: str
    problem: str
    url: str | None = None
    urls: tuple[str, ...] = ()
    snapshots: tuple[str, ...] = ()


@dataclass
class VerifyReport:
    """All that `verify` checked and every problem it found."""

    blobs: int = 0
    blob_bytes: int = 0
    snapshots: int = 0
    events: int = 0
    head_seq: int = 0
    head_hash: str = ledger.GENESIS
    problems: list[Problem] = field(default_factory=list)
    # Every blob that cannot be read back intact, or that a snapshot names but is missing, to
    # the blob whose damage or absence spoils it (itself, or a base it is rebuilt from): what
    # `verify --repair-from` asks a source for (`mirror.repair`).
    damaged_blobs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def as_time(value: Any) -> datetime | None:
    """Return a stored time as aware UTC, or None when it is not a time at all."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AsStored(TypeDecorator[Any]):
    """A column read as the driver returns it, unconverted: one unreadable value is reported, not raised.

    SQLite keeps any type an UPDATE writes (`first_seen = 'soon'`, `details = '{'`), and
    SQLAlchemy's own conversion of such a value raises in the middle of a stream.
    """

    impl = Text
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return value
