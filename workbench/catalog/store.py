"""The run catalog: one SQLite file holding runs, every metric point, checkpoints and
evaluations, shared safely by the GUI, the CLI and any number of training processes.

Files
-----
- The database: `default_db_path()` = `$WORKBENCH_DB`, else `./experiments.db`.
- Checkpoints of run N live beside it in `<db path>.checkpoints/N/`
  (`Catalog.checkpoint_dir(N)`); `delete_run` removes that folder with the run.

Concurrency
-----------
WAL journal, `busy_timeout` of `BUSY_TIMEOUT_S`, `synchronous=NORMAL`, foreign keys on. Writes
run on their own engine whose transactions start with `BEGIN IMMEDIATE` (SQLAlchemy's
pysqlite recipe: the driver's own transaction handling is switched off on connect and the
"begin" event emits the BEGIN), so a read-modify-write such as `begin_attempt` takes the
write lock before it reads and concurrent processes never lose an update. Reads use a second
engine with plain (deferred) BEGIN: a consistent snapshot that never waits for writers.
Transactions are short; metric points arrive in batches from `CatalogListener`.

Liveness
--------
A live run's writer records `heartbeat_at` every `HEARTBEAT_S` seconds (also while paused or
evaluating). Opening a catalog marks runs still "running"/"paused" whose heartbeat is older
than `HEARTBEAT_STALE_S` (the `stale_s` argument of `open`) as "interrupted", so a crashed
or killed process never leaves a run "running" forever. Times are Unix seconds.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    Engine,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from workbench.catalog.schema import (
    CHECKPOINT_KINDS,
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    Checkpoint,
    Evaluation,
    Metric,
    Run,
    RunSummary,
    RunTag,
    check_status,
)

HEARTBEAT_S = 5.0
"""Seconds between heartbeats of a live run."""
HEARTBEAT_STALE_S = 30.0
"""A running/paused run without a heartbeat for this long is marked interrupted on open."""
BUSY_TIMEOUT_S = 10.0
"""How long a connection waits for another process's write lock before failing."""

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

MetricPoint = tuple[int, str, float | None, float]
"""(step, name, value, wall_time) as given to `Catalog.add_metrics`."""


class UnknownRunError(KeyError):
    """No run with that id in the catalog."""

    def __init__(self, run_id: int) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return f"no run {self.run_id} in the catalog"


def default_db_path() -> Path:
    """`$WORKBENCH_DB` if set, else `experiments.db` in the current directory."""
    env = os.environ.get("WORKBENCH_DB")
    return Path(env).expanduser() if env else Path.cwd() / "experiments.db"


def lower_is_better(name: str) -> bool:
    """Metric direction for the summary's best value: min for losses and MSEs, max otherwise."""
    low = name.lower()
    return "loss" in low or "mse" in low


# ---- records ------------------------------------------------------------------------------
class MetricSummary(NamedTuple):
    """One metric of one run as kept in the summary table (a tuple: cheap to build in bulk)."""

    latest: float | None
    latest_step: int | None
    best: float | None
    best_step: int | None
    count: int


@dataclass(slots=True)
class RunRecord:
    """A run as read from the catalog (a detached plain object)."""

    id: int
    name: str
    status: str
    algorithm: str
    dataset: str
    device: str
    device_name: str | None
    config_json: str
    seed: int | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    heartbeat_at: float | None
    error: str | None
    environment_json: str | None
    notes: str
    attempt: int
    total_steps: int | None
    step: int
    preset: str | None
    parent_id: int | None
    tags: list[str] = field(default_factory=list)
    summary: dict[str, MetricSummary] = field(default_factory=dict)

    @property
    def environment(self) -> dict[str, Any]:
        return json.loads(self.environment_json) if self.environment_json else {}

    @property
    def config(self) -> dict[str, Any]:
        """The stored config as a dict (`RunConfig.from_json(record.config_json)` validates it)."""
        return json.loads(self.config_json) if self.config_json else {}

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at if self.ended_at is not None else self.heartbeat_at
        return None if end is None else max(0.0, end - self.started_at)


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    id: int
    run_id: int
    step: int
    kind: str
    path: str
    bytes: int | None
    sha256: str | None
    metrics: dict[str, float]
    created_at: float


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    id: int
    run_id: int
    checkpoint_id: int | None
    checkpoint_step: int | None
    split: str
    protocol: dict[str, Any]
    episodes: int
    metric: str
    mean: float | None
    ci95: float | None
    values: dict[str, float]
    created_at: float


# runs columns in the order of RunRecord's fields, so a row builds a record positionally
_RUN_KEYS = [f.name for f in fields(RunRecord) if f.name not in ("tags", "summary")]
_RUN_COLUMNS = [Run.__table__.c[k] for k in _RUN_KEYS]
if set(_RUN_KEYS) != set(
    Run.__table__.c.keys()
):  # pragma: no cover - a schema edit forgot RunRecord
    raise RuntimeError("RunRecord fields and the runs table columns disagree")


def _run_record(row: Sequence[Any]) -> RunRecord:
    return RunRecord(*row, [], {})


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building tens of thousands of small objects
    (none of them cyclic): its repeated full passes would otherwise more than double the
    time of a 10,000-run `list_runs`."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _fetch_raw(conn: Connection, stmt: Any) -> list[tuple[Any, ...]]:
    """Run a SELECT on the DBAPI cursor and return plain tuples: for the large results of
    `list_runs` and `metrics` this is several times faster than building Row objects. Only
    for columns whose types need no result processing (ints, floats, text)."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = [params[k] for k in compiled.positiontup or ()]
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return cur.execute(str(compiled), args).fetchall()
    finally:
        cur.close()


def _checkpoint_record(c: Checkpoint) -> CheckpointRecord:
    return CheckpointRecord(
        id=c.id, run_id=c.run_id, step=c.step, kind=c.kind, path=c.path, bytes=c.bytes,
        sha256=c.sha256, metrics=json.loads(c.metrics_json) if c.metrics_json else {},
        created_at=c.created_at,
    )  # fmt: skip


def _evaluation_record(e: Evaluation) -> EvaluationRecord:
    return EvaluationRecord(
        id=e.id, run_id=e.run_id, checkpoint_id=e.checkpoint_id, checkpoint_step=e.checkpoint_step,
        split=e.split, protocol=json.loads(e.protocol_json) if e.protocol_json else {},
        episodes=e.episodes, metric=e.metric, mean=e.mean, ci95=e.ci95,
        values=json.loads(e.values_json) if e.values_json else {}, created_at=e.created_at,
    )  # fmt: skip


def _finite(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def base_environment() -> dict[str, Any]:
    """What the catalog can tell about this process without importing anything heavy."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    try:
        from importlib.metadata import version

        env["workbench"] = version("meta-learning-workbench")
    except Exception:
        pass
    torch = sys.modules.get("torch")  # only if the process already uses it
    if torch is not None:
        env.setdefault("torch", getattr(torch, "__version__", None))
    numpy_version = getattr(np, "__version__", None)
    env["numpy"] = numpy_version
    import sqlalchemy

    env["sqlalchemy"] = sqlalchemy.__version__
    return env


# ---- engine -------------------------------------------------------------------------------
def _make_engine(path: Path, begin_sql: str, busy_timeout_s: float) -> Engine:
    engine = create_engine(
        URL.create("sqlite", database=str(path)),
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (pysqlite would otherwise BEGIN lazily,
        # only before the first write: a read-modify-write would then lose updates).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin_sql)

    return engine


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


# ---- the catalog --------------------------------------------------------------------------
class Catalog:
    """A run catalog on one SQLite file. Thread-safe; many processes may share the file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stale_s: float | None = HEARTBEAT_STALE_S,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_engine = _make_engine(self.path, "BEGIN IMMEDIATE", busy_timeout_s)
        self._read_engine = _make_engine(self.path, "BEGIN", busy_timeout_s)
        self._closed = False
        try:
            self.migrated: bool = self._migrate()
            self.marked_interrupted: list[int] = (
                self.mark_stale_interrupted(stale_s) if stale_s is not None else []
            )
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        stale_s: float | None = HEARTBEAT_STALE_S,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> Catalog:
        """Open (creating or upgrading) the catalog at `path` (default: `default_db_path()`)
        and mark runs with a heartbeat older than `stale_s` seconds interrupted (None: skip)."""
        return cls(
            path if path is not None else default_db_path(),
            stale_s=stale_s,
            busy_timeout_s=busy_timeout_s,
        )

    def close(self) -> None:
        """Release the connections (idempotent)."""
        if not self._closed:
            self._closed = True
            self._write_engine.dispose()
            self._read_engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    # ---- plumbing ----
    def _migrate(self) -> bool:
        """Upgrade to the newest revision; a no-op (one SELECT) when already there. Runs in
        one BEGIN IMMEDIATE transaction, so two processes opening a new file do not race."""
        cfg = _alembic_config()
        head = ScriptDirectory.from_config(cfg).get_current_head()
        with self._read_engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision() == head:
                return False
        with self._write_engine.begin() as conn:
            if MigrationContext.configure(conn).get_current_revision() == head:
                return False
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return True

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._read_engine) as s, s.begin():
            yield s

    @staticmethod
    def _run_or_raise(s: Session, run_id: int) -> Run:
        run = s.get(Run, run_id)
        if run is None:
            raise UnknownRunError(run_id)
        return run

    def checkpoint_dir(self, run_id: int, *, create: bool = False) -> Path:
        """Folder for run `run_id`'s checkpoints: `<db path>.checkpoints/<run_id>/`."""
        d = self.path.with_name(self.path.name + ".checkpoints") / str(int(run_id))
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    # ---- runs ----
    def create_run(
        self,
        config_json: str,
        name: str = "",
        algorithm: str = "",
        dataset: str = "",
        device: str = "",
        seed: int | None = None,
        tags: Iterable[str] = (),
        notes: str = "",
        parent_id: int | None = None,
        status: str = "queued",
        preset: str | None = None,
        total_steps: int | None = None,
    ) -> int:
        """Insert a run and return its id."""
        check_status(status)
        with self._write() as s:
            run = Run(
                name=name, parent_id=parent_id, status=status, algorithm=algorithm,
                dataset=dataset, device=device, config_json=config_json, seed=seed,
                created_at=time.time(), notes=notes, attempt=1, total_steps=total_steps,
                step=0, preset=preset,
            )  # fmt: skip
            s.add(run)
            s.flush()
            for tag in dict.fromkeys(t.strip() for t in tags):
                if tag:
                    s.add(RunTag(run_id=run.id, tag=tag))
            return run.id

    def create_run_from_config(
        self, config: Any, *, parent_id: int | None = None, status: str = "queued"
    ) -> int:
        """Create a run from a `RunConfig` (duck-typed, so the catalog needs no core import)."""
        return self.create_run(
            config.to_json(), name=config.name, algorithm=config.algorithm.name,
            dataset=config.dataset.name, device=config.device, seed=config.seed,
            tags=config.tags, notes=config.notes, parent_id=parent_id, status=status,
            preset=config.preset, total_steps=config.steps,
        )  # fmt: skip

    def get_run(self, run_id: int) -> RunRecord:
        """The run with its tags and metric summary; UnknownRunError if there is none."""
        with self._read() as s:
            row = s.execute(select(*_RUN_COLUMNS).where(Run.id == run_id)).first()
            if row is None:
                raise UnknownRunError(run_id)
            rec = _run_record(row)
            rec.tags = list(
                s.scalars(select(RunTag.tag).where(RunTag.run_id == run_id).order_by(RunTag.tag))
            )
            rec.summary = self._summaries(s, select(Run.id).where(Run.id == run_id)).get(run_id, {})
            return rec

    def has_run(self, run_id: int) -> bool:
        with self._read() as s:
            return s.scalar(select(Run.id).where(Run.id == run_id)) is not None

    @staticmethod
    def _summaries(s: Session, ids: Any | None) -> dict[int, dict[str, MetricSummary]]:
        t = RunSummary.__table__
        q = select(
            t.c.run_id,
            t.c.name,
            t.c.latest_value,
            t.c.latest_step,
            t.c.best_value,
            t.c.best_step,
            t.c["count"],
        )
        if ids is not None:
            q = q.where(t.c.run_id.in_(ids))
        out: dict[int, dict[str, MetricSummary]] = {}
        get, new = out.get, tuple.__new__
        for row in _fetch_raw(s.connection(), q):  # the hot loop of list_runs: keep it lean
            d = get(row[0])
            if d is None:
                d = out[row[0]] = {}
            d[row[1]] = new(MetricSummary, row[2:])
        return out

    def list_runs(
        self,
        status: str | Iterable[str] | None = None,
        algorithm: str | None = None,
        dataset: str | None = None,
        tag: str | None = None,
        text: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first, with tags and metric summaries, read from the runs and summary
        tables only (the metric history is never scanned). `text` matches name, notes,
        algorithm, dataset, preset or a tag (case-insensitive substring)."""
        q = select(*_RUN_COLUMNS).order_by(Run.id.desc())
        filtered = False
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            for st in statuses:
                check_status(st)
            q = q.where(Run.status.in_(statuses))
            filtered = True
        if algorithm:
            q = q.where(Run.algorithm == algorithm)
            filtered = True
        if dataset:
            q = q.where(Run.dataset == dataset)
            filtered = True
        if tag:
            q = q.where(Run.id.in_(select(RunTag.run_id).where(RunTag.tag == tag)))
            filtered = True
        if text:
            pat = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            cols = (Run.name, Run.notes, Run.algorithm, Run.dataset, Run.preset)
            q = q.where(
                or_(
                    *(c.ilike(pat, escape="\\") for c in cols),
                    Run.id.in_(select(RunTag.run_id).where(RunTag.tag.ilike(pat, escape="\\"))),
                )
            )
            filtered = True
        if limit is not None:
            q = q.limit(limit)
            filtered = True
        with self._read() as s, _gc_paused():
            conn = s.connection()
            records = [RunRecord(*row, [], {}) for row in _fetch_raw(conn, q)]
            if not records:
                return []
            ids: Any = None  # None: every run
            if filtered:
                ids = (
                    [r.id for r in records]
                    if len(records) <= 500
                    else select(q.with_only_columns(Run.id).subquery().c.id)
                )
            summaries = self._summaries(s, ids)
            tq = select(RunTag.run_id, RunTag.tag).order_by(RunTag.run_id, RunTag.tag)
            if ids is not None:
                tq = tq.where(RunTag.run_id.in_(ids))
            tags: dict[int, list[str]] = {}
            for run_id, t in _fetch_raw(conn, tq):
                lst = tags.get(run_id)
                if lst is None:
                    tags[run_id] = [t]
                else:
                    lst.append(t)
            for r in records:
                r.summary = summaries.get(r.id, r.summary)
                r.tags = tags.get(r.id, r.tags)
        return records

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
        """Set a run's status (validated against `STATUSES`) and error text. A terminal status
        stamps `ended_at`; running/paused refresh the heartbeat."""
        check_status(status)
        now = time.time()
        values: dict[str, Any] = {"status": status, "error": error}
        if status in TERMINAL_STATUSES:
            values["ended_at"] = now
        else:
            values["ended_at"] = None
        if status in LIVE_STATUSES:
            values["heartbeat_at"] = now
        self._update_run(run_id, **values)

    def _update_run(self, run_id: int, **values: Any) -> None:
        with self._write() as s:
            res = s.execute(update(Run).where(Run.id == run_id).values(**values))
            if res.rowcount == 0:
                raise UnknownRunError(run_id)

    def rename(self, run_id: int, name: str) -> None:
        self._update_run(run_id, name=name)

    def set_notes(self, run_id: int, notes: str) -> None:
        self._update_run(run_id, notes=notes)

    def set_tags(self, run_id: int, tags: Iterable[str]) -> None:
        """Replace the run's tags."""
        clean = [t for t in dict.fromkeys(t.strip() for t in tags) if t]
        with self._write() as s:
            self._run_or_raise(s, run_id)
            s.execute(delete(RunTag).where(RunTag.run_id == run_id))
            if clean:
                s.execute(insert(RunTag), [{"run_id": run_id, "tag": t} for t in clean])

    def delete_run(self, run_id: int) -> None:
        """Delete the run with its metrics, checkpoints (rows and files), evaluations and its
        checkpoint folder. Child runs keep existing, without a parent."""
        with self._write() as s:
            self._run_or_raise(s, run_id)
            paths = list(s.scalars(select(Checkpoint.path).where(Checkpoint.run_id == run_id)))
            s.execute(delete(Run).where(Run.id == run_id))
        for p in paths:
            try:
                Path(p).unlink(missing_ok=True)
            except OSError:
                pass
        shutil.rmtree(self.checkpoint_dir(run_id), ignore_errors=True)

    # ---- lifecycle ----
    def start_run(
        self,
        run_id: int,
        *,
        start_step: int = 0,
        total_steps: int | None = None,
        device: str | None = None,
        device_name: str | None = None,
        environment: dict[str, Any] | None = None,
        config_json: str | None = None,
    ) -> int:
        """Mark a run running (what `CatalogListener.on_start` calls) and return the attempt
        number its metrics belong to. The first start of a run is attempt 1; any later start
        (a resume, or a restart) is a new attempt via the `begin_attempt` logic."""
        env = {**base_environment(), **(environment or {})}
        now = time.time()
        with self._write() as s:
            run = self._run_or_raise(s, run_id)
            if run.started_at is not None or run.attempt > 1:
                attempt = self._begin_attempt(s, run, start_step)
            else:
                attempt = run.attempt
                run.step = start_step
            run.started_at = run.started_at or now
            run.status = "running"
            run.heartbeat_at = now
            run.ended_at = None
            run.error = None
            run.environment_json = json.dumps(env, sort_keys=True, default=str)
            if total_steps is not None:
                run.total_steps = total_steps
            if device is not None:
                run.device = device
            if device_name is not None:
                run.device_name = device_name
            if config_json is not None:
                run.config_json = config_json
            return attempt

    def begin_attempt(self, run_id: int, resume_step: int) -> int:
        """Start a new attempt of a run resumed at `resume_step` and return its number: points
        of earlier attempts past `resume_step` are marked superseded (kept, not deleted), the
        summary is rebuilt from the remaining points, and the run is set running.
        (`CatalogListener.on_start` does this itself on a resume.)"""
        with self._write() as s:
            run = self._run_or_raise(s, run_id)
            return self._begin_attempt(s, run, resume_step)

    def _begin_attempt(self, s: Session, run: Run, resume_step: int) -> int:
        now = time.time()
        run.attempt += 1
        run.status = "running"
        run.heartbeat_at = now
        run.ended_at = None
        run.error = None
        run.step = resume_step
        s.execute(
            update(Metric)
            .where(
                Metric.run_id == run.id,
                Metric.attempt < run.attempt,
                Metric.step > resume_step,
                Metric.superseded.is_(False),
            )
            .values(superseded=True)
            .execution_options(synchronize_session=False)
        )
        self._rebuild_summary(s, run.id)
        return run.attempt

    @staticmethod
    def _rebuild_summary(s: Session, run_id: int) -> None:
        """Recompute one run's summary rows from its current (non-superseded) points."""
        m = Metric.__table__
        live = (m.c.run_id == run_id) & (m.c.superseded.is_(False))
        s.execute(delete(RunSummary).where(RunSummary.run_id == run_id))
        # SQLite returns the other columns of the row holding min()/max() ("bare columns").
        latest = {
            r.name: r
            for r in s.execute(
                select(m.c.name, m.c.step, m.c.value, m.c.wall_time, func.max(m.c.id), func.count())
                .where(live)
                .group_by(m.c.name)
            )
        }
        if not latest:
            return
        lo = {
            r[0]: (r[1], r[2])
            for r in s.execute(
                select(m.c.name, m.c.step, func.min(m.c.value)).where(live).group_by(m.c.name)
            )
        }
        hi = {
            r[0]: (r[1], r[2])
            for r in s.execute(
                select(m.c.name, m.c.step, func.max(m.c.value)).where(live).group_by(m.c.name)
            )
        }
        rows = []
        for name, r in latest.items():
            best_step, best = (lo if lower_is_better(name) else hi)[name]
            rows.append(
                {
                    "run_id": run_id, "name": name, "latest_value": r[2], "latest_step": r[1],
                    "latest_wall_time": r[3], "best_value": best,
                    "best_step": best_step if best is not None else None, "count": r[5],
                }
            )  # fmt: skip
        s.execute(insert(RunSummary.__table__), rows)

    def finish_run(
        self, run_id: int, status: str, *, step: int | None = None, error: str | None = None
    ) -> None:
        """Set the final status (finished/failed/cancelled/interrupted), error and ended_at."""
        check_status(status)
        values: dict[str, Any] = {"status": status, "error": error, "ended_at": time.time()}
        if step is not None:
            values["step"] = step
        self._update_run(run_id, **values)

    def heartbeat(self, run_id: int, live_status: str | None = None) -> None:
        """Record that the run's process is alive. With `live_status`, a run wrongly marked
        interrupted (its process was suspended past the stale threshold) is revived to it."""
        now = time.time()
        values: dict[str, Any] = {"heartbeat_at": now}
        if live_status is not None:
            check_status(live_status)
            revive = Run.status == "interrupted"
            values["status"] = case((revive, live_status), else_=Run.status)
            values["ended_at"] = case((revive, None), else_=Run.ended_at)
            values["error"] = case((revive, None), else_=Run.error)
        self._update_run(run_id, **values)

    def mark_stale_interrupted(self, threshold_s: float = HEARTBEAT_STALE_S) -> list[int]:
        """Mark running/paused runs whose heartbeat is older than `threshold_s` interrupted;
        return their ids."""
        now = time.time()
        last = func.coalesce(Run.heartbeat_at, Run.started_at, Run.created_at)
        stale = select(Run.id).where(Run.status.in_(LIVE_STATUSES), last < now - threshold_s)
        with self._read() as s:  # the common case takes no write lock
            if s.scalar(stale.limit(1)) is None:
                return []
        with self._write() as s:
            ids = list(s.scalars(stale))
            if ids:
                s.execute(
                    update(Run)
                    .where(Run.id.in_(ids))
                    .values(
                        status="interrupted",
                        ended_at=last,
                        error=f"no heartbeat for more than {threshold_s:g} s: the process running "
                        "it stopped (crash, kill or power loss); resume it from its last checkpoint",
                    )
                    .execution_options(synchronize_session=False)
                )
            return ids

    # ---- metrics ----
    def add_metrics(
        self, run_id: int, points: Sequence[MetricPoint], attempt: int | None = None
    ) -> None:
        """Store metric points (step, name, value, wall_time) of one run and update its summary
        and latest step, all in one transaction. `attempt` defaults to the run's current one."""
        if not points:
            return
        # per-name aggregate of this batch: latest (last given), best, count
        agg: dict[str, list[Any]] = {}
        for step, name, value, wall in points:
            v = _finite(value)
            a = agg.get(name)
            if a is None:
                agg[name] = [v, step, wall, v, step if v is not None else None, 1]
                continue
            a[0], a[1], a[2] = v, step, wall
            a[5] += 1
            if v is not None and (
                a[3] is None or (v < a[3] if lower_is_better(name) else v > a[3])
            ):
                a[3], a[4] = v, step
        with self._write() as s:
            if attempt is None:
                attempt = s.scalar(select(Run.attempt).where(Run.id == run_id))
                if attempt is None:
                    raise UnknownRunError(run_id)
            conn = s.connection()
            # plain tuples through the driver: several times cheaper per point than Core's
            # dict-per-row executemany, and this runs for every point of every run
            conn.exec_driver_sql(
                "INSERT INTO metrics (run_id, attempt, step, name, value, wall_time, superseded) VALUES (?, ?, ?, ?, ?, ?, 0)",
                [(run_id, attempt, st, n, _finite(v), w) for st, n, v, w in points],
            )
            lower = [n for n in agg if lower_is_better(n)]
            higher = [n for n in agg if not lower_is_better(n)]
            for names, is_lower in ((lower, True), (higher, False)):
                if names:
                    conn.execute(
                        _summary_upsert(is_lower),
                        [
                            {"run_id": run_id, "name": n, "latest_value": agg[n][0], "latest_step": agg[n][1],
                             "latest_wall_time": agg[n][2], "best_value": agg[n][3], "best_step": agg[n][4],
                             "count": agg[n][5]}
                            for n in names
                        ],
                    )  # fmt: skip
            conn.execute(
                update(Run.__table__).where(Run.id == run_id).values(step=max(p[0] for p in points))
            )

    def metrics(
        self, run_id: int, name: str, include_superseded: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps int64, values float64 with NaN for missing, wall_times float64), by step."""
        m = Metric.__table__
        q = select(m.c.step, m.c.value, m.c.wall_time).where(m.c.run_id == run_id, m.c.name == name)
        if not include_superseded:
            q = q.where(m.c.superseded.is_(False))
        q = q.order_by(m.c.step, m.c.id)
        with self._read() as s:
            rows = _fetch_raw(s.connection(), q)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64)
        arr = np.array(rows, dtype=np.float64)
        return arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2]

    def metric_names(self, run_id: int) -> list[str]:
        """Names of the run's metrics (from the summary table), sorted."""
        with self._read() as s:
            return list(
                s.scalars(
                    select(RunSummary.name)
                    .where(RunSummary.run_id == run_id)
                    .order_by(RunSummary.name)
                )
            )

    # ---- checkpoints ----
    def add_checkpoint(
        self,
        run_id: int,
        step: int,
        kind: Literal["periodic", "best", "final", "stop"],
        path: str | os.PathLike[str],
        bytes: int | None = None,
        sha256: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> int:
        """Record a checkpoint file; a file re-saved at the same path updates its row."""
        if kind not in CHECKPOINT_KINDS:
            raise ValueError(
                f"unknown checkpoint kind {kind!r}; expected one of {CHECKPOINT_KINDS}"
            )
        values = {
            "step": step, "kind": kind, "bytes": bytes, "sha256": sha256,
            "metrics_json": json.dumps(metrics or {}, sort_keys=True), "created_at": time.time(),
        }  # fmt: skip
        with self._write() as s:
            self._run_or_raise(s, run_id)
            existing = s.scalars(
                select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.path == str(path))
            ).first()
            if existing is not None:
                for k, v in values.items():
                    setattr(existing, k, v)
                return existing.id
            ck = Checkpoint(run_id=run_id, path=str(path), **values)
            s.add(ck)
            s.flush()
            return ck.id

    def remove_checkpoint(self, path: str | os.PathLike[str], *, delete_file: bool = False) -> bool:
        """Forget the checkpoint at `path` (and delete the file if asked); False if unknown."""
        with self._write() as s:
            n = s.execute(delete(Checkpoint).where(Checkpoint.path == str(path))).rowcount
        if delete_file:
            Path(path).unlink(missing_ok=True)
        return n > 0

    def checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        """The run's checkpoints by step."""
        with self._read() as s:
            rows = s.scalars(
                select(Checkpoint)
                .where(Checkpoint.run_id == run_id)
                .order_by(Checkpoint.step, Checkpoint.id)
            )
            return [_checkpoint_record(c) for c in rows]

    def checkpoint(
        self, run_id: int, which: Literal["best", "final", "latest"] | int = "latest"
    ) -> CheckpointRecord | None:
        """The "best" or "final" checkpoint, the "latest" by step, or the one at a given step."""
        q = select(Checkpoint).where(Checkpoint.run_id == run_id)
        if isinstance(which, int) and not isinstance(which, bool):
            order = case({"final": 0, "best": 1, "stop": 2}, value=Checkpoint.kind, else_=3)
            q = q.where(Checkpoint.step == which).order_by(order, Checkpoint.id.desc())
        elif which in ("best", "final"):
            q = q.where(Checkpoint.kind == which).order_by(
                Checkpoint.step.desc(), Checkpoint.id.desc()
            )
        elif which == "latest":
            q = q.order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
        else:
            raise ValueError(f"which must be 'best', 'final', 'latest' or a step, not {which!r}")
        with self._read() as s:
            c = s.scalars(q.limit(1)).first()
            return None if c is None else _checkpoint_record(c)

    # ---- evaluations ----
    def add_evaluation(
        self,
        run_id: int,
        split: str,
        metric: str,
        mean: float,
        ci95: float,
        episodes: int,
        values: dict[str, float] | None = None,
        protocol: dict[str, Any] | None = None,
        checkpoint_step: int | None = None,
        checkpoint_id: int | None = None,
    ) -> int:
        """Store an evaluation and return its id. Its checkpoint is looked up by step when no id
        is given. The summary gets `<split>_<metric>` and `<split>_<metric>_ci95` so that run
        lists can show, e.g., test accuracy without touching this table."""
        now = time.time()
        with self._write() as s:
            self._run_or_raise(s, run_id)
            if checkpoint_id is None and checkpoint_step is not None:
                order = case({"best": 0, "final": 1, "stop": 2}, value=Checkpoint.kind, else_=3)
                checkpoint_id = s.scalar(
                    select(Checkpoint.id)
                    .where(Checkpoint.run_id == run_id, Checkpoint.step == checkpoint_step)
                    .order_by(order, Checkpoint.id.desc())
                    .limit(1)
                )
            ev = Evaluation(
                run_id=run_id, checkpoint_id=checkpoint_id, checkpoint_step=checkpoint_step,
                split=split, protocol_json=json.dumps(protocol or {}, sort_keys=True, default=str),
                episodes=episodes, metric=metric, mean=_finite(mean), ci95=_finite(ci95),
                values_json=json.dumps(values or {}, sort_keys=True), created_at=now,
            )  # fmt: skip
            s.add(ev)
            s.flush()
            step = (
                checkpoint_step
                if checkpoint_step is not None
                else s.scalar(select(Run.step).where(Run.id == run_id))
            )
            for name, v in ((f"{split}_{metric}", mean), (f"{split}_{metric}_ci95", ci95)):
                v = _finite(v)
                s.execute(
                    sqlite_insert(RunSummary.__table__)
                    .values(run_id=run_id, name=name, latest_value=v, latest_step=step, latest_wall_time=now,
                            best_value=v, best_step=step, count=1)
                    .on_conflict_do_update(
                        index_elements=["run_id", "name"],
                        set_={"latest_value": v, "latest_step": step, "latest_wall_time": now,
                              "best_value": v, "best_step": step, "count": RunSummary.__table__.c["count"] + 1},
                    )
                )  # fmt: skip
            return ev.id

    def evaluations(self, run_id: int) -> list[EvaluationRecord]:
        """The run's evaluations, oldest first."""
        with self._read() as s:
            rows = s.scalars(
                select(Evaluation).where(Evaluation.run_id == run_id).order_by(Evaluation.id)
            )
            return [_evaluation_record(e) for e in rows]


def _summary_upsert(is_lower: bool) -> Any:
    """INSERT .. ON CONFLICT for a batch aggregate: latest from the batch, best combined, count added."""
    t = RunSummary.__table__
    stmt = sqlite_insert(t)
    ex = stmt.excluded
    better = (ex.best_value < t.c.best_value) if is_lower else (ex.best_value > t.c.best_value)
    take_new = or_(t.c.best_value.is_(None), ex.best_value.is_not(None) & better)
    return stmt.on_conflict_do_update(
        index_elements=[t.c.run_id, t.c.name],
        set_={
            "latest_value": ex.latest_value,
            "latest_step": ex.latest_step,
            "latest_wall_time": ex.latest_wall_time,
            "best_value": case((take_new, ex.best_value), else_=t.c.best_value),
            "best_step": case((take_new, ex.best_step), else_=t.c.best_step),
            "count": t.c["count"] + ex["count"],
        },
    )
