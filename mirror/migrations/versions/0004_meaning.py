"""What a change means: the start of a run of missing checks, and a soft 404's evidence.

- `targets.missing_since`: when the first check of the current run of not-served checks
  ran, so `detect.missing_after = "2d"` means the same on hourly and daily schedules.
  NULL for runs recorded before (such a run counts from its next check).
- `targets` index on `moved_to`: how many targets redirect to one page (a soft 404
  when many do).
- `checks.evidence_sha256`: the blob of the page a soft 404 served, kept as evidence
  and never as a version.
- The new state `blocked` needs no change here; a downgrade makes it `failing` (or
  `unavailable` without a version), as a wall was judged before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, as in 0002 and 0003: no batch copy of tables other rows name.
    op.add_column("targets", sa.Column("missing_since", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_targets_moved_to", "targets", ["moved_to"])
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with REFERENCES in place; Alembic would copy the whole table.
        op.execute("ALTER TABLE checks ADD COLUMN evidence_sha256 VARCHAR(64) REFERENCES blobs (sha256)")
    else:
        op.add_column(
            "checks",
            sa.Column("evidence_sha256", sa.String(64), sa.ForeignKey("blobs.sha256"), nullable=True),
        )


def downgrade() -> None:
    # `blocked` is new: before, a wall was a failed check (with a version) or no content yet.
    op.execute("UPDATE targets SET status = 'failing' WHERE status = 'blocked' AND current_version > 0")
    op.execute("UPDATE targets SET status = 'unavailable' WHERE status = 'blocked'")
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("evidence_sha256")
    op.drop_index("ix_targets_moved_to", table_name="targets")
    op.drop_column("targets", "missing_since")
