"""Run catalog: SQLite or PostgreSQL (SQLAlchemy ORM + Alembic) store of runs, metrics, checkpoints and
evaluations, and the Trainer listener that fills it. Never imports Qt or torch."""

from workbench.catalog.errors import CatalogError, LeaseLost, NotRunningError, RunBusyError
from workbench.catalog.store import (
    HEARTBEAT_S,
    HEARTBEAT_STALE_S,
    Catalog,
    CheckpointRecord,
    EvaluationRecord,
    MetricSummary,
    RunRecord,
    UnknownRunError,
    default_checkpoint_root,
    default_db_path,
    default_db_target,
)
from workbench.catalog.writer import CatalogListener

__all__ = [
    "HEARTBEAT_S",
    "HEARTBEAT_STALE_S",
    "Catalog",
    "CatalogError",
    "CatalogListener",
    "LeaseLost",
    "NotRunningError",
    "RunBusyError",
    "CheckpointRecord",
    "EvaluationRecord",
    "MetricSummary",
    "RunRecord",
    "UnknownRunError",
    "default_checkpoint_root",
    "default_db_path",
    "default_db_target",
]
