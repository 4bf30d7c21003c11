"""The main window: run setup (dock), live training view and experiments browser (tabs),
log pane (dock), menus, shortcuts, status bar, and QSettings persistence."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import psutil
from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from workbench import launcher
from workbench.catalog import Catalog, RunRecord
from workbench.catalog.errors import CatalogError
from workbench.core.events import CheckpointSaved, EvalResult, RunFinished, RunStarted, StepMetrics
from workbench.gui import help_menu
from workbench.gui import settings as qs
from workbench.gui.adaptation_view import AdaptationView
from workbench.gui.browser import ExperimentsBrowser
from workbench.gui.browser_model import fmt_value
from workbench.gui.follower import RunFollower, owner_pid
from workbench.gui.live_plots import DETACHED_PAINT_DUTY, PAINT_DUTY, LivePlots
from workbench.gui.log_pane import LogPane
from workbench.gui.presets import reference_value
from workbench.gui.run_form import RunForm
from workbench.gui.run_queue import RunQueue, memory_refusal, seed_configs
from workbench.gui.sweep_view import SweepView
from workbench.gui.worker import Job

# a run in one of these states can still be paused or stopped ("starting": its thread or
# process is getting ready; "stopping": asked to stop, not stopped yet)
LIVE_STATES = ("queued", "starting", "running", "paused", "stopping")
SETTING_DETACHED = "run/detached_default"
LABELS_EVERY_S = 2.0  # the run list's step counts refresh this often


def keep_training_note(n: int) -> str:
    """What closing the app does to runs in their own processes: nothing."""
    if n == 1:
        return "1 run keeps training in its own process; reopen the app to follow it"
    return f"{n} runs keep training in their own processes; reopen the app to follow them"


def device_text(device: str, name: str | None) -> str:
    """A run's device for the status bar: "cpu (AMD EPYC ...)", "cuda:0 (NVIDIA H200)"."""
    return f"{device} ({name})" if name and name != device else device or ""


def fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0 or seconds > 1e7:
        return "–"
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class MainWindow(QMainWindow):
    detachedLaunched = Signal(int)  # run id of a run started in its own process
    catalogOpened = Signal(object)  # a Catalog the user opened (File → Open catalog)

    def __init__(
        self, catalog: Catalog, parent: QWidget | None = None, restore: bool = True
    ) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.confirm: Callable[[str, str], bool] = self._ask
        where = catalog.path.name if catalog.path is not None else catalog.display
        self.setWindowTitle(f"Meta-Learning Workbench — {where}")
        self._process = psutil.Process(os.getpid())
        # the runs in the live view: id -> {id, name, state, step, total, rate, device,
        # detached (trains in another process), pid, reference}
        self.runs: dict[int, dict[str, Any]] = {}
        self._launches: list[tuple[Any, str]] = []  # (launcher.Pending, run name) in flight
        self._launch_ranks: dict[int, int] = {}  # launcher pid -> processes of its run
        self._launched: set[int] = set()  # runs this window started in their own processes
        self._closed = False

        self.queue = RunQueue(catalog, self)
        self.log = LogPane()
        self.form = RunForm()
        self.live = LivePlots()
        self.adapt = AdaptationView()
        self.browser = ExperimentsBrowser(catalog)
        qs.remember_catalog(self._catalog_target())
        from workbench.core.plugins import problems

        self._plugin_problems = problems()  # said in the log once it exists
        self.follower = RunFollower(catalog, self)
        self.launch_timer = QTimer(self, interval=200)  # launches in flight, without blocking
        self.launch_timer.timeout.connect(self._poll_launches)

        self._build_setup_dock()
        self._build_center()
        self._build_log_dock()
        self._build_status_bar()
        self._build_menus()
        self._connect()
        for line in self._plugin_problems:  # a broken plugin is said; the app starts all the same
            self.log.add("warning", line)

        self._sb_texts: dict[int, str] = {}
        self._mem_at = 0.0
        self._labels_at = 0.0
        self.status_timer = QTimer(
            self, interval=500
        )  # coalesced: step/rate/ETA at 2 Hz, memory at 0.5 Hz
        self.status_timer.timeout.connect(self.update_status_bar)
        self.status_timer.start()

        for msg in self.form.preset_errors:
            self.log.add("error", msg)
        if catalog.marked_interrupted:
            self.log.add(
                "info",
                f"runs {', '.join(f'#{i}' for i in catalog.marked_interrupted)} were left running by a stopped process; marked interrupted",
            )
        self.log.add(
            "info",
            f"catalog {catalog.display} ({self.browser.model.rowCount()} runs, loaded in {self.browser.load_ms:.0f} ms)",
        )
        self.resize(1500, 950)
        if restore:
            self.restore_settings()
        self._update_buttons()
        self.follower.start()  # runs still training in their own processes show up at once

    # ---- construction ------------------------------------------------------------------
    def _build_setup_dock(self) -> None:
        host = QWidget()
        lay = QVBoxLayout(host)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.form, 1)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start the run (Ctrl+Return); while one trains, queue it")
        self.start_button.setStyleSheet("QPushButton { font-weight: bold; padding: 5px 14px; }")
        self.detached_button = QPushButton("Run in its own process")
        self.detached_button.setToolTip(
            "Start the run as a separate process: it keeps training when the app closes, and "
            "several train at once (one process per seed)"
        )
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause / resume the selected live run (Ctrl+P)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(
            "Stop the selected live run after the current step, with a checkpoint (Ctrl+. or Esc)"
        )
        top = QHBoxLayout()
        top.addWidget(self.start_button)
        top.addWidget(self.detached_button)
        lay.addLayout(top)
        self.sweep_button = QPushButton("New sweep…")
        self.sweep_button.setToolTip(
            "Vary fields of this setup over values or ranges (grid, random, Optuna); every "
            "trial is a run in its own process, followed in the Sweeps tab"
        )
        self.sweep_button.clicked.connect(lambda _=False: self.new_sweep())
        lay.addWidget(self.sweep_button)
        for b in (self.pause_button, self.stop_button):
            buttons.addWidget(b)
        lay.addLayout(buttons)
        self.reason_label = QLabel(wordWrap=True)
        self.reason_label.setStyleSheet("color: #b00020;")
        lay.addWidget(self.reason_label)
        self.reason_label.hide()

        lay.addWidget(QLabel("<b>Queue</b>"))
        self.queue_list = QListWidget()
        self.queue_list.setMaximumHeight(90)
        lay.addWidget(self.queue_list)
        qb = QHBoxLayout()
        self.up_button = QPushButton("Up")
        self.down_button = QPushButton("Down")
        self.remove_button = QPushButton("Remove")
        for b in (self.up_button, self.down_button, self.remove_button):
            qb.addWidget(b)
        lay.addLayout(qb)

        self.setup_dock = QDockWidget("Run setup", self)
        self.setup_dock.setObjectName("setupDock")
        self.setup_dock.setWidget(host)
        self.setup_dock.setMinimumWidth(380)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.setup_dock)

    def _build_center(self) -> None:
        self.tabs = QTabWidget()
        self.train_split = QSplitter(Qt.Orientation.Horizontal)
        self.train_split.addWidget(self.live)
        self.train_split.addWidget(self.adapt)
        self.train_split.setStretchFactor(0, 3)
        self.train_split.setStretchFactor(1, 1)
        self.train_split.setSizes([800, 330])
        self.tabs.addTab(self.train_split, "Training")
        self.tabs.addTab(self.browser, "Experiments")
        self.sweeps = SweepView(self.catalog)
        self.tabs.addTab(self.sweeps, "Sweeps")
        self.sweeps.useConfig.connect(self.clone_config)
        self.setCentralWidget(self.tabs)

    def _build_log_dock(self) -> None:
        self.log_dock = QDockWidget("Log", self)
        self.log_dock.setObjectName("logDock")
        self.log_dock.setWidget(self.log)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.log_dock)
        self.resizeDocks([self.log_dock], [130], Qt.Orientation.Vertical)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.sb_state = QLabel("idle")
        self.sb_step = QLabel("")
        self.sb_speed = QLabel("")
        self.sb_eta = QLabel("")
        self.sb_device = QLabel("")
        self.sb_memory = QLabel("")
        for w in (self.sb_state, self.sb_step, self.sb_speed, self.sb_eta, self.sb_device):
            w.setMinimumWidth(70)
            sb.addWidget(w)
        self.sb_state.setMinimumWidth(130)  # "#123 interrupted" must not be cut off
        self.sb_count = QLabel("")
        self.sb_count.setToolTip("Live runs: in the app's thread and in their own processes")
        sb.addPermanentWidget(self.sb_count)
        sb.addPermanentWidget(self.sb_memory)

    def _action(
        self, menu: Any, text: str, slot: Callable[[], Any], shortcut: Any = None, tip: str = ""
    ) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcuts(shortcut if isinstance(shortcut, list) else [shortcut])
            a.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        if tip:
            a.setStatusTip(tip)
        a.triggered.connect(lambda _=False: slot())
        menu.addAction(a)
        return a

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "&New run setup", self.show_setup, QKeySequence("Ctrl+N"))
        self._action(
            f,
            "&Open catalog…",
            self.open_catalog,
            QKeySequence("Ctrl+O"),
            "Switch to another catalog: a SQLite file or a PostgreSQL URL",
        )
        self.recent_menu = f.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._action(
            f, "Export &figure…", self.export_figure, QKeySequence("Ctrl+Shift+E"),
            "The Training tab's plots as SVG, PDF or PNG at a chosen size and DPI",
        )  # fmt: skip
        self._action(f, "Export curves &CSV…", self.browser.export_csv)
        self._action(f, "Export plot &PNG…", self.browser.export_png)
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        r = mb.addMenu("&Run")
        self.start_action = self._action(
            r,
            "&Start / queue",
            self.start,
            [QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")],
        )
        self.pause_action = self._action(
            r, "&Pause / resume", self.toggle_pause, QKeySequence("Ctrl+P")
        )
        self.stop_action = self._action(
            r, "S&top", self.stop, [QKeySequence("Ctrl+."), QKeySequence(Qt.Key.Key_Escape)]
        )
        self._action(
            r,
            "Run in its own &process",
            self.start_detached,
            QKeySequence("Ctrl+Shift+Return"),
            "Start the configured run as a separate process that outlives the app",
        )
        r.addSeparator()
        self._action(r, "Clear &queue", self.clear_queue)
        r.addSeparator()
        self.detached_default_action = QAction(
            "Start runs in their own process by default", self, checkable=True
        )
        self.detached_default_action.setStatusTip(
            "Start launches a separate process (the other button then runs in the app)"
        )
        self.detached_default_action.toggled.connect(lambda _on: self._update_buttons())
        r.addAction(self.detached_default_action)
        v = mb.addMenu("&View")
        v.addAction(self.setup_dock.toggleViewAction())
        v.addAction(self.log_dock.toggleViewAction())
        self._action(v, "&Training", lambda: self.tabs.setCurrentIndex(0), QKeySequence("Ctrl+1"))
        self._action(
            v, "&Experiments", lambda: self.tabs.setCurrentIndex(1), QKeySequence("Ctrl+2")
        )
        self._action(v, "&Reload catalog", self.browser.reload_catalog, QKeySequence("F5"))
        h = mb.addMenu("&Help")
        self._action(
            h, "User &guide", lambda: help_menu.guide_dialog(self).exec(), QKeySequence("F1")
        )
        self._action(
            h, "&Keyboard shortcuts", lambda: help_menu.shortcuts_dialog(self).exec(),
            QKeySequence("Ctrl+/"),
        )  # fmt: skip
        self._action(
            h, "&Where files live", lambda: help_menu.files_dialog(self, self.catalog).exec()
        )
        h.addSeparator()
        self._action(h, "&About", self.show_about)

    def _connect(self) -> None:
        self.form.validityChanged.connect(lambda ok, why: self._update_buttons())
        self.form.presetChanged.connect(self._preset_changed)
        self.form.notice.connect(lambda text: self.log.add("info", text))
        self.start_button.clicked.connect(lambda _=False: self.start())
        self.detached_button.clicked.connect(lambda _=False: self.start_other())
        self.pause_button.clicked.connect(lambda _=False: self.toggle_pause())
        self.stop_button.clicked.connect(lambda _=False: self.stop())
        self.up_button.clicked.connect(lambda _=False: self._move_queued(-1))
        self.down_button.clicked.connect(lambda _=False: self._move_queued(1))
        self.remove_button.clicked.connect(lambda _=False: self._remove_queued())
        q = self.queue
        q.log.connect(self.log.add)
        q.changed.connect(self._queue_changed)
        q.jobStarted.connect(self._job_started)
        q.jobFinished.connect(self._job_finished)
        s = q.signals
        s.started.connect(self._run_started)
        s.steps.connect(self._steps)
        s.evaluated.connect(self._evaluated)
        s.checkpoint.connect(self._checkpoint)
        s.status.connect(self._status)
        s.notice.connect(self._notice)
        s.adaptation.connect(lambda run_id, data: self.adapt.show_data({**data, "run_id": run_id}))
        self.adapt.on_visible = lambda shown: setattr(s, "adaptation_wanted", shown)
        s.adaptation_wanted = self.adapt.isVisible()
        self.browser.log.connect(self.log.add)
        self.browser.resumeRequested.connect(self.resume_run)
        self.browser.resumeDetachedRequested.connect(self.resume_detached)
        self.browser.cloneRequested.connect(self.clone_config)
        f = self.follower
        f.steps.connect(self._steps)
        f.evaluated.connect(self._evaluated)
        f.status.connect(self._detached_status)
        f.ended.connect(self._detached_ended)
        f.restarted.connect(self._detached_restarted)
        f.discovered.connect(lambda rec: self.follow_run(rec.id, rec))
        f.error.connect(lambda text: self.log.add("error", text))
        self.live.selectionChanged.connect(self._selection_changed)

    # ---- run control -------------------------------------------------------------------
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

    # ---- run events ----------------------------------------------------------------------
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

    # ---- runs in other processes (the follower) --------------------------------------------
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

    def _selection_changed(self, run_id: int) -> None:
        r = self.runs.get(run_id)
        if r is not None:
            self.live.set_reference(r.get("reference"))
        self.adapt.set_note(
            f"Run #{run_id} trains in its own process: the adaptation view shows runs "
            "trained in the app."
            if r is not None and r.get("detached")
            else None
        )
        self._sb_texts.clear()
        self._state_changed()
        self._update_buttons()

    @property
    def _run(self) -> dict[str, Any]:
        """The selected run's live state (what the status bar shows)."""
        sel = self.live.current
        return self.runs.get(sel, {}) if sel is not None else {}

    def live_count(self) -> tuple[int, int]:
        """(running, paused) among the runs in the live view."""
        states = [r.get("state") for r in self.runs.values()]
        paused = states.count("paused")
        return sum(1 for s in states if s in LIVE_STATES) - paused, paused

    def detached_live(self) -> int:
        """Runs in their own processes that are live now, launches in flight included."""
        live = sum(
            1 for r in self.runs.values() if r.get("detached") and r.get("state") in LIVE_STATES
        )
        return live + len(self._launches)

    def _run_label(self, run_id: int) -> str:
        r = self.runs.get(run_id, {})
        ranks = r.get("ranks", 1)
        where = (
            f"{ranks} processes" if ranks > 1 else "own process" if r.get("detached") else "in app"
        )
        total = r.get("total") or "?"
        return (
            f"#{run_id} {r.get('name') or ''}\n"
            f"{r.get('state', '')} {r.get('step', 0)}/{total} · {where}"
        )

    # ---- status bar ----------------------------------------------------------------------
    def _set_text(self, label: QLabel, text: str) -> None:
        """setText only on a change: an unchanged label costs no relayout or repaint."""
        if self._sb_texts.get(id(label)) != text:
            self._sb_texts[id(label)] = text
            label.setText(text)

    def _state_changed(self) -> None:
        """A run's state changed: the list and the status bar say so now."""
        self._update_run_labels()
        self.update_status_bar()

    def _update_run_labels(self) -> None:
        """The run list's texts (state, step): every LABELS_EVERY_S and on state changes; each
        text change repaints the list, on the GUI thread an in-app run shares the GIL with."""
        for run_id, run in self.runs.items():
            ranks = run.get("ranks", 1)
            where = (
                f"trains on {ranks} processes, data-parallel (rank 0: pid {run.get('pid')})"
                if ranks > 1
                else f"trains in its own process (pid {run.get('pid')})"
                if run.get("detached")
                else "trains in the app's thread"
            )
            self.live.set_run_text(run_id, self._run_label(run_id), f"#{run_id} {where}")

    def update_status_bar(self, force: bool = False) -> None:
        running, paused = self.live_count()
        parts = [f"{running} running"] if running else []
        parts += [f"{paused} paused"] if paused else []
        self._set_text(self.sb_count, ", ".join(parts))
        now = time.monotonic()
        if force or now - self._labels_at >= LABELS_EVERY_S:
            self._labels_at = now
            self._update_run_labels()
        r = self._run
        if r:
            state = r.get("state", "")
            self._set_text(self.sb_state, f"#{r['id']} {state}")
            self._set_text(self.sb_step, f"step {r.get('step', 0)}/{r.get('total') or '?'}")
            rate = r.get("rate") or 0.0
            self._set_text(self.sb_speed, f"{rate:.1f} steps/s" if rate else "")
            live = state in ("running", "starting")
            self._set_text(
                self.sb_eta,
                f"ETA {fmt_eta(((r.get('total') or 0) - r.get('step', 0)) / rate)}"
                if rate and live and r.get("total")
                else "",
            )
            self._set_text(self.sb_device, str(r.get("device_text") or r.get("device", "")))
        now = time.monotonic()
        if not force and now - self._mem_at < 2.0:
            return
        self._mem_at = now
        mem = f"RSS {self._process.memory_info().rss / 2**20:.0f} MiB"
        dev = r.get("device", "") if r else ""
        if dev.startswith(("cuda", "mps")):
            try:
                import torch

                from workbench.core.devices import device_memory_text

                mem += device_memory_text(torch.device(dev))
            except Exception:
                pass
        self._set_text(self.sb_memory, mem)

    # ---- about, settings, closing ----------------------------------------------------------
    def about_text(self) -> str:
        return help_menu.about_text(self.catalog)

    def show_about(self) -> None:
        help_menu.show_about(self, self.catalog)

    def restore_settings(self) -> None:
        s = qs.settings()
        geo = s.value("window/geometry")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        state = s.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        split = s.value("window/train_split")
        if isinstance(split, QByteArray):
            self.train_split.restoreState(split)
        bsplit = s.value("window/browser_split")
        if isinstance(bsplit, QByteArray):
            self.browser.splitter.restoreState(bsplit)
        lsplit = s.value("window/live_split")
        if isinstance(lsplit, QByteArray):
            self.live.split.restoreState(lsplit)
        detached = s.value(SETTING_DETACHED, False)
        self.detached_default_action.setChecked(str(detached).lower() in ("true", "1"))
        last = qs.load_json("form/last_config")
        if isinstance(last, dict):
            try:
                self.form.set_config(last)
            except Exception as exc:
                self.log.add("error", f"last settings not restored: {exc}")

    def save_settings(self) -> None:
        s = qs.settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/train_split", self.train_split.saveState())
        s.setValue("window/browser_split", self.browser.splitter.saveState())
        s.setValue("window/live_split", self.live.split.saveState())
        s.setValue(SETTING_DETACHED, self.detached_default)
        s.sync()
        qs.save_json("form/last_config", self.form.to_dict())

    def open_catalog(self, dialog: Any = None) -> Catalog | None:
        """File → Open catalog: ask for a file or URL, open it (errors stay in the dialog) and
        hand it to the app, which replaces this window. Refused while a run trains here; runs in
        their own processes go on, in the catalog they were started in."""
        if self.queue.running:
            self.log.add(
                "warning", "stop the run training in this window before opening another catalog"
            )
            return None
        if dialog is None:
            from workbench.gui.catalog_dialog import OpenCatalogDialog

            dialog = OpenCatalogDialog(
                self.catalog.display if self.catalog.server else self.catalog.location, self
            )
        if not dialog.exec() or dialog.catalog is None:
            return None
        self.log.add("info", f"opened catalog {dialog.catalog.display}")
        self.catalogOpened.emit(dialog.catalog)
        return dialog.catalog

    def export_figure(self, dialog: Any = None) -> Any:
        """File → Export figure…: the live view's grid of plots, as on screen (smoothing and
        legend included), at the size and DPI the dialog asks for."""
        if dialog is None:
            from workbench.gui.figure_export import FigureDialog

            run = self.runs.get(self.live.current or -1, {})
            dialog = FigureDialog(self.live.view, str(run.get("name") or "training"), self)
        if dialog.exec() and dialog.written is not None:
            self.log.add("info", f"figure written to {dialog.written}")
        return dialog.written

    def _fill_recent(self) -> None:
        """File → Open recent: the catalogs opened before, newest first, this one left out."""
        self.recent_menu.clear()
        here = self._catalog_target()
        for target in [t for t in qs.recent_catalogs() if t != here]:
            self._action(self.recent_menu, target, lambda t=target: self.open_recent(t))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    def _catalog_target(self) -> str:
        """How this catalog is named in the recent list: the file, or the URL with no password."""
        return self.catalog.display if self.catalog.server else self.catalog.location

    def open_recent(self, target: str) -> Catalog | None:
        """Open a catalog of the recent list; one that cannot be opened now (moved, server down)
        is said in the log and the status bar, and this window stays on its catalog."""
        if self.queue.running:
            self.log.add(
                "warning", "stop the run training in this window before opening another catalog"
            )
            return None
        from workbench.gui.catalog_dialog import open_error

        try:
            if "://" not in target and not os.path.exists(target):  # moved: not made anew
                raise FileNotFoundError(f"{target} no longer exists")
            catalog = Catalog.open(target)
        except Exception as exc:
            self.log.add("error", f"cannot open {target}: {open_error(exc)}")
            self.statusBar().showMessage(f"cannot open {target}: {open_error(exc)}", 10_000)
            return None
        self.log.add("info", f"opened catalog {catalog.display}")
        self.catalogOpened.emit(catalog)
        return catalog

    def new_sweep(self, dialog: Any = None) -> Any:
        """Run setup → New sweep…: the form's configuration is the base; the sweep's driver
        starts as a process of its own and the Sweeps tab shows it. Returns the process."""
        if self.form.config is None:
            self.log.add("error", f"fix the run setup first: {self.form.error}")
            return None
        if dialog is None:
            from workbench.gui.sweep_dialog import SweepDialog

            dialog = SweepDialog(self.form.config.to_dict(), self)
        if not dialog.exec():
            return None
        from workbench.gui.sweep_dialog import start_sweep

        spec = dialog.spec_dict()
        proc = start_sweep(
            spec,
            self.catalog.location,
            dialog.executor.currentText(),
            self.catalog.checkpoint_root / "sweeps",
        )
        self.log.add("info", f"sweep {spec['name']!r} started (driver process {proc.pid})")
        self.tabs.setCurrentWidget(self.sweeps)
        return proc

    def _ask(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closed:
            event.accept()
            return
        others = self.detached_live()
        note = keep_training_note(others) if others else ""
        if self.queue.running:
            text = "A run is training. Stop it (it ends cancelled, with a checkpoint) and quit?"
            if not self.confirm("Quit while training?", f"{text}\n\n{note}." if note else text):
                event.ignore()
                return
        elif note and not self.confirm("Quit?", f"{note}.\n\nQuit the app?"):
            event.ignore()
            return
        if note:
            self.log.add("info", note)
        self.save_settings()
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop the run and the background work and wait for their threads (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.status_timer.stop()
        self.live.timer.stop()
        self.follower.close()  # runs in their own processes go on: nothing is asked of them
        self.launch_timer.stop()
        self.queue.shutdown()
        self.browser.shutdown()
        self.sweeps.shutdown()
