"""The main window: run setup (dock), live training view, experiments browser and sweeps (tabs),
log pane (dock), menus, shortcuts, status bar, and QSettings persistence.

This module builds the window, wires its parts and closes it; what it does is in the parts it
mixes in, one module each: `window_layout` (docks and tabs), `window_control` (Start, Pause,
Stop, the queue), `window_events` (the in-app run's events), `window_launches` (runs in their
own processes), `window_status` (status bar, run list texts), `window_files` (File and Help
menus' actions, settings)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import psutil
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QMainWindow,
    QMessageBox,
    QWidget,
)

from workbench.catalog import Catalog
from workbench.gui import help_menu
from workbench.gui import settings as qs
from workbench.gui.adaptation_view import AdaptationView
from workbench.gui.browser import ExperimentsBrowser
from workbench.gui.follower import RunFollower
from workbench.gui.live_plots import LivePlots
from workbench.gui.log_pane import LogPane
from workbench.gui.run_form import RunForm
from workbench.gui.run_queue import RunQueue
from workbench.gui.window_control import ControlMixin
from workbench.gui.window_events import RunEventsMixin
from workbench.gui.window_files import FilesMixin
from workbench.gui.window_launches import LaunchesMixin
from workbench.gui.window_layout import LayoutMixin
from workbench.gui.window_status import StatusMixin, device_text, fmt_eta  # noqa: F401 (used by tests)

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


class MainWindow(
    LayoutMixin, ControlMixin, StatusMixin, RunEventsMixin, LaunchesMixin, FilesMixin, QMainWindow
):
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

    # ---- the selected run ----------------------------------------------------------------
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

    # ---- closing ---------------------------------------------------------------------------
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
