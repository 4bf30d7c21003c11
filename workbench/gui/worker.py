"""Background work: a training run or a checkpoint evaluation in a QThread.

The worker objects live in their thread and never touch a widget. Training events reach the
GUI through `QtBridge`, a Trainer listener that emits Qt signals (queued across threads); step
metrics and validation results are batched on the worker side (one burst per EMIT_EVERY_S) so
that a fast run neither floods the GUI's event queue nor keeps taking the GIL from training. The catalog is written by `CatalogListener` in the same thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from workbench.catalog import Catalog, CatalogListener, CheckpointRecord
from workbench.core.config import RunConfig
from workbench.core.engine import Trainer
from workbench.core.events import (
    CheckpointSaved,
    EvalResult,
    Listener,
    RunFinished,
    RunStarted,
    Status,
    StepMetrics,
)

# step and validation results go to the GUI in bursts at most this often: each burst wakes the
# GUI thread, which then takes the GIL from training (the plots redraw about once a second)
EMIT_EVERY_S = 0.25
ADAPT_EVERY_S = (
    2.0  # the adaptation view is recomputed at most this often (and at the last validation)
)
ADAPT_STEPS = (0, 1, 10)
ADAPT_SEED = 20170309  # the fixed validation task shown in the adaptation view


@dataclass
class Job:
    """One queued training: a new run, or a resume of `run_id` from `checkpoint`."""

    run_id: int
    config: RunConfig
    checkpoint: CheckpointRecord | None = None
    owner: str | None = None  # the queue's lease on the run, handed to the training thread
    prior_status: str | None = None  # a resumed run's status before it was queued

    @property
    def label(self) -> str:
        name = self.config.name or f"{self.config.algorithm.name}-{self.config.dataset.name}"
        what = f"resume @ {self.checkpoint.step}" if self.checkpoint else f"seed {self.config.seed}"
        return f"#{self.run_id} {name} ({what})"


class RunSignals(QObject):
    started = Signal(int, object)  # run id, RunStarted
    steps = Signal(int, object)  # run id, list[StepMetrics]
    evaluated = Signal(int, object)  # run id, EvalResult
    checkpoint = Signal(int, object)  # run id, CheckpointSaved
    status = Signal(int, str)  # run id, "paused" / "running"
    notice = Signal(int, str)  # run id, why the run paused itself (disk full, catalog busy...)
    adaptation = Signal(int, object)  # run id, dict of numpy arrays
    finished = Signal(int, object)  # run id, RunFinished

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        # set by the GUI thread, read by the training thread (a plain bool: atomic under the GIL):
        # nobody looks at the adaptation view, so the bridge does not compute it
        self.adaptation_wanted = True


class QtBridge(Listener):
    """Trainer listener that turns events into signals. Runs on the training thread."""

    def __init__(self, run_id: int, signals: RunSignals, trainer: Trainer | None = None) -> None:
        self.run_id = run_id
        self.signals = signals
        self.trainer = trainer
        self._pending: list[StepMetrics] = []
        self._pending_evals: list[EvalResult] = []
        self._last_emit = 0.0
        self._val_dist: Any = None
        self._adapt_batch: Any = None
        self._adapt_at = -float("inf")

    def flush(self) -> None:
        if self._pending:
            batch, self._pending = self._pending, []
            self.signals.steps.emit(self.run_id, batch)
        evals, self._pending_evals = self._pending_evals, []
        for event in evals:
            self.signals.evaluated.emit(self.run_id, event)
        self._last_emit = time.perf_counter()

    def on_start(self, event: RunStarted) -> None:
        self.signals.started.emit(self.run_id, event)

    def on_step(self, event: StepMetrics) -> None:
        self._pending.append(event)
        if time.perf_counter() - self._last_emit >= EMIT_EVERY_S:
            self.flush()

    def on_eval(self, event: EvalResult) -> None:
        self._pending_evals.append(event)  # after the steps it follows, in the next burst
        if event.split != "val" or time.perf_counter() - self._last_emit >= EMIT_EVERY_S:
            self.flush()
        if event.split == "val" and self._adaptation_due(event.step):
            self._adapt_at = time.perf_counter()
            try:
                data = self.adaptation()
            except Exception as exc:  # a plot must never break training
                data = {"error": f"{type(exc).__name__}: {exc}"}
            if data is not None:
                data["step"] = event.step
                self.signals.adaptation.emit(self.run_id, data)

    def on_checkpoint(self, event: CheckpointSaved) -> None:
        self.signals.checkpoint.emit(self.run_id, event)

    def on_status(self, status: Status, reason: str | None = None) -> None:
        self.flush()
        self.signals.status.emit(self.run_id, status)
        if reason:
            self.signals.notice.emit(self.run_id, reason)

    def on_finish(self, event: RunFinished) -> None:
        self.flush()  # the finished signal itself is sent by the worker after the catalog closed

    def _adaptation_due(self, step: int) -> bool:
        """At most every ADAPT_EVERY_S (a fast run validates several times a second, and the view
        costs a prediction here and a redraw on the GUI thread), always at the last validation,
        never while the view is hidden."""
        if not getattr(self.signals, "adaptation_wanted", True):
            return False
        last = self.trainer is not None and step >= self.trainer.config.steps
        return last or time.perf_counter() - self._adapt_at >= ADAPT_EVERY_S

    # ---- adaptation view data (training thread, at some validations) ---------------------
    def adaptation(self) -> dict[str, Any] | None:
        t = self.trainer
        if t is None or t.algo is None or t.device is None:
            return None
        cfg = t.config
        algo = t.algo
        was_training = algo.training
        algo.eval()
        try:
            if cfg.task_kind == "regression":
                return self._regression(cfg, algo, t.device)
            return self._classification(cfg, algo, t.device)
        finally:
            algo.train(was_training)

    def _episode(self, cfg: RunConfig, shape: Any) -> Any:
        if self._adapt_batch is None:
            if self._val_dist is None:
                from workbench.core.tasks import DATASETS

                self._val_dist = DATASETS.get(cfg.dataset.name)().build(cfg.dataset, "val")
            gen = torch.Generator().manual_seed(ADAPT_SEED)
            self._adapt_batch = self._val_dist.sample(shape, 1, gen)
        return self._adapt_batch

    def _regression(self, cfg: RunConfig, algo: Any, device: torch.device) -> dict[str, Any]:
        from workbench.core.tasks.sinusoid import X_RANGE, sinusoid

        batch = self._episode(cfg, cfg.eval.model_copy(update={"queries": 1}))
        x = torch.linspace(*X_RANGE, 200).reshape(1, -1, 1)
        true = sinusoid(x, batch.info["amplitude"][0], batch.info["phase"][0])
        preds = algo.predict_after(batch.to(device), x.to(device), list(ADAPT_STEPS), cfg.eval)
        return {
            "kind": "regression",
            "x": x.flatten().numpy(),
            "true": true.flatten().numpy(),
            "support_x": batch.support_x.flatten().numpy(),
            "support_y": batch.support_y.flatten().numpy(),
            "preds": {s: p.detach().float().cpu().flatten().numpy() for s, p in preds.items()},
        }

    def _classification(self, cfg: RunConfig, algo: Any, device: torch.device) -> dict[str, Any]:
        # a small episode that fits on screen: at most 5 ways x 5 shots, 2 queries per class
        shape = cfg.eval.model_copy(
            update={"ways": min(cfg.eval.ways, 5), "shots": min(cfg.eval.shots, 5), "queries": 2}
        )
        batch = self._episode(cfg, shape)
        on_dev = batch.to(device)
        logits = None
        try:
            with torch.no_grad():
                logits = algo.query_scores(on_dev, 0)  # no adaptation steps (metric-based)
        except NotImplementedError:
            try:
                out = algo.predict_after(on_dev, on_dev.query_x, [shape.inner_steps], shape)
                logits = out[shape.inner_steps][0]
            except NotImplementedError:
                logits = None
        pred = logits.argmax(-1).cpu().numpy() if logits is not None else None
        return {
            "kind": "classification",
            "support_x": batch.support_x[0].numpy(),
            "support_y": batch.support_y[0].numpy(),
            "query_x": batch.query_x[0].numpy(),
            "query_y": batch.query_y[0].numpy(),
            "pred": pred,
            "ways": batch.ways,
        }


class TrainingWorker(QObject):
    """Runs one Job's Trainer on its own thread; `done` is emitted last, after the catalog
    recorded the end of the run."""

    done = Signal(int, object)  # run id, RunFinished

    def __init__(self, job: Job, catalog: Catalog, signals: RunSignals) -> None:
        super().__init__()
        self.job = job
        self.catalog = catalog
        self.signals = signals
        ck = job.checkpoint
        self.trainer = Trainer(
            job.config,
            [],
            checkpoint_dir=catalog.checkpoint_dir(job.run_id, create=True),
            resume_from=ck.path if ck else None,
            resume_sha256=ck.sha256 if ck else None,
        )
        self.bridge = QtBridge(job.run_id, signals, self.trainer)

    @Slot()
    def run(self) -> None:
        run_id = self.job.run_id
        finished: RunFinished
        try:
            writer = CatalogListener(
                self.catalog, run_id, owner=self.job.owner, prior_status=self.job.prior_status
            )
            self.trainer.listeners = [writer, self.bridge]
            self.trainer.checkpoints = writer
            finished = self.trainer.run()
        except Exception as exc:  # e.g. the run is owned elsewhere: end cleanly, keep history
            finished = RunFinished("failed", self.trainer.step, f"{type(exc).__name__}: {exc}")
            try:
                if self.job.checkpoint is None and self.job.owner is not None:
                    self.catalog.finish_run(
                        run_id, "failed", error=finished.error, owner=self.job.owner
                    )
            except Exception:
                pass
        self.signals.finished.emit(run_id, finished)
        self.done.emit(run_id, finished)

    # thread-safe controls
    def pause(self) -> None:
        self.trainer.pause()

    def resume(self) -> None:
        self.trainer.resume()

    def cancel(self) -> None:
        self.trainer.cancel()


def start_in_thread(worker: QObject, name: str) -> QThread:
    """Move `worker` to a new QThread, run `worker.run` there, quit when `worker.done` fires."""
    thread = QThread()
    thread.setObjectName(name)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    # direct: quit() is thread-safe and must not wait behind queued GUI slots that wait() on it
    worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    thread.start()
    return thread
