"""The window's parts: the run setup dock (form, Start buttons, queue), the centre tabs (live
view, experiments, sweeps) and the log dock.

A part of `MainWindow` (`gui/main_window.py`), which mixes it in: the attributes it uses are
the window's."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from workbench.gui.sweep_view import SweepView

# a run in one of these states can still be paused or stopped ("starting": its thread or
# process is getting ready; "stopping": asked to stop, not stopped yet)
LIVE_STATES = ("queued", "starting", "running", "paused", "stopping")
SETTING_DETACHED = "run/detached_default"
LABELS_EVERY_S = 2.0  # the run list's step counts refresh this often


class LayoutMixin:
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
