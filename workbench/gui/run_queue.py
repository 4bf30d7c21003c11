"""The run queue: configurations wait in the catalog as "queued" and train one after another
on a single worker thread. Entries can be reordered or removed; Pause/Resume/Stop act on the
running one within one step (Trainer flags)."""

from __future__ import annotations

from PySide6.QtCore import QObject, QThread, QTimer, Signal

from workbench.api import resume_target
from workbench.catalog import HEARTBEAT_S, Catalog, CheckpointRecord
from workbench.catalog.errors import CatalogError
from workbench.catalog.store import new_owner
from workbench.core.config import RunConfig
from workbench.core.events import RunFinished
from workbench.gui.worker import Job, RunSignals, TrainingWorker, start_in_thread


def run_name(config: RunConfig, seed: int, many: bool) -> str:
    """The name the user gave (with `-s<seed>` when it names several seeds' runs), or "": the
    catalog then names the run as the CLI's are named, algorithm-dataset-shape-seed, made
    unique (`Catalog.create_run`)."""
    if not config.name:
        return ""
    return f"{config.name}-s{seed}" if many else config.name


def seed_configs(config: RunConfig, seeds: list[int] | None) -> list[RunConfig]:
    """One validated config per seed, named as the queue names them (also for runs started in
    their own processes, so both kinds read the same in the browser)."""
    seeds = seeds or [config.seed]
    out = []
    for seed in seeds:
        cfg = config.model_copy(
            update={"seed": seed, "name": run_name(config, seed, len(seeds) > 1)}
        )
        out.append(RunConfig.from_dict(cfg.to_dict()))
    return out


def memory_refusal(config: RunConfig) -> str | None:
    """Why a run cannot fit in memory (refused before it exists), or None."""
    if not config.memory_check:
        return None
    from workbench.core.errors import ConfigError
    from workbench.core.footprint import check_fits, config_input_shape

    try:
        check_fits(config, config_input_shape(config))
    except ConfigError as exc:
        return str(exc)
    return None


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
        # the queue owns its waiting runs: it keeps their leases fresh, so a queue that dies
        # with the app leaves them to be marked interrupted, not queued forever
        self.owner = new_owner()
        self._beat = QTimer(self)
        self._beat.setInterval(int(HEARTBEAT_S * 1000))
        self._beat.timeout.connect(self._renew)
        self._beat.start()

    # ---- adding ----------------------------------------------------------------------
    def submit(self, config: RunConfig, seeds: list[int] | None = None) -> list[int]:
        """Create one queued catalog run per seed and queue them; returns their ids."""
        refused = memory_refusal(config)
        if refused:
            self.log.emit("error", f"not started: {refused}")
            return []
        ids = []
        for cfg in seed_configs(config, seeds):
            run_id = self.catalog.create_run_from_config(cfg, status="queued", owner=self.owner)
            self.pending.append(Job(run_id, cfg, owner=self.owner))
            ids.append(run_id)
        self.log.emit(
            "info", f"queued run{'s' if len(ids) > 1 else ''} {', '.join(f'#{i}' for i in ids)}"
        )
        self.changed.emit()
        self._maybe_start()
        return ids

    def resume(self, run_id: int, checkpoint: CheckpointRecord | None) -> None:
        """Queue run `run_id` to continue from `checkpoint`: the same run (a new attempt) from
        its latest checkpoint, a new child run from an older one (as `workbench resume` does)."""
        if any(j.run_id == run_id for j in self.pending) or (
            self.current is not None and self.current.run_id == run_id
        ):
            self.log.emit("error", f"run #{run_id} is already in the queue")
            return
        rec = self.catalog.get_run(run_id)
        cfg = RunConfig.from_json(rec.config_json)
        try:
            target = resume_target(self.catalog, run_id, checkpoint, cfg, self.owner)
            if target == run_id:  # refused if owned elsewhere
                self._prior_status[run_id] = self.catalog.claim(run_id, self.owner, queue=True)
        except CatalogError as exc:
            self.log.emit("error", f"cannot resume run #{run_id}: {exc}")
            return
        prior = self._prior_status.get(run_id) if target == run_id else None
        self.pending.append(Job(target, cfg, checkpoint, owner=self.owner, prior_status=prior))
        child = f" as child run #{target}" if target != run_id else ""
        self.log.emit(
            "info",
            f"queued resume of run #{run_id} from its step {checkpoint.step} checkpoint{child}"
            if checkpoint is not None
            else f"queued run #{run_id} again from step 0 (it has no checkpoint)",
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
            if job.run_id not in self._prior_status:
                self.catalog.delete_run(
                    job.run_id
                )  # it never ran (a new run or a child): nothing to keep
            else:
                prior = self._prior_status.pop(job.run_id, "cancelled")
                self.catalog.release(job.run_id, self.owner, prior)
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
        self._beat.stop()
        for job in self.pending:
            try:
                if job.run_id not in self._prior_status:
                    self.catalog.finish_run(
                        job.run_id, "cancelled", error="queue discarded when the app closed",
                        owner=self.owner,
                    )  # fmt: skip
                else:
                    prior = self._prior_status.pop(job.run_id, "cancelled")
                    self.catalog.release(job.run_id, self.owner, prior)
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
    def _renew(self) -> None:
        """Keep the waiting runs' leases fresh (the running one's writer beats for itself)."""
        for job in list(self.pending):
            try:
                self.catalog.renew(job.run_id, self.owner)
            except CatalogError as exc:  # taken away (e.g. marked interrupted while asleep)
                self.pending.remove(job)
                self.log.emit("error", f"run #{job.run_id} left the queue: {exc}")
                self.changed.emit()
            except Exception:
                pass  # busy: the next beat may work

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
