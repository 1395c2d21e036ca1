"""The initial schema: targets, blobs, snapshots, checks, events and the ledger head.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64  # prev_hash of the first event; mirror.ledger.GENESIS


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    # Written literally (not mirror.tables.UTCDateTime): a migration must not change when the code does.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _big_id(name: str, *, autoincrement: bool | Literal["auto"] = "auto") -> sa.Column[object]:
    # BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY is the rowid.
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return sa.Column(name, big, nullable=False, autoincrement=autoincrement)


def upgrade() -> None:
    op.create_table(
        "targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        _time("next_check_at"),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        _time("lease_until", nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.Text(), nullable=True),
        sa.Column("moved_to", sa.Text(), nullable=True),
        _time("last_checked_at", nullable=True),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("current_sha256", sa.String(length=64), nullable=True),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("url"),
    )
    op.create_index("ix_targets_due", "targets", ["active", "next_check_at"])
    op.create_index("ix_targets_host", "targets", ["host"])

    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("codec", sa.String(length=16), nullable=False),
        sa.Column("base_sha256", sa.String(length=64), nullable=True),
        sa.Column("chain_length", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _time("created_at"),
        sa.ForeignKeyConstraint(["base_sha256"], ["blobs.sha256"]),
        sa.PrimaryKeyConstraint("sha256"),
    )

    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _time("first_seen"),
        _time("last_seen"),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("final_url", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["sha256"], ["blobs.sha256"]),
        sa.ForeignKeyConstraint(["target_id"], ["targets.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("target_id", "version", name="uq_snapshots_target_version"),
    )
    op.create_index("ix_snapshots_sha256", "snapshots", ["sha256"])
    op.create_index("ix_snapshots_target_first_seen", "snapshots", ["target_id", "first_seen"])

    op.create_table(
        "checks",
        _big_id("id"),
        sa.Column("target_id", sa.Integer(), nullable=False),
        _time("started_at"),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["target_id"], ["targets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_checks_started_at", "checks", ["started_at"])
    op.create_index("ix_checks_target_id", "checks", ["target_id"])

    op.create_table(
        "events",
        _big_id("seq", autoincrement=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        _time("at"),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("old_sha256", sa.String(length=64), nullable=True),
        sa.Column("new_sha256", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("diff", sa.LargeBinary(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["target_id"], ["targets.id"]),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_events_target_id", "events", ["target_id"])

    ledger_head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The single row appends lock and move forward: seq 0 and the genesis hash.
    op.bulk_insert(ledger_head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])


def downgrade() -> None:
    for table in ("ledger_head", "events", "checks", "snapshots", "blobs", "targets"):
        op.drop_table(table)
