"""The SQLAlchemy tables. Imported only by db, archive, blobs, leases and ledger.

The schema itself is created and changed by Alembic (`mirror/migrations`); these
classes must match the latest migration (`tests/test_migrations.py` checks it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


class TargetRow(Base):
    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text, unique=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    source: Mapped[str] = mapped_column(String(32), default="config")
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # False: no longer configured, history kept
    interval_seconds: Mapped[int] = mapped_column(Integer)
    next_check_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="new")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    moved_to: Mapped[str | None] = mapped_column(Text)
    last_checked_at: Mapped[datetime | None]
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    current_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    suspicious: Mapped[str | None] = mapped_column(Text)  # why the last change looked like tampering
    suspicious_since: Mapped[datetime | None]  # when `suspicious` was last set from empty

    __table_args__ = (Index("ix_targets_due", "active", "next_check_at"),)


class BlobRow(Base):
    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)  # bytes as fetched
    stored_size: Mapped[int] = mapped_column(BigInteger)  # bytes in `data`
    codec: Mapped[str] = mapped_column(String(16))  # "zstd" (whole) or "zstd-delta" (against base)
    base_sha256: Mapped[str | None] = mapped_column(String(64), ForeignKey("blobs.sha256"))
    chain_length: Mapped[int] = mapped_column(Integer, default=0)  # deltas between this and a whole blob
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    # The whole blob this one's chain starts from (itself when whole): verify walks blobs by
    # (root, chain_length) so each base is decoded once. NULL-able only because SQLite cannot
    # add a NOT NULL column without a default; `put` and migration 0002 always fill it.
    root_sha256: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_blobs_chain_order", "root_sha256", "chain_length", "sha256"),)


class SnapshotRow(Base):
    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"))
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per target
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    size: Mapped[int] = mapped_column(BigInteger)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    http_status: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    final_url: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("target_id", "version", name="uq_snapshots_target_version"),
        Index("ix_snapshots_sha256", "sha256"),
        Index("ix_snapshots_target_first_seen", "target_id", "first_seen"),
    )


class CheckRow(Base):
    __tablename__ = "checks"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    worker: Mapped[str | None] = mapped_column(String(128))


class EventRow(Base):
    """One notable change, chained: hash = sha256(prev_hash + canonical(event))."""

    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    old_sha256: Mapped[str | None] = mapped_column(String(64))
    new_sha256: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    diff: Mapped[bytes | None] = mapped_column(LargeBinary)  # zstd-compressed unified diff
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class LedgerHeadRow(Base):
    """A single row (id=1): the last event's seq and hash. Locked to append."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
