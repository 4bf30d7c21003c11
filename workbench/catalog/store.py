"""The run catalog: runs, every metric point, checkpoints and evaluations, shared safely by
the GUI, the CLI and any number of training processes. It lives in one SQLite file (the
default) or in a PostgreSQL database that processes on many machines share.

Where
-----
- `default_db_path()` = `$WORKBENCH_DB`, else `./experiments.db`. `Catalog.open` also takes a
  SQLAlchemy URL (`postgresql+psycopg://user@host/db`); `default_db_target()` is
  `$WORKBENCH_DB` kept as a URL when it is one.
- Checkpoints of run N live in `<checkpoint root>/N/` (`Catalog.checkpoint_dir(N)`); the root
  is `<db path>.checkpoints/` beside a SQLite file, or the `checkpoint_root` given to `open`
  (else `$WORKBENCH_CHECKPOINT_ROOT`, else `./<database>.checkpoints`) for a server catalog:
  storage every machine that trains or resumes must reach. Rows keep checkpoint paths relative
  to the root (files outside it, and rows of older releases, absolute), so a catalog can move
  with its checkpoint folder and each machine may mount the root at its own path; the API
  always gives absolute paths. `delete_run` removes the folder.

Concurrency
-----------
What differs per database is in `workbench.catalog.dialects` (one module each). SQLite: WAL
journal, `busy_timeout` of `BUSY_TIMEOUT_S`, writes start with `BEGIN IMMEDIATE`, so a
read-modify-write such as `begin_attempt` takes the write lock before it reads; reads use a
second engine with a deferred BEGIN, a snapshot that never waits for writers. PostgreSQL: a
read-modify-write locks the run's row (`SELECT ... FOR UPDATE`) before it reads; reads run at
REPEATABLE READ. Transactions are short; metric points arrive in batches from
`CatalogListener`.

Names and durations
-------------------
A run created without a name is named `default_run_name` (algorithm-dataset-shape-seed, e.g.
`maml-omniglot-5w1s-s0`), made unique with `-2`, `-3`... in the transaction that inserts it
(under a lock: see `_unique_name`); there is no unique index, so catalogs that hold duplicate
names open as before. A run's duration (`RunRecord.train_seconds`, `duration_s`) is its
training time summed over its attempt rows; `created_at` and `ended_at` stay as they are.

Liveness
--------
A live run's writer records `heartbeat_at` every `HEARTBEAT_S` seconds (also while paused or
evaluating). Opening a catalog marks runs still "running"/"paused" whose heartbeat is older
than `HEARTBEAT_STALE_S` (the `stale_s` argument of `open`) as "interrupted", so a crashed
or killed process never leaves a run "running" forever. Times are Unix seconds, from this
machine's clock with SQLite and from the server's with PostgreSQL.
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
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
from sqlalchemy import (
    Connection,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session

from workbench.catalog.dialects import is_url, raw_cursor, server_backend, sqlite_path_of
from workbench.catalog.dialects.sqlite import (  # APPLICATION_ID: re-exported
    APPLICATION_ID,  # noqa: F401
    SQLiteBackend,
    sqlite_error_code,
    writable,
)
from workbench.catalog.dialects.sqlite import inspect_file as _inspect_sqlite
from workbench.catalog.errors import CatalogError, LeaseLost, NotRunningError, RunBusyError
from workbench.catalog.schema import (
    CHECKPOINT_KINDS,
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    Attempt,
    Base,
    Checkpoint,
    Evaluation,
    Metric,
    Run,
    RunSummary,
    RunTag,
    check_status,
)
from workbench.core.faults import fault_point
from workbench.files import complete, fsync_dir

if TYPE_CHECKING:
    from workbench.catalog.sweep_store import SweepStore

HEARTBEAT_S = 5.0
"""Seconds between heartbeats of a live run."""
HEARTBEAT_STALE_S = 30.0
"""A running/paused run without a heartbeat for this long is marked interrupted on open."""
BUSY_TIMEOUT_S = 10.0
"""How long a connection waits for another process's write lock before failing."""

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

SCHEMA_VERSION = 6
"""`PRAGMA user_version`: the schema this release writes. A larger one is a newer release's."""
REVISION_VERSIONS = {"0001": 1, "0002": 2, "0003": 3, "0004": 4, "0005": 5, "0006": 6}
"""Alembic revision -> schema version, for every revision this release knows."""
HEAD_REVISION = max(REVISION_VERSIONS, key=REVISION_VERSIONS.__getitem__)
"""The newest revision (a test checks it is the migration scripts' single head)."""
OWNED_STATUSES: tuple[str, ...] = ("queued", "running", "paused")
REQUESTS: tuple[str, ...] = ("pause", "resume", "stop")
"""What another process can ask of a run's owner (`Catalog.request`)."""
"""Statuses whose run has an owner process (the lease holder) while its heartbeat is fresh."""

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


def default_db_target() -> str | Path:
    """`$WORKBENCH_DB` as given when it is a database URL, else `default_db_path()`."""
    env = os.environ.get("WORKBENCH_DB")
    return env if env and is_url(env) else default_db_path()


def default_checkpoint_root(target: str | os.PathLike[str] | None = None) -> Path:
    """Where the catalog `target` (default: `default_db_target()`) keeps checkpoints unless
    `Catalog.open` is given another root: `<file>.checkpoints/` beside a SQLite file; for a
    server, `$WORKBENCH_CHECKPOINT_ROOT`, else `./<database>.checkpoints`. Opens nothing, so a
    launcher can put a child's log there before the child opens the catalog."""
    target = default_db_target() if target is None else target
    file = sqlite_path_of(str(target)) if is_url(target) else Path(target)
    if file is None:
        from sqlalchemy.engine import make_url

        env = os.environ.get("WORKBENCH_CHECKPOINT_ROOT")
        root = Path(env) if env else Path.cwd() / f"{make_url(str(target)).database}.checkpoints"
    else:
        file = file.expanduser().resolve()
        root = file.with_name(file.name + ".checkpoints")
    return root.expanduser().resolve()


def inspect_file(path: Path) -> Literal["new", "catalog"]:
    """Say whether the SQLite file `path` is a catalog this release can open ("catalog") or a
    place to make a new one ("new"); anything else is a CatalogError. Only reads."""
    return _inspect_sqlite(path, SCHEMA_VERSION, REVISION_VERSIONS)


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
    owner: str | None  # the lease holder's token while queued or live
    request: str | None  # a control request its owner has not taken yet (pause|resume|stop)
    request_at: float | None
    log_path: str | None  # where a run started in its own process writes its output
    tags: list[str] = field(default_factory=list)
    summary: dict[str, MetricSummary] = field(default_factory=dict)
    train_seconds: float | None = None
    """Time spent training, summed over the run's attempts (a live attempt up to its last
    heartbeat); None before it first starts. Waits in a queue and the time between a crash and
    a resume do not count, unlike `ended_at - created_at`."""

    @property
    def environment(self) -> dict[str, Any]:
        return json.loads(self.environment_json) if self.environment_json else {}

    @property
    def config(self) -> dict[str, Any]:
        """The stored config as a dict (`RunConfig.from_json(record.config_json)` validates it)."""
        return json.loads(self.config_json) if self.config_json else {}

    @property
    def duration_s(self) -> float | None:
        """The run's duration as shown and sorted: its training time (`train_seconds`); for a
        run without attempt rows (made before they existed), first start to end."""
        if self.train_seconds is not None:
            return self.train_seconds
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
    # the metric of each episode, in episode order (NaN: a non-finite score); None for an
    # evaluation stored before revision 0006 kept them
    episode_scores: list[float] | None = None


# runs columns in the order of RunRecord's fields, so a row builds a record positionally
_DERIVED = ("tags", "summary", "train_seconds")  # RunRecord fields read from other tables
_RUN_KEYS = [f.name for f in fields(RunRecord) if f.name not in _DERIVED]
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
    for columns whose types need no result processing (ints, floats, text). Positional
    (sqlite3) or named (psycopg) parameters, as the driver's style is."""
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args: Any = [params[k] for k in compiled.positiontup or ()] if compiled.positional else params
    cur = raw_cursor(conn)
    try:
        return cur.execute(str(compiled), args).fetchall()
    finally:
        cur.close()


def _checkpoint_record(c: Checkpoint, path: str) -> CheckpointRecord:
    return CheckpointRecord(
        id=c.id, run_id=c.run_id, step=c.step, kind=c.kind, path=path, bytes=c.bytes,
        sha256=c.sha256, metrics=json.loads(c.metrics_json) if c.metrics_json else {},
        created_at=c.created_at,
    )  # fmt: skip


def _evaluation_record(e: Evaluation) -> EvaluationRecord:
    return EvaluationRecord(
        id=e.id, run_id=e.run_id, checkpoint_id=e.checkpoint_id, checkpoint_step=e.checkpoint_step,
        split=e.split, protocol=json.loads(e.protocol_json) if e.protocol_json else {},
        episodes=e.episodes, metric=e.metric, mean=e.mean, ci95=e.ci95,
        values=json.loads(e.values_json) if e.values_json else {}, created_at=e.created_at,
        episode_scores=decode_scores(e.episode_scores_json),
    )  # fmt: skip


def encode_scores(scores: Sequence[float]) -> str:
    """Per-episode scores as a compact JSON array: each written as the shortest text that
    gives back the float32 the evaluation computed (`0.93333334`, not 0.9333333373069763),
    null for a non-finite one (JSON has no NaN)."""
    with np.errstate(over="ignore"):  # a float64 past float32's range: inf, then null
        single = np.asarray(scores, dtype=np.float32)
    return "[" + ",".join(str(v) if np.isfinite(v) else "null" for v in single) + "]"


def decode_scores(text: str | None) -> list[float] | None:
    """`encode_scores`'s list back (null as NaN), each the exact float32 value stored, as the
    evaluation computed its mean and CI from; None for no stored scores."""
    if not text:
        return None
    raw = [math.nan if v is None else v for v in json.loads(text)]
    return np.asarray(raw, dtype=np.float32).astype(np.float64).tolist()


def _finite(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def default_run_name(
    algorithm: str, dataset: str, seed: int | None, shape: tuple[int, int] | None = None
) -> str:
    """The readable name a run gets when none is given: algorithm-dataset-shape-seed, e.g.
    `maml-omniglot-5w1s-s0` (`shape`: evaluation ways and shots; regression has none:
    `maml-sinusoid-s0`). The catalog adds `-2`, `-3`... to make it unique (`create_run`)."""
    parts = [algorithm or "run", dataset]
    if shape is not None:
        parts.append(f"{shape[0]}w{shape[1]}s")
    if seed is not None:
        parts.append(f"s{seed}")
    return "-".join(p for p in parts if p)


def _config_name_base(config: Any) -> str:
    """`default_run_name` of a RunConfig (duck-typed: the catalog imports no core)."""
    shape = None
    try:
        if config.task_kind != "regression":
            shape = (int(config.eval.ways), int(config.eval.shots))
    except Exception:  # a dataset no longer registered: name it without its shape
        shape = None
    return default_run_name(config.algorithm.name, config.dataset.name, config.seed, shape)


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _train_seconds(s: Session, ids: Any | None) -> dict[int, float]:
    """Run id -> seconds of training summed over its attempts; an attempt still open counts up
    to the run's last heartbeat. Runs without attempt rows are absent."""
    a, r = Attempt.__table__, Run.__table__
    end = func.coalesce(a.c.ended_at, r.c.heartbeat_at, a.c.started_at)
    span = case((end > a.c.started_at, end - a.c.started_at), else_=0.0)
    q = select(a.c.run_id, func.sum(span)).join(r, r.c.id == a.c.run_id).group_by(a.c.run_id)
    if ids is not None:
        q = q.where(a.c.run_id.in_(ids))
    return {rid: float(total or 0.0) for rid, total in _fetch_raw(s.connection(), q)}


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
def new_owner() -> str:
    """A lease token naming this process: host, pid and a random part (unique per owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_dead(owner: str | None) -> bool:
    """Whether the owner is a process of this host that no longer exists: its lease ends at
    once instead of after the stale threshold (a crashed run resumes right away here)."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    return _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A process that ended and that its parent has not reaped yet (Linux): dead to us. A
    launcher that outlives its detached run holds it so for a moment after a kill."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def describe_owner(owner: str | None) -> str:
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    return f"process {pid} on {host}" if pid else "another process"


def busy_error(exc: BaseException) -> bool:
    """Another process held a lock past the busy timeout (SQLite busy/locked; PostgreSQL lock
    timeout, serialization failure or deadlock): the call is worth repeating."""
    from workbench.catalog.dialects.postgresql import BUSY_SQLSTATES, _sqlstate

    return sqlite_error_code(exc) in (5, 6) or _sqlstate(exc) in BUSY_SQLSTATES


def retry_busy(call: Callable[[], Any], patience_s: float = 600.0) -> Any:
    """Call, retrying while another process holds the write lock past the busy timeout (a long
    write elsewhere must not fail a run); after `patience_s` a CatalogError says so."""
    deadline = time.monotonic() + patience_s
    delay = 0.05
    while True:
        try:
            return call()
        except DatabaseError as exc:
            if not busy_error(exc) or time.monotonic() > deadline:
                if busy_error(exc):
                    raise CatalogError(
                        f"the catalog stayed locked by another process for {patience_s:.0f} s"
                    ) from None
                raise
        time.sleep(delay)
        delay = min(2 * delay, 1.0)


def _damaged(exc: BaseException) -> bool:
    return sqlite_error_code(exc) in (11, 26)


def _server_error(display: str, exc: BaseException, backend: Any) -> CatalogError:
    """One line for a server catalog that cannot be used (unreachable, refused, no rights)."""
    return CatalogError(f"catalog {display} cannot be opened: {backend.error_line(exc)}")


def _alembic_config() -> Any:
    from alembic.config import Config  # only to create or upgrade: not on every CLI command

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


# ---- the catalog --------------------------------------------------------------------------
class Catalog:
    """A run catalog in one SQLite file or a PostgreSQL database. Thread-safe; many processes
    (on many machines, with PostgreSQL) may share it.

    `path`: a file path, or a SQLAlchemy URL (`postgresql+psycopg://user@host/db`). Attributes
    that name it: `location` (what to pass on as `--db`), `display` (for messages: a URL's
    password hidden), `path` (the SQLite file; None for a server catalog), `server`.

    A SQLite file this process cannot write (permissions, read-only mount) opens read-only:
    reading works, without migration, stale marking, repair or folder creation, and every write
    raises a CatalogError that names the file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stale_s: float | None = HEARTBEAT_STALE_S,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        readonly: bool | None = None,
        checkpoint_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self._closed = True
        backend: Any
        if is_url(path):
            file = sqlite_path_of(str(path))
            backend = server_backend(str(path)) if file is None else None
        else:
            file = Path(path)
            backend = None
        self.path: Path | None
        if backend is None:
            assert file is not None
            self.path = file.expanduser().resolve()
            backend = SQLiteBackend(self.path)
            kind = inspect_file(self.path)
            self.readonly = (not writable(self.path)) if readonly is None else readonly
            if self.readonly and kind == "new":
                raise CatalogError(
                    f"catalog {self.path} does not exist and cannot be created here (read-only)"
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(
                    f"catalog folder {self.path.parent} cannot be made: {exc.strerror}"
                ) from None
        else:
            self.path = None
            self.readonly = bool(readonly)
        self._backend = backend
        self.server: bool = backend.server
        self.location: str = backend.location
        self.display: str = backend.display
        self._checkpoint_root = (
            Path(checkpoint_root).expanduser().resolve()
            if checkpoint_root
            else default_checkpoint_root(self.path or backend.location)
        )
        self.stale_s = stale_s if stale_s is not None else HEARTBEAT_STALE_S
        self._write_engine, self._read_engine = backend.make_engines(busy_timeout_s, self.readonly)
        self._closed = False
        self.marked_interrupted: list[int] = []
        self.repaired: list[str] = []
        try:
            self.migrated: bool = self._migrate()
            self._check_columns()
            if not self.readonly:
                if stale_s is not None:
                    self.marked_interrupted = self.mark_stale_interrupted(stale_s)
                self.repaired = self.repair()
            self.identity = self._identity()
        except CatalogError:
            self.close()
            raise
        except DatabaseError as exc:
            self.close()
            if self.server:
                raise _server_error(self.display, exc, backend) from None
            raise CatalogError(f"catalog {self.display} cannot be opened: {exc.orig}") from None
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
        readonly: bool | None = None,
        checkpoint_root: str | os.PathLike[str] | None = None,
    ) -> Catalog:
        """Open (creating or upgrading) the catalog at `path`, a file or a database URL
        (default: `default_db_target()`), mark runs whose owner's heartbeat is older than
        `stale_s` seconds interrupted (None: skip) and repair what a killed process left half
        done (`repair`)."""
        return cls(
            path if path is not None else default_db_target(),
            stale_s=stale_s,
            busy_timeout_s=busy_timeout_s,
            readonly=readonly,
            checkpoint_root=checkpoint_root,
        )

    def close(self) -> None:
        """Release the connections (idempotent)."""
        if not self._closed:
            self._closed = True
            self._write_engine.dispose()
            self._read_engine.dispose()
            self._backend.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.display!r})"

    # ---- plumbing ----
    def _migrate(self) -> bool:
        """Upgrade to the newest revision and stamp the file as ours (SQLite: application id,
        schema version); a no-op (one SELECT) when already there. Runs in one transaction that
        excludes other migrations (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock), so
        two processes opening a new catalog do not race."""
        backend = self._backend

        def current(conn: Connection) -> bool:
            return backend.schema_current(conn, HEAD_REVISION, SCHEMA_VERSION)

        with self._read_engine.connect() as conn:
            backend.check_schema(conn, REVISION_VERSIONS, SCHEMA_VERSION)
            if current(conn):
                return False
        if self.readonly:
            raise CatalogError(
                f"catalog {self.display} is read-only and needs upgrading by a process that can write it"
            )
        from alembic import command

        cfg = _alembic_config()
        with self._write_engine.begin() as conn:
            backend.lock_schema(conn)
            if current(conn):
                return False
            backend.check_schema(conn, REVISION_VERSIONS, SCHEMA_VERSION)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            backend.stamp(conn, SCHEMA_VERSION)
        return True

    def _check_columns(self) -> None:
        """Refuse a catalog whose tables lack columns this release uses (damaged or edited)."""
        with self._read_engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                have = self._backend.columns(conn, table.name)
                missing = sorted(set(table.c.keys()) - have)
                if missing:
                    raise CatalogError(
                        f"catalog {self.display} is damaged: table {table.name} lacks "
                        f"{', '.join(missing)}"
                    )

    def _identity(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def check_file(self) -> None:
        """Raise CatalogError if the catalog file was deleted or replaced since it was opened
        (SQLite would go on writing into the deleted file and every record would be lost).
        Nothing to check for a server catalog."""
        if self.path is None:
            return
        now = self._identity()
        if now != self.identity:
            what = "deleted" if now is None else "replaced by another file"
            raise CatalogError(f"catalog {self.path} was {what} while in use; its records are gone")

    def change_token(self) -> str | None:
        """An opaque value that changes whenever any process commits a change to the catalog
        (and, on a server, possibly for other databases' changes too: a spurious refresh, never
        a missed one); None when it cannot be read. Cheap: poll it, refresh when it differs
        from the last value. SQLite: `PRAGMA data_version`; PostgreSQL: the server's snapshot."""
        if self._closed:
            return None
        return self._backend.change_token(self._read_engine)

    def _now(self, s: Session | Connection | None = None) -> float:
        """The clock of leases and timestamps: this machine's for SQLite, the server's for
        PostgreSQL (one clock for every machine)."""
        if not self.server:
            return time.time()
        if s is None:
            with self._read_engine.connect() as conn:
                return self._backend.now(conn)
        conn = s.connection() if isinstance(s, Session) else s
        return self._backend.now(conn)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        if self.readonly:
            raise CatalogError(
                f"catalog {self.display} is read-only: this needs a catalog you can write"
            )
        try:
            with Session(self._write_engine, expire_on_commit=False) as s, s.begin():
                yield s
        except DatabaseError as exc:
            if _damaged(exc):
                raise CatalogError(f"catalog {self.display} is damaged ({exc.orig})") from None
            raise

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with Session(self._read_engine) as s, s.begin():
                yield s
        except DatabaseError as exc:
            if _damaged(exc):
                raise CatalogError(f"catalog {self.display} is damaged ({exc.orig})") from None
            raise

    @staticmethod
    def _run_or_raise(s: Session, run_id: int, *, lock: bool = False) -> Run:
        """The run (UnknownRunError if none); `lock` (in a write): its row locked until the
        transaction ends (PostgreSQL's FOR UPDATE; SQLite's BEGIN IMMEDIATE already excludes
        other writers), so what is read here cannot change before the write."""
        run = s.get(Run, run_id, with_for_update=lock or None, populate_existing=lock)
        if run is None:
            raise UnknownRunError(run_id)
        return run

    @property
    def sweeps(self) -> SweepStore:
        """The catalog's sweeps and their trials (`sweep_store.py`)."""
        from workbench.catalog.sweep_store import SweepStore

        return SweepStore(self)

    @property
    def checkpoint_root(self) -> Path:
        """One folder per run below it: `<db path>.checkpoints/` beside a SQLite file unless
        `open` was given another; for a server catalog, shared storage every machine reaches."""
        return self._checkpoint_root

    def checkpoint_dir(self, run_id: int, *, create: bool = False) -> Path:
        """Folder for run `run_id`'s checkpoints: `<checkpoint root>/<run_id>/`."""
        d = self.checkpoint_root / str(int(run_id))
        if create:
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(
                    f"checkpoint folder {d.parent} cannot be written: {exc.strerror}"
                ) from None
        return d

    def _stored(self, path: str | os.PathLike[str]) -> str:
        """How a checkpoint path is kept in the catalog: relative to the checkpoint root when it
        lies below it (so a catalog moved with its checkpoint folder, or a root mounted at
        another path, still finds its files), else absolute."""
        p = Path(path)
        try:
            return p.relative_to(self.checkpoint_root).as_posix()
        except ValueError:
            pass
        try:
            return p.resolve().relative_to(self.checkpoint_root).as_posix()
        except (ValueError, OSError):
            return os.path.abspath(p)  # outside the root: absolute (never read as relative)

    def _absolute(self, stored: str) -> str:
        """The file a stored checkpoint path names (absolute paths: rows of older releases or
        files outside the root)."""
        return stored if os.path.isabs(stored) else str(self.checkpoint_root / stored)

    def _path_forms(self, path: str | os.PathLike[str]) -> list[str]:
        """Both ways a row may name the file at `path` (relative now, absolute before)."""
        return list(dict.fromkeys([self._stored(path), self._absolute(self._stored(path))]))

    def check_checkpoint_folder(self) -> None:
        """CatalogError unless checkpoints can be written beside the catalog: a run that could
        never checkpoint is refused before it exists (one line), not paused after it starts."""
        root = self.checkpoint_root
        if self.readonly:
            raise CatalogError(
                f"catalog {self.display} is read-only: this needs a catalog you can write"
            )
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=root, prefix=".tmp-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise CatalogError(
                f"checkpoint folder {root} cannot be written: {exc.strerror}"
            ) from None

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
        owner: str | None = None,
        default_name: str | None = None,
    ) -> int:
        """Insert a run and return its id. With `owner` the run starts leased to that owner
        (see `claim`): it must keep the lease fresh (`renew`) until the run starts, or the run
        is marked interrupted like a crashed one. Without a `name` the run is named
        `default_name` (else `default_run_name` of algorithm, dataset and seed), made unique
        in the catalog (`-2`, `-3`...) in the transaction that inserts it."""
        check_status(status)
        name = name.strip()
        with self._write() as s:
            now = self._now(s)
            if not name:
                base = default_name or default_run_name(algorithm, dataset, seed)
                name = self._unique_name(s, base)
            run = Run(
                name=name, parent_id=parent_id, status=status, algorithm=algorithm,
                dataset=dataset, device=device, config_json=config_json, seed=seed,
                created_at=now, notes=notes, attempt=1, total_steps=total_steps,
                step=0, preset=preset, owner=owner, heartbeat_at=now if owner else None,
            )  # fmt: skip
            s.add(run)
            s.flush()
            for tag in dict.fromkeys(t.strip() for t in tags):
                if tag:
                    s.add(RunTag(run_id=run.id, tag=tag))
            return run.id

    def _unique_name(self, s: Session, base: str) -> str:
        """`base`, or `base-N` with N one past the highest taken, free among all runs' names.
        Inside a write transaction that holds the names lock (SQLite: the write lock), so two
        processes creating runs at once never pick the same name. No unique index: catalogs
        holding duplicate names (made by hand or before) stay valid."""
        self._backend.lock_names(s.connection())
        taken = s.scalars(
            select(Run.name).where(
                or_(Run.name == base, Run.name.like(_like_prefix(base) + "-%", escape="\\"))
            )
        ).all()
        if base not in taken:
            return base
        tails = [n[len(base) + 1 :] for n in taken if n != base]
        last = max((int(t) for t in tails if t.isdigit() and not t.startswith("0")), default=1)
        return f"{base}-{last + 1}"

    def create_run_from_config(
        self,
        config: Any,
        *,
        parent_id: int | None = None,
        status: str = "queued",
        owner: str | None = None,
    ) -> int:
        """Create a run from a `RunConfig` (duck-typed, so the catalog needs no core import).
        A config without a name gives a unique `default_run_name` with its task shape."""
        return self.create_run(
            config.to_json(), name=config.name, algorithm=config.algorithm.name,
            dataset=config.dataset.name, device=config.device, seed=config.seed,
            tags=config.tags, notes=config.notes, parent_id=parent_id, status=status,
            preset=config.preset, total_steps=config.steps, owner=owner,
            default_name=None if config.name.strip() else _config_name_base(config),
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
            rec.train_seconds = _train_seconds(s, [run_id]).get(run_id)
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
            trained = _train_seconds(s, ids)
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
                r.train_seconds = trained.get(r.id)
        return records

    def set_status(
        self, run_id: int, status: str, error: str | None = None, *, owner: str | None = None
    ) -> None:
        """Set a run's status (validated against `STATUSES`) and error text. A terminal status
        stamps `ended_at`; running/paused refresh the heartbeat. With `owner`, only the lease
        holder may."""
        check_status(status)
        values: dict[str, Any] = {"status": status, "error": error}
        stamp: list[str] = ["ended_at"] if status in TERMINAL_STATUSES else []
        values["ended_at"] = None
        if status in LIVE_STATUSES:
            stamp.append("heartbeat_at")
        self._update_run(run_id, owner=owner, _now=stamp, **values)

    def _update_run(
        self, run_id: int, owner: str | None = None, _now: Sequence[str] = (), **values: Any
    ) -> None:
        """Update columns of a run; those named in `_now` get the catalog's clock."""
        with self._write() as s:
            self._owned(s, run_id, owner)
            if _now:
                now = self._now(s)
                values.update(dict.fromkeys(_now, now))
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
            self._run_or_raise(s, run_id, lock=True)
            s.execute(delete(RunTag).where(RunTag.run_id == run_id))
            if clean:
                s.execute(insert(RunTag), [{"run_id": run_id, "tag": t} for t in clean])

    def delete_run(self, run_id: int) -> None:
        """Delete the run with its metrics, checkpoints (rows and files), evaluations and its
        checkpoint folder. Child runs keep existing, without a parent."""
        with self._write() as s:
            self._run_or_raise(s, run_id)
            paths = [
                self._absolute(p)
                for p in s.scalars(select(Checkpoint.path).where(Checkpoint.run_id == run_id))
            ]
            s.execute(delete(Run).where(Run.id == run_id))
        for p in paths:
            try:
                Path(p).unlink(missing_ok=True)
            except OSError:
                pass
        shutil.rmtree(self.checkpoint_dir(run_id), ignore_errors=True)

    # ---- ownership ----
    def _lease_live(self, run: Run, now: float) -> bool:
        return (
            run.owner is not None
            and run.status in OWNED_STATUSES
            and (run.heartbeat_at or 0.0) > now - self.stale_s
            and not owner_dead(run.owner)
        )

    def claim(self, run_id: int, owner: str, *, queue: bool = False) -> str:
        """Take the run for `owner`, atomically (BEGIN IMMEDIATE): refused with RunBusyError
        while another owner's lease is live (its heartbeat younger than the stale threshold),
        so two resumes of one run, here or on another machine, cannot both proceed. With
        `queue` the run is set "queued" (it waits in its owner's queue; a resume does this, so
        its lease is live before it starts). Returns the status the run had."""
        with self._write() as s:
            run = self._run_or_raise(s, run_id, lock=True)
            now = self._now(s)
            if run.owner != owner:
                self._refuse_if_owned(run, now)
            prior = run.status
            if run.owner != owner or prior not in OWNED_STATUSES:
                run.request = run.request_at = None  # asked of an attempt that is over
            if run.owner is not None and run.owner != owner:
                # its dead owner's attempt ended at its last heartbeat, not now: the time in
                # between was no training (`train_seconds`)
                last = run.heartbeat_at if run.heartbeat_at is not None else now
                self._close_attempt(s, run_id, "interrupted", None, None, min(last, now))
            run.owner = owner
            run.heartbeat_at = now
            if queue:
                run.status = "queued"
                run.ended_at = None
            return prior

    def ensure_free(self, run_id: int) -> None:
        """RunBusyError if a live process owns the run: a resume checks this before it reads a
        checkpoint the owner may be about to retire (`claim` then takes it atomically)."""
        with self._read() as s:
            self._refuse_if_owned(self._run_or_raise(s, run_id), self._now(s))

    def _refuse_if_owned(self, run: Run, now: float) -> None:
        """RunBusyError naming the live process that owns `run`, if one does."""
        if self._lease_live(run, now):
            age = now - (run.heartbeat_at or now)
            raise RunBusyError(
                f"run {run.id} is {run.status} in {describe_owner(run.owner)} (heartbeat "
                f"{age:.0f} s ago); stop it there first"
            )

    def renew(self, run_id: int, owner: str) -> None:
        """Refresh `owner`'s lease (the heartbeat); LeaseLost if the run is no longer its own."""
        with self._write() as s:
            n = s.execute(
                update(Run)
                .where(Run.id == run_id, Run.owner == owner)
                .values(heartbeat_at=self._now(s))
            ).rowcount
            if n == 0:
                self._lost(s, run_id, owner)

    def release(self, run_id: int, owner: str, status: str | None = None) -> None:
        """Give the run up (optionally setting its status); a no-op if `owner` lost it."""
        values: dict[str, Any] = {"owner": None}
        if status is not None:
            values["status"] = check_status(status)
        with self._write() as s:
            s.execute(update(Run).where(Run.id == run_id, Run.owner == owner).values(**values))

    # ---- control requests (runs in other processes) ----
    def request(self, run_id: int, action: str) -> None:
        """Ask the run's owner to pause, resume or stop it between steps (`CatalogListener`
        takes the request within a second). NotRunningError when no live process owns the
        run: nobody would ever take the request."""
        if action not in REQUESTS:
            raise ValueError(f"unknown request {action!r}: one of {', '.join(REQUESTS)}")
        with self._write() as s:
            run = self._run_or_raise(s, run_id, lock=True)
            now = self._now(s)
            if not self._lease_live(run, now):
                why = "its process is gone" if run.status in OWNED_STATUSES else run.status
                raise NotRunningError(f"run {run_id} is not running ({why})")
            run.request, run.request_at = action, now

    def pending_request(self, run_id: int) -> str | None:
        """The request waiting for the run's owner (a read: cheap enough to poll)."""
        with self._read() as s:
            return s.scalar(select(Run.request).where(Run.id == run_id))

    def take_request(self, run_id: int, owner: str) -> str | None:
        """The waiting request, cleared in the same transaction (so it is honoured once);
        LeaseLost if `owner` no longer holds the run."""
        with self._write() as s:
            self._owned(s, run_id, owner)
            run = self._run_or_raise(s, run_id, lock=True)
            action, run.request, run.request_at = run.request, None, None
            return action

    def set_log_path(self, run_id: int, path: str | os.PathLike[str]) -> None:
        self._update_run(run_id, log_path=str(path))

    def log_path(self, run_id: int) -> Path:
        """Where the run's process writes its output: the recorded file of a detached run,
        else `run.log` in its checkpoint folder (which then need not exist)."""
        with self._read() as s:
            recorded = self._run_or_raise(s, run_id).log_path
        return Path(recorded) if recorded else self.checkpoint_dir(run_id) / "run.log"

    def live_runs(self) -> list[RunRecord]:
        """Queued, running and paused runs whose owner is alive (a fresh heartbeat from a
        process that exists), oldest first: what the app follows."""
        with self._read() as s:
            now = self._now(s)
            ids = [
                r.id
                for r in s.scalars(
                    select(Run).where(Run.status.in_(OWNED_STATUSES)).order_by(Run.id)
                )
                if self._lease_live(r, now)
            ]
        return [self.get_run(i) for i in ids]

    def live_rows(
        self, after_id: int = 0, ids: Iterable[int] = ()
    ) -> list[tuple[int, str, int, float | None, float | None, int, int | None]]:
        """The browser's cheap refresh, on any database: (id, status, step, heartbeat_at,
        ended_at, attempt, latest step of a `val_*` metric) of runs with an id above `after_id`,
        queued/running/paused runs, and the runs `ids` (those that were live: they may just
        have ended). One query on the runs and summary tables."""
        t = RunSummary.__table__
        val_step = (
            select(func.max(t.c.latest_step))
            .where(t.c.run_id == Run.id, t.c.name.like("val\\_%", escape="\\"))
            .scalar_subquery()
        )
        cond = [Run.id > after_id, Run.status.in_(OWNED_STATUSES)]
        wanted = [int(i) for i in ids]
        if wanted:
            cond.append(Run.id.in_(wanted))
        q = select(
            Run.id, Run.status, Run.step, Run.heartbeat_at, Run.ended_at, Run.attempt, val_step
        ).where(or_(*cond))
        with self._read() as s:
            return [tuple(r) for r in _fetch_raw(s.connection(), q)]  # type: ignore[misc]

    def running_here(self, besides: int | None = None) -> int:
        """How many runs other than `besides` processes of this host are training now (live
        leases, status running): the runs that share this machine's cores."""
        host = socket.gethostname()
        with self._read() as s:
            now = self._now(s)
            runs = s.scalars(select(Run).where(Run.status == "running", Run.id != (besides or 0)))
            return sum(
                1
                for r in runs
                if (r.owner or "").partition(":")[0] == host and self._lease_live(r, now)
            )

    def points_after(
        self, run_id: int, after_id: int = 0
    ) -> list[tuple[int, int, str, float | None, float]]:
        """(point id, step, name, value, wall_time) of the run's current points with an id
        above `after_id`, by id: a follower in another process reads only what is new."""
        m = Metric.__table__
        q = (
            select(m.c.id, m.c.step, m.c.name, m.c.value, m.c.wall_time)
            .where(m.c.run_id == run_id, m.c.id > after_id, m.c.superseded.is_(False))
            .order_by(m.c.id)
        )
        with self._read() as s:
            return [tuple(r) for r in _fetch_raw(s.connection(), q)]  # type: ignore[misc]

    def _owned(self, s: Session, run_id: int, owner: str | None) -> None:
        """Inside a write transaction: raise LeaseLost unless `owner` holds the run (None: the
        caller does not use leases, as the plain API and tests)."""
        if owner is None:
            return
        if s.scalar(select(Run.owner).where(Run.id == run_id).with_for_update()) != owner:
            self._lost(s, run_id, owner)

    def _lost(self, s: Session, run_id: int, owner: str) -> None:
        row = s.execute(select(Run.status, Run.owner).where(Run.id == run_id)).first()
        if row is None:
            raise LeaseLost(f"run {run_id} was deleted from the catalog")
        status, holder = row
        who = f"; {describe_owner(holder)} holds it now" if holder else ""
        raise LeaseLost(f"this process no longer owns run {run_id} (it is {status}{who})")

    def attempts(self, run_id: int) -> list[dict[str, Any]]:
        """The run's attempts, oldest first: number, owner, host, pid, started_at, ended_at,
        start_step, end_step, status, error."""
        cols = [c for c in Attempt.__table__.c if c.name not in ("id", "run_id")]
        with self._read() as s:
            rows = s.execute(
                select(*cols).where(Attempt.run_id == run_id).order_by(Attempt.number, Attempt.id)
            )
            return [dict(r._mapping) for r in rows]

    def _close_attempt(
        self, s: Session, run_id: int, status: str, step: int | None, error: str | None, at: Any
    ) -> None:
        values: dict[str, Any] = {"ended_at": at, "status": status, "error": error}
        if step is not None:
            values["end_step"] = step
        s.execute(
            update(Attempt)
            .where(Attempt.run_id == run_id, Attempt.ended_at.is_(None))
            .values(**values)
            .execution_options(synchronize_session=False)
        )

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
        owner: str | None = None,
    ) -> int:
        """Mark a run running (what `CatalogListener.on_start` calls) and return the attempt
        number its metrics belong to. The first start of a run is attempt 1; any later start
        (a resume, or a restart) is a new attempt via the `begin_attempt` logic. Each start
        gets its row in `attempts`. With `owner`, only the lease holder may start it."""
        env = {**base_environment(), **(environment or {})}
        with self._write() as s:
            run = self._run_or_raise(s, run_id, lock=True)
            now = self._now(s)
            self._owned(s, run_id, owner)
            self._close_attempt(s, run_id, "interrupted", None, None, now)  # a left-over one
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
            s.add(
                Attempt(
                    run_id=run_id, number=attempt, owner=owner, host=env.get("host"),
                    pid=os.getpid(), started_at=now, start_step=start_step, status="running",
                )
            )  # fmt: skip
            return attempt

    def begin_attempt(self, run_id: int, resume_step: int) -> int:
        """Start a new attempt of a run resumed at `resume_step` and return its number: points
        of earlier attempts past `resume_step` are marked superseded (kept, not deleted), the
        summary is rebuilt from the remaining points, and the run is set running.
        (`CatalogListener.on_start` does this itself on a resume.)"""
        with self._write() as s:
            run = self._run_or_raise(s, run_id, lock=True)
            return self._begin_attempt(s, run, resume_step)

    def _begin_attempt(self, s: Session, run: Run, resume_step: int) -> int:
        now = self._now(s)
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
        """Recompute one run's summary rows from its current (non-superseded) points. Plain SQL
        both databases run: the latest point is the one with the highest id, the best the
        first (lowest id) of the lowest or highest value."""
        m = Metric.__table__
        live = (m.c.run_id == run_id) & (m.c.superseded.is_(False))
        s.execute(delete(RunSummary).where(RunSummary.run_id == run_id))
        per_name = (
            select(m.c.name, func.max(m.c.id).label("last_id"), func.count().label("n"))
            .where(live)
            .group_by(m.c.name)
            .subquery()
        )
        latest = {
            r[0]: r
            for r in s.execute(
                select(m.c.name, m.c.step, m.c.value, m.c.wall_time, per_name.c.n).join(
                    per_name, m.c.id == per_name.c.last_id
                )
            )
        }
        if not latest:
            return
        best: dict[str, tuple[Any, Any]] = {}
        for is_lower in (True, False):
            names = [n for n in latest if lower_is_better(n) == is_lower]
            if not names:
                continue
            order = m.c.value.asc() if is_lower else m.c.value.desc()
            ranked = (
                select(
                    m.c.name,
                    m.c.step,
                    m.c.value,
                    func.row_number()
                    .over(partition_by=m.c.name, order_by=(order, m.c.id))
                    .label("rank"),
                )
                .where(live, m.c.value.is_not(None), m.c.name.in_(names))
                .subquery()
            )
            for name, step, value in s.execute(
                select(ranked.c.name, ranked.c.step, ranked.c.value).where(ranked.c.rank == 1)
            ):
                best[name] = (step, value)
        rows = []
        for name, r in latest.items():
            best_step, best_value = best.get(name, (None, None))
            rows.append(
                {
                    "run_id": run_id, "name": name, "latest_value": r[2], "latest_step": r[1],
                    "latest_wall_time": r[3], "best_value": best_value,
                    "best_step": best_step if best_value is not None else None, "count": r[4],
                }
            )  # fmt: skip
        s.execute(insert(RunSummary.__table__), rows)

    def finish_run(
        self,
        run_id: int,
        status: str,
        *,
        step: int | None = None,
        error: str | None = None,
        owner: str | None = None,
    ) -> None:
        """Set the final status (finished/failed/cancelled/interrupted), error and ended_at,
        close the open attempt and give up the lease (`owner`: only its holder may)."""
        check_status(status)
        values: dict[str, Any] = {"status": status, "error": error, "owner": None}
        if step is not None:
            values["step"] = step
        with self._write() as s:
            self._owned(s, run_id, owner)
            values["ended_at"] = now = self._now(s)
            if s.execute(update(Run).where(Run.id == run_id).values(**values)).rowcount == 0:
                raise UnknownRunError(run_id)
            self._close_attempt(s, run_id, status, step, error, now)

    def heartbeat(self, run_id: int, owner: str | None = None) -> None:
        """Record that the run's process is alive (with `owner`: `renew` its lease). A run
        already marked interrupted is never revived: its process lost it and must stop."""
        if owner is not None:
            self.renew(run_id, owner)
            return
        self._update_run(run_id, _now=["heartbeat_at"])

    def mark_stale_interrupted(self, threshold_s: float = HEARTBEAT_STALE_S) -> list[int]:
        """Mark runs whose owner stopped beating for `threshold_s` seconds interrupted (live
        runs; queued runs that have an owner, such as a CLI process killed while starting or
        an app's queue) and return their ids. Their leases end, so a process that was only
        suspended finds its run taken away (LeaseLost) and stops writing."""
        last = func.coalesce(Run.heartbeat_at, Run.started_at, Run.created_at)
        ownable = or_(
            Run.status.in_(LIVE_STATUSES), (Run.status == "queued") & Run.owner.is_not(None)
        )
        owned = select(Run.id, Run.owner).where(
            Run.status.in_(OWNED_STATUSES), Run.owner.like(socket.gethostname() + ":%")
        )
        with self._read() as s:  # the common case takes no write lock
            now = self._now(s)
            dead = {rid: owner for rid, owner in s.execute(owned) if owner_dead(owner)}
            stale = select(Run.id).where(ownable, last < now - threshold_s)
            if s.scalar(stale.limit(1)) is None and not dead:
                return []
        with self._write() as s:
            now = self._now(s)
            stale = select(Run.id).where(ownable, last < now - threshold_s)
            cands = sorted({*dead, *s.scalars(stale)})
            # lock the candidates, then decide on what they hold now: a run renewed or taken
            # over by a live process meanwhile is left alone
            locked = s.execute(
                select(Run.id, Run.status, last, Run.owner)
                .where(Run.id.in_(cands))
                .order_by(Run.id)
                .with_for_update()
            ).all()
            rows = [
                (rid, status, at)
                for rid, status, at, owner in locked
                if (status in LIVE_STATUSES or (status == "queued" and owner is not None))
                and (at < now - threshold_s or (rid in dead and dead[rid] == owner))
            ]
            ids = [r[0] for r in rows]
            with_ckpt = set(
                s.scalars(
                    select(Checkpoint.run_id).where(
                        Checkpoint.run_id.in_(ids), Checkpoint.state == "ready"
                    )
                )
            )
            for rid, status, at in rows:
                how = "while it waited to start" if status == "queued" else ""
                resume = (
                    "resume it from its last checkpoint"
                    if rid in with_ckpt
                    else "it has no checkpoint: resuming starts it from step 0"
                )
                error = (
                    f"no heartbeat for more than {threshold_s:g} s or its process is gone: the "
                    f"process running it stopped {how + ' ' if how else ''}(crash, kill or "
                    f"power loss); {resume}"
                )
                s.execute(
                    update(Run)
                    .where(Run.id == rid)
                    .values(status="interrupted", ended_at=at, error=error, owner=None)
                )
                self._close_attempt(s, rid, "interrupted", None, error, at)
            return ids

    # ---- metrics ----
    def add_metrics(
        self,
        run_id: int,
        points: Sequence[MetricPoint],
        attempt: int | None = None,
        owner: str | None = None,
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
            self._owned(s, run_id, owner)
            if attempt is None:
                attempt = s.scalar(select(Run.attempt).where(Run.id == run_id).with_for_update())
                if attempt is None:
                    raise UnknownRunError(run_id)
            conn = s.connection()
            # plain tuples through the driver: several times cheaper per point than Core's
            # dict-per-row executemany, and this runs for every point of every run
            conn.exec_driver_sql(
                self._backend.metrics_insert_sql,
                [(run_id, attempt, st, n, _finite(v), w) for st, n, v, w in points],
            )
            lower = [n for n in agg if lower_is_better(n)]
            higher = [n for n in agg if not lower_is_better(n)]
            for names, is_lower in ((lower, True), (higher, False)):
                if names:
                    conn.execute(
                        _summary_upsert(self._backend.upsert_insert, is_lower),
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
            "metrics_json": json.dumps(metrics or {}, sort_keys=True),
        }  # fmt: skip
        with self._write() as s:
            self._run_or_raise(s, run_id, lock=True)
            values["created_at"] = self._now(s)
            existing = s.scalars(
                select(Checkpoint).where(
                    Checkpoint.run_id == run_id, Checkpoint.path.in_(self._path_forms(path))
                )
            ).first()
            if existing is not None:
                for k, v in values.items():
                    setattr(existing, k, v)
                return existing.id
            ck = Checkpoint(run_id=run_id, path=self._stored(path), **values)
            s.add(ck)
            s.flush()
            return ck.id

    def prepare_checkpoint(
        self,
        run_id: int,
        step: int,
        kind: Literal["periodic", "best", "final", "stop"],
        path: str | os.PathLike[str],
        temp_path: str | os.PathLike[str],
        bytes: int,
        sha256: str,
        metrics: dict[str, float] | None = None,
        owner: str | None = None,
    ) -> int:
        """Phase one of a checkpoint: a "pending" row for a complete temporary file that is
        about to be renamed to `path`. No reader takes a pending row; `commit_checkpoint`
        makes it usable once the file is in place, and `repair` finishes or undoes it if the
        process dies in between."""
        if kind not in CHECKPOINT_KINDS:
            raise ValueError(
                f"unknown checkpoint kind {kind!r}; expected one of {CHECKPOINT_KINDS}"
            )
        with self._write() as s:
            self._run_or_raise(s, run_id)
            self._owned(s, run_id, owner)
            ck = Checkpoint(
                run_id=run_id, step=step, kind=kind, path=self._stored(path), bytes=bytes, sha256=sha256,
                metrics_json=json.dumps(metrics or {}, sort_keys=True), created_at=self._now(s),
                state="pending", temp_path=self._stored(temp_path),
            )  # fmt: skip
            s.add(ck)
            s.flush()
            return ck.id

    def commit_checkpoint(
        self, checkpoint_id: int, keep: int, owner: str | None = None
    ) -> list[str]:
        """Phase two: the file is in place, so its row becomes "ready" (replacing any older row
        for the same path). Then the run's ready checkpoints of that kind beyond the newest
        `keep` are retired: rows deleted first, files after, so a listed checkpoint always has
        its file. Returns the retired paths."""
        with self._write() as s:
            ck = s.get(Checkpoint, checkpoint_id)
            if ck is None:
                raise KeyError(f"no checkpoint {checkpoint_id}")
            self._owned(s, ck.run_id, owner)
            s.execute(
                delete(Checkpoint).where(
                    Checkpoint.path.in_(self._path_forms(self._absolute(ck.path))),
                    Checkpoint.id != ck.id,
                    Checkpoint.run_id == ck.run_id,
                )
            )
            ck.state, ck.temp_path = "ready", None
            run_id, kind = ck.run_id, ck.kind
        fault_point("ckpt.committed")
        with self._write() as s:
            self._owned(s, run_id, owner)
            rows = s.execute(
                select(Checkpoint.id, Checkpoint.path)
                .where(
                    Checkpoint.run_id == run_id,
                    Checkpoint.kind == kind,
                    Checkpoint.state == "ready",
                )
                .order_by(Checkpoint.step.desc(), Checkpoint.id.desc())
            ).all()
            old = [(i, self._absolute(p)) for i, p in rows[max(keep, 1) :]]
            if old:
                s.execute(delete(Checkpoint).where(Checkpoint.id.in_([r[0] for r in old])))
        fault_point("ckpt.retired")
        for _, p in old:
            _unlink(p)
        return [p for _, p in old]

    def repair(self, run_ids: Iterable[int] | None = None) -> list[str]:
        """Finish or undo what a killed process left half done, for runs no live owner holds:
        a pending checkpoint whose file (or temporary file) is complete (sha256) becomes ready,
        other pending rows go; temporary files and files no row lists (retired, not yet
        unlinked) in those runs' folders are deleted. Files older than their run are left
        alone: they belong to a deleted catalog's run of the same id. Returns what it did."""
        done: list[str] = []
        with self._read() as s:
            now = self._now(s)
            q = select(Run).where(
                or_(
                    Run.status.in_(("interrupted", *OWNED_STATUSES)),
                    Run.id.in_(select(Checkpoint.run_id).where(Checkpoint.state == "pending")),
                )
            )
            if run_ids is not None:
                q = q.where(Run.id.in_(list(run_ids)))
            runs = [(r.id, r.created_at) for r in s.scalars(q) if not self._lease_live(r, now)]
            if not runs:
                return done
            ids = [r[0] for r in runs]
            pending = s.execute(
                select(
                    Checkpoint.id, Checkpoint.path, Checkpoint.temp_path, Checkpoint.sha256
                ).where(Checkpoint.run_id.in_(ids), Checkpoint.state == "pending")
            ).all()
            pending = [
                (i, self._absolute(p), self._absolute(t) if t else None, sha)
                for i, p, t, sha in pending
            ]
            known = {
                self._absolute(p)
                for p in s.scalars(select(Checkpoint.path).where(Checkpoint.run_id.in_(ids)))
            }
        for ck_id, path, temp, sha in pending:
            state = "gone"
            if complete(path, sha):
                state = "ready"
            elif temp and complete(temp, sha):
                os.replace(temp, path)
                fsync_dir(Path(path).parent)
                state = "ready"
            with self._write() as s:
                if state == "ready":
                    s.execute(
                        update(Checkpoint)
                        .where(Checkpoint.id == ck_id)
                        .values(state="ready", temp_path=None)
                    )
                else:
                    s.execute(delete(Checkpoint).where(Checkpoint.id == ck_id))
                    known.discard(path)
            done.append(f"{state}: {path}")
        for rid, created in runs:
            folder = self.checkpoint_dir(rid)
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                if not e.is_file() or str(folder / e.name) in known:
                    continue
                leftover = e.name.startswith(".tmp-") or e.name.endswith(".pt")
                if leftover and e.stat().st_mtime >= created - 1.0:
                    _unlink(folder / e.name)
                    done.append(f"removed: {folder / e.name}")
        return done

    def remove_checkpoint(self, path: str | os.PathLike[str], *, delete_file: bool = False) -> bool:
        """Forget the checkpoint at `path` (and delete the file if asked); False if unknown."""
        with self._write() as s:
            n = s.execute(
                delete(Checkpoint).where(Checkpoint.path.in_(self._path_forms(path)))
            ).rowcount
        if delete_file:
            Path(path).unlink(missing_ok=True)
        return n > 0

    def checkpoints(self, run_id: int) -> list[CheckpointRecord]:
        """The run's usable checkpoints (complete files) by step."""
        with self._read() as s:
            rows = s.scalars(
                select(Checkpoint)
                .where(Checkpoint.run_id == run_id, Checkpoint.state == "ready")
                .order_by(Checkpoint.step, Checkpoint.id)
            )
            return [_checkpoint_record(c, self._absolute(c.path)) for c in rows]

    def checkpoint(
        self, run_id: int, which: Literal["best", "final", "latest"] | int = "latest"
    ) -> CheckpointRecord | None:
        """The "best" or "final" checkpoint, the "latest" by step, or the one at a given step."""
        q = select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.state == "ready")
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
            return None if c is None else _checkpoint_record(c, self._absolute(c.path))

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
        episode_scores: Sequence[float] | None = None,
    ) -> int:
        """Store an evaluation and return its id. Its checkpoint is looked up by step when no id
        is given. The summary gets `<split>_<metric>` and `<split>_<metric>_ci95` so that run
        lists can show, e.g., test accuracy without touching this table. `episode_scores`:
        the metric of each of the `episodes` episodes (kept for a histogram and the CI)."""
        if episode_scores is not None and len(episode_scores) != episodes:
            raise ValueError(
                f"{len(episode_scores)} per-episode scores given for {episodes} episodes"
            )
        scores_json = None if episode_scores is None else encode_scores(episode_scores)
        with self._write() as s:
            self._run_or_raise(s, run_id, lock=True)
            now = self._now(s)
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
                episode_scores_json=scores_json,
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
                    self._backend.upsert_insert(RunSummary.__table__)
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


def _summary_upsert(upsert_insert: Any, is_lower: bool) -> Any:
    """INSERT .. ON CONFLICT for a batch aggregate: latest from the batch, best combined, count
    added (`upsert_insert`: the database's insert that has `on_conflict_do_update`)."""
    t = RunSummary.__table__
    stmt = upsert_insert(t)
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


def _unlink(path: str | os.PathLike[str]) -> None:
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        pass
