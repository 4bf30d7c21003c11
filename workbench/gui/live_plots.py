"""Live training curves (pyqtgraph): meta-train loss, query score, validation with a 95% CI
band, learning rate and steps/s, for every live run at once (one colour per run).

A list beside the plots (`live_run_list`) holds the live runs (in the app's thread or in their
own processes) and the ended ones kept for comparison; the checked ones are overlaid, one
`Trace` per run (`live_trace`), and the selected one is what Pause/Stop and the cursor
read-out act on.

Events are only queued by the slots; `PaintBudget` (`live_budget`) redraws at most `FPS` times
a second and at most `paint_duty` of the wall time, and only curves that changed: the GUI
thread shares the GIL with training in the app's thread. While following the data the axis
ranges grow in steps (`live_ranges`) so that most frames leave the axes' cached pictures alone.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.core.events import EvalResult, StepMetrics
from workbench.gui.live_budget import (
    DETACHED_PAINT_DUTY,
    FPS,
    HIDDEN_INGEST_S,
    MAX_WAIT_S,
    PAINT_DUTY,
    PaintBudget,
    _budget_wait,
    _TimedLayoutWidget,
)
from workbench.gui.live_ranges import X_GROWTH, Y_SHRINK, Y_SLACK, fit_x, fit_y, x_bounds, y_bounds
from workbench.gui.live_run_list import MAX_ENDED, RunListMixin
from workbench.gui.live_trace import COLORS, CURVE_KEYS, PALETTE, Trace, _pen, swatch

__all__ = [  # the names callers import from here (main window, benches, tests)
    "COLORS",
    "CURVE_KEYS",
    "DETACHED_PAINT_DUTY",
    "FPS",
    "HIDDEN_INGEST_S",
    "MAX_ENDED",
    "MAX_WAIT_S",
    "PAINT_DUTY",
    "PALETTE",
    "X_GROWTH",
    "Y_SHRINK",
    "Y_SLACK",
    "LivePlots",
    "Trace",
    "_TimedLayoutWidget",
    "_budget_wait",
    "_pen",
    "swatch",
]

LOG_KEYS = ("loss", "score", "val")  # the plots "Log scale" applies to

pg.setConfigOptions(antialias=False, background="w", foreground="#333")


class LivePlots(RunListMixin, QWidget):
    """The centre of the window while training."""

    redrawn = Signal()  # after each redraw that changed something (tests wait on it)
    selectionChanged = Signal(int)  # the selected run's id (-1: none)
    checkedChanged = Signal(int, bool)  # run id, overlaid or not

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.x_mode = "step"
        self.alpha = 0.9
        self.score_metric = "mse"
        self.reference: float | None = None
        self.traces: dict[int, Trace] = {}
        self.current: int | None = None  # the selected run
        self.redraws = 0
        self._dirty = False
        self._log = False
        # latency bookkeeping: (run id, newest point's wall time) fed and not painted yet, and
        # (run id, that wall time, time.time() of the paint that showed it) once painted
        self._unpainted: list[tuple[int, float]] = []
        self.shown_log: deque[tuple[int, float, float]] = deque(maxlen=10_000)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(self._build_bar())
        # the run list: checked runs are overlaid, the selected one is what the controls act on
        side = self._build_run_list()
        self.view = _TimedLayoutWidget()
        self.view.on_paint = self._painted
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.addWidget(side)
        self.split.addWidget(self.view)
        self.split.setStretchFactor(0, 0)
        self.split.setStretchFactor(1, 1)
        self.split.setSizes([250, 800])
        lay.addWidget(self.split, 1)
        self.plots: dict[str, pg.PlotItem] = {}
        self._add_plot("loss", "Meta-train loss", 0, 0)
        self._add_plot("score", "Query MSE", 0, 1)
        self._add_plot("val", "Validation MSE ± 95% CI", 1, 0, colspan=2)
        self._add_plot("lr", "Meta learning rate", 2, 0)
        self._add_plot("speed", "Steps / s", 2, 1)
        first = self.plots["loss"]
        for key, p in self.plots.items():
            if p is not first and key != "val":  # val is wider: synced by value, not by pixel
                p.setXLink(first)
            # clip-to-view draws only what is inside the x range, so pyqtgraph's x auto-range
            # cannot grow it: the x range follows the data here until the user pans or zooms
            p.enableAutoRange(x=False, y=False)  # while following, redraw fits y (in steps)
            p.setAutoVisible(y=True)  # after a manual x zoom, y auto-range fits what is visible
            p.vb.sigRangeChangedManually.connect(self._manual_range)
        self.follow_x = True
        first.vb.sigXRangeChanged.connect(lambda _vb, r: self.plots["val"].setXRange(*r, padding=0))
        # lr: fitted from 0 in redraw: a constant LR is a flat line

        self.ref_line = pg.InfiniteLine(
            angle=0,
            movable=False,
            pen=pg.mkPen("#555", width=1.2, style=Qt.PenStyle.DashLine),
            label="published {value:.4g}",
            labelOpts={"position": 0.05, "color": "#555", "anchors": [(0, 1), (0, 1)]},
        )
        self.ref_line.hide()
        self.plots["val"].addItem(self.ref_line, ignoreBounds=True)

        self.cross: dict[str, pg.InfiniteLine] = {}
        for key, p in self.plots.items():
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#999", width=1))
            line.hide()
            p.addItem(line, ignoreBounds=True)
            self.cross[key] = line
        self._mouse_proxy = pg.SignalProxy(
            self.view.scene().sigMouseMoved, rateLimit=30, slot=self._mouse_moved
        )

        self._lr_top: float | None = None
        self.budget = PaintBudget(
            self, self.view, self._shown, lambda: self._ingest(), lambda: self.redraw()
        )
        self.timer = self.budget.timer  # what the window stops on close

    @property
    def paint_duty(self) -> float:
        """Share of the wall time the curves may take (higher with no run in this process)."""
        return self.budget.duty

    @paint_duty.setter
    def paint_duty(self, duty: float) -> None:
        self.budget.duty = duty

    def _build_bar(self) -> QHBoxLayout:
        """The view options above the plots, and the cursor read-out at their right."""
        bar = QHBoxLayout()
        bar.addWidget(QLabel("X axis"))
        self.x_combo = QComboBox()
        self.x_combo.addItem("Step", "step")
        self.x_combo.addItem("Wall time (s)", "wall")
        self.x_combo.currentIndexChanged.connect(
            lambda _: self.set_x_mode(self.x_combo.currentData())
        )
        bar.addWidget(self.x_combo)
        bar.addSpacing(16)
        bar.addWidget(QLabel("Smoothing"))
        self.smooth_slider = QSlider(
            Qt.Orientation.Horizontal, minimum=0, maximum=99, value=int(self.alpha * 100)
        )
        self.smooth_slider.setFixedWidth(140)
        self.smooth_slider.setToolTip(
            "Exponential moving average weight of the past; the raw curve stays faint behind"
        )
        self.smooth_label = QLabel(f"{self.alpha:.2f}")
        self.smooth_slider.valueChanged.connect(lambda v: self.set_smoothing(v / 100))
        bar.addWidget(self.smooth_slider)
        bar.addWidget(self.smooth_label)
        bar.addSpacing(16)
        self.log_check = QCheckBox("Log scale")
        self.log_check.toggled.connect(self.set_log)
        bar.addWidget(self.log_check)
        follow = QPushButton("Follow")
        follow.setToolTip(
            "Fit the x axis to the data again after zooming or panning (double-click a plot does the same)"
        )
        follow.clicked.connect(lambda _=False: self.follow())
        bar.addWidget(follow)
        bar.addStretch(1)
        self.cursor_label = QLabel("")
        self.cursor_label.setStyleSheet("color: #444; font-family: monospace;")
        bar.addWidget(self.cursor_label)
        return bar

    def _add_plot(self, key: str, title: str, row: int, col: int, colspan: int = 1) -> None:
        p = self.view.addPlot(row=row, col=col, colspan=colspan, title=title)
        # no grid: in a software-rastered window it tripled the paint time (14 -> 45 ms)
        p.setClipToView(True)
        p.setDownsampling(auto=True, mode="peak")
        p.getAxis("left").setWidth(48)
        for side in ("left", "bottom"):  # the axes have no units: without this, every range
            p.getAxis(side).enableAutoSIPrefix(False)  # change re-renders their labels' HTML
        self.plots[key] = p

    # ---- feeding ---------------------------------------------------------------------
    def reset(
        self,
        metric: str = "mse",
        reference: float | None = None,
        origin: float | None = None,
        run_id: int | None = None,
    ) -> None:
        """Clear a run's curves for a new start (`metric` is "accuracy" or "mse") and select it."""
        t = self._trace(run_id)
        t.clear()
        t.ended = False
        t.origin = origin or 0.0
        t.metric = metric
        if not t.visible:
            self.set_checked(t.run_id, True)
        self.select(t.run_id)
        self.set_metric(metric)
        self.set_reference(reference)
        self._lr_top = None
        self.follow()

    def set_metric(self, metric: str) -> None:
        self.score_metric = metric
        name = "accuracy" if metric == "accuracy" else "MSE"
        self.plots["score"].setTitle(f"Query {name}")  # after adaptation, where there is one
        self.plots["val"].setTitle(f"Validation {name} ± 95% CI")

    def set_reference(self, value: float | None) -> None:
        self.reference = value
        if value is None or not math.isfinite(value):
            self.ref_line.hide()
        else:
            self.ref_line.show()  # first: pyqtgraph does not refresh the text of a hidden label
            self.ref_line.setValue(value)
            self.ref_line.label.setFormat(f"published {value:.4g}")

    def add_steps(self, steps: list[StepMetrics], run_id: int | None = None) -> None:
        self._trace(run_id).pending_steps.extend(steps)

    def add_eval(self, result: EvalResult, run_id: int | None = None) -> None:
        if result.split == "val":
            self._trace(run_id).pending_evals.append(result)

    def preload(
        self,
        history: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
        run_id: int | None = None,
    ) -> None:
        """Earlier points of a run: {metric name: (steps, values, wall_times)}."""
        t = self._trace(run_id)
        t.preload(history)
        if t.run_id == self.current:
            self.set_metric(t.metric)

    # ---- drawing ---------------------------------------------------------------------
    def _shown(self) -> bool:
        """On screen: not in a hidden tab, not minimized, not covered by the splitter."""
        return self.isVisible() and not self.view.viewport().visibleRegion().isEmpty()

    def showEvent(self, ev: Any) -> None:
        super().showEvent(ev)
        self.budget.now()  # what arrived while hidden is drawn right away

    def _painted(self) -> None:
        if self._unpainted:
            now = time.time()
            for run_id, wall in self._unpainted:
                self.shown_log.append((run_id, wall, now))
            self._unpainted.clear()

    def _ingest(self) -> tuple[bool, bool]:
        """Move every run's queued events into its buffers; (new steps?, new validations?)."""
        any_steps = any_evals = False
        for t in self.traces.values():
            s, e = t.ingest()
            any_steps, any_evals = any_steps or s, any_evals or e
        return any_steps, any_evals

    def _shown_traces(self) -> list[Trace]:
        return [t for t in self.traces.values() if t.visible]

    def redraw(self, force: bool = False) -> bool:
        """Feed what changed to the plot items; True if anything was redrawn. `force` redraws
        everything and fits the ranges tightly (new run, view option changed, run ended)."""
        self._ingest()
        dirty_all = force or self._dirty
        self._dirty = False
        changed = dirty_all
        smoothing = self.alpha > 0
        for t in self.traces.values():
            dirty = dirty_all or t.dirty
            new_steps = dirty or t.dirty_steps
            new_evals = dirty or len(t.val_step) != t.val_drawn
            t.dirty = t.dirty_steps = False
            if not t.visible:
                continue
            if new_steps:
                changed = True
                t.feed_steps(self.x_mode, smoothing)
                if len(t.series["loss"]):
                    self._unpainted.append((t.run_id, t.newest_wall()))
            if new_evals:
                changed = True
                t.feed_evals(self.x_mode)
        if not changed:
            return False
        shown = self._shown_traces()
        tops = [t.series["lr"].vmax for t in shown if len(t.series["lr"])]
        tops = [v for v in tops if math.isfinite(v)]
        if tops or any(len(t.series["lr"]) for t in shown):
            top = max(tops) if tops else 1.0
            if dirty_all or top != self._lr_top:
                self._lr_top = top
                self.plots["lr"].setYRange(0.0, top * 1.15 if top > 0 else 1.0, padding=0)
        if self.follow_x:
            fit_x(self.plots["loss"], x_bounds(shown, self.x_mode), tight=force)
            for key in ("loss", "score", "val", "speed"):
                ref = self.reference if key == "val" else None  # the published number in view
                log = self._log and key in LOG_KEYS  # steps/s stays linear
                fit_y(self.plots[key], y_bounds(shown, key, log), log, ref, tight=force)
        self.redraws += 1
        self.redrawn.emit()
        return True

    # ---- view options ----------------------------------------------------------------
    def set_x_mode(self, mode: str) -> None:
        self.x_mode = mode
        self.plots["lr"].setLabel("bottom", "step" if mode == "step" else "wall time (s)")
        self.plots["speed"].setLabel("bottom", "step" if mode == "step" else "wall time (s)")
        self.follow()

    def follow(self) -> None:
        """Let the x range follow the data again (after a manual zoom or pan)."""
        self.follow_x = True
        for p in self.plots.values():
            p.enableAutoRange(x=False, y=False)  # fitted in redraw, in steps (see live_ranges)
        self.redraw(force=True)

    def _manual_range(self, mask: Any = None) -> None:
        self.follow_x = False
        # the user moved x only (e.g. dragged the x axis): y fits the visible data, as pyqtgraph does it
        if isinstance(mask, list | tuple) and len(mask) == 2 and mask[0] and not mask[1]:
            for key, p in self.plots.items():
                if key != "lr":
                    p.enableAutoRange(y=True)

    def set_smoothing(self, alpha: float) -> None:
        self.alpha = max(0.0, min(0.99, float(alpha)))
        self.smooth_label.setText(f"{self.alpha:.2f}")
        for t in self.traces.values():
            for s in t.series.values():
                s.set_alpha(self.alpha)
        self.redraw(force=True)

    def set_log(self, on: bool) -> None:
        self._log = bool(on)
        for key in LOG_KEYS:
            self.plots[key].setLogMode(y=self._log)
        self.redraw(force=True)  # refits y (in log10 units) while following

    # ---- crosshair -------------------------------------------------------------------
    def _mouse_moved(self, event: Any) -> None:
        pos = event[0]
        for _key, p in self.plots.items():
            if p.sceneBoundingRect().contains(pos):
                x = p.vb.mapSceneToView(pos).x()
                self.show_cursor(x)
                return
        for line in self.cross.values():
            line.hide()
        self.cursor_label.setText("")

    def show_cursor(self, x: float) -> str:
        """Move the crosshair to x and describe the selected run's values there."""
        for line in self.cross.values():
            line.setValue(x)
            line.show()
        if self.current is None or self.current not in self.traces:
            self.cursor_label.setText("")
            return ""
        t = self.traces[self.current]
        parts = [f"#{t.run_id}"] if len(self.traces) > 1 else []
        text = "  ".join(parts + t.describe(x, self.x_mode))
        self.cursor_label.setText(text)
        return text
