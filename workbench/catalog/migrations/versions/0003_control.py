"""Control requests for runs that live in other processes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

- `runs.request`: "pause", "resume" or "stop", asked of the run's owner by another process
  (the app, `workbench pause|resume|stop`, a sweep driver); the owner takes it between steps
  and clears it. `runs.request_at`: when it was asked.
- `runs.log_path`: where a run started in its own process writes its output.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("request", sa.String(), nullable=True))
    op.add_column("runs", sa.Column("request_at", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("log_path", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as b:
        b.drop_column("log_path")
        b.drop_column("request_at")
        b.drop_column("request")
