"""The sweep view: every sweep in the catalog, the selected sweep's trials, and its plots.

The two tables live in `sweep_trials`, the four plots in `sweep_plots` (their axes in
`sweep_axes`); this module composes them and decides when to read the catalog.

A 1 s QTimer runs only while the view is shown (started in `showEvent`, stopped in
`hideEvent`) and polls the catalog's `change_token()`, one tiny query. On a change the sweep
list and the selected sweep's trials are read (two small queries); the tables are updated in
place and the plots are redrawn only when the trials differ from what is drawn. Sweep
statuses also change without a commit (a driver whose heartbeat went stale reads
"interrupted"), so the list is re-read every `STALE_CHECK_S` seconds as well.
"""

from __future__ import annotations

import time
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSplitter, QVBoxLayout, QWidget

from workbench.catalog import Catalog
from workbench.catalog.sweep_store import SweepRecord, TrialRecord
from workbench.gui.sweep_axes import (
    Axis,
    decade_ticks,
    fmt_num,
    objective_axis,
    param_axes,
    short_key,
    wide,
)
from workbench.gui.sweep_plots import COLORMAP, FAINT, TOP_K, SweepPlots
from workbench.gui.sweep_trials import (
    SWEEP_COLUMNS,
    SweepTableModel,
    TrialTableModel,
    best_first,
    best_trial,
    fmt_time,
    make_table,
)

__all__ = [  # what callers and tests import from here
    "COLORMAP",
    "FAINT",
    "POLL_MS",
    "STALE_CHECK_S",
    "SWEEP_COLUMNS",
    "TOP_K",
    "Axis",
    "SweepTableModel",
    "SweepView",
    "TrialTableModel",
    "best_first",
    "best_trial",
    "decade_ticks",
    "fmt_num",
    "fmt_time",
    "objective_axis",
    "param_axes",
    "short_key",
    "wide",
]

POLL_MS = 1000
STALE_CHECK_S = 5.0  # a driver that stopped beating changes no row: re-read this often


class SweepView(QWidget):
    """The "Sweeps" tab. `useConfig(dict)` carries the best trial's RunConfig dict."""

    useConfig = Signal(dict)

    def __init__(self, catalog: Catalog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self._token: Any = object()  # never equal to a token: the first poll reads
        self._listed_at = 0.0
        self._sweep: SweepRecord | None = None
        self._trials: list[TrialRecord] = []
        self._drawn: tuple[Any, ...] | None = None  # what the plots show (sweep, trials)
        self.last_poll_ms = 0.0  # the GUI thread's cost of the latest poll
        self.last_redraw_ms = 0.0

        self.sweep_model = SweepTableModel()
        self.trial_model = TrialTableModel()
        self._build()
        self.poll_timer = QTimer(self, interval=POLL_MS)
        self.poll_timer.timeout.connect(self._poll_if_shown)

    # ---- the plots' items (what tests and callers read) ------------------------------
    @property
    def parallel_curves(self) -> list[pg.PlotDataItem]:
        return self.plots.parallel_curves

    @property
    def topk_curves(self) -> list[pg.PlotDataItem]:
        return self.plots.topk_curves

    @property
    def best_line(self) -> pg.PlotDataItem:
        return self.plots.best_line

    @property
    def scatter_item(self) -> pg.ScatterPlotItem:
        return self.plots.scatter_item

    # ---- layout ------------------------------------------------------------------------
    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        split = QSplitter(Qt.Orientation.Vertical)
        lay.addWidget(split)

        tables = QSplitter(Qt.Orientation.Horizontal)
        self.sweep_table = make_table(self.sweep_model)
        self.sweep_table.selectionModel().selectionChanged.connect(lambda *_: self._selected())
        tables.addWidget(self.sweep_table)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.summary = QLabel("No sweep selected")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head.addWidget(self.summary, 1)
        self.use_best_button = QPushButton("Use best configuration")
        self.use_best_button.setToolTip(
            "Copy the best finished trial's configuration into the run setup panel"
        )
        self.use_best_button.setEnabled(False)
        self.use_best_button.clicked.connect(self.use_best)
        head.addWidget(self.use_best_button)
        rl.addLayout(head)
        self.trial_table = make_table(self.trial_model)
        self.trial_table.horizontalHeader().setStretchLastSection(False)
        rl.addWidget(self.trial_table)
        tables.addWidget(right)
        tables.setSizes([560, 840])
        split.addWidget(tables)
        self.plots = SweepPlots(lambda run_id, metric: self.catalog.metrics(run_id, metric))
        split.addWidget(self.plots)
        split.setSizes([260, 540])
        split.setStretchFactor(1, 1)

    # ---- polling -----------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.poll()
        self.poll_timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self.poll_timer.stop()

    def _poll_if_shown(self) -> None:
        if self.isVisible():
            self.poll()

    def poll(self) -> None:
        """Re-read the catalog when it changed (or a stale driver may have gone quiet)."""
        t0 = time.perf_counter()
        try:
            token = self.catalog.change_token()
            stale = time.monotonic() - self._listed_at > STALE_CHECK_S
            if token is not None and token == self._token and not stale:
                return
            self._token = token
            self.refresh()
        except Exception as exc:  # a busy or vanished catalog must not break the GUI
            self.summary.setText(f"catalog read failed: {exc}")
        finally:
            self.last_poll_ms = 1000 * (time.perf_counter() - t0)

    def refresh(self) -> None:
        self._listed_at = time.monotonic()
        selected = self.selected_id()
        self.sweep_model.set_rows(self.catalog.sweeps.list())
        if selected is None and self.sweep_model.rows:
            selected = self.sweep_model.rows[0].id
        row = -1 if selected is None else self.sweep_model.row_of(selected)
        if row >= 0 and self.selected_id() != selected:
            self.select_row(row)  # -> _selected -> _load
        else:
            self._load()

    def selected_id(self) -> int | None:
        rows = self.sweep_table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.sweep_model.rows[rows[0].row()].id

    def select_row(self, row: int) -> None:
        self.sweep_table.selectionModel().select(
            self.sweep_model.index(row, 0),
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows,
        )

    def _selected(self) -> None:
        self._load()

    def _load(self) -> None:
        """The selected sweep's trials; tables and plots only where something changed."""
        sid = self.selected_id()
        if sid is None:
            self._sweep, self._trials = None, []
        else:
            self._sweep = self.sweep_model.rows[self.sweep_model.row_of(sid)]
            self._trials = self.catalog.sweeps.trials(sid)
        state = (self._sweep, tuple(self._trials))
        if state == self._drawn:
            return
        t0 = time.perf_counter()
        self._drawn = state
        self._update_summary()
        sw = self._sweep
        axes = param_axes(sw.spec, self._trials) if sw is not None else []
        self._axes = axes
        self.trial_model.set_trials(self._trials, [a.key for a in axes], bool(sw and sw.maximize))
        self.plots.draw(sw, self._trials, axes)
        self.last_redraw_ms = 1000 * (time.perf_counter() - t0)

    def _update_summary(self) -> None:
        sw = self._sweep
        if sw is None:
            self.summary.setText("No sweep selected")
            self.use_best_button.setEnabled(False)
            return
        best = best_trial(self._trials, sw.maximize)
        text = f"Sweep #{sw.id} {sw.name!r}: {sw.status}, {sw.done}/{sw.trials} finished"
        if best is not None:
            text += f"; best {sw.metric} {fmt_num(best.objective)} (trial {best.number}"
            text += f", run #{best.run_id})" if best.run_id is not None else ")"
        self.summary.setText(text)
        self.use_best_button.setEnabled(best is not None)

    # ---- actions -----------------------------------------------------------------------
    def best_config(self) -> dict[str, Any] | None:
        """The best finished trial's RunConfig dict (its base, point and seed)."""
        sw = self._sweep
        if sw is None:
            return None
        best = best_trial(self._trials, sw.maximize)
        if best is None:
            return None
        from workbench.sweeps.spec import config_for

        return config_for(sw.spec["base"], best.params, best.seed).to_dict()

    def use_best(self) -> None:
        try:
            config = self.best_config()
        except Exception as exc:  # a stored base this version no longer accepts
            self.summary.setText(f"cannot rebuild the best configuration: {exc}")
            return
        if config is not None:
            self.useConfig.emit(config)

    def shutdown(self) -> None:
        self.poll_timer.stop()
