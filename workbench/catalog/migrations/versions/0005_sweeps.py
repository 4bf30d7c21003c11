"""Sweeps and their trials.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

- `sweeps`: a sweep's spec, objective, executor, status, and its driver's lease (owner,
  heartbeat) and pending request ("cancel").
- `sweep_trials`: each configuration x seed of a sweep, its parameters, run and objective.
Optuna's study is not stored: it is rebuilt from these rows (`add_trial`) on resume.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("metric", sa.String(), nullable=False),
        sa.Column("maximize", sa.Boolean(), nullable=False),
        sa.Column("executor", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("heartbeat_at", sa.Float(), nullable=True),
        sa.Column("request", sa.String(), nullable=True),
    )
    op.create_index("ix_sweeps_status", "sweeps", ["status"])
    op.create_table(
        "sweep_trials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("seed", big, nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column(
            "run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("objective", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("process", sa.String(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_sweep_trials_sweep_number", "sweep_trials", ["sweep_id", "number", "seed"])
    op.create_index("ix_sweep_trials_run_id", "sweep_trials", ["run_id"])


def downgrade() -> None:
    op.drop_table("sweep_trials")
    op.drop_table("sweeps")
