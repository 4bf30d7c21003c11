"""What the in-app run's events do to the window: the live plots, the log, the status bar,
the queue (the worker thread sends them through Qt signals).

A part of `MainWindow` (`gui/main_window.py`), which mixes it in: the attributes it uses are
the window's."""

from __future__ import annotations

import os
import time

from workbench.core.events import CheckpointSaved, EvalResult, RunFinished, RunStarted, StepMetrics
from workbench.gui.browser_model import fmt_value
from workbench.gui.presets import reference_value
from workbench.gui.worker import Job

# a run in one of these states can still be paused or stopped ("starting": its thread or
# process is getting ready; "stopping": asked to stop, not stopped yet)
LIVE_STATES = ("queued", "starting", "running", "paused", "stopping")
SETTING_DETACHED = "run/detached_default"
LABELS_EVERY_S = 2.0  # the run list's step counts refresh this often


class RunEventsMixin:
    def _job_started(self, run_id: int, job: Job) -> None:
        cfg = job.config
        metric = "accuracy" if cfg.task_kind == "classification" else "mse"
        preset = next((p for p in self.form.presets if p.name == cfg.preset), None)
        reference = reference_value(preset, metric)
        self.adapt.clear()
        self.runs[run_id] = {
            "id": run_id,
            "step": job.checkpoint.step if job.checkpoint else 0,
            "total": cfg.steps,
            "rate": 0.0,
            "device": cfg.device,
            "state": "starting",
            "name": cfg.name or job.label,
            "t0": time.monotonic(),
            "detached": False,
            "pid": os.getpid(),
            "metric": metric,
            "reference": reference,
        }
        self.live.add_run(run_id, metric, self._run_label(run_id), select=True)
        self.live.reset(metric, reference, run_id=run_id)
        if job.checkpoint is not None:
            names = [
                "loss",
                metric,
                "meta_lr",
                "steps_per_s",
                f"val_{metric}",
                f"val_{metric}_ci95",
            ]
            hist = {}
            for n in names:
                st, v, w = self.catalog.metrics(run_id, n)
                keep = st <= job.checkpoint.step
                hist[n] = (st[keep], v[keep], w[keep])
            self.live.preload(hist, run_id)
        self.tabs.setCurrentIndex(0)
        self._update_buttons()

    def _run_started(self, run_id: int, ev: RunStarted) -> None:
        threads = ev.environment.get("threads")
        # on CPU, the torch threads the run chose (empty `threads`: all cores, one for tiny tasks)
        on = (
            f"{ev.device}, {threads} thread{'s' if threads != 1 else ''}"
            if ev.device == "cpu" and threads
            else f"{ev.device} ({ev.device_name})"  # the GPU by name: NVIDIA H200, ...
        )
        self.runs.setdefault(run_id, {"id": run_id}).update(
            step=ev.start_step,
            total=ev.total_steps,
            device=ev.device,
            device_name=ev.device_name,
            device_text=on,
            state="running",
        )
        self.log.add(
            "info",
            f"run #{run_id} training on {on} ({ev.device_name}) from step {ev.start_step} to {ev.total_steps}",
        )

    def _steps(self, run_id: int, batch: list[StepMetrics]) -> None:
        """Steps of any live run: the app's thread (signals) or another process (follower)."""
        self.live.add_steps(batch, run_id)
        last = batch[-1]
        r = self.runs.get(run_id)
        if r is not None:
            r["step"] = last.step
            r["rate"] = last.values.get("steps_per_s", 0.0)

    def _evaluated(self, run_id: int, ev: EvalResult) -> None:
        self.live.add_eval(ev, run_id)
        on = f" on {ev.episodes} episodes" if ev.episodes else ""  # a follower does not know
        what = (
            f"{ev.split} {ev.metric} {fmt_value(ev.metric, ev.mean, ev.ci95)}{on} at step {ev.step}"
        )
        self.log.add("info", f"run #{run_id}: {what}")

    def _checkpoint(self, run_id: int, ev: CheckpointSaved) -> None:
        self.log.add(
            "info",
            f"run #{run_id}: {ev.kind} checkpoint at step {ev.step} ({ev.bytes / 1024:.0f} KiB)",
        )

    def _status(self, run_id: int, status: str) -> None:
        if run_id in self.runs:
            self.runs[run_id]["state"] = status
        self.queue.paused = status == "paused"
        self._update_buttons()
        self._state_changed()
        self.browser.poll()

    def _notice(self, run_id: int, reason: str) -> None:
        """The run paused itself (disk full, catalog busy): say why, in the log and the status
        bar; it goes on by itself once the cause is gone, so Pause stays Pause."""
        self.queue.paused = False
        self.log.add("error", f"run #{run_id} paused: {reason}; it continues once this is fixed")
        self.sb_state.setToolTip(reason)
        self._set_text(self.sb_state, f"#{run_id} paused: {reason.split(':')[0]}")
        self._update_buttons()

    def _job_finished(self, run_id: int, fin: RunFinished) -> None:
        r = self.runs.setdefault(run_id, {"id": run_id})
        r["state"] = fin.status
        r["step"] = fin.step
        self.live.set_ended(run_id)
        self.live.redraw(force=True)
        self._state_changed()
        if fin.test is not None:
            t = fin.test
            self.log.add(
                "info",
                f"run #{run_id}: test {t.metric} {fmt_value(t.metric, t.mean, t.ci95)} on {t.episodes} episodes (checkpoint step {t.checkpoint_step})",
            )
        self.browser.poll()
        self._update_buttons()
