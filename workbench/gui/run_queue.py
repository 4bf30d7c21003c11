"""The run queue: configurations wait in the catalog as "queued" and train one after another
on a single worker thread. Entries can be reordered or removed; Pause/Resume/Stop act on the
running one within one step (Trainer flags)."""

from __future__ import annotations

from PySide6.QtCore import QObject, QThread, Signal

from workbench.api import resume_target
from workbench.catalog import Catalog, CheckpointRecord
from workbench.core.config import RunConfig
from workbench.core.events import RunFinished
from workbench.gui.worker import Job, RunSignals, TrainingWorker, start_in_thread


def run_name(config: RunConfig, seed: int, many: bool) -> str:
    base = config.name or f"{config.algorithm.name}-{config.dataset.name}"
    return f"{base}-s{seed}" if many or not config.name else base


class RunQueue(QObject):
    changed = Signal()  # the pending list or the current job changed
    jobStarted = Signal(int, object)  # run id, Job
    jobFinished = Signal(int, object)  # run id, RunFinished
    log = Signal(str, str)  # level ("info" | "error"), message

    def __init__(self, catalog: Catalog, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.signals = RunSignals(self)  # relays of the current worker's events
        self.pending: list[Job] = []
        self._prior_status: dict[int, str] = {}
        self.current: Job | None = None
        self.worker: TrainingWorker | None = None
        self.worker_thread: QThread | None = None
        self.paused = False
        self.shutting_down = False

    # ---- adding ----------------------------------------------------------------------
    def submit(self, config: RunConfig, seeds: list[int] | None = None) -> list[int]:
        """Create one queued catalog run per seed and queue them; returns their ids."""
        seeds = seeds or [config.seed]
        ids = []
        for seed in seeds:
            cfg = config.model_copy(
                update={"seed": seed, "name": run_name(config, seed, len(seeds) > 1)}
            )
            cfg = RunConfig.from_dict(cfg.to_dict())
            run_id = self.catalog.create_run_from_config(cfg, status="queued")
            self.pending.append(Job(run_id, cfg))
            ids.append(run_id)
        self.log.emit(
            "info", f"queued run{'s' if len(ids) > 1 else ''} {', '.join(f'#{i}' for i in ids)}"
        )
        self.changed.emit()
        self._maybe_start()
        return ids

    def resume(self, run_id: int, checkpoint: CheckpointRecord) -> None:
        """Queue run `run_id` to continue from `checkpoint`: the same run (a new attempt) from
        its latest checkpoint, a new child run from an older one (as `workbench resume` does)."""
        rec = self.catalog.get_run(run_id)
        cfg = RunConfig.from_json(rec.config_json)
        target = resume_target(self.catalog, run_id, checkpoint, cfg)
        if target == run_id:
            self._prior_status[run_id] = rec.status
            self.catalog.set_status(run_id, "queued")
        self.pending.append(Job(target, cfg, checkpoint))
        child = f" as child run #{target}" if target != run_id else ""
        self.log.emit(
            "info",
            f"queued resume of run #{run_id} from its step {checkpoint.step} checkpoint{child}",
        )
        self.changed.emit()
        self._maybe_start()

    # ---- editing the queue -----------------------------------------------------------
    def move(self, index: int, delta: int) -> None:
        j = index + delta
        if 0 <= index < len(self.pending) and 0 <= j < len(self.pending):
            self.pending[index], self.pending[j] = self.pending[j], self.pending[index]
            self.changed.emit()

    def remove(self, index: int) -> None:
        if not 0 <= index < len(self.pending):
            return
        job = self.pending.pop(index)
        self._discard(job, "removed from the queue")
        self.changed.emit()

    def _discard(self, job: Job, why: str) -> None:
        try:
            if job.checkpoint is None or job.run_id not in self._prior_status:
                self.catalog.delete_run(
                    job.run_id
                )  # it never ran (a new run or a child): nothing to keep
            else:
                self.catalog.set_status(job.run_id, self._prior_status.pop(job.run_id, "cancelled"))
            self.log.emit("info", f"run #{job.run_id} {why}")
        except Exception as exc:
            self.log.emit("error", f"could not remove run #{job.run_id} from the queue: {exc}")

    # ---- control ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker_thread is not None

    def pause(self) -> None:
        if self.worker is not None:
            self.worker.pause()
            self.paused = True

    def resume_current(self) -> None:
        if self.worker is not None:
            self.worker.resume()
            self.paused = False

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.paused = False
            self.log.emit("info", f"stopping run #{self.current.run_id if self.current else '?'}")

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """Stop the running job, wait for its thread, cancel what is queued. True when clean."""
        self.shutting_down = True
        for job in self.pending:
            try:
                if job.checkpoint is None:
                    self.catalog.finish_run(
                        job.run_id, "cancelled", error="queue discarded when the app closed"
                    )
                else:
                    self.catalog.set_status(
                        job.run_id, self._prior_status.pop(job.run_id, "cancelled")
                    )
            except Exception:
                pass
        self.pending.clear()
        ok = True
        if self.worker is not None and self.worker_thread is not None:
            self.worker.cancel()
            ok = self.worker_thread.wait(timeout_ms)
            self._cleanup()
        return ok

    # ---- internals -------------------------------------------------------------------
    def _maybe_start(self) -> None:
        if self.worker_thread is not None or not self.pending or self.shutting_down:
            return
        job = self.pending.pop(0)
        try:
            worker = TrainingWorker(job, self.catalog, self.signals)
        except Exception as exc:
            self.log.emit("error", f"run #{job.run_id} could not start: {exc}")
            try:
                self.catalog.finish_run(job.run_id, "failed", error=str(exc))
            except Exception:
                pass
            self.changed.emit()
            self._maybe_start()
            return
        self.current, self.worker, self.paused = job, worker, False
        worker.done.connect(self._done)
        self.worker_thread = start_in_thread(worker, f"train-run-{job.run_id}")
        self.log.emit("info", f"started {job.label}")
        self.jobStarted.emit(job.run_id, job)
        self.changed.emit()

    def _done(self, run_id: int, finished: RunFinished) -> None:
        if self.worker_thread is None:
            return
        self.worker_thread.wait()
        self._cleanup()
        level = "error" if finished.status == "failed" else "info"
        msg = f"run #{run_id} {finished.status} at step {finished.step}"
        if finished.error:
            msg += f": {finished.error}"
        self.log.emit(level, msg)
        self.jobFinished.emit(run_id, finished)
        self.changed.emit()
        self._maybe_start()

    def _cleanup(self) -> None:
        if self.worker is not None:
            self.worker.deleteLater()
        if self.worker_thread is not None:
            self.worker_thread.deleteLater()
        self.worker = self.worker_thread = None
        self.current = None
        self.paused = False
