"""Runs in their own processes: launching them (one per seed, or one run on several
processes), following them through the catalog, resuming them detached.

A part of `MainWindow` (`gui/main_window.py`), which mixes it in: the attributes it uses are
the window's."""

from __future__ import annotations

from typing import Any

from workbench import launcher
from workbench.catalog import RunRecord
from workbench.gui.follower import owner_pid
from workbench.gui.presets import reference_value
from workbench.gui.run_queue import memory_refusal, seed_configs
from workbench.gui.window_status import device_text

# a run in one of these states can still be paused or stopped ("starting": its thread or
# process is getting ready; "stopping": asked to stop, not stopped yet)
LIVE_STATES = ("queued", "starting", "running", "paused", "stopping")
SETTING_DETACHED = "run/detached_default"
LABELS_EVERY_S = 2.0  # the run list's step counts refresh this often


class LaunchesMixin:
    def start_detached(self) -> int:
        """Launch the configured run, one process per seed, and follow them once they made
        their runs. Never waits: the children take seconds to start (torch, the dataset), so
        the launches are polled by a timer. Returns how many launches began."""
        got = self._validated()
        if got is None:
            return 0
        cfg, seeds = got
        refused = memory_refusal(cfg)
        if refused:
            self.log.add("error", f"not started: {refused}")
            return 0
        begun = 0
        n = self.form.nproc()
        nproc = ["--nproc", str(n)] if n > 1 else []
        for c in seed_configs(cfg, seeds):
            try:
                pending = launcher.spawn_config(c, self.catalog.location, extra=nproc)
            except Exception as exc:  # LaunchError: no run was created
                self.log.add("error", f"{c.name}: not started in its own process: {exc}")
                continue
            self._launches.append((pending, c.name or ""))
            if n > 1:
                self._launch_ranks[pending.pid] = n
            begun += 1
        if begun:
            self.log.add(
                "info",
                f"starting {begun} run{'s' if begun > 1 else ''} in {'their' if begun > 1 else 'its'} own "
                f"process{'es' if begun > 1 else ''}…",
            )
            self.launch_timer.start()
        self._update_buttons()
        return begun

    def _poll_launches(self) -> None:
        """Timer slot: the launches that made their run (followed from now on) or failed."""
        for entry in list(self._launches):
            pending, name = entry
            try:
                done = pending.poll()
            except Exception as exc:  # LaunchError: the child failed before creating its run
                self._launches.remove(entry)
                self.log.add("error", f"{name}: not started in its own process: {exc}")
                self.statusBar().showMessage(f"{name} did not start: {exc}", 10_000)
                continue
            if done is None:
                continue
            self._launches.remove(entry)
            self._launched.add(done.run_id)
            ranks = self._launch_ranks.pop(done.pid, 1)
            self.log.add(
                "info",
                f"run #{done.run_id} trains in its own process (pid {done.pid}); "
                f"its output: {done.log_path}",
            )
            self.follow_run(done.run_id, select=True)
            if ranks > 1:
                self.runs[done.run_id]["ranks"] = ranks
                self._update_run_labels()
            self.detachedLaunched.emit(done.run_id)
        if not self._launches:
            self.launch_timer.stop()
        self._update_buttons()
        self.browser.poll()

    def follow_run(self, run_id: int, rec: RunRecord | None = None, select: bool = False) -> None:
        """Show a run of another process in the live view; its history so far is read with
        the follower's next poll."""
        if run_id in self.runs and self.runs[run_id].get("state") in LIVE_STATES:
            if select:
                self.live.select(run_id)
            return
        try:
            rec = rec or self.catalog.get_run(run_id)
        except Exception as exc:
            self.log.add("error", f"cannot follow run #{run_id}: {exc}")
            return
        metric, reference = "mse", None
        try:
            from workbench.core.config import RunConfig

            cfg = RunConfig.from_json(rec.config_json)
            metric = "accuracy" if cfg.task_kind == "classification" else "mse"
            preset = next((p for p in self.form.presets if p.name == cfg.preset), None)
            reference = reference_value(preset, metric)
        except Exception:
            pass  # an old or foreign config: plotted all the same
        self.runs[run_id] = {
            "id": run_id,
            "name": rec.name,
            "step": rec.step,
            "total": rec.total_steps or 0,
            "rate": 0.0,
            "device": rec.device,
            "device_text": device_text(rec.device, rec.device_name),
            "state": rec.status,
            "detached": True,
            "pid": owner_pid(rec.owner),
            "ranks": int((rec.environment or {}).get("world_size") or 1),
            "metric": metric,
            "reference": reference,
        }
        trace = self.live.traces.get(run_id)
        if trace is not None:  # shown before (ended, now resumed elsewhere): read it again
            trace.clear()
            trace.ended = False
            self.live.set_checked(run_id, True)
        self.live.add_run(run_id, metric, self._run_label(run_id), select=select)
        if self.follower.follow(run_id) and run_id not in self._launched:
            self.log.add(
                "info",
                f"following run #{run_id} ({rec.name}, {rec.status} at step {rec.step}): it "
                f"trains in its own process (pid {self.runs[run_id]['pid']})",
            )
        self._update_buttons()

    def resume_detached(self, run_id: int, checkpoint: Any) -> bool:
        """Continue a run in its own process (`workbench resume` detached): from its latest
        checkpoint the same run, from an older one a child run (as the CLI does). The launch
        is polled like a new run's; False when it could not begin."""
        try:
            latest = self.catalog.checkpoint(run_id, "latest")
            which = (
                "latest"
                if checkpoint is None or latest is None or checkpoint.step >= latest.step
                else str(checkpoint.step)
            )
            pending = launcher.spawn_resume(run_id, self.catalog.location, checkpoint=which)
        except Exception as exc:
            self.log.add("error", f"cannot resume run #{run_id} in its own process: {exc}")
            return False
        self._launches.append((pending, f"resume of run #{run_id}"))
        self.log.add("info", f"resuming run #{run_id} in its own process…")
        self.launch_timer.start()
        self.tabs.setCurrentIndex(0)
        return True

    def _detached_status(self, run_id: int, rec: RunRecord) -> None:
        r = self.runs.get(run_id)
        if r is None:
            return
        before = r.get("state")
        r.update(state=rec.status, step=max(r.get("step", 0), rec.step))
        r["total"] = rec.total_steps or r.get("total", 0)
        if rec.device_name:
            r["device"], r["device_text"] = rec.device, device_text(rec.device, rec.device_name)
        if r.get("want") in ("pause", "resume") and rec.status in ("paused", "running"):
            r.pop("want", None)  # taken: the catalog's status says what it is now
        if before not in (None, "queued") and rec.status in ("paused", "running"):
            self.log.add("info", f"run #{run_id} {rec.status}")
        self._update_buttons()
        self._state_changed()
        self.browser.poll()

    def _detached_ended(self, run_id: int, rec: RunRecord | None) -> None:
        """A followed run ended (finished, failed, stopped, or interrupted: its process died)."""
        r = self.runs.setdefault(run_id, {"id": run_id})
        r.pop("want", None)
        status = rec.status if rec is not None else "deleted"
        r["state"] = status
        if rec is not None:
            r["step"] = rec.step
        self.live.set_ended(run_id)
        self.live.redraw(force=True)
        msg = f"run #{run_id} {status}" + (f" at step {rec.step}" if rec is not None else "")
        if rec is not None and rec.error:
            msg += f": {rec.error}"
        self.log.add("error" if status in ("failed", "interrupted") else "info", msg)
        self._update_buttons()
        self._state_changed()
        self.browser.poll()

    def _detached_restarted(self, run_id: int) -> None:
        trace = self.live.traces.get(run_id)
        if trace is not None:
            trace.clear()

    def detached_live(self) -> int:
        """Runs in their own processes that are live now, launches in flight included."""
        live = sum(
            1 for r in self.runs.values() if r.get("detached") and r.get("state") in LIVE_STATES
        )
        return live + len(self._launches)
