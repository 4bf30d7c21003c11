"""`CatalogListener`: the Trainer listener that records a run in the catalog, and the run's
checkpoint store.

The training thread only appends events to a deque (well under a microsecond per `on_step`).
A writer thread drains it at least every `flush_s` seconds (sooner once `max_batch` events
wait) and commits each batch, points plus summary rows, in one short transaction; the start of
the run goes through the same queue, so a catalog that is briefly busy never holds training up.

Ownership: the listener holds the run's lease (`Catalog.claim`, or the lease its creator took
and handed over as `owner`) from construction to the end, renewing it every `heartbeat_s`
seconds, and every write carries it. A listener that loses its lease (the run was marked
interrupted while this process hung, or another process took it) stops the Trainer: it never
writes again.

Faults: a busy or locked database is retried; points wait in memory up to `max_buffer`, then
the run pauses until they are written. A full disk, an I/O error or a read-only file pauses
the run at once with the reason and the folder, keeps everything queued, and resumes it when a
write goes through again. A catalog file deleted or replaced during the run stops it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import OperationalError

from workbench.catalog.errors import CatalogError, LeaseLost
from workbench.catalog.store import (
    HEARTBEAT_S,
    Catalog,
    CheckpointRecord,
    MetricPoint,
    new_owner,
    retry_busy,
    sqlite_error_code,
)
from workbench.core.cores import thread_share
from workbench.core.events import (
    STATUSES,
    CheckpointRemoved,
    CheckpointSaved,
    EvalResult,
    Listener,
    RunFinished,
    RunStarted,
    Status,
    StepMetrics,
)
from workbench.core.faults import fault_point
from workbench.files import free_space

log = logging.getLogger(__name__)

_Op = tuple[str, Callable[[], Any]]  # (description, call)
BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED: another process holds the lock
STORAGE_CODES = (8, 10, 13, 14)  # READONLY, IOERR, FULL, CANTOPEN: the file cannot grow
RETRY_S = 2.0
REQUEST_POLL_S = 0.5  # how soon a pause/resume/stop asked through the catalog is taken
"""How often a run paused by the catalog's storage tries again."""


def storage_reason(exc: BaseException, folder: os.PathLike[str] | str) -> str:
    """One line naming what is wrong with the catalog's storage and where, from SQLite's result
    code, e.g. "disk full: 3 MB free in /data"."""
    code = sqlite_error_code(exc)
    if code == 13:  # SQLITE_FULL
        return f"disk full: {free_space(folder)}"
    if code == 8:  # SQLITE_READONLY
        return f"storage is read-only or not writable: {folder}"
    return f"storage error ({getattr(exc, 'orig', exc)}): {free_space(folder)}"


class CatalogListener(Listener):
    """Records one run: status, environment, every metric point, checkpoints, evaluations.

    `catalog` is a `Catalog` (shared, not closed here) or a database path (opened and closed
    here). `owner`: a lease token the caller already holds for this run (the app's queue, the
    CLI that created the run); without one the listener claims the run itself and raises
    `RunBusyError` if a live process owns it. Call `close()` (idempotent; also run at
    interpreter exit) if the run may end without `on_finish`: the run is then marked
    "interrupted".
    """

    def __init__(
        self,
        catalog: Catalog | str | os.PathLike[str],
        run_id: int,
        *,
        owner: str | None = None,
        prior_status: str | None = None,
        flush_s: float = 0.5,
        max_batch: int = 2000,
        max_buffer: int = 500_000,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        if isinstance(catalog, Catalog):
            self.catalog, self._owns_catalog = catalog, False
        else:
            self.catalog, self._owns_catalog = Catalog.open(catalog), True
        try:
            prior = self.catalog.get_run(run_id)
            if owner is None:
                owner = new_owner()
                retry_busy(lambda: self.catalog.claim(run_id, owner))
            else:
                retry_busy(lambda: self.catalog.renew(run_id, owner))
        except BaseException:
            if self._owns_catalog:
                self.catalog.close()
            raise
        self.run_id = run_id
        self.owner = owner
        # the status before this attempt was claimed: a resume that fails before it starts
        # gives it back (the run keeps its history)
        self.prior_status = prior_status or prior.status
        self.flush_s = flush_s
        self.max_batch = max_batch
        self.max_buffer = max_buffer
        self.heartbeat_s = heartbeat_s
        self.attempt: int | None = None
        self.errors: list[str] = []  # write failures, newest last (also logged)
        self.points_written = 0
        self.last_commit_at: float | None = None
        self.stopped: str | None = None  # why this listener stopped the run (lease, file gone)
        self.control: Any = None  # the Trainer (pause/resume/abort), set by `attach`
        self._held: str | None = None  # why this listener paused the run
        self._delayed = False  # a write failed on a busy or unreachable catalog, not retried yet
        self._started = False
        self._status: Status = "running"
        self._pending: deque[StepMetrics | list[MetricPoint] | _Op] = deque()
        self._backlog: list[list[MetricPoint] | _Op] = []  # jobs a failed write made wait
        self._drain_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._hb_stop = threading.Event()
        self._finished = False
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, name=f"catalog-writer-{run_id}", daemon=True
        )
        self._writer.start()
        self._hb_thread = threading.Thread(
            target=self._beat_loop, name=f"catalog-heartbeat-{run_id}", daemon=True
        )
        self._hb_thread.start()
        atexit.register(self.close)

    # ---- Listener ----
    def attach(self, control: Any) -> None:
        self.control = control

    def on_start(self, event: RunStarted) -> None:
        """Mark the run started now; if the catalog cannot take it at once (busy, full), the
        start waits in the queue like any write and training goes on."""
        self._started = True
        self._status = "running"
        if not self._pending and not self._backlog:
            try:
                with self._drain_lock:
                    self._start(event)
                return
            except OperationalError as exc:
                if sqlite_error_code(exc) not in (*BUSY_CODES, *STORAGE_CODES, None):
                    raise
        self._op("start", lambda: self._start(event))

    def _start(self, event: RunStarted) -> None:
        self.attempt = self.catalog.start_run(
            self.run_id,
            start_step=event.start_step,
            total_steps=event.total_steps,
            device=event.device,
            device_name=event.device_name,
            environment=event.environment,
            owner=self.owner,
        )
        fault_point("run.started")

    def on_step(self, event: StepMetrics) -> None:
        pending = self._pending
        pending.append(event)
        if len(pending) >= self.max_batch:
            self._wake.set()

    def on_eval(self, event: EvalResult) -> None:
        if event.split == "test":
            self._op("test evaluation", lambda: self._add_evaluation(event))
            return
        now = time.time()
        prefix = f"{event.split}_"
        points: list[MetricPoint] = [
            (event.step, f"{prefix}{event.metric}", event.mean, now),
            (event.step, f"{prefix}{event.metric}_ci95", event.ci95, now),
        ]
        points += [(event.step, f"{prefix}{k}", v, now) for k, v in event.values.items()]
        self._pending.append(points)

    def on_checkpoint(self, event: CheckpointSaved) -> None:
        """Already recorded: the Trainer wrote it through `prepare`/`commit`."""

    def on_checkpoint_removed(self, event: CheckpointRemoved) -> None:
        """Already done: `commit` retired it (row first, then file)."""

    def on_status(self, status: Status, reason: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        self._status = status
        self._op(
            f"status {status}",
            lambda: self.catalog.set_status(self.run_id, status, reason, owner=self.owner),
        )

    def on_finish(self, event: RunFinished) -> None:
        # event.test repeats the test result the Trainer already announced through on_eval
        self._stop_heartbeat()
        self._finished = True
        if self.stopped is None:
            if self._started:
                self._op(
                    f"finish {event.status}",
                    lambda: self.catalog.finish_run(
                        self.run_id, event.status, step=event.step, error=event.error,
                        owner=self.owner,
                    ),
                )  # fmt: skip
            else:  # it never started (e.g. a resume whose checkpoint does not fit): the run
                # keeps its history, step and status; only the reason is recorded
                status, error = event.status, event.error
                if self.prior_status in ("interrupted", "cancelled", "failed", "finished"):
                    status, error = self.prior_status, f"resume failed: {event.error}"
                self._op(
                    f"finish {status}",
                    lambda: self.catalog.finish_run(
                        self.run_id, status, error=error, owner=self.owner
                    ),
                )
        self.close()

    # ---- the checkpoint store (two phases, see Catalog.prepare_checkpoint) ----
    def prepare(
        self,
        step: int,
        kind: str,
        path: str,
        temp_path: str,
        size: int,
        sha256: str,
        metrics: dict[str, float],
    ) -> int:
        """Record a pending checkpoint, after everything queued before it (the metrics up to
        its step) is committed, so no resume from it can find a gap before its step. Blocks
        the training thread while the catalog cannot write."""
        self.flush()
        while self._backlog and self.stopped is None:
            time.sleep(0.05)
            self.flush()
        return self._retrying(
            f"checkpoint {path}",
            lambda: self.catalog.prepare_checkpoint(
                self.run_id, step, kind, path, temp_path, size, sha256, metrics,  # type: ignore[arg-type]
                owner=self.owner,
            ),
        )  # fmt: skip

    def commit(self, token: int, keep: int) -> list[str]:
        return self._retrying(
            "checkpoint commit",
            lambda: self.catalog.commit_checkpoint(token, keep, owner=self.owner),
        )

    def newest(self, kind: str) -> CheckpointRecord | None:
        return self.catalog.checkpoint(self.run_id, kind)  # type: ignore[arg-type]

    # ---- control ----
    def flush(self) -> None:
        """Write everything queued so far, on the calling thread."""
        self._drain()

    def close(self) -> None:
        """Flush, stop the threads, close an owned catalog (idempotent). Without a preceding
        `on_finish` the run is marked interrupted."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        self._stop_heartbeat()
        if not self._finished and self.stopped is None:
            self._op(
                "interrupted",
                lambda: self.catalog.finish_run(
                    self.run_id,
                    "interrupted",
                    error="the process stopped recording before the run finished",
                    owner=self.owner,
                ),
            )
        self._stop.set()
        self._wake.set()
        self._writer.join(timeout=60)
        self._drain(final=True)
        if self._owns_catalog:
            self.catalog.close()

    def __enter__(self) -> CatalogListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- internals ----
    def _op(self, what: str, call: Callable[[], Any]) -> None:
        self._pending.append((what, call))
        self._wake.set()

    def _add_evaluation(self, e: EvalResult) -> None:
        self.catalog.add_evaluation(
            self.run_id, e.split, e.metric, e.mean, e.ci95, e.episodes, values=dict(e.values),
            protocol=dict(e.protocol), checkpoint_step=e.checkpoint_step,
            episode_scores=list(e.episode_scores) or None,
        )  # fmt: skip

    def _stop_heartbeat(self) -> None:
        self._hb_stop.set()
        t = self._hb_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)

    def _beat_loop(self) -> None:
        """Every REQUEST_POLL_S: take a control request another process left for this run
        (pause, resume, stop: `Catalog.request`); every heartbeat_s: renew the lease and set
        the run's share of this machine's cores (`thread_share`)."""
        failing = False
        next_beat = time.monotonic()
        while not self._hb_stop.wait(min(REQUEST_POLL_S, self.heartbeat_s)):
            try:
                self._take_request()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_s
                    self.catalog.renew(self.run_id, self.owner)
                    share = getattr(self.control, "share_threads", None)
                    if share is not None:
                        share(thread_share(self.catalog.running_here(besides=self.run_id) + 1))
                failing = False
            except LeaseLost as exc:
                self._abort(str(exc))
                return
            except Exception as exc:  # a missed beat is not fatal; the next one may work
                if not failing:  # once per streak, not every beat while the disk is full
                    log.warning("catalog heartbeat of run %s failed: %s", self.run_id, exc)
                failing = True

    def _take_request(self) -> None:
        """Honour a pause, resume or stop asked through the catalog, once, between steps:
        stop is the Trainer's cancel (a stop checkpoint, then cancelled), as Ctrl-C."""
        if self.control is None or self.catalog.pending_request(self.run_id) is None:
            return
        action = self.catalog.take_request(self.run_id, self.owner)
        log.info("run %s: %s requested through the catalog", self.run_id, action)
        if action == "pause":
            self.control.pause()
        elif action == "resume":
            self.control.resume()
        elif action == "stop":
            self.control.cancel()

    def _abort(self, why: str) -> None:
        """Stop the run for good: this process may no longer write it."""
        if self.stopped is None:
            self.stopped = why
            self._fail(why)
            if self.control is not None:
                self.control.abort(why)

    def _hold(self, why: str) -> None:
        if self._held != why:
            self._held = why
            self._fail(f"run {self.run_id} paused: {why}")
            if self.control is not None:
                self.control.hold("catalog", why)

    def _release(self) -> None:
        if self._held is not None:
            self._held = None
            if self.control is not None:
                self.control.release("catalog")

    def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        """Call until it goes through: busy is retried, a storage fault pauses the run and is
        retried every RETRY_S; a lost lease or a vanished file stops the run."""
        delay = 0.05
        while True:
            if self.stopped is not None:
                raise LeaseLost(self.stopped)
            try:
                self.catalog.check_file()
                out = call()
                self._release()
                return out
            except OperationalError as exc:
                code = sqlite_error_code(exc)
                if code in STORAGE_CODES:
                    self._storage_hold(exc)
                    time.sleep(RETRY_S)
                elif code in BUSY_CODES or code is None:
                    time.sleep(delay)
                    delay = min(2 * delay, 1.0)
                else:
                    raise
            except (LeaseLost, CatalogError) as exc:
                self._abort(str(exc))
                raise

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # never let the writer thread die silently
                log.exception("catalog writer of run %s failed", self.run_id)

    def _drain(self, final: bool = False) -> None:
        with self._drain_lock:
            jobs: list[list[MetricPoint] | _Op] = self._backlog
            self._backlog = []
            points: list[MetricPoint] = []
            pending = self._pending
            while pending:
                item = pending.popleft()
                if isinstance(item, StepMetrics):
                    step, wall = item.step, item.wall_time
                    points.extend((step, k, v, wall) for k, v in item.values.items())
                elif isinstance(item, list):
                    points.extend(item)
                else:
                    if points:
                        jobs.append(points)
                        points = []
                    jobs.append(item)
            if points:
                jobs.append(points)
            if not jobs or self.stopped is not None:
                return
            try:
                self.catalog.check_file()
            except CatalogError as exc:
                self._abort(str(exc))
                return
            for i, job in enumerate(jobs):
                try:
                    self._write_job(job)
                except OperationalError as exc:
                    code = sqlite_error_code(exc)
                    if code in STORAGE_CODES:
                        self._storage_hold(exc)
                    elif code not in BUSY_CODES and code is not None:
                        what = f"{len(job)} metric points" if isinstance(job, list) else job[0]
                        self._fail(f"catalog could not record {what} of run {self.run_id}: {exc!r}")
                        continue
                    elif not self._delayed:  # once per outage, not once per try
                        self._delayed = True
                        reason = " ".join(str(exc.orig).split())
                        self._fail(f"catalog write delayed ({reason}); will retry, points kept")
                    waiting = jobs[i:]
                    if final:  # the process is ending: keep trying a while, then say what is lost
                        waiting = self._last_tries(waiting)
                        if waiting:
                            lost = sum(len(j) if isinstance(j, list) else 1 for j in waiting)
                            self._fail(
                                f"catalog gave up on {lost} queued items of run {self.run_id}"
                            )
                        return
                    self._backlog = waiting
                    size = sum(len(j) for j in waiting if isinstance(j, list)) + len(self._pending)
                    if size > self.max_buffer and self._held is None:
                        self._hold(f"catalog busy: {size} metric points wait to be written")
                    return
                except (LeaseLost, CatalogError) as exc:
                    self._abort(str(exc))
                    return
                except Exception as exc:
                    what = f"{len(job)} metric points" if isinstance(job, list) else job[0]
                    self._fail(f"catalog could not record {what} of run {self.run_id}: {exc!r}")
            if self._delayed:
                self._delayed = False
                log.warning(
                    "catalog reachable again: the delayed points of run %s are written", self.run_id
                )
            self._release()

    def _storage_hold(self, exc: BaseException) -> None:
        """Pause the run for a storage fault (full, read-only), naming the catalog's folder."""
        where = self.catalog.path.parent if self.catalog.path else self.catalog.checkpoint_root
        self._hold(storage_reason(exc, where))

    def _write_job(self, job: list[MetricPoint] | _Op) -> None:
        """One queued job in its own transaction: a batch of points (with this run's lease) or
        an operation."""
        if isinstance(job, list):
            self.catalog.add_metrics(self.run_id, job, attempt=self.attempt, owner=self.owner)
            self.points_written += len(job)
            fault_point("metrics.committed")
        else:
            job[1]()
        self.last_commit_at = time.time()

    def _last_tries(self, jobs: list[list[MetricPoint] | _Op]) -> list[list[MetricPoint] | _Op]:
        """At close: retry the waiting jobs for up to 30 s before giving up on them."""
        deadline = time.monotonic() + 30.0
        while jobs and time.monotonic() < deadline:
            time.sleep(0.2)
            job = jobs[0]
            try:
                self._write_job(job)
                jobs = jobs[1:]
            except OperationalError:
                continue
            except Exception as exc:
                self._fail(f"catalog could not record an item of run {self.run_id}: {exc!r}")
                jobs = jobs[1:]
        return jobs

    def _fail(self, message: str) -> None:
        log.error(message)
        self.errors.append(message)
        del self.errors[:-20]
