"""Run catalog: SQLite (SQLAlchemy ORM + Alembic) store of runs, metrics, checkpoints and
evaluations, and the Trainer listener that fills it. Never imports Qt or torch."""

from workbench.catalog.store import (
    HEARTBEAT_S,
    HEARTBEAT_STALE_S,
    Catalog,
    CheckpointRecord,
    EvaluationRecord,
    MetricSummary,
    RunRecord,
    UnknownRunError,
    default_db_path,
)
from workbench.catalog.writer import CatalogListener

__all__ = [
    "HEARTBEAT_S",
    "HEARTBEAT_STALE_S",
    "Catalog",
    "CatalogListener",
    "CheckpointRecord",
    "EvaluationRecord",
    "MetricSummary",
    "RunRecord",
    "UnknownRunError",
    "default_db_path",
]
