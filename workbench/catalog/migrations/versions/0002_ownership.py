"""Run ownership, attempts and two-phase checkpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

- `runs.owner`: the token of the process that owns a queued or live run. With `heartbeat_at`
  it is a lease: a process writes a run only while it owns it and its heartbeat is fresh.
- `checkpoints.state`: "pending" from before the file is renamed into place until the row is
  committed "ready" after it; `checkpoints.temp_path` names the temporary file meanwhile, so
  opening the catalog can finish or undo a sequence that a kill cut short.
- `attempts`: one row per start of a run (owner, host, pid, steps, times, outcome).
Rows of the previous release are complete checkpoints: they become "ready".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("owner", sa.String(), nullable=True))
    op.add_column(
        "checkpoints",
        sa.Column("state", sa.String(), nullable=False, server_default="ready"),
    )
    op.add_column("checkpoints", sa.Column("temp_path", sa.Text(), nullable=True))
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("host", sa.String(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("start_step", sa.Integer(), nullable=False),
        sa.Column("end_step", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_attempts_run_number", "attempts", ["run_id", "number"])


def downgrade() -> None:
    op.drop_index("ix_attempts_run_number", "attempts")
    op.drop_table("attempts")
    with op.batch_alter_table("checkpoints") as b:
        b.drop_column("temp_path")
        b.drop_column("state")
    with op.batch_alter_table("runs") as b:
        b.drop_column("owner")
