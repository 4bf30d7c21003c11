"""The sweep view's four plots (pyqtgraph), redrawn together when the trials change.

Parallel coordinates (one vertical axis per parameter plus the objective, each normalised to
[0, 1] by `sweep_axes`; one polyline per trial coloured by its objective's rank, trials
without one drawn faint), the objective against a parameter chosen in a combo box, the best
objective so far against finish order, and the validation curves of the top `TOP_K` trials.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from workbench.catalog.sweep_store import SweepRecord, TrialRecord
from workbench.gui.sweep_axes import (
    Axis,
    decade_ticks,
    fmt_num,
    numeric,
    objective_axis,
    short_key,
    wide,
)
from workbench.gui.sweep_trials import best_first

TOP_K = 5
COLORMAP = "viridis"
FAINT = QColor(150, 150, 150, 70)

# a run's metric history as the catalog returns it: (steps, values, wall times)
MetricsReader = Callable[[int, str], tuple[np.ndarray, np.ndarray, np.ndarray]]


def make_plot(title: str, left: str = "", bottom: str = "") -> pg.PlotWidget:
    """A white plot with a faint grid, tall enough to read."""
    w = pg.PlotWidget(title=title)
    w.setBackground("w")
    w.showGrid(x=True, y=True, alpha=0.2)
    if left:
        w.setLabel("left", left)
    if bottom:
        w.setLabel("bottom", bottom)
    w.setMinimumHeight(180)
    return w


class SweepPlots(QWidget):
    """The plots of one sweep; `draw` shows a sweep's trials (None: nothing selected)."""

    def __init__(self, metrics: MetricsReader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._metrics = metrics
        self._sweep: SweepRecord | None = None
        self._trials: list[TrialRecord] = []
        self._axes: list[Axis] = []
        self._curve_cache: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self.parallel_curves: list[pg.PlotDataItem] = []  # one per trial (tests count them)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self._tick_font = QFont(self.font())
        self._tick_font.setPointSize(8)
        self.parallel_plot = make_plot(
            "Parallel coordinates (colour: objective rank, bright = best)"
        )
        pi = self.parallel_plot.getPlotItem()
        pi.hideAxis("left")
        pi.setMouseEnabled(x=False, y=False)
        pi.hideButtons()
        pi.showGrid(x=False, y=False)
        grid.addWidget(self.parallel_plot, 0, 0)

        scatter_box = QWidget()
        sl = QVBoxLayout(scatter_box)
        sl.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Objective against"))
        self.param_combo = QComboBox()
        self.param_combo.currentIndexChanged.connect(lambda *_: self._draw_scatter())
        row.addWidget(self.param_combo, 1)
        sl.addLayout(row)
        self.scatter_plot = make_plot("Objective against a parameter")
        self.scatter_item = pg.ScatterPlotItem(size=9, pen=pg.mkPen("k", width=0.5))
        self.scatter_plot.addItem(self.scatter_item)
        sl.addWidget(self.scatter_plot)
        grid.addWidget(scatter_box, 0, 1)

        self.best_plot = make_plot("Best so far", bottom="trials finished")
        self.best_line = self.best_plot.plot(
            [], [], pen=pg.mkPen("#d62728", width=2), stepMode=None, name="best so far"
        )
        self.best_points = pg.ScatterPlotItem(size=6, brush=pg.mkBrush(80, 80, 80, 150), pen=None)
        self.best_plot.addItem(self.best_points)
        grid.addWidget(self.best_plot, 1, 0)

        self.topk_plot = make_plot(f"Top {TOP_K} trials: validation", bottom="step")
        self.topk_legend = self.topk_plot.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.topk_curves: list[pg.PlotDataItem] = []
        grid.addWidget(self.topk_plot, 1, 1)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)

    def draw(self, sweep: SweepRecord | None, trials: list[TrialRecord], axes: list[Axis]) -> None:
        """Redraw every plot for these trials (the caller knows when they changed)."""
        self._sweep, self._trials, self._axes = sweep, trials, axes
        self._update_combo([a.key for a in axes])
        self._draw_parallel()
        self._draw_scatter()
        self._draw_best()
        self._draw_topk()

    def _update_combo(self, keys: list[str]) -> None:
        if [self.param_combo.itemData(i) for i in range(self.param_combo.count())] == keys:
            return
        current = self.param_combo.currentData()
        self.param_combo.blockSignals(True)
        self.param_combo.clear()
        for k in keys:
            self.param_combo.addItem(k, k)
        i = keys.index(current) if current in keys else 0
        self.param_combo.setCurrentIndex(i if keys else -1)
        self.param_combo.blockSignals(False)

    # ---- plots -------------------------------------------------------------------------
    def _colors(self) -> list[QColor | None]:
        """Each trial's colour by its objective's rank (best brightest; a rank, so that one
        diverged trial does not flatten the others into one colour), None without one."""
        sw = self._sweep
        cmap = pg.colormap.get(COLORMAP)
        ranked = best_first(self._trials, bool(sw and sw.maximize))
        ok = [t.id for t in ranked if t.objective is not None and math.isfinite(t.objective)]
        rank = {tid: i for i, tid in enumerate(ok)}
        n = len(ok)
        out: list[QColor | None] = []
        for t in self._trials:
            if t.id not in rank:
                out.append(None)
                continue
            f = 1.0 if n == 1 else 1.0 - rank[t.id] / (n - 1)
            out.append(cmap.map(0.05 + 0.9 * f, mode="qcolor"))
        return out

    def _draw_parallel(self) -> None:
        p = self.parallel_plot
        p.clear()
        self.parallel_curves = []
        sw = self._sweep
        if sw is None:
            return
        axes = [*self._axes, objective_axis(sw.metric, self._trials)]
        n = len(axes)
        xs = np.arange(n, dtype=float)
        for i, ax in enumerate(axes):
            p.addItem(pg.InfiniteLine(pos=i, angle=90, pen=pg.mkPen(90, 90, 90, 200, width=1)))
            for y, label in ax.ticks():
                ti = pg.TextItem(
                    label, color=(40, 40, 40), anchor=(0, 0.5), fill=pg.mkBrush(255, 255, 255, 190)
                )
                ti.setZValue(10)  # readable above the polylines
                ti.setFont(self._tick_font)
                ti.setPos(i + 0.02, y)
                p.addItem(ti)
        colors = self._colors()
        # faint ones first, so the coloured lines are drawn on top of them
        order = sorted(range(len(self._trials)), key=lambda j: colors[j] is not None)
        curves: list[pg.PlotDataItem | None] = [None] * len(self._trials)
        for j in order:
            t = self._trials[j]
            ys = np.array(
                [ax.norm(t.params.get(ax.key)) for ax in self._axes] + [axes[-1].norm(t.objective)]
            )
            color = colors[j]
            pen = (
                pg.mkPen(FAINT, width=1, style=Qt.PenStyle.DashLine)
                if color is None
                else pg.mkPen(color, width=2)
            )
            c = pg.PlotDataItem(xs, ys, pen=pen, connect="finite")
            c.trial_id = t.id  # type: ignore[attr-defined]
            p.addItem(c)
            curves[j] = c
        self.parallel_curves = [c for c in curves if c is not None]
        labels = [short_key(a.key) for a in self._axes] + [
            f"{sw.metric} ({'max' if sw.maximize else 'min'})"
        ]
        p.getAxis("bottom").setTicks([list(zip(xs.tolist(), labels, strict=True))])
        p.setXRange(-0.1, n - 1 + 0.45 if n > 1 else 0.6, padding=0)
        p.setYRange(-0.06, 1.06, padding=0)

    def _draw_scatter(self) -> None:
        key = self.param_combo.currentData()
        sw = self._sweep
        ax = next((a for a in self._axes if a.key == key), None)
        pi = self.scatter_plot.getPlotItem()
        bottom = pi.getAxis("bottom")
        if sw is None or ax is None:
            self.scatter_item.setData([], [])
            return
        pi.setLabel("left", sw.metric)
        pi.setLabel("bottom", key + (" (log)" if ax.kind == "log" else ""))
        pts = [
            (t, t.params.get(key))
            for t in self._trials
            if t.objective is not None and math.isfinite(t.objective) and key in t.params
        ]
        colors = dict(zip([t.id for t in self._trials], self._colors(), strict=True))
        if ax.kind == "category":
            xs = [ax.norm(v) for _, v in pts]
            n = len(ax.categories)
            xs = [x * (n - 1) if n > 1 else 0.0 for x in xs]
            bottom.setTicks(
                [[(i if n > 1 else 0.0, fmt_num(c)) for i, c in enumerate(ax.categories)]]
            )
            pi.setLogMode(x=False, y=False)
        elif ax.kind == "log":
            xs = [math.log10(v) if numeric(v) and v > 0 else math.nan for _, v in pts]
            bottom.setTicks([decade_ticks(ax.low, ax.high)])
        else:
            xs = [float(v) if numeric(v) else math.nan for _, v in pts]
            bottom.setTicks(None)
        objectives = [t.objective for t, _ in pts]
        log_y = wide(objectives)  # type: ignore[arg-type]
        pi.getAxis("left").setTicks(
            [decade_ticks(*np.log10([min(objectives), max(objectives)]))] if log_y else None  # type: ignore[type-var]
        )
        spots = [
            {
                "pos": (x, math.log10(t.objective) if log_y else t.objective),  # type: ignore[arg-type]
                "brush": pg.mkBrush(colors.get(t.id) or FAINT),
                "data": t.id,
            }
            for (t, _), x in zip(pts, xs, strict=True)
            if math.isfinite(x)
        ]
        self.scatter_item.setData(spots)
        self.scatter_plot.enableAutoRange()

    def _draw_best(self) -> None:
        sw = self._sweep
        done = sorted(
            (
                t
                for t in self._trials
                if t.status == "finished" and t.objective is not None and math.isfinite(t.objective)
            ),
            key=lambda t: (t.updated_at, t.id),
        )
        if sw is None or not done:
            self.best_line.setData([], [])
            self.best_points.setData([], [])
            return
        self.best_plot.setLabel("left", f"{sw.metric} ({'max' if sw.maximize else 'min'})")
        values = np.array([t.objective for t in done], dtype=float)
        best = np.maximum.accumulate(values) if sw.maximize else np.minimum.accumulate(values)
        xs = np.arange(1, len(done) + 1, dtype=float)
        log_y = wide(values.tolist())
        self.best_plot.getAxis("left").setTicks(
            [decade_ticks(*np.log10([values.min(), values.max()]))] if log_y else None
        )
        shown = (lambda a: np.log10(a)) if log_y else (lambda a: a)  # noqa: E731
        self.best_line.setData(xs, shown(best))
        self.best_points.setData(xs, shown(values))
        self.best_plot.enableAutoRange()

    def _metric_curve(self, run_id: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """A finished run's curve does not change: read once."""
        key = (run_id, metric)
        if key not in self._curve_cache:
            steps, values, _ = self._metrics(run_id, metric)
            self._curve_cache[key] = (steps, values)
        return self._curve_cache[key]

    def _draw_topk(self) -> None:
        for c in self.topk_curves:
            self.topk_plot.removeItem(c)
        self.topk_legend.clear()
        self.topk_curves = []
        sw = self._sweep
        if sw is None:
            return
        self.topk_plot.setLabel("left", sw.metric)
        done = [
            t
            for t in best_first(self._trials, sw.maximize)
            if t.status == "finished" and t.objective is not None and t.run_id is not None
        ][:TOP_K]
        hues = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
        for rank, t in enumerate(done):
            steps, values = self._metric_curve(t.run_id, sw.metric)  # type: ignore[arg-type]
            ok = np.isfinite(values)
            label = f"#{rank + 1} trial {t.number}: {fmt_num(t.objective)}"
            c = self.topk_plot.plot(
                steps[ok].astype(float),
                values[ok],
                pen=pg.mkPen(hues[rank % len(hues)], width=2 if rank == 0 else 1.3),
                symbol="o",
                symbolSize=4,
                symbolBrush=hues[rank % len(hues)],
                symbolPen=None,
                name=label,
            )
            self.topk_curves.append(c)
        self.topk_plot.enableAutoRange()
