"""One run in the live view: its growing buffers and the plot items fed from them.

A `Trace` is created once per run and removed with it; its curves are fed with `setData` on
the buffers' numpy views, clipped to view and peak-downsampled, so that drawing cost does not
grow with the run's length.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor, QIcon, QPixmap

from workbench.core.events import EvalResult, StepMetrics
from workbench.gui.buffers import Series

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


def _pen(color: str, width: float = 1.6, alpha: int = 255) -> Any:
    c = pg.mkColor(color)
    c.setAlpha(alpha)
    return pg.mkPen(c, width=width)


def swatch(color: str, size: int = 12) -> QIcon:
    """A filled square of the run's colour for the run list."""
    pix = QPixmap(size, size)
    pix.fill(QColor(color))
    return QIcon(pix)


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

    def val_x(self, x_mode: str) -> np.ndarray:
        """The validations' x: steps, or seconds since the run's start."""
        if x_mode == "step":
            return np.asarray(self.val_step)
        return np.asarray(self.val_wall) - self.origin

    def feed_steps(self, x_mode: str, smoothing: bool) -> None:
        """Hand the buffers to the curves (smoothed in front of the faint raw ones)."""
        for key, curve in self.curves.items():
            s = self.series[key]
            x = s.x(x_mode, self.origin)
            ok = s.finite  # pyqtgraph may skip its per-point finite check
            raw = key != "lr" and smoothing  # lr is a schedule, not noise: drawn raw only
            curve.setData(x, s.y(raw), skipFiniteCheck=ok)
            if raw:
                self.raw[key].setData(x, s.y(False), skipFiniteCheck=ok)
                self.raw_on[key] = True
            elif self.raw_on.get(key, True):
                self.raw[key].setData([], [])
                self.raw_on[key] = False

    def feed_evals(self, x_mode: str) -> None:
        """Hand the validations to their curve and its 95% CI band."""
        if self.val_step:
            vx = self.val_x(x_mode)
            m = np.asarray(self.val_mean)
            ci = np.asarray(self.val_ci)
            self.val_curve.setData(vx, m)
            self.val_hi.setData(vx, m + ci)
            self.val_lo.setData(vx, m - ci)
        else:
            for c in (self.val_curve, self.val_hi, self.val_lo):
                c.setData([], [])
        self.val_drawn = len(self.val_step)

    def describe(self, x: float, x_mode: str) -> list[str]:
        """The run's values at x, for the cursor read-out (validation: the nearest one)."""
        parts = []
        loss = self.series["loss"]
        if len(loss):
            xs = loss.x(x_mode, self.origin)
            i = int(np.clip(np.searchsorted(xs, x), 0, loss.n - 1))
            parts.append(f"step {int(loss.step[i])}")
            for key, label in (
                ("loss", "loss"),
                ("score", self.metric),
                ("lr", "lr"),
                ("speed", "steps/s"),
            ):
                s = self.series[key]
                if i < s.n:
                    parts.append(f"{label} {s.value[i]:.4g}")
        if self.val_step:
            vx = self.val_x(x_mode)
            j = int(np.argmin(np.abs(vx - x)))
            v = f"val {self.val_mean[j]:.4g} ± {self.val_ci[j]:.2g} @ {int(self.val_step[j])}"
            parts.append(v)
        return parts

    def _names(self) -> dict[str, str]:
        """Curve key -> the metric it shows (the score is the run's own metric)."""
        return {"loss": "loss", "score": self.metric, "lr": "meta_lr", "speed": "steps_per_s"}

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
            for key, name in self._names().items():
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

    def preload(self, history: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Earlier points of the run: {metric name: (steps, values, wall_times)}."""
        if "accuracy" in history or "val_accuracy" in history:
            self.metric = "accuracy"
        for key, name in self._names().items():
            if name in history:
                st, v, w = history[name]
                self.series[key].extend(st.tolist(), w.tolist(), v.tolist())
        vkey = f"val_{self.metric}"
        if vkey in history:
            st, v, w = history[vkey]
            ci = history.get(f"{vkey}_ci95", (st, np.zeros_like(v), w))[1]
            self.val_step += st.tolist()
            self.val_wall += w.tolist()
            self.val_mean += v.tolist()
            self.val_ci += np.nan_to_num(ci).tolist()
        if self.origin == 0.0:
            walls = [s.wall[0] for s in self.series.values() if len(s)]
            self.origin = min(walls) if walls else 0.0
        self.dirty = True
