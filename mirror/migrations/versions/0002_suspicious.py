"""The suspicious flag on targets, and blobs' chain roots for delta storage.

- `targets.suspicious` (why the last change looked like tampering, NULL when it did not)
  and `targets.suspicious_since` (when it was set).
- `blobs.root_sha256`, the whole blob a delta chain starts from, with the index
  `verify` walks blobs by. Every blob stored so far is whole, so its root is itself.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch table copy): on SQLite, recreating `blobs` while snapshots
    # name its rows fails the foreign keys, and the columns are NULL-able anyway.
    op.add_column("targets", sa.Column("suspicious", sa.Text(), nullable=True))
    op.add_column("targets", sa.Column("suspicious_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("blobs", sa.Column("root_sha256", sa.String(length=64), nullable=True))
    op.execute("UPDATE blobs SET root_sha256 = sha256 WHERE base_sha256 IS NULL")
    op.create_index("ix_blobs_chain_order", "blobs", ["root_sha256", "chain_length", "sha256"])


def downgrade() -> None:
    # Blobs already stored as deltas stay so: a mirror of revision 0001 reports them as an
    # unknown codec. Plain DROP COLUMN (SQLite 3.35+), again to avoid copying `blobs`.
    op.drop_index("ix_blobs_chain_order", table_name="blobs")
    op.drop_column("blobs", "root_sha256")
    op.drop_column("targets", "suspicious_since")
    op.drop_column("targets", "suspicious")
