"""Binary digests: every SHA-256 the store keeps takes its 32 bytes, not its 64 hex digits.

- `events.old_sha256`, `new_sha256`, `prev_hash`, `hash` and `ledger_head.hash`: BLOB / bytea.
  The code still sees hex (`tables.Digest`), and the chain hashes the hex as before, so every
  hash stays what it was and `mirror verify` proves an upgraded store as it proved it before.
- `blobs.sha256`, `base_sha256`, `root_sha256`, `snapshots.sha256`, `checks.evidence_sha256`,
  `targets.current_sha256` (`tables.DigestKey`): bytea on PostgreSQL (the foreign keys naming
  `blobs.sha256` are dropped and made again around the change); on SQLite the declared type
  stays VARCHAR(64) and the values become the bytes: re-declaring them would copy `blobs` and
  the tables naming it, which their foreign keys do not allow inside the migration's transaction.
  Their indexes shrink with them.

A stored value that is not 64 lowercase hex digits (a row edited by hand) is kept as it
was (its text, or on PostgreSQL its UTF-8 bytes), never dropped: `verify` still reports it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENT_DIGESTS = ("old_sha256", "new_sha256", "prev_hash", "hash")
HEAD_DIGESTS = ("hash",)
NULLABLE = {"old_sha256", "new_sha256"}
# Columns that name blobs, or sit beside them: SQLite keeps their declared VARCHAR(64) (see the docstring).
KEYS = {
    "blobs": ("sha256", "base_sha256", "root_sha256"),
    "snapshots": ("sha256",),
    "checks": ("evidence_sha256",),
    "targets": ("current_sha256",),
}
_HEX = re.compile(r"[0-9a-f]{64}")
BATCH = 5000
_TO_BYTEA = "CASE WHEN {c} ~ '^[0-9a-f]{{64}}$' THEN decode({c}, 'hex') ELSE convert_to({c}, 'UTF8') END"
_TO_TEXT = "CASE WHEN length({c}) = 32 THEN encode({c}, 'hex') ELSE convert_from({c}, 'UTF8') END"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _alter_postgresql("bytea", _TO_BYTEA)
        return
    _retype_sqlite("events", "seq", EVENT_DIGESTS, sa.LargeBinary(32), _to_bytes)
    _retype_sqlite("ledger_head", "id", HEAD_DIGESTS, sa.LargeBinary(32), _to_bytes)
    _convert_sqlite_keys(_to_bytes)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _alter_postgresql("varchar(64)", _TO_TEXT)
        return
    _retype_sqlite("events", "seq", EVENT_DIGESTS, sa.String(64), _to_hex)
    _retype_sqlite("ledger_head", "id", HEAD_DIGESTS, sa.String(64), _to_hex)
    _convert_sqlite_keys(_to_hex)


def _alter_postgresql(kind: str, using: str) -> None:
    # The foreign keys naming `blobs.sha256` go while the types change, and come back the same.
    inspector = sa.inspect(op.get_bind())
    naming = [
        (table, str(fk["name"]), list(fk["constrained_columns"]))
        for table in ("blobs", "snapshots", "checks")
        for fk in inspector.get_foreign_keys(table)
        if fk["referred_table"] == "blobs"
    ]
    for table, name, _ in naming:
        op.drop_constraint(name, table, type_="foreignkey")
    tables = {"events": EVENT_DIGESTS, "ledger_head": HEAD_DIGESTS, **KEYS}
    for table, digests in tables.items():
        # One ALTER TABLE per table: PostgreSQL rewrites it once for all its columns.
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {kind} USING {using.format(c=c)}" for c in digests)
        op.execute(f"ALTER TABLE {table} {changes}")
    for table, name, columns in naming:
        op.create_foreign_key(name, table, "blobs", columns, ["sha256"])


def _retype_sqlite(
    table: str,
    key: str,
    columns: Sequence[str],
    kind: sa.types.TypeEngine[Any],
    convert: Callable[[Any], Any],
) -> None:
    # Values first (SQLite keeps whatever a column is given, bytes in a text column or text in
    # a BLOB one), then the declared type: the batch's copy then casts each value to the type
    # it already has, which leaves it as it is.
    _convert_sqlite(table, key, columns, convert)
    with op.batch_alter_table(table, recreate="always") as batch:
        for column in columns:
            batch.alter_column(column, type_=kind, existing_nullable=column in NULLABLE)


def _convert_sqlite_keys(convert: Callable[[Any], Any]) -> None:
    # A blob's key and the keys naming it change in turn: their foreign keys are checked at commit.
    op.execute("PRAGMA defer_foreign_keys = ON")
    for table, columns in KEYS.items():
        _convert_sqlite(table, "rowid", columns, convert)


def _convert_sqlite(table: str, key: str, columns: Sequence[str], convert: Callable[[Any], Any]) -> None:
    """Convert `columns` of every row of `table` with `convert`, `BATCH` rows at a time in `key` order."""
    conn = op.get_bind()
    rows_of = sa.table(table, sa.column(key), *(sa.column(c) for c in columns))
    select = (
        sa.select(rows_of.c[key], *(rows_of.c[c] for c in columns))
        .where(rows_of.c[key] > sa.bindparam("last"))
        .order_by(rows_of.c[key])
        .limit(BATCH)
    )
    update = (
        sa.update(rows_of)
        .where(rows_of.c[key] == sa.bindparam("b_key"))
        .values({c: sa.bindparam(f"b_{c}") for c in columns})
    )
    last = -1
    while rows := conn.execute(select, {"last": last}).all():
        conn.execute(
            update,
            [
                {"b_key": row[0], **{f"b_{c}": convert(v) for c, v in zip(columns, row[1:], strict=True)}}
                for row in rows
            ],
        )
        last = rows[-1][0]


def _to_bytes(value: Any) -> Any:
    return bytes.fromhex(value) if isinstance(value, str) and _HEX.fullmatch(value) else value


def _to_hex(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) and len(value) == 32 else value
