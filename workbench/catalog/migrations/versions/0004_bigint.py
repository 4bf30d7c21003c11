"""64-bit integers where 32 bits can run out (PostgreSQL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

- `runs.seed`: seeds are 64-bit (a config may carry any of them).
- `metrics.id` (and its sequence): one catalog shared by a lab's machines can pass 2**31 points.
- `checkpoints.bytes`: a checkpoint file can exceed 2 GiB.
SQLite stores every INTEGER in up to 64 bits already: nothing changes in a SQLite file (its
schema version is still stamped 4).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = (("runs", "seed", True), ("metrics", "id", False), ("checkpoints", "bytes", True))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in _COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.BigInteger(),
            existing_type=sa.Integer(),
            existing_nullable=nullable,
        )
    op.execute(
        "DO $$ DECLARE seq text := pg_get_serial_sequence('metrics', 'id'); BEGIN "
        "IF seq IS NOT NULL THEN EXECUTE format('ALTER SEQUENCE %s AS bigint', seq); END IF; "
        "END $$"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "DO $$ DECLARE seq text := pg_get_serial_sequence('metrics', 'id'); BEGIN "
        "IF seq IS NOT NULL THEN EXECUTE format('ALTER SEQUENCE %s AS integer', seq); END IF; "
        "END $$"
    )
    for table, column, nullable in _COLUMNS:
        op.alter_column(
            table,
            column,
            type_=sa.Integer(),
            existing_type=sa.BigInteger(),
            existing_nullable=nullable,
        )
