"""Notifications: the outbox's cursor per `[[notify]]` destination.

- `notify_cursors`: per destination the last event `seq` it acknowledged, a lease (so
  several daemons deliver each event once), its back-off and last answer, the start of
  its digest period, when it last got `integrity.head`, and the last `verify_runs` row
  it was told of (`integrity.damaged`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = True) -> sa.Column[object]:
    # Written literally (not mirror.tables.UTCDateTime): a migration must not change when the code does.
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "notify_cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        _time("created_at", nullable=False),
        sa.Column("lease_owner", sa.String(128)),
        _time("lease_until"),
        _time("delivered_at"),
        sa.Column("delivered_seq", sa.BigInteger),
        sa.Column("failures", sa.Integer, nullable=False),
        _time("retry_at"),
        sa.Column("last_error", sa.Text),
        _time("last_error_at"),
        _time("digest_from"),
        _time("head_sent_at"),
        sa.Column("verify_run", sa.Integer),
    )


def downgrade() -> None:
    op.drop_table("notify_cursors")
