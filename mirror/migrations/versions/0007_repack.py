"""Re-packing in idle time (`mirror gc`): which blobs are packed well, and who depends on a blob.

- `blobs.packed_level`: the zstd level `mirror gc` re-packed the blob at; NULL for a blob
  as the check stored it (a cheap level), so gc knows what is left to do.
- `blobs` index on `base_sha256`: gc re-packs a blob only while no other blob is a delta
  of it, and asks so for each one.

Both encodings stay `zstd` and `zstd-delta`: every mirror reads a re-packed blob.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("blobs", sa.Column("packed_level", sa.SmallInteger, nullable=True))
    op.create_index("ix_blobs_base_sha256", "blobs", ["base_sha256"])


def downgrade() -> None:
    op.drop_index("ix_blobs_base_sha256", table_name="blobs")
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): a batch copy of `blobs` would break the rows that name it.
        op.execute("ALTER TABLE blobs DROP COLUMN packed_level")
    else:
        op.drop_column("blobs", "packed_level")
