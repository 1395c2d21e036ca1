"""Binary digests in the event chain: half the room for the four hashes each event carries.

- `events.old_sha256`, `new_sha256`, `prev_hash`, `hash` and `ledger_head.hash`: the 32
  bytes of each SHA-256 (BLOB / bytea) instead of its 64 hex digits. The code still sees
  hex (`tables.Digest`), and the chain hashes the hex as before, so every hash stays what it
  was and `mirror verify` proves an upgraded store as it proved it before.

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
_HEX = re.compile(r"[0-9a-f]{64}")
BATCH = 5000


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        using = "CASE WHEN {c} ~ '^[0-9a-f]{{64}}$' THEN decode({c}, 'hex') ELSE convert_to({c}, 'UTF8') END"
        _alter_postgresql("events", EVENT_DIGESTS, "bytea", using)
        _alter_postgresql("ledger_head", HEAD_DIGESTS, "bytea", using)
        return
    _retype_sqlite("events", "seq", EVENT_DIGESTS, sa.LargeBinary(32), _to_bytes)
    _retype_sqlite("ledger_head", "id", HEAD_DIGESTS, sa.LargeBinary(32), _to_bytes)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        using = "CASE WHEN length({c}) = 32 THEN encode({c}, 'hex') ELSE convert_from({c}, 'UTF8') END"
        _alter_postgresql("events", EVENT_DIGESTS, "varchar(64)", using)
        _alter_postgresql("ledger_head", HEAD_DIGESTS, "varchar(64)", using)
        return
    _retype_sqlite("events", "seq", EVENT_DIGESTS, sa.String(64), _to_hex)
    _retype_sqlite("ledger_head", "id", HEAD_DIGESTS, sa.String(64), _to_hex)


def _alter_postgresql(table: str, columns: Sequence[str], kind: str, using: str) -> None:
    # One ALTER TABLE: PostgreSQL rewrites the table once for all its columns.
    changes = ", ".join(f"ALTER COLUMN {c} TYPE {kind} USING {using.format(c=c)}" for c in columns)
    op.execute(f"ALTER TABLE {table} {changes}")


def _retype_sqlite(
    table: str,
    key: str,
    columns: Sequence[str],
    kind: sa.types.TypeEngine[Any],
    convert: Callable[[Any], Any],
) -> None:
    # Values first, a batch of rows at a time (SQLite keeps whatever a column is given, bytes
    # in a text column or text in a BLOB one), then the declared type: the batch's copy then
    # casts each value to the type it already has, which leaves it as it is.
    conn = op.get_bind()
    rows_of = sa.table(table, sa.column(key), *(sa.column(c) for c in columns))
    select = (
        sa.select(rows_of).where(rows_of.c[key] > sa.bindparam("last")).order_by(rows_of.c[key]).limit(BATCH)
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
    with op.batch_alter_table(table, recreate="always") as batch:
        for column in columns:
            batch.alter_column(column, type_=kind, existing_nullable=column in NULLABLE)


def _to_bytes(value: Any) -> Any:
    return bytes.fromhex(value) if isinstance(value, str) and _HEX.fullmatch(value) else value


def _to_hex(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) and len(value) == 32 else value
