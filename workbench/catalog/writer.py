"""`CatalogListener`: the Trainer listener that records a run in the catalog.

The training thread only appends events to a deque (well under a microsecond per `on_step`).
A writer thread drains it at least every `flush_s` seconds (sooner once `max_batch` events
wait) and commits each batch, points plus summary rows, in one short transaction. A
heartbeat thread stamps the run every `HEARTBEAT_S` seconds from `on_start` until the run
ends, paused or evaluating included. Everything after `on_start` goes through the queue, so
the database sees events in the order the Trainer sent them.
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

from workbench.catalog.store import HEARTBEAT_S, Catalog, MetricPoint
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

log = logging.getLogger(__name__)

_Op = tuple[str, Callable[[], Any]]  # (description, call)


class CatalogListener(Listener):
    """Records one run: status, environment, every metric point, checkpoints, evaluations.

    `catalog` is a `Catalog` (shared, not closed here) or a database path (opened and closed
    here). Call `close()` (idempotent; also run at interpreter exit) if the run may end without
    `on_finish`: the run is then marked "interrupted".
    """

    def __init__(
        self,
        catalog: Catalog | str | os.PathLike[str],
        run_id: int,
        *,
        flush_s: float = 0.5,
        max_batch: int = 2000,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        if isinstance(catalog, Catalog):
            self.catalog, self._owns_catalog = catalog, False
        else:
            self.catalog, self._owns_catalog = Catalog.open(catalog), True
        if not self.catalog.has_run(run_id):
            if self._owns_catalog:
                self.catalog.close()
            raise KeyError(f"no run {run_id} in {self.catalog.path}")
        self.run_id = run_id
        self.flush_s = flush_s
        self.max_batch = max_batch
        self.heartbeat_s = heartbeat_s
        self.attempt: int | None = None
        self.errors: list[str] = []  # write failures, newest last (also logged)
        self.points_written = 0
        self.last_commit_at: float | None = None
        self._status: Status = "running"
        self._pending: deque[StepMetrics | list[MetricPoint] | _Op] = deque()
        self._backlog: list[list[MetricPoint] | _Op] = []  # jobs a locked database made wait
        self._drain_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._finished = False
        self._closed = False
        self._writer = threading.Thread(
            target=self._write_loop, name=f"catalog-writer-{run_id}", daemon=True
        )
        self._writer.start()
        atexit.register(self.close)

    # ---- Listener ----
    def on_start(self, event: RunStarted) -> None:
        self.attempt = self.catalog.start_run(
            self.run_id,
            start_step=event.start_step,
            total_steps=event.total_steps,
            device=event.device,
            device_name=event.device_name,
            environment=event.environment,
        )
        self._status = "running"
        if self._hb_thread is None:
            self._hb_thread = threading.Thread(
                target=self._beat_loop, name=f"catalog-heartbeat-{self.run_id}", daemon=True
            )
            self._hb_thread.start()

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
        self._op(
            f"checkpoint {event.path}",
            lambda: self.catalog.add_checkpoint(
                self.run_id,
                event.step,
                event.kind,
                event.path,
                event.bytes,
                event.sha256,
                dict(event.metrics),
            ),
        )

    def on_checkpoint_removed(self, event: CheckpointRemoved) -> None:
        self._op(
            f"remove checkpoint {event.path}", lambda: self.catalog.remove_checkpoint(event.path)
        )

    def on_status(self, status: Status) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        self._status = status
        self._op(f"status {status}", lambda: self.catalog.set_status(self.run_id, status))

    def on_finish(self, event: RunFinished) -> None:
        # event.test repeats the test result the Trainer already announced through on_eval
        self._stop_heartbeat()
        self._finished = True
        self._op(
            f"finish {event.status}",
            lambda: self.catalog.finish_run(
                self.run_id, event.status, step=event.step, error=event.error
            ),
        )
        self.close()

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
        if not self._finished:
            self._op(
                "interrupted",
                lambda: self.catalog.finish_run(
                    self.run_id,
                    "interrupted",
                    error="the process stopped recording before the run finished",
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
        )  # fmt: skip

    def _stop_heartbeat(self) -> None:
        self._hb_stop.set()
        t = self._hb_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)

    def _beat_loop(self) -> None:
        while not self._hb_stop.wait(self.heartbeat_s):
            try:
                self.catalog.heartbeat(self.run_id, live_status=self._status)
            except Exception as exc:  # a missed beat is not fatal; the next one may work
                log.warning("catalog heartbeat of run %s failed: %s", self.run_id, exc)

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
            for i, job in enumerate(jobs):
                try:
                    if isinstance(job, list):
                        self.catalog.add_metrics(self.run_id, job, attempt=self.attempt)
                        self.points_written += len(job)
                    else:
                        job[1]()
                    self.last_commit_at = time.time()
                except OperationalError as exc:  # e.g. locked past busy_timeout: retry later
                    self._fail(f"catalog write delayed ({exc.orig}); will retry")
                    if final:
                        lost = sum(len(j) if isinstance(j, list) else 1 for j in jobs[i:])
                        self._fail(f"catalog gave up on {lost} queued items of run {self.run_id}")
                    else:
                        self._backlog = jobs[i:]
                    return
                except Exception as exc:
                    what = f"{len(job)} metric points" if isinstance(job, list) else job[0]
                    self._fail(f"catalog could not record {what} of run {self.run_id}: {exc!r}")

    def _fail(self, message: str) -> None:
        log.error(message)
        self.errors.append(message)
        del self.errors[:-20]
