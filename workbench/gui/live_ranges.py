"""The live view's axis ranges while it follows the data, changed in steps.

A range change re-renders the axes' cached pictures, so while following the x range grows by
`X_GROWTH` of the data span when the data reach its end, and a y range keeps `Y_SLACK` of room
on each side until the data leave it or use less than `Y_SHRINK` of it: most frames then
repaint only the curves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pyqtgraph as pg

from workbench.gui.live_trace import Trace

X_GROWTH = (
    0.25  # following: the x range grows by this share of the data span when the data reach its end
)
Y_SLACK = (
    0.1  # following: a new y range gets this share of the data span as extra room on each side
)
Y_SHRINK = 0.5  # ... and is refitted when the data use less than this share of it


def x_bounds(traces: Iterable[Trace], x_mode: str) -> tuple[float, float] | None:
    """The x span of every overlaid run (wall time: each from its own start)."""
    lo, hi = math.inf, -math.inf
    for t in traces:
        s = t.series["loss"]
        if len(s):
            n = s.n - 1
            a, b = (
                (s.step[0], s.step[n])
                if x_mode == "step"
                else (s.wall[0] - t.origin, s.wall[n] - t.origin)
            )
            lo, hi = min(lo, float(a)), max(hi, float(b))
        if t.val_step and x_mode == "step":
            lo, hi = min(lo, t.val_step[0]), max(hi, t.val_step[-1])
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def fit_x(p: pg.PlotItem, b: tuple[float, float] | None, tight: bool = False) -> None:
    """Follow the data; unless `tight`, leave X_GROWTH of room at the end so that the x range
    (and with it every axis picture) changes only now and then."""
    if b is None:
        return
    lo, hi = b
    if hi <= lo:
        hi = lo + 1.0
    span = hi - lo
    pad = 0.02 * span
    cur_lo, cur_hi = p.vb.viewRange()[0]
    if (
        not tight
        and lo - 2 * pad <= cur_lo <= lo
        and hi <= cur_hi <= hi + (2 * X_GROWTH + 0.05) * span
    ):
        return
    p.setXRange(lo - pad, hi + pad + (0.0 if tight else X_GROWTH * span), padding=0)


def y_bounds(traces: Iterable[Trace], key: str, log: bool) -> tuple[float, float] | None:
    """The y span of a plot's data over the overlaid runs (log10 units on a log axis)."""
    lo, hi = math.inf, -math.inf
    for t in traces:
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


def fit_y(
    p: pg.PlotItem,
    b: tuple[float, float] | None,
    log: bool,
    reference: float | None = None,
    tight: bool = False,
) -> None:
    """Fit y to all the data (while following, all the data are in view), with hysteresis:
    a new range keeps Y_SLACK room on each side and stays until the data leave it or use
    less than Y_SHRINK of it. A `reference` (the published number) is kept in view."""
    if b is None:
        return
    lo, hi = b
    ref = reference
    if ref is not None and math.isfinite(ref) and not (log and ref <= 0):
        r = math.log10(ref) if log else ref
        lo, hi = min(lo, r), max(hi, r)
    span = hi - lo
    if span <= 0:
        span = abs(hi) * 0.1 or 1.0
        lo, hi = lo - span / 2, hi + span / 2
    cur_lo, cur_hi = p.vb.viewRange()[1]
    if not tight and cur_lo <= lo and hi <= cur_hi and span >= Y_SHRINK * (cur_hi - cur_lo):
        return
    pad = (0.05 if tight else Y_SLACK) * span
    p.setYRange(lo - pad, hi + pad, padding=0)
