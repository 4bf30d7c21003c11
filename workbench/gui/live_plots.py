"""Live training curves (pyqtgraph): meta-train loss, query score, validation with a 95% CI
band, learning rate and steps/s, for every live run at once (one colour per run).

A list beside the plots holds the live runs (in the app's thread or in their own processes)
and the ended ones kept for comparison; the checked ones are overlaid, one curve per run, and
the selected one is what Pause/Stop and the cursor read-out act on.

Events are only queued by the slots; a QTimer redraws at most `FPS` times a second and at most
`paint_duty` of the wall time (update + paint, measured), and only curves that changed. The
GUI thread shares the GIL with training in the app's thread, so every millisecond drawn here
is a millisecond that trainer waits: a hidden view only buffers, and while following the data
the axis ranges grow in steps (x by 25%, y with hysteresis) so that most frames repaint the
curves and leave the axes' cached pictures alone. Each run's curves are created once and fed
with `setData` on growing numpy buffers, clipped to view and peak-downsampled, so drawing cost
does not grow with the run's length (and the adaptive budget absorbs what does).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from workbench.core.events import EvalResult, StepMetrics
from workbench.gui.buffers import Series

FPS = 30
# share of wall time the curves may take (update + paint): the GIL is shared with training.
# A sinusoid run (2.4 ms steps, the most GIL-bound): 2% gave -2.0/-4.6% steps/s against
# headless at 1.3-1.6 redraws/s, 1.5% gave -1.8/-2.4% at 1.1-1.2 redraws/s (alternated runs)
PAINT_DUTY = 0.015
# with no run training in the app's own thread the GUI takes the GIL from nobody: runs in their
# own processes only share the cores, so the curves may redraw more often (faster to screen)
DETACHED_PAINT_DUTY = 0.05
MAX_WAIT_S = 2.0  # however slow a frame, redraw at least this often while data arrives
HIDDEN_INGEST_S = 0.5  # hidden: move queued points into the buffers this often, draw nothing
X_GROWTH = (
    0.25  # following: the x range grows by this share of the data span when the data reach its end
)
Y_SLACK = (
    0.1  # following: a new y range gets this share of the data span as extra room on each side
)
Y_SHRINK = 0.5  # ... and is refitted when the data use less than this share of it
MAX_ENDED = 6  # ended runs kept in the list (the oldest go when a new run comes)
CURVE_KEYS = ("loss", "score", "lr", "speed")
# one colour per run (matplotlib's tab10): the first run keeps the single-run look's blue
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
# kept for callers of the single-run colours (screenshots, benches)
COLORS = {
    "loss": "#1f77b4",
    "score": "#d62728",
    "val": "#2ca02c",
    "lr": "#9467bd",
    "speed": "#ff7f0e",
}

pg.setConfigOptions(antialias=False, background="w", foreground="#333")


def _pen(color: str, width: float = 1.6, alpha: int = 255) -> Any:
    c = pg.mkColor(color)
    c.setAlpha(alpha)
    return pg.mkPen(c, width=width)


def _budget_wait(cost: float, duty: float = PAINT_DUTY) -> float:
    """Seconds until the next redraw so that redraws costing `cost` take `duty` of the time."""
    return min(MAX_WAIT_S, max(1.0 / FPS, cost / duty - cost))


def swatch(color: str, size: int = 12) -> QIcon:
    """A filled square of the run's colour for the run list."""
    pix = QPixmap(size, size)
    pix.fill(QColor(color))
    return QIcon(pix)


class _TimedLayoutWidget(pg.GraphicsLayoutWidget):
    """Measures its own paint time so that redraws can be spaced to a CPU budget."""

    def __init__(self) -> None:
        super().__init__()
        self.last_paint_s = 0.0
        self.paint_done = 0.0
        self.paint_total_s = 0.0  # all paints so far: one redraw can cause several
        self.on_paint: Any = None  # called after each paint (latency bookkeeping)

    def paintEvent(self, ev: Any) -> None:
        t0 = time.perf_counter()
        super().paintEvent(ev)
        self.paint_done = time.perf_counter()
        self.last_paint_s = self.paint_done - t0
        self.paint_total_s += self.last_paint_s
        if self.on_paint is not None:
            self.on_paint()


class Trace:
    """One run's buffers and the plot items fed from them (created once, removed with the run)."""

    def __init__(
        self, run_id: int, color: str, plots: dict[str, pg.PlotItem], alpha: float
    ) -> None:
        self.run_id = run_id
        self.color = color
        self.metric = "mse"
        self.origin = 0.0
        self.visible = True
        self.ended = False
        self.series: dict[str, Series] = {}
        self.val_step: list[float] = []
        self.val_wall: list[float] = []
        self.val_mean: list[float] = []
        self.val_ci: list[float] = []
        self.pending_steps: list[StepMetrics] = []
        self.pending_evals: list[EvalResult] = []
        self.dirty = True  # everything must be fed again
        self.dirty_steps = False
        self.val_drawn = -1  # validations drawn (the val items are re-fed only when this changes)
        self.raw_on: dict[str, bool] = {}
        self.curves: dict[str, Any] = {}
        self.raw: dict[str, Any] = {}
        for key in CURVE_KEYS:
            p = plots[key]
            self.raw[key] = p.plot(pen=_pen(color, 1, 45))
            # width 1: Qt's raster engine draws 1-px cosmetic lines on a fast path; any wider pen
            # goes through the stroker, 10-25x slower (24.7 -> 2.6 ms a frame at 2k points, 92 -> 3.7
            # at 100k; bench/plot_redraw.py), and every painted millisecond is taken from training
            self.curves[key] = p.plot(pen=_pen(color, 1))
            for c in (self.raw[key], self.curves[key]):
                c.setClipToView(True)
                c.setDownsampling(auto=True, method="peak")
            self.series[key] = Series()
            self.series[key].set_alpha(alpha)
        val = plots["val"]
        self.val_hi = pg.PlotDataItem(pen=pg.mkPen(None))
        self.val_lo = pg.PlotDataItem(pen=pg.mkPen(None))
        band = pg.mkColor(color)
        band.setAlpha(50)
        self.val_band = pg.FillBetweenItem(self.val_lo, self.val_hi, brush=pg.mkBrush(band))
        val.addItem(self.val_band)
        self.val_curve = val.plot(
            pen=_pen(color, 2), symbol="o", symbolSize=6, symbolBrush=color, symbolPen=None
        )
        self._owners = {**{k: plots[k] for k in CURVE_KEYS}}
        self._val_plot = val

    def items(self) -> list[Any]:
        return [
            *self.raw.values(),
            *self.curves.values(),
            self.val_band,
            self.val_curve,
            self.val_hi,
            self.val_lo,
        ]

    def set_visible(self, on: bool) -> None:
        self.visible = on
        for item in self.items():
            item.setVisible(on)
        self.dirty = True

    def remove(self) -> None:
        """Take the run's items out of the plots (only when the run leaves the list)."""
        for key in CURVE_KEYS:
            for item in (self.raw[key], self.curves[key]):
                self._owners[key].removeItem(item)
        for item in (self.val_band, self.val_curve, self.val_hi, self.val_lo):
            self._val_plot.removeItem(item)

    def clear(self) -> None:
        self.pending_steps.clear()
        self.pending_evals.clear()
        for s in self.series.values():
            s.clear()
        self.val_step, self.val_wall, self.val_mean, self.val_ci = [], [], [], []
        self.origin = 0.0
        self.dirty = True
        self.val_drawn = -1

    def newest_wall(self) -> float:
        s = self.series["loss"]
        return float(s.wall[s.n - 1]) if len(s) else 0.0

    def ingest(self) -> tuple[bool, bool]:
        """Move queued events into the buffers; (new steps?, new validations?)."""
        steps, self.pending_steps = self.pending_steps, []
        evals, self.pending_evals = self.pending_evals, []
        if steps:
            if not self.origin:
                self.origin = steps[0].wall_time
            if "accuracy" in steps[0].values:
                self.metric = "accuracy"
            st = [float(e.step) for e in steps]
            wt = [e.wall_time for e in steps]
            for key, name in (
                ("loss", "loss"),
                ("score", self.metric),
                ("lr", "meta_lr"),
                ("speed", "steps_per_s"),
            ):
                self.series[key].extend(
                    st, wt, [float(e.values.get(name, math.nan)) for e in steps]
                )
        loss = self.series["loss"]
        for e in evals:
            self.val_step.append(float(e.step))
            self.val_wall.append(loss.wall[loss.n - 1] if len(loss) else 0.0)
            self.val_mean.append(e.mean)
            self.val_ci.append(e.ci95 if math.isfinite(e.ci95) else 0.0)
        if steps:
            self.dirty_steps = True
        return bool(steps), bool(evals)


class LivePlots(QWidget):
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
        self.paint_duty = PAINT_DUTY
        self.traces: dict[int, Trace] = {}
        self.current: int | None = None  # the selected run
        self.redraws = 0
        self._update_s = 0.0
        self._redraw_done = 0.0
        self._paint_mark = 0.0  # view.paint_total_s at the last redraw
        self._dirty = False
        self._log = False
        # latency bookkeeping: (run id, newest point's wall time) fed and not painted yet, and
        # (run id, that wall time, time.time() of the paint that showed it) once painted
        self._unpainted: list[tuple[int, float]] = []
        self.shown_log: deque[tuple[int, float, float]] = deque(maxlen=10_000)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
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
        lay.addLayout(bar)

        # the run list: checked runs are overlaid, the selected one is what the controls act on
        side = QWidget()
        side_lay = QVBoxLayout(side)
        side_lay.setContentsMargins(0, 0, 0, 0)
        side_lay.addWidget(QLabel("<b>Runs</b>"))
        self.run_list = QListWidget()
        self.run_list.setToolTip(
            "Live runs (in the app or in their own processes) and recently ended ones: "
            "checked runs are plotted, one colour each; Pause and Stop act on the selected one"
        )
        self.run_list.currentItemChanged.connect(self._current_item_changed)
        self.run_list.itemChanged.connect(self._item_changed)
        side_lay.addWidget(self.run_list, 1)
        self.clear_ended_button = QPushButton("Clear ended")
        self.clear_ended_button.setToolTip("Remove the runs that ended from the list and plots")
        self.clear_ended_button.clicked.connect(lambda _=False: self.clear_ended())
        side_lay.addWidget(self.clear_ended_button)

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
        self._add_plot("score", "Query MSE (after adaptation)", 0, 1)
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
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / FPS))
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _add_plot(self, key: str, title: str, row: int, col: int, colspan: int = 1) -> None:
        p = self.view.addPlot(row=row, col=col, colspan=colspan, title=title)
        # no grid: in a software-rastered window it tripled the paint time (14 -> 45 ms)
        p.setClipToView(True)
        p.setDownsampling(auto=True, mode="peak")
        p.getAxis("left").setWidth(48)
        for side in ("left", "bottom"):  # the axes have no units: without this, every range
            p.getAxis(side).enableAutoSIPrefix(False)  # change re-renders their labels' HTML
        self.plots[key] = p

    # ---- runs ------------------------------------------------------------------------
    def _trace(self, run_id: int | None = None) -> Trace:
        """The run's trace; without an id the selected one (made as run 0 if there is none),
        which is what a single-run caller feeds."""
        if run_id is None:
            run_id = self.current if self.current is not None else 0
        t = self.traces.get(run_id)
        return t if t is not None else self.add_run(run_id)

    def _item(self, run_id: int) -> QListWidgetItem | None:
        for i in range(self.run_list.count()):
            item = self.run_list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == run_id:
                return item
        return None

    def add_run(
        self, run_id: int, metric: str | None = None, label: str = "", select: bool = False
    ) -> Trace:
        """Add a run to the list and the plots (checked), or return it if it is there. Ended
        runs are unchecked when a new one comes (one run at a time looks as it always did), and
        only the newest MAX_ENDED of them stay."""
        t = self.traces.get(run_id)
        if t is None:
            ended = [r for r, tr in self.traces.items() if tr.ended]
            for r in ended[: max(0, len(ended) - MAX_ENDED + 1)]:
                self.remove_run(r)
            for r in ended:
                if r in self.traces:
                    self.set_checked(r, False)
            used = {tr.color for tr in self.traces.values()}
            color = next(
                (c for c in PALETTE if c not in used), PALETTE[len(self.traces) % len(PALETTE)]
            )
            t = Trace(run_id, color, self.plots, self.alpha)
            self.traces[run_id] = t
            item = QListWidgetItem(swatch(color), label or f"#{run_id}")
            item.setData(Qt.ItemDataRole.UserRole, run_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.run_list.blockSignals(True)
            self.run_list.addItem(item)
            self.run_list.blockSignals(False)
            self._dirty = True
        if metric is not None:
            t.metric = metric
        if label:
            self.set_run_text(run_id, label)
        if select or self.current is None or self.current not in self.traces:
            self.select(run_id)
        return t

    def remove_run(self, run_id: int) -> None:
        t = self.traces.pop(run_id, None)
        if t is None:
            return
        t.remove()
        item = self._item(run_id)
        if item is not None:
            self.run_list.takeItem(self.run_list.row(item))
        if self.current == run_id:
            self.current = None
            nxt = next(reversed(self.traces), None) if self.traces else None
            if nxt is not None:
                self.select(nxt)
            else:
                self.selectionChanged.emit(-1)
        self._dirty = True

    def clear_ended(self) -> None:
        for run_id in [r for r, t in self.traces.items() if t.ended]:
            self.remove_run(run_id)
        self.redraw(force=True)

    def set_run_text(self, run_id: int, text: str, tooltip: str = "") -> None:
        item = self._item(run_id)
        if item is not None and item.text() != text:
            item.setText(text)
        if item is not None and tooltip and item.toolTip() != tooltip:
            item.setToolTip(tooltip)

    def set_ended(self, run_id: int, ended: bool = True) -> None:
        t = self.traces.get(run_id)
        if t is not None:
            t.ended = ended

    def select(self, run_id: int) -> None:
        item = self._item(run_id)
        if item is None:
            return
        if self.run_list.currentItem() is not item:
            self.run_list.setCurrentItem(item)  # -> _current_item_changed
        elif self.current != run_id:
            self._current_item_changed(item, None)

    def set_checked(self, run_id: int, on: bool) -> None:
        item = self._item(run_id)
        if item is not None:
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def checked(self) -> list[int]:
        return [r for r, t in self.traces.items() if t.visible]

    def _current_item_changed(self, item: QListWidgetItem | None, _prev: Any) -> None:
        run_id = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        self.current = run_id
        t = self.traces.get(run_id) if run_id is not None else None
        if t is not None:
            self.set_metric(t.metric)
        self.selectionChanged.emit(-1 if run_id is None else int(run_id))

    def _item_changed(self, item: QListWidgetItem) -> None:
        run_id = item.data(Qt.ItemDataRole.UserRole)
        t = self.traces.get(run_id)
        on = item.checkState() == Qt.CheckState.Checked
        if t is not None and t.visible != on:
            t.set_visible(on)
            self.redraw(force=True)
            self.checkedChanged.emit(int(run_id), on)

    # ---- single-run views (the selected run): what the cursor, tests and callers read -----
    @property
    def series(self) -> dict[str, Series]:
        return self._trace().series

    @property
    def curves(self) -> dict[str, Any]:
        return self._trace().curves

    @property
    def val_curve(self) -> Any:
        return self._trace().val_curve

    @property
    def origin(self) -> float:
        return self._trace().origin

    @property
    def val_step(self) -> list[float]:
        return self._trace().val_step

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
        self.plots["score"].setTitle(f"Query {name} (after adaptation)")
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
        if "accuracy" in history or "val_accuracy" in history:
            t.metric = "accuracy"
        names = {"loss": "loss", "score": t.metric, "lr": "meta_lr", "speed": "steps_per_s"}
        for key, name in names.items():
            if name in history:
                st, v, w = history[name]
                t.series[key].extend(st.tolist(), w.tolist(), v.tolist())
        vkey = f"val_{t.metric}"
        if vkey in history:
            st, v, w = history[vkey]
            ci = history.get(f"{vkey}_ci95", (st, np.zeros_like(v), w))[1]
            t.val_step += st.tolist()
            t.val_wall += w.tolist()
            t.val_mean += v.tolist()
            t.val_ci += np.nan_to_num(ci).tolist()
        if t.origin == 0.0:
            walls = [s.wall[0] for s in t.series.values() if len(s)]
            t.origin = min(walls) if walls else 0.0
        t.dirty = True
        if t.run_id == self.current:
            self.set_metric(t.metric)

    # ---- drawing ---------------------------------------------------------------------
    def _shown(self) -> bool:
        """On screen: not in a hidden tab, not minimized, not covered by the splitter."""
        return self.isVisible() and not self.view.viewport().visibleRegion().isEmpty()

    def _tick(self) -> None:
        """Timer slot: redraw when the paint budget allows; the next tick comes when it will."""
        if not self._shown():
            self._ingest()
            self.timer.setInterval(int(HIDDEN_INGEST_S * 1000))
            return
        v = self.view
        # the cost of the last redraw: its update plus EVERY paint since (a redraw is often
        # painted in two or three passes, range and axis changes coming after the data)
        duty = self.paint_duty
        wait = _budget_wait(v.paint_total_s - self._paint_mark + self._update_s, duty)
        since = time.perf_counter() - max(v.paint_done, self._redraw_done)
        if since < wait:
            self.timer.setInterval(max(1, int((wait - since) * 1000)))
            return
        t0 = time.perf_counter()
        painted_before = v.paint_total_s
        drew = self.redraw()
        self._redraw_done = time.perf_counter()
        if drew:  # its paints come later, in the event loop: the next tick counts them
            self._paint_mark = painted_before
            self._update_s = self._redraw_done - t0
            wait = _budget_wait(self._update_s, duty)
        else:  # nothing arrived: look again soon, it costs next to nothing
            wait = 1.0 / FPS
        self.timer.setInterval(max(1, int(wait * 1000)))

    def showEvent(self, ev: Any) -> None:
        super().showEvent(ev)
        self.timer.setInterval(1)  # what arrived while hidden is drawn right away

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
                for key, curve in t.curves.items():
                    s = t.series[key]
                    x = s.x(self.x_mode, t.origin)
                    ok = s.finite  # pyqtgraph may skip its per-point finite check
                    raw = key != "lr" and smoothing  # lr is a schedule, not noise: drawn raw only
                    curve.setData(x, s.y(raw), skipFiniteCheck=ok)
                    if raw:
                        t.raw[key].setData(x, s.y(False), skipFiniteCheck=ok)
                        t.raw_on[key] = True
                    elif t.raw_on.get(key, True):
                        t.raw[key].setData([], [])
                        t.raw_on[key] = False
                if len(t.series["loss"]):
                    self._unpainted.append((t.run_id, t.newest_wall()))
            if new_evals:
                changed = True
                if t.val_step:
                    vx = np.asarray(
                        t.val_step if self.x_mode == "step" else np.asarray(t.val_wall) - t.origin
                    )
                    m = np.asarray(t.val_mean)
                    ci = np.asarray(t.val_ci)
                    t.val_curve.setData(vx, m)
                    t.val_hi.setData(vx, m + ci)
                    t.val_lo.setData(vx, m - ci)
                else:
                    for c in (t.val_curve, t.val_hi, t.val_lo):
                        c.setData([], [])
                t.val_drawn = len(t.val_step)
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
            self._fit_x(tight=force)
            for key in ("loss", "score", "val", "speed"):
                self._fit_y(key, tight=force)
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
            p.enableAutoRange(x=False, y=False)  # fitted in redraw, in steps (see _fit_x, _fit_y)
        self.redraw(force=True)

    def _manual_range(self, mask: Any = None) -> None:
        self.follow_x = False
        # the user moved x only (e.g. dragged the x axis): y fits the visible data, as pyqtgraph does it
        if isinstance(mask, list | tuple) and len(mask) == 2 and mask[0] and not mask[1]:
            for key, p in self.plots.items():
                if key != "lr":
                    p.enableAutoRange(y=True)

    def _x_bounds(self) -> tuple[float, float] | None:
        """The x span of every overlaid run (wall time: each from its own start)."""
        lo, hi = math.inf, -math.inf
        for t in self._shown_traces():
            s = t.series["loss"]
            if len(s):
                n = s.n - 1
                a, b = (
                    (s.step[0], s.step[n])
                    if self.x_mode == "step"
                    else (s.wall[0] - t.origin, s.wall[n] - t.origin)
                )
                lo, hi = min(lo, float(a)), max(hi, float(b))
            if t.val_step and self.x_mode == "step":
                lo, hi = min(lo, t.val_step[0]), max(hi, t.val_step[-1])
        return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None

    def _fit_x(self, tight: bool = False) -> None:
        """Follow the data; unless `tight`, leave X_GROWTH of room at the end so that the x range
        (and with it every axis picture) changes only now and then."""
        b = self._x_bounds()
        if b is None:
            return
        lo, hi = b
        if hi <= lo:
            hi = lo + 1.0
        span = hi - lo
        pad = 0.02 * span
        p = self.plots["loss"]
        cur_lo, cur_hi = p.vb.viewRange()[0]
        if (
            not tight
            and lo - 2 * pad <= cur_lo <= lo
            and hi <= cur_hi <= hi + (2 * X_GROWTH + 0.05) * span
        ):
            return
        p.setXRange(lo - pad, hi + pad + (0.0 if tight else X_GROWTH * span), padding=0)

    def _y_bounds(self, key: str) -> tuple[float, float] | None:
        log = self._log
        lo, hi = math.inf, -math.inf
        for t in self._shown_traces():
            if key == "val":
                if not t.val_step:
                    continue
                m = np.asarray(t.val_mean, np.float64)
                ci = np.asarray(t.val_ci, np.float64)
                v = np.concatenate([m - ci, m + ci])
                v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
                if len(v):
                    lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
            else:
                s = t.series[key]
                lo, hi = min(lo, s.vmin_pos if log else s.vmin), max(hi, s.vmax)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None
        return (math.log10(lo), math.log10(hi)) if log else (lo, hi)

    def _fit_y(self, key: str, tight: bool = False) -> None:
        """Fit y to all the data (while following, all the data are in view), with hysteresis:
        a new range keeps Y_SLACK room on each side and stays until the data leave it or use
        less than Y_SHRINK of it."""
        b = self._y_bounds(key)
        if b is None:
            return
        lo, hi = b
        ref = self.reference
        if key == "val" and ref is not None and math.isfinite(ref) and not (self._log and ref <= 0):
            r = math.log10(ref) if self._log else ref  # keep the published number in view
            lo, hi = min(lo, r), max(hi, r)
        span = hi - lo
        if span <= 0:
            span = abs(hi) * 0.1 or 1.0
            lo, hi = lo - span / 2, hi + span / 2
        vb = self.plots[key].vb
        cur_lo, cur_hi = vb.viewRange()[1]
        if not tight and cur_lo <= lo and hi <= cur_hi and span >= Y_SHRINK * (cur_hi - cur_lo):
            return
        pad = (0.05 if tight else Y_SLACK) * span
        self.plots[key].setYRange(lo - pad, hi + pad, padding=0)

    def set_smoothing(self, alpha: float) -> None:
        self.alpha = max(0.0, min(0.99, float(alpha)))
        self.smooth_label.setText(f"{self.alpha:.2f}")
        for t in self.traces.values():
            for s in t.series.values():
                s.set_alpha(self.alpha)
        self.redraw(force=True)

    def set_log(self, on: bool) -> None:
        self._log = bool(on)
        for key in ("loss", "score", "val"):
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
        loss = t.series["loss"]
        if len(loss):
            xs = loss.x(self.x_mode, t.origin)
            i = int(np.clip(np.searchsorted(xs, x), 0, loss.n - 1))
            parts.append(f"step {int(loss.step[i])}")
            for key, label in (
                ("loss", "loss"),
                ("score", t.metric),
                ("lr", "lr"),
                ("speed", "steps/s"),
            ):
                s = t.series[key]
                if i < s.n:
                    parts.append(f"{label} {s.value[i]:.4g}")
        if t.val_step:
            vx = np.asarray(
                t.val_step if self.x_mode == "step" else np.asarray(t.val_wall) - t.origin
            )
            j = int(np.argmin(np.abs(vx - x)))
            parts.append(f"val {t.val_mean[j]:.4g} ± {t.val_ci[j]:.2g} @ {int(t.val_step[j])}")
        text = "  ".join(parts)
        self.cursor_label.setText(text)
        return text

    def point_count(self, key: str = "loss", run_id: int | None = None) -> int:
        """Points received by a curve of a run (default: the selected one; "val": validations)."""
        t = self.traces.get(self.current if run_id is None else run_id)
        if t is None:
            return 0
        return len(t.val_step) if key == "val" else t.series[key].n
