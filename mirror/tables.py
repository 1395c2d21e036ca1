"""The tables, in SQLAlchemy Core. Imported only by db, archive, blobs, leases, ledger and their helpers.

The schema itself is created and changed by Alembic (`mirror/migrations`); these
tables must match the latest migration (`tests/test_migrations.py` checks it).
Core, not the ORM: every query here is a statement over rows, and importing
`sqlalchemy.orm` would add a tenth of a second to every command's start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

# A result row of any query over these tables.
AnyRow = Row[*tuple[Any, ...]]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        """Return SQLAlchemy's processor, on SQLite in one step: the text its DATETIME writes, made here.

        SQLite's DATETIME formats a dictionary of the fields (`%(year)04d-...`) after
        `process_bind_param`; `isoformat` writes the same text (`YYYY-MM-DD HH:MM:SS.ffffff`)
        at a fraction of the cost, and the writer binds several times per check.
        """
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the store; use aware UTC datetimes")
            # 26 characters whatever the year (isoformat pads it to four digits), then "+00:00".
            return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Digest(TypeDecorator[str]):
    """A SHA-256 as the code sees it (64 lowercase hex digits), stored as its 32 bytes: half the room.

    A value some other program wrote as it pleased (text, a number, bytes of another length)
    is read back as it is, or as the hex of its bytes, never raised on: `verify` reports it.
    """

    impl = LargeBinary(32)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, str):
            return value  # None, or a value read back as it was stored (`verify` pages on by it)
        try:
            return bytes.fromhex(value)
        except ValueError:  # not a digest (a key asked for by hand): matches none, as before
            return value.encode()

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return value.hex() if isinstance(value, bytes | memoryview) else value


class DigestKey(Digest):
    """A `Digest` in a column that rows of other tables name (`blobs.sha256`) or that sits beside them.

    On SQLite its declared type stays VARCHAR(64) and holds the 32 bytes all the same (SQLite
    keeps any value as given): declaring it BLOB would copy `blobs` and every table naming it,
    which foreign keys forbid in the migration's transaction. On PostgreSQL it is bytea.
    """

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(String(64) if dialect.name == "sqlite" else LargeBinary(32))


metadata = MetaData()

# Integer primary keys that outgrow 32 bits on PostgreSQL stay SQLite's rowid there.
_BIG_ID = BigInteger().with_variant(Integer, "sqlite")

targets = Table(
    "targets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("url", Text, unique=True, nullable=False),
    Column("host", String(255), index=True, nullable=False),
    Column("source", String(32), default="config", nullable=False),
    Column("active", Boolean, default=True, nullable=False),  # False: no longer configured, history kept
    Column("interval_seconds", Integer, nullable=False),
    Column("next_check_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", UTCDateTime),
    Column("status", String(16), default="new", nullable=False),
    Column("consecutive_failures", Integer, default=0, nullable=False),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("moved_to", Text),
    Column("last_checked_at", UTCDateTime),
    Column("current_version", Integer, default=0, nullable=False),
    Column("current_sha256", DigestKey),
    Column("created_at", UTCDateTime, nullable=False),
    Column("suspicious", Text),  # why the last change looked like tampering
    Column("suspicious_since", UTCDateTime),  # when `suspicious` was last set from empty
    # Checks in a row that found the document not served (`judge.not_served`); decides `gone`.
    Column("missing_checks", Integer, server_default="0", nullable=False),
    Column("missing_since", UTCDateTime),  # when the first of those checks ran (`detect.missing_after` "2d")
    Column("unwatched_since", UTCDateTime),  # when it left the config (`active` turned False); else NULL
    Index("ix_targets_due", "active", "next_check_at"),
    Index("ix_targets_moved_to", "moved_to"),  # how many targets redirect to one page (soft 404s)
)

blobs = Table(
    "blobs",
    metadata,
    Column("sha256", DigestKey, primary_key=True),
    Column("size", BigInteger, nullable=False),  # bytes as fetched
    Column("stored_size", BigInteger, nullable=False),  # bytes in `data`
    Column("codec", String(16), nullable=False),  # "zstd" (whole) or "zstd-delta" (against base)
    Column("base_sha256", DigestKey, ForeignKey("blobs.sha256")),
    Column("chain_length", Integer, default=0, nullable=False),  # deltas between this and a whole blob
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # The whole blob this one's chain starts from (itself when whole): verify walks blobs by
    # (root, chain_length) so each base is decoded once. NULL-able only because SQLite cannot
    # add a NOT NULL column without a default; `put` and migration 0002 always fill it.
    Column("root_sha256", DigestKey),
    Column("packed_level", SmallInteger),  # the level `mirror gc` re-packed it at; NULL: as checked in
    Index("ix_blobs_chain_order", "root_sha256", "chain_length", "sha256"),
    Index("ix_blobs_base_sha256", "base_sha256"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("target_id", Integer, ForeignKey("targets.id"), nullable=False),
    Column("version", Integer, nullable=False),  # 1, 2, ... per target
    Column("sha256", DigestKey, ForeignKey("blobs.sha256"), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("http_status", Integer),
    Column("content_type", Text),
    Column("headers", JSON, default=dict, nullable=False),
    Column("final_url", Text),
    UniqueConstraint("target_id", "version", name="uq_snapshots_target_version"),
    Index("ix_snapshots_sha256", "sha256"),
    Index("ix_snapshots_target_first_seen", "target_id", "first_seen"),
)

checks = Table(
    "checks",
    metadata,
    Column("id", _BIG_ID, primary_key=True),
    Column("target_id", Integer, ForeignKey("targets.id"), index=True, nullable=False),
    Column("started_at", UTCDateTime, index=True, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("http_status", Integer),
    Column("error_kind", String(32)),
    Column("error_message", Text),
    Column("outcome", String(16), nullable=False),
    Column("bytes", BigInteger),
    Column("worker", String(128)),
    # The page a soft 404 served (a blob, never a version): the evidence of `document.disappeared`.
    Column("evidence_sha256", DigestKey, ForeignKey("blobs.sha256")),
)

# One notable change, chained: hash = sha256(prev_hash + canonical(event)). Its digests are
# binary (`Digest`, migration 0008); the chain hashes their hex, as before.
events = Table(
    "events",
    metadata,
    Column("seq", _BIG_ID, primary_key=True, autoincrement=False),
    Column("target_id", Integer, ForeignKey("targets.id"), index=True, nullable=False),
    Column("url", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("old_sha256", Digest),
    Column("new_sha256", Digest),
    Column("details", JSON, default=dict, nullable=False),
    Column("diff", LargeBinary),  # zstd-compressed unified diff
    Column("prev_hash", Digest, nullable=False),
    Column("hash", Digest, nullable=False),
)

# A single row (id=1): the last event's seq and hash. Locked to append.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", Digest, nullable=False),
)

# One row per `mirror verify` run that finished: when, what it found, the head it reached.
# Not chained: it says when the record was last proven, and the footer of the web page shows it.
verify_runs = Table(
    "verify_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("problems", Integer, nullable=False),
    Column("head_seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
)

# One row per `[[notify]]` destination: the outbox's durable cursor (the last event `seq` the
# destination acknowledged), its lease (one process delivers to it at a time), its back-off
# and what it last answered. `mirror.outbox` owns it.
notify_cursors = Table(
    "notify_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),  # the last event acknowledged (or passed over by filters)
    Column("created_at", UTCDateTime, nullable=False),
    Column("lease_owner", String(128)),
    Column("lease_until", UTCDateTime),
    Column("delivered_at", UTCDateTime),  # the last 2xx (or accepted message)
    Column("delivered_seq", BigInteger),  # the last event actually sent and acknowledged
    Column("failures", Integer, default=0, nullable=False),  # failed attempts in a row
    Column("retry_at", UTCDateTime),  # back-off: no attempt before this
    Column("last_error", Text),
    Column("last_error_at", UTCDateTime),
    Column("digest_from", UTCDateTime),  # start of the digest period under way
    Column("head_sent_at", UTCDateTime),  # the last `integrity.head` delivered
    Column("verify_run", Integer),  # the last `verify_runs.id` it was told of (`integrity.damaged`)
)
