"""Per-episode scores of an evaluation.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

- `evaluations.episode_scores_json`: the metric of every test episode, in episode order, as a
  JSON array (see `schema.Evaluation`), so the app can draw their histogram and the CI can be
  recomputed from them. Nullable: evaluations stored by an earlier release keep NULL (no
  per-episode data; they still show, without a histogram).
A single ADD COLUMN on both SQLite and PostgreSQL: no table is rebuilt, no row rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("evaluations", sa.Column("episode_scores_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as batch:  # SQLite before 3.35 cannot DROP COLUMN
        batch.drop_column("episode_scores_json")
