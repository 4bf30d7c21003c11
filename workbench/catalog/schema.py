"""ORM schema of the run catalog (SQLAlchemy 2; SQLite or PostgreSQL).

Times are Unix seconds (float, UTC by construction). Status is plain text validated in code
against `workbench.core.events.STATUSES` (SQLite cannot alter a CHECK constraint, so none is
declared). Every change here needs a new Alembic revision in `migrations/versions/`, written
by hand: migrations never import these classes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from workbench.core.events import STATUSES

TERMINAL_STATUSES: tuple[str, ...] = ("finished", "failed", "cancelled", "interrupted")
LIVE_STATUSES: tuple[str, ...] = ("running", "paused")
CHECKPOINT_KINDS: tuple[str, ...] = ("periodic", "best", "final", "stop")


BIG_INT = BigInteger().with_variant(Integer, "sqlite")
"""BIGINT on PostgreSQL (revision 0004); SQLite's INTEGER is 64-bit already (and an INTEGER
PRIMARY KEY is its rowid)."""


def check_status(status: str) -> str:
    """Return `status` if it is one of `STATUSES`, else raise ValueError."""
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}; expected one of {', '.join(STATUSES)}")
    return status


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, nullable=False, default="")
    parent_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String, nullable=False, index=True)
    algorithm: Mapped[str] = mapped_column(String, nullable=False, default="", index=True)
    dataset: Mapped[str] = mapped_column(String, nullable=False, default="", index=True)
    device: Mapped[str] = mapped_column(String, nullable=False, default="")
    device_name: Mapped[str | None] = mapped_column(String, nullable=True)
    config_json: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    seed: Mapped[int | None] = mapped_column(BIG_INT, nullable=True)  # 64-bit seeds
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    environment_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[str] = mapped_column(Text, nullable=False, default="")
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    preset: Mapped[str | None] = mapped_column(String, nullable=True)
    owner: Mapped[str | None] = mapped_column(String, nullable=True)  # lease holder's token
    request: Mapped[str | None] = mapped_column(String, nullable=True)  # pause|resume|stop asked
    request_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)  # a detached run's output

    @validates("status")
    def _validate_status(self, _key: str, value: str) -> str:
        return check_status(value)


class RunTag(Base):
    __tablename__ = "run_tags"
    __table_args__ = (Index("ix_run_tags_tag", "tag"),)

    run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String, primary_key=True)


class Metric(Base):
    """Every logged point, never down-sampled. Points of an earlier attempt past the step a
    run was resumed from are kept with `superseded = True`."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_name_step", "run_id", "name", "step"),)

    id: Mapped[int] = mapped_column(BIG_INT, primary_key=True)  # billions of points
    run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(String, nullable=False)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # NaN is stored as NULL
    wall_time: Mapped[float] = mapped_column(Float, nullable=False)
    superseded: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )


class RunSummary(Base):
    """Per (run, metric name): latest and best value, kept by the writer in the same
    transaction as the points, so run lists never scan the metric history."""

    __tablename__ = "run_summary"

    run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String, primary_key=True)
    latest_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    latest_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latest_wall_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (Index("ix_checkpoints_run_step", "run_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String, nullable=False)  # periodic | best | final | stop
    path: Mapped[str] = mapped_column(Text, nullable=False)
    bytes: Mapped[int | None] = mapped_column(BIG_INT, nullable=True)  # files over 2 GiB
    sha256: Mapped[str | None] = mapped_column(String, nullable=True)
    metrics_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    # "pending" while its file is being put in place, "ready" once it is complete
    state: Mapped[str] = mapped_column(
        String, nullable=False, default="ready", server_default="ready"
    )
    temp_path: Mapped[str | None] = mapped_column(Text, nullable=True)

    @validates("kind")
    def _validate_kind(self, _key: str, value: str) -> str:
        if value not in CHECKPOINT_KINDS:
            raise ValueError(
                f"unknown checkpoint kind {value!r}; expected one of {CHECKPOINT_KINDS}"
            )
        return value


class Attempt(Base):
    """One start of a run: who ran it, where, from which step to which, and how it ended."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_run_number", "run_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    owner: Mapped[str | None] = mapped_column(String, nullable=True)
    host: Mapped[str | None] = mapped_column(String, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[float] = mapped_column(Float, nullable=False)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    start_step: Mapped[int] = mapped_column(Integer, nullable=False)
    end_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Evaluation(Base):
    """A score of a checkpoint under a protocol. `episode_scores_json` (revision 0006) holds
    the metric of every episode in episode order as one JSON array of float32 values written
    shortest (`0.93333334`; null for a non-finite one), NULL for evaluations made before it.
    A column, not a child table: the scores are only ever read whole (a histogram, the CI),
    and 600 of them are about 6 KB of text in the evaluation's own row, where a table would
    add 600 rows, each with its id, foreign key and index entry, and 600 inserts."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    checkpoint_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("checkpoints.id", ondelete="SET NULL"), nullable=True
    )
    checkpoint_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    split: Mapped[str] = mapped_column(String, nullable=False)
    protocol_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    episodes: Mapped[int] = mapped_column(Integer, nullable=False)
    metric: Mapped[str] = mapped_column(String, nullable=False)
    mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci95: Mapped[float | None] = mapped_column(Float, nullable=True)
    values_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    episode_scores_json: Mapped[str | None] = mapped_column(Text, nullable=True)


SWEEP_STATUSES: tuple[str, ...] = ("running", "finished", "cancelled", "interrupted")
TRIAL_STATUSES: tuple[str, ...] = (
    "starting",  # recorded, its process launched or about to be; no run yet
    "running",
    "finished",
    "failed",
    "cancelled",
    "interrupted",
    "pruned",
)


class Sweep(Base):
    """A search over configurations (`workbench.sweeps`); each trial is an ordinary run. The
    driver process holds the sweep like a run's owner: `owner` and a `heartbeat_at` it renews,
    so `sweep resume` knows a driver that died from one still at work."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, nullable=False, default="")
    spec_json: Mapped[str] = mapped_column(Text, nullable=False)
    method: Mapped[str] = mapped_column(String, nullable=False)
    metric: Mapped[str] = mapped_column(String, nullable=False)
    maximize: Mapped[bool] = mapped_column(Boolean, nullable=False)
    executor: Mapped[str] = mapped_column(String, nullable=False, default="local")
    status: Mapped[str] = mapped_column(String, nullable=False, index=True)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    owner: Mapped[str | None] = mapped_column(String, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    request: Mapped[str | None] = mapped_column(String, nullable=True)  # "cancel"

    @validates("status")
    def _validate_status(self, _key: str, value: str) -> str:
        if value not in SWEEP_STATUSES:
            raise ValueError(f"unknown sweep status {value!r}; expected one of {SWEEP_STATUSES}")
        return value


class SweepTrial(Base):
    """One configuration of a sweep at one seed, and the run that trains it. Recorded before
    its process starts, so a driver killed at any point leaves a row to resume from; the run
    carries the tag `sweep-trial:<id>`, so one started just before the kill is found again."""

    __tablename__ = "sweep_trials"
    __table_args__ = (Index("ix_sweep_trials_sweep_number", "sweep_id", "number", "seed"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)  # the search's trial number
    seed: Mapped[int] = mapped_column(BIG_INT, nullable=False)
    params_json: Mapped[str] = mapped_column(Text, nullable=False)
    run_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String, nullable=False)
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # "host:pid" of the process launched for it, until its run exists: a resumed driver waits
    # for a live one instead of launching the trial twice
    process: Mapped[str | None] = mapped_column(String, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[float] = mapped_column(Float, nullable=False)

    @validates("status")
    def _validate_status(self, _key: str, value: str) -> str:
        if value not in TRIAL_STATUSES:
            raise ValueError(f"unknown trial status {value!r}; expected one of {TRIAL_STATUSES}")
        return value
