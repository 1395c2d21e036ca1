"""What a target's record says about its watching: runs of missing checks, unwatched targets.

- `targets.missing_checks`: checks in a row that found the document not served (network,
  a redirect loop, an HTTP error other than 429); only these count toward `gone`. Filled
  from `consecutive_failures`, the count that decided before.
- `targets.unwatched_since`: when a target left the config (`active` turned False). A
  target already inactive gets its last check's time (or its creation): it was still
  watched then, and no record says when it left.
- Targets with no version that were `gone` or `failing` become `unavailable`: a document
  that never appeared did not disappear.
- Targets that answered through a redirect forget their validators once: they may have
  come from another URL than the one they were sent to (issue 11, point 3), so the next
  check is unconditional and records the destination's content if it differs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, as in 0002: no batch copy of `targets` while snapshots name its rows.
    op.add_column("targets", sa.Column("missing_checks", sa.Integer(), server_default="0", nullable=False))
    op.add_column("targets", sa.Column("unwatched_since", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE targets SET missing_checks = consecutive_failures")
    op.execute(
        "UPDATE targets SET unwatched_since = COALESCE(last_checked_at, created_at) WHERE active = false"
    )
    op.execute(
        "UPDATE targets SET status = 'unavailable' "
        "WHERE current_version = 0 AND status IN ('gone', 'failing')"
    )
    op.execute("UPDATE targets SET etag = NULL, last_modified = NULL WHERE moved_to IS NOT NULL")


def downgrade() -> None:
    # `unavailable` was `gone` before (after 404/410 or `missing_after` failures; close enough).
    op.execute("UPDATE targets SET status = 'gone' WHERE status = 'unavailable'")
    op.drop_column("targets", "unwatched_since")
    op.drop_column("targets", "missing_checks")
