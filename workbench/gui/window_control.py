"""Run control: Start (in the app or in its own processes), Pause/Resume and Stop of the selected
run (directly in the app, through catalog requests for other processes), the queue, and
what the buttons say.

A part of `MainWindow` (`gui/main_window.py`), which mixes it in: the attributes it uses are
the window's."""

from __future__ import annotations

from typing import Any

from workbench.catalog.errors import CatalogError
from workbench.gui import settings as qs
from workbench.gui.live_plots import DETACHED_PAINT_DUTY, PAINT_DUTY
from workbench.gui.presets import reference_value
from workbench.gui.window_status import StatusMixin, device_text, fmt_eta  # noqa: F401 (used by tests)

# a run in one of these states can still be paused or stopped ("starting": its thread or
# process is getting ready; "stopping": asked to stop, not stopped yet)
LIVE_STATES = ("queued", "starting", "running", "paused", "stopping")
SETTING_DETACHED = "run/detached_default"
LABELS_EVERY_S = 2.0  # the run list's step counts refresh this often


class ControlMixin:
    @property
    def detached_default(self) -> bool:
        return self.detached_default_action.isChecked()

    def start(self) -> list[int]:
        """Start the configured run, one per seed, the default way: in the app (queued while
        one trains; returns the new run ids) or in their own processes (ids come later,
        through `detachedLaunched`; returns [])."""
        if self.detached_default or self.form.nproc() > 1:
            self.start_detached()
            return []
        return self.start_in_app()

    def start_other(self) -> None:
        """The button beside Start: the way Start does not take."""
        if self.detached_default:
            self.start_in_app()
        else:
            self.start_detached()

    def _validated(self) -> tuple[Any, list[int]] | None:
        """The form's config and seeds, validated as for any start, or None (said in the log)."""
        cfg = self.form.validate()
        if cfg is None:
            self.log.add(
                "error", f"cannot start: {self.reason_label.text() or self.form.error_label.text()}"
            )
            return None
        qs.save_json("form/last_config", self.form.to_dict())
        if cfg.dataset.data_dir:
            qs.remember_data_dir(cfg.dataset.data_dir)
        return cfg, self.form.seeds()

    def start_in_app(self) -> list[int]:
        """Queue the configured run (one per seed) on the app's training thread."""
        if self.form.nproc() > 1:
            self.log.add("info", "a run on several processes trains in its own processes")
            self.start_detached()
            return []
        got = self._validated()
        if got is None:
            return []
        ids = self.queue.submit(*got)
        self.browser.reload()
        return ids

    def _target(self) -> int | None:
        """The run Pause/Resume/Stop act on: the selected one while it is live, else the run
        training in the app's thread."""
        sel = self.live.current
        r = self.runs.get(sel) if sel is not None else None
        if r is not None and r.get("state") in LIVE_STATES:
            return sel
        if self.queue.current is not None:
            return self.queue.current.run_id
        return None

    def _in_app(self, run_id: int | None) -> bool:
        return (
            run_id is not None
            and self.queue.current is not None
            and self.queue.current.run_id == run_id
        )

    def _paused(self, run_id: int | None) -> bool:
        if run_id is None:
            return False
        if self._in_app(run_id):
            return self.queue.paused
        r = self.runs.get(run_id, {})
        want = r.get("want")
        return want == "pause" if want in ("pause", "resume") else r.get("state") == "paused"

    def _request(self, run_id: int, action: str) -> bool:
        """Ask a run in another process to pause, resume or stop (it takes it within a second);
        a run whose process is gone cannot be asked: say so."""
        try:
            self.catalog.request(run_id, action)
        except CatalogError as exc:  # NotRunningError: its owner is dead
            self.log.add("error", f"cannot {action} run #{run_id}: {exc}")
            self.statusBar().showMessage(str(exc), 10_000)
            self.follower.poll()  # its status (interrupted) shows at once
            return False
        except Exception as exc:  # busy: the user may try again
            self.log.add("error", f"cannot {action} run #{run_id}: {exc}")
            return False
        self.runs.setdefault(run_id, {})["want"] = action
        return True

    def toggle_pause(self) -> None:
        target = self._target()
        if target is None:
            return
        paused = self._paused(target)
        if self._in_app(target):
            if paused:
                self.queue.resume_current()
                self.log.add("info", "resuming")
            else:
                self.queue.pause()
                self.log.add("info", "pausing after the current step")
        elif self._request(target, "resume" if paused else "pause"):
            self.log.add(
                "info",
                f"run #{target}: {'resuming' if paused else 'pausing after the current step'}",
            )
        self._update_buttons()

    def stop(self) -> None:
        target = self._target()
        if target is None:
            return
        if self._in_app(target):
            self.queue.stop()
        elif self._request(target, "stop"):
            self.log.add("info", f"stopping run #{target}")
        else:
            return
        if target in self.runs:
            self.runs[target]["state"] = "stopping"
        self.sb_state.setText("stopping…")
        self._update_buttons()

    def resume_run(self, run_id: int, checkpoint: Any) -> None:
        try:
            self.queue.resume(run_id, checkpoint)
        except Exception as exc:  # e.g. the run was deleted or its config no longer loads
            self.log.add("error", f"cannot resume run #{run_id}: {exc}")
            self.browser.reload_catalog()  # show what the catalog holds now
            return
        self.tabs.setCurrentIndex(0)

    def clone_config(self, config: dict[str, Any]) -> None:
        self.form.set_config(config)
        self.show_setup()
        self.log.add(
            "info",
            "configuration copied into the setup panel"
            + ("" if self.form.valid else f" (invalid: {self.form.error_label.text()})"),
        )

    def clear_queue(self) -> None:
        while self.queue.pending:
            self.queue.remove(len(self.queue.pending) - 1)

    def show_setup(self) -> None:
        self.setup_dock.show()
        self.setup_dock.raise_()

    def _move_queued(self, delta: int) -> None:
        i = self.queue_list.currentRow()
        self.queue.move(i, delta)
        self.queue_list.setCurrentRow(max(0, min(i + delta, self.queue_list.count() - 1)))

    def _remove_queued(self) -> None:
        i = self.queue_list.currentRow()
        if i >= 0:
            self.queue.remove(i)
            self.browser.reload()

    def _queue_changed(self) -> None:
        self.queue_list.clear()
        for job in self.queue.pending:
            self.queue_list.addItem(job.label)
        self._update_buttons()
        self.browser.poll()  # a job that could not start was marked failed in the catalog

    def _update_buttons(self) -> None:
        running = self.queue.running
        ok = self.form.valid
        detached = self.detached_default
        self.start_button.setEnabled(ok)
        self.start_action.setEnabled(ok)
        self.detached_button.setEnabled(ok)
        self.start_button.setText("Queue" if running and not detached else "Start")
        self.detached_button.setText("Run in the app" if detached else "Run in its own process")
        reason = "" if ok else (self.form.error_label.text() or "invalid configuration")
        self.reason_label.setText(f"Start disabled: {reason}" if reason else "")
        self.reason_label.setVisible(bool(reason))
        self.start_button.setToolTip(
            reason
            or (
                "Start the run in its own process (Ctrl+Return); it outlives the app"
                if detached
                else "Start the run (Ctrl+Return); while one trains, queue it"
            )
        )
        target = self._target()
        self.pause_button.setEnabled(target is not None)
        self.pause_button.setText("Resume" if self._paused(target) else "Pause")
        self.stop_button.setEnabled(target is not None)
        # no run in the app's thread: drawing takes the GIL from nobody, so redraw more often
        self.live.paint_duty = PAINT_DUTY if running else DETACHED_PAINT_DUTY
        has_pending = bool(self.queue.pending)
        for b in (self.up_button, self.down_button, self.remove_button):
            b.setEnabled(has_pending)

    def _preset_changed(self, preset: Any) -> None:
        if self._target() is None:  # no live run selected: show the new preset's number
            metric = (
                "accuracy"
                if self.form.config is not None and self.form.config.task_kind == "classification"
                else "mse"
            )
            self.live.set_reference(reference_value(preset, metric))
