"""The main window: run setup (dock), live training view and experiments browser (tabs),
log pane (dock), menus, shortcuts, status bar, and QSettings persistence."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import psutil
from PySide6.QtCore import QByteArray, Qt, QTimer
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

from workbench.catalog import Catalog
from workbench.core.events import CheckpointSaved, EvalResult, RunFinished, RunStarted, StepMetrics
from workbench.gui import settings as qs
from workbench.gui.adaptation_view import AdaptationView
from workbench.gui.browser import ExperimentsBrowser
from workbench.gui.browser_model import fmt_value
from workbench.gui.live_plots import LivePlots
from workbench.gui.log_pane import LogPane
from workbench.gui.presets import reference_value
from workbench.gui.run_form import RunForm
from workbench.gui.run_queue import RunQueue
from workbench.gui.worker import Job


def versions() -> dict[str, str]:
    import pyqtgraph
    import PySide6
    import torch
    from PySide6.QtCore import qVersion

    from workbench import __version__

    return {
        "workbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "Qt": qVersion(),
        "PySide6": PySide6.__version__,
        "pyqtgraph": pyqtgraph.__version__,
    }


def fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0 or seconds > 1e7:
        return "–"
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class MainWindow(QMainWindow):
    def __init__(
        self, catalog: Catalog, parent: QWidget | None = None, restore: bool = True
    ) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.confirm: Callable[[str, str], bool] = self._ask
        self.setWindowTitle(f"Meta-Learning Workbench — {catalog.path.name}")
        self._process = psutil.Process(os.getpid())
        self._run: dict[str, Any] = {}
        self._closed = False

        self.queue = RunQueue(catalog, self)
        self.log = LogPane()
        self.form = RunForm()
        self.live = LivePlots()
        self.adapt = AdaptationView()
        self.browser = ExperimentsBrowser(catalog)

        self._build_setup_dock()
        self._build_center()
        self._build_log_dock()
        self._build_status_bar()
        self._build_menus()
        self._connect()

        self._sb_texts: dict[int, str] = {}
        self._mem_at = 0.0
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
            f"catalog {catalog.path} ({self.browser.model.rowCount()} runs, loaded in {self.browser.load_ms:.0f} ms)",
        )
        self.resize(1500, 950)
        if restore:
            self.restore_settings()
        self._update_buttons()

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
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause / resume the running run (Ctrl+P)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(
            "Stop the running run after the current step, with a checkpoint (Ctrl+. or Esc)"
        )
        for b in (self.start_button, self.pause_button, self.stop_button):
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
        r.addSeparator()
        self._action(r, "Clear &queue", self.clear_queue)
        v = mb.addMenu("&View")
        v.addAction(self.setup_dock.toggleViewAction())
        v.addAction(self.log_dock.toggleViewAction())
        self._action(v, "&Training", lambda: self.tabs.setCurrentIndex(0), QKeySequence("Ctrl+1"))
        self._action(
            v, "&Experiments", lambda: self.tabs.setCurrentIndex(1), QKeySequence("Ctrl+2")
        )
        self._action(v, "&Reload catalog", self.browser.reload_catalog, QKeySequence("F5"))
        h = mb.addMenu("&Help")
        self._action(h, "&About", self.show_about)

    def _connect(self) -> None:
        self.form.validityChanged.connect(lambda ok, why: self._update_buttons())
        self.form.presetChanged.connect(self._preset_changed)
        self.form.notice.connect(lambda text: self.log.add("info", text))
        self.start_button.clicked.connect(lambda _=False: self.start())
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
        s.adaptation.connect(lambda run_id, data: self.adapt.show_data(data))
        self.adapt.on_visible = lambda shown: setattr(s, "adaptation_wanted", shown)
        s.adaptation_wanted = self.adapt.isVisible()
        self.browser.log.connect(self.log.add)
        self.browser.resumeRequested.connect(self.resume_run)
        self.browser.cloneRequested.connect(self.clone_config)

    # ---- run control -------------------------------------------------------------------
    def start(self) -> list[int]:
        """Start (or queue) the configured run, one per seed; returns the new run ids."""
        cfg = self.form.validate()
        if cfg is None:
            self.log.add(
                "error", f"cannot start: {self.reason_label.text() or self.form.error_label.text()}"
            )
            return []
        seeds = self.form.seeds()
        ids = self.queue.submit(cfg, seeds)
        qs.save_json("form/last_config", self.form.to_dict())
        if cfg.dataset.data_dir:
            qs.remember_data_dir(cfg.dataset.data_dir)
        self.browser.reload()
        return ids

    def toggle_pause(self) -> None:
        if not self.queue.running:
            return
        if self.queue.paused:
            self.queue.resume_current()
            self.log.add("info", "resuming")
        else:
            self.queue.pause()
            self.log.add("info", "pausing after the current step")
        self._update_buttons()

    def stop(self) -> None:
        if self.queue.running:
            self.queue.stop()
            self.sb_state.setText("stopping…")

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
        self.start_button.setEnabled(ok)
        self.start_action.setEnabled(ok)
        self.start_button.setText("Queue" if running else "Start")
        reason = "" if ok else (self.form.error_label.text() or "invalid configuration")
        self.reason_label.setText(f"Start disabled: {reason}" if reason else "")
        self.reason_label.setVisible(bool(reason))
        self.start_button.setToolTip(
            reason or "Start the run (Ctrl+Return); while one trains, queue it"
        )
        self.pause_button.setEnabled(running)
        self.pause_button.setText("Resume" if self.queue.paused else "Pause")
        self.stop_button.setEnabled(running)
        has_pending = bool(self.queue.pending)
        for b in (self.up_button, self.down_button, self.remove_button):
            b.setEnabled(has_pending)

    def _preset_changed(self, preset: Any) -> None:
        if not self.queue.running:
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
        self.live.reset(metric, reference_value(preset, metric))
        self.adapt.clear()
        self._run = {
            "id": run_id,
            "step": job.checkpoint.step if job.checkpoint else 0,
            "total": cfg.steps,
            "rate": 0.0,
            "device": cfg.device,
            "state": "starting",
            "name": job.label,
            "t0": time.monotonic(),
        }
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
            self.live.preload(hist)
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
        self._run.update(
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
        self.live.add_steps(batch)
        last = batch[-1]
        self._run["step"] = last.step
        self._run["rate"] = last.values.get("steps_per_s", 0.0)

    def _evaluated(self, run_id: int, ev: EvalResult) -> None:
        self.live.add_eval(ev)
        what = f"{ev.split} {ev.metric} {fmt_value(ev.metric, ev.mean, ev.ci95)} on {ev.episodes} episodes at step {ev.step}"
        self.log.add("info", f"run #{run_id}: {what}")

    def _checkpoint(self, run_id: int, ev: CheckpointSaved) -> None:
        self.log.add(
            "info",
            f"run #{run_id}: {ev.kind} checkpoint at step {ev.step} ({ev.bytes / 1024:.0f} KiB)",
        )

    def _status(self, run_id: int, status: str) -> None:
        self._run["state"] = status
        self.queue.paused = status == "paused"
        self._update_buttons()
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
        self._run["state"] = fin.status
        self._run["step"] = fin.step
        self.live.redraw(force=True)
        if fin.test is not None:
            t = fin.test
            self.log.add(
                "info",
                f"run #{run_id}: test {t.metric} {fmt_value(t.metric, t.mean, t.ci95)} on {t.episodes} episodes (checkpoint step {t.checkpoint_step})",
            )
        self.browser.poll()
        self._update_buttons()

    # ---- status bar ----------------------------------------------------------------------
    def _set_text(self, label: QLabel, text: str) -> None:
        """setText only on a change: an unchanged label costs no relayout or repaint."""
        if self._sb_texts.get(id(label)) != text:
            self._sb_texts[id(label)] = text
            label.setText(text)

    def update_status_bar(self, force: bool = False) -> None:
        r = self._run
        if r:
            state = r.get("state", "")
            self._set_text(self.sb_state, f"#{r['id']} {state}")
            self._set_text(self.sb_step, f"step {r['step']}/{r['total']}")
            rate = r.get("rate") or 0.0
            self._set_text(self.sb_speed, f"{rate:.1f} steps/s" if rate else "")
            live = state in ("running", "starting")
            self._set_text(
                self.sb_eta,
                f"ETA {fmt_eta((r['total'] - r['step']) / rate)}" if rate and live else "",
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
        v = versions()
        rows = "".join(f"<tr><td>{k}</td><td>&nbsp;{val}</td></tr>" for k, val in v.items())
        return (f"<h3>Meta-Learning Workbench {v['workbench']}</h3>"
                "<p>MAML, first-order MAML, Meta-LSTM, ProtoNet and a fine-tuning baseline, "
                "with a run catalog.</p>"
                f"<table>{rows}</table><p>Catalog: {self.catalog.path}</p>")  # fmt: skip

    def show_about(self) -> None:
        QMessageBox.about(self, "About the Meta-Learning Workbench", self.about_text())

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
        s.sync()
        qs.save_json("form/last_config", self.form.to_dict())

    def _ask(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closed:
            event.accept()
            return
        if self.queue.running and not self.confirm(
            "Quit while training?",
            "A run is training. Stop it (it ends cancelled, with a checkpoint) and quit?",
        ):
            event.ignore()
            return
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
        self.queue.shutdown()
        self.browser.shutdown()
