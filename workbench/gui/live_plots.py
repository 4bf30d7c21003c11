"""Live training curves (pyqtgraph): meta-train loss, query score, validation with a 95% CI
band, learning rate and steps/s.

Events are only queued by the slots; a QTimer redraws at most `FPS` times a second and at most
`PAINT_DUTY` of the wall time (update + paint, measured), and only curves that changed. The
GUI thread shares the GIL with training, so every millisecond drawn here is a millisecond the
trainer waits: a hidden view only buffers, and while following the data the axis ranges grow
in steps (x by 25%, y with hysteresis) so that most frames repaint the curves and leave the
axes' cached pictures alone. Curves are created once and fed with `setData` on growing numpy
buffers, clipped to view and peak-downsampled, so drawing cost does not grow with the run's
length (and the adaptive budget absorbs what does).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
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
MAX_WAIT_S = 2.0  # however slow a frame, redraw at least this often while data arrives
HIDDEN_INGEST_S = 0.5  # hidden: move queued points into the buffers this often, draw nothing
X_GROWTH = (
    0.25  # following: the x range grows by this share of the data span when the data reach its end
)
Y_SLACK = (
    0.1  # following: a new y range gets this share of the data span as extra room on each side
)
Y_SHRINK = 0.5  # ... and is refitted when the data use less than this share of it
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


def _budget_wait(cost: float) -> float:
    """Seconds until the next redraw so that redraws costing `cost` take PAINT_DUTY of the time."""
    return min(MAX_WAIT_S, max(1.0 / FPS, cost / PAINT_DUTY - cost))


class _TimedLayoutWidget(pg.GraphicsLayoutWidget):
    """Measures its own paint time so that redraws can be spaced to a CPU budget."""

    def __init__(self) -> None:
        super().__init__()
        self.last_paint_s = 0.0
        self.paint_done = 0.0
        self.paint_total_s = 0.0  # all paints so far: one redraw can cause several

    def paintEvent(self, ev: Any) -> None:
        t0 = time.perf_counter()
        super().paintEvent(ev)
        self.paint_done = time.perf_counter()
        self.last_paint_s = self.paint_done - t0
        self.paint_total_s += self.last_paint_s


class LivePlots(QWidget):
    """The centre of the window while training."""

    redrawn = Signal()  # after each redraw that changed something (tests wait on it)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.x_mode = "step"
        self.alpha = 0.9
        self.score_metric = "mse"
        self.origin = 0.0
        self.reference: float | None = None
        self._pending_steps: list[StepMetrics] = []
        self._pending_evals: list[EvalResult] = []
        self.series: dict[str, Series] = {}
        self.val_step: list[float] = []
        self.val_wall: list[float] = []
        self.val_mean: list[float] = []
        self.val_ci: list[float] = []
        self.redraws = 0
        self._update_s = 0.0
        self._redraw_done = 0.0
        self._paint_mark = 0.0  # view.paint_total_s at the last redraw
        self._dirty = False
        self._dirty_steps = False
        self._log = False
        self._raw_on: dict[str, bool] = {}

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

        self.view = _TimedLayoutWidget()
        lay.addWidget(self.view, 1)
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[str, Any] = {}
        self.raw: dict[str, Any] = {}
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

        val = self.plots["val"]
        self.val_hi = pg.PlotDataItem(pen=pg.mkPen(None))
        self.val_lo = pg.PlotDataItem(pen=pg.mkPen(None))
        band = pg.mkColor(COLORS["val"])
        band.setAlpha(60)
        self.val_band = pg.FillBetweenItem(self.val_lo, self.val_hi, brush=pg.mkBrush(band))
        val.addItem(self.val_band)
        self.val_curve = val.plot(
            pen=_pen(COLORS["val"], 2),
            symbol="o",
            symbolSize=6,
            symbolBrush=COLORS["val"],
            symbolPen=None,
        )
        self.ref_line = pg.InfiniteLine(
            angle=0,
            movable=False,
            pen=pg.mkPen("#555", width=1.2, style=Qt.PenStyle.DashLine),
            label="published {value:.4g}",
            labelOpts={"position": 0.05, "color": "#555", "anchors": [(0, 1), (0, 1)]},
        )
        self.ref_line.hide()
        val.addItem(self.ref_line, ignoreBounds=True)

        self.cross: dict[str, pg.InfiniteLine] = {}
        for key, p in self.plots.items():
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#999", width=1))
            line.hide()
            p.addItem(line, ignoreBounds=True)
            self.cross[key] = line
        self._mouse_proxy = pg.SignalProxy(
            self.view.scene().sigMouseMoved, rateLimit=30, slot=self._mouse_moved
        )

        self._val_drawn = -1  # validations drawn (the val items are re-fed only when this changes)
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
        if key != "val":
            self.raw[key] = p.plot(pen=_pen(COLORS[key], 1, 45))
            # width 1: Qt's raster engine draws 1-px cosmetic lines on a fast path; any wider pen
            # goes through the stroker, 10-25x slower (24.7 -> 2.6 ms a frame at 2k points, 92 -> 3.7
            # at 100k; bench/plot_redraw.py), and every painted millisecond is taken from training
            self.curves[key] = p.plot(pen=_pen(COLORS[key], 1))
            for c in (self.raw[key], self.curves[key]):
                c.setClipToView(True)
                c.setDownsampling(auto=True, method="peak")
            self.series[key] = Series()
            self.series[key].set_alpha(self.alpha)

    # ---- feeding ---------------------------------------------------------------------
    def reset(
        self, metric: str = "mse", reference: float | None = None, origin: float | None = None
    ) -> None:
        """Clear for a new run; `metric` is "accuracy" or "mse"."""
        self._pending_steps.clear()
        self._pending_evals.clear()
        for s in self.series.values():
            s.clear()
        self.val_step, self.val_wall, self.val_mean, self.val_ci = [], [], [], []
        self.origin = origin or 0.0
        self.set_metric(metric)
        self.set_reference(reference)
        self._dirty = True
        self._val_drawn = -1
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

    def add_steps(self, steps: list[StepMetrics]) -> None:
        self._pending_steps.extend(steps)

    def add_eval(self, result: EvalResult) -> None:
        if result.split == "val":
            self._pending_evals.append(result)

    def preload(self, history: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Earlier points of a resumed run: {metric name: (steps, values, wall_times)}."""
        names = {
            "loss": "loss",
            "score": self.score_metric,
            "lr": "meta_lr",
            "speed": "steps_per_s",
        }
        for key, name in names.items():
            if name in history:
                st, v, w = history[name]
                self.series[key].extend(st.tolist(), w.tolist(), v.tolist())
        vkey = f"val_{self.score_metric}"
        if vkey in history:
            st, v, w = history[vkey]
            ci = history.get(f"{vkey}_ci95", (st, np.zeros_like(v), w))[1]
            self.val_step += st.tolist()
            self.val_wall += w.tolist()
            self.val_mean += v.tolist()
            self.val_ci += ci.tolist()
        if self.origin == 0.0:
            walls = [s.wall[0] for s in self.series.values() if len(s)]
            self.origin = min(walls) if walls else 0.0
        self._dirty = True

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
        wait = _budget_wait(v.paint_total_s - self._paint_mark + self._update_s)
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
            wait = _budget_wait(self._update_s)
        else:  # nothing arrived: look again soon, it costs next to nothing
            wait = 1.0 / FPS
        self.timer.setInterval(max(1, int(wait * 1000)))

    def showEvent(self, ev: Any) -> None:
        super().showEvent(ev)
        self.timer.setInterval(1)  # what arrived while hidden is drawn right away

    def _ingest(self) -> tuple[bool, bool]:
        """Move queued events into the buffers; (new steps?, new validations?)."""
        steps, self._pending_steps = self._pending_steps, []
        evals, self._pending_evals = self._pending_evals, []
        if steps:
            if not self.origin:
                self.origin = steps[0].wall_time
            score_key = "accuracy" if "accuracy" in steps[0].values else "mse"
            if score_key != self.score_metric:
                self.set_metric(score_key)
            st = [float(e.step) for e in steps]
            wt = [e.wall_time for e in steps]
            for key, name in (
                ("loss", "loss"),
                ("score", score_key),
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
        if steps or evals:
            self._dirty_steps = self._dirty_steps or bool(steps)
        return bool(steps), bool(evals)

    def redraw(self, force: bool = False) -> bool:
        """Feed what changed to the plot items; True if anything was redrawn. `force` redraws
        everything and fits the ranges tightly (new run, view option changed, run ended)."""
        new_steps, new_evals = self._ingest()
        dirty = force or self._dirty
        new_steps = new_steps or self._dirty_steps
        self._dirty = self._dirty_steps = False
        new_evals = new_evals or len(self.val_step) != self._val_drawn
        if not (dirty or new_steps or new_evals):
            return False
        if dirty or new_steps:
            smoothing = self.alpha > 0
            for key, curve in self.curves.items():
                s = self.series[key]
                x = s.x(self.x_mode, self.origin)
                ok = s.finite  # pyqtgraph may skip its per-point finite check
                raw = key != "lr" and smoothing  # lr is a schedule, not noise: drawn raw only
                curve.setData(x, s.y(raw), skipFiniteCheck=ok)
                if raw:
                    self.raw[key].setData(x, s.y(False), skipFiniteCheck=ok)
                    self._raw_on[key] = True
                elif self._raw_on.get(key, True):
                    self.raw[key].setData([], [])
                    self._raw_on[key] = False
        if dirty or new_evals:
            if self.val_step:
                vx = np.asarray(
                    self.val_step
                    if self.x_mode == "step"
                    else np.asarray(self.val_wall) - self.origin
                )
                m = np.asarray(self.val_mean)
                ci = np.asarray(self.val_ci)
                self.val_curve.setData(vx, m)
                self.val_hi.setData(vx, m + ci)
                self.val_lo.setData(vx, m - ci)
            else:
                for c in (self.val_curve, self.val_hi, self.val_lo):
                    c.setData([], [])
            self._val_drawn = len(self.val_step)
        lr = self.series["lr"]
        if len(lr):
            top = lr.vmax if math.isfinite(lr.vmax) else 1.0
            if dirty or top != self._lr_top:
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

    def _fit_x(self, tight: bool = False) -> None:
        """Follow the data; unless `tight`, leave X_GROWTH of room at the end so that the x range
        (and with it every axis picture) changes only now and then."""
        s = self.series["loss"]
        if not len(s):
            return
        n = s.n - 1
        lo, hi = (
            (s.step[0], s.step[n])
            if self.x_mode == "step"
            else (s.wall[0] - self.origin, s.wall[n] - self.origin)
        )
        lo, hi = float(lo), float(hi)
        if self.val_step and self.x_mode == "step":
            lo, hi = min(lo, self.val_step[0]), max(hi, self.val_step[-1])
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
        if key == "val":
            if not self.val_step:
                return None
            m, ci = np.asarray(self.val_mean, np.float64), np.asarray(self.val_ci, np.float64)
            v = np.concatenate([m - ci, m + ci])
            v = v[np.isfinite(v) & (v > 0)] if log else v[np.isfinite(v)]
            if not len(v):
                return None
            lo, hi = float(v.min()), float(v.max())
        else:
            s = self.series[key]
            lo, hi = (s.vmin_pos if log else s.vmin), s.vmax
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
        for s in self.series.values():
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
        """Move the crosshair to x and describe the values there."""
        for line in self.cross.values():
            line.setValue(x)
            line.show()
        parts = []
        loss = self.series["loss"]
        if len(loss):
            xs = loss.x(self.x_mode, self.origin)
            i = int(np.clip(np.searchsorted(xs, x), 0, loss.n - 1))
            parts.append(f"step {int(loss.step[i])}")
            for key, label in (
                ("loss", "loss"),
                ("score", self.score_metric),
                ("lr", "lr"),
                ("speed", "steps/s"),
            ):
                s = self.series[key]
                if i < s.n:
                    parts.append(f"{label} {s.value[i]:.4g}")
        if self.val_step:
            vx = np.asarray(
                self.val_step if self.x_mode == "step" else np.asarray(self.val_wall) - self.origin
            )
            j = int(np.argmin(np.abs(vx - x)))
            parts.append(
                f"val {self.val_mean[j]:.4g} ± {self.val_ci[j]:.2g} @ {int(self.val_step[j])}"
            )
        text = "  ".join(parts)
        self.cursor_label.setText(text)
        return text

    def point_count(self, key: str = "loss") -> int:
        """Points received by a curve ("val": validations)."""
        return len(self.val_step) if key == "val" else self.series[key].n
