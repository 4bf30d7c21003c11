"""Many runs' curves on one plot through a few plot items, so a pan stays cheap with 200 runs.

pyqtgraph's own clip-to-view and peak downsampling work per item, and 200 runs x 4 panels
= 800 items cost ~70 ms of Python per pan before any paint (bench/overlay_redraw.py). Here
the runs that share a colour share one `PlotCurveItem` (joined by a connect array, not
connected to each other), and each redraw hands it only what is in the x range, peak-
downsampled from a pyramid built once per curve, to a point budget per pixel of width: a pan costs
a few whole-array numpy operations and one paint of a bounded number of points.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg

POINTS_PER_PX = 50  # at most about this many points per pixel of width handed to a panel
MIN_BINS = 32  # the coarsest pyramid level keeps this many (min, max) pairs


def _peaks(x: np.ndarray, y: np.ndarray, ds: int) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of every `ds` points at the bin's first x, as pyqtgraph's "peak" mode; the
    last point is kept so that a level spans the same x as the data."""
    m = len(x) // ds
    yr = y[: m * ds].reshape(m, ds)
    xs = np.repeat(x[: m * ds : ds], 2)
    ys = np.column_stack([yr.min(axis=1), yr.max(axis=1)]).ravel()
    return np.append(xs, x[-1]), np.append(ys, y[-1])


class Line:
    """One curve's finite points and its peak pyramid: level k holds len/2**k points."""

    __slots__ = ("levels",)

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.all():
            x, y = x[ok], y[ok]
        self.levels = [(x, y)]
        ds = 4
        while len(x) // ds >= MIN_BINS:
            self.levels.append(_peaks(x, y, ds))
            ds *= 2

    def __len__(self) -> int:
        return len(self.levels[0][0])


class _Curve(pg.PlotCurveItem):
    """A curve item whose bounds are known when its points are set: pyqtgraph recomputes them
    (nanmin/nanmax, pixel padding) for every item after every view change. The x bounds are
    those of its whole lines, not of the clipped points it holds, so that an x auto-range (the
    plot's "A" button) fits the data rather than the view; y those of the points in view."""

    none: tuple[Any, Any] = (None, None)

    def __init__(self) -> None:
        super().__init__(skipFiniteCheck=True)
        self.bounds = (self.none, self.none)

    def set_points(
        self, x: np.ndarray, y: np.ndarray, connect: np.ndarray, xspan: tuple[float, float]
    ) -> None:
        self.bounds = (xspan, (y.min(), y.max()))
        self.setData(x, y, connect=connect, skipFiniteCheck=True)

    def clear_points(self) -> None:
        self.bounds = (self.none, self.none)
        self.setData([], [])

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange: Any = None) -> Any:  # noqa: N803
        if frac >= 1.0 and orthoRange is None:
            return self.bounds[ax]
        return super().dataBounds(ax, frac, orthoRange)

    def pixelPadding(self) -> float:
        return 0.0  # a 1-px pen: half a pixel of bounds is not worth pixelVectors() per view change


class Overlay:
    """Curves on one plot, line i drawn in colours[i % len(colours)]: one item per colour.

    The lines of each level of their pyramids are kept concatenated, grouped by colour, with
    the line index of every point; a redraw picks one level for the view (from the points in
    x range, against `POINTS_PER_PX`) and selects what is in range with a few whole-array numpy
    operations: no per-run Python on a pan. `render` is called when the x range or the plot's
    width changes."""

    def __init__(self, plot: pg.PlotItem, alpha: int = 255, z: float = 0.0) -> None:
        self.plot = plot
        self.alpha = alpha
        self.z = z
        self.colors: list[Any] = []
        self.lines: list[Line] = []
        self.hidden: set[int] = set()  # line indices the user hid (legend)
        self.items: list[_Curve] = []
        self.markers: list[pg.ScatterPlotItem] = []
        self.show_markers = False
        # per level: x, y, line index of each point; and where each colour's points start
        self._levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._starts: list[np.ndarray] = []
        self._spans: list[tuple[float, float]] = []  # each colour's lines' x extent
        self._key: tuple[Any, ...] | None = None

    def _item(self, i: int, color: Any) -> _Curve:
        while len(self.items) <= i:
            item = _Curve()
            item.setZValue(self.z)
            self.plot.addItem(item)
            self.items.append(item)
        c = pg.mkColor(color)
        c.setAlpha(self.alpha)
        item = self.items[i]
        item.setPen(pg.mkPen(c, width=1))  # 1 px: Qt's fast path (bench/plot_redraw.py)
        return item

    def _marker(self, i: int) -> pg.ScatterPlotItem:
        while len(self.markers) <= i:
            m = pg.ScatterPlotItem(size=5, pen=None)
            m.setZValue(self.z + 0.5)
            self.plot.addItem(m)
            self.markers.append(m)
        return self.markers[i]

    @property
    def n_items(self) -> int:
        return min(len(self.lines), len(self.colors))

    def set_lines(self, lines: list[tuple[np.ndarray, np.ndarray]], colors: list[Any]) -> None:
        """New curves (their pyramids are built here, once) drawn in these colours."""
        self.lines = [Line(x, y) for x, y in lines]
        self.colors = list(colors)
        n = self.n_items
        for i in range(n):
            self._item(i, self.colors[i])
        for item in self.items[n:]:
            item.clear_points()
        for m in self.markers:
            m.setData([], [])
        order = [i for slot in range(n) for i in range(slot, len(self.lines), n)]
        depth = max((len(ln.levels) for ln in self.lines if len(ln)), default=0)
        self._levels, self._starts = [], []
        for k in range(depth):
            xs, ys, ls, sizes = [], [], [], np.zeros(max(n, 1), np.int64)
            for i in order:
                x, y = self.lines[i].levels[min(k, len(self.lines[i].levels) - 1)]
                xs.append(x)
                ys.append(y)
                ls.append(np.full(len(x), i, np.int32))
                sizes[i % n] += len(x)
            self._levels.append((np.concatenate(xs), np.concatenate(ys), np.concatenate(ls)))
            self._starts.append(np.concatenate([[0], np.cumsum(sizes)]))
        ends = [
            (ln.levels[0][0][0], ln.levels[0][0][-1], i % max(n, 1))
            for i, ln in enumerate(self.lines)
            if len(ln)
        ]
        self._spans = [
            (min((a for a, _, s in ends if s == slot), default=0.0),
             max((b for _, b, s in ends if s == slot), default=0.0))
            for slot in range(n)
        ]  # fmt: skip
        self._key = None
        self.render()

    def x_extent(self) -> tuple[float, float] | None:
        """The x span of the lines shown (not hidden)."""
        ends = [
            ln.levels[0][0][[0, -1]]
            for i, ln in enumerate(self.lines)
            if len(ln) and i not in self.hidden
        ]
        return (min(e[0] for e in ends), max(e[1] for e in ends)) if ends else None

    def render(self) -> None:
        """Hand each item its lines' points in the x range, from the finest pyramid level that
        keeps them under the point budget."""
        if not self._levels:
            return
        vb = self.plot.vb
        (lo, hi), _ = vb.viewRange()
        hidden = frozenset(self.hidden)
        key = (lo, hi, int(vb.width()), hidden, self.show_markers)
        if key == self._key:
            return
        self._key = key
        coarse = self._levels[-1][0]
        share = np.count_nonzero((coarse >= lo) & (coarse <= hi)) / len(coarse)
        wanted = share * len(self._levels[0][0])  # points in view at full resolution
        budget = POINTS_PER_PX * max(int(vb.width()), 100)
        k = 0 if wanted <= budget else math.ceil(math.log2(wanted / budget))
        x, y, line = self._levels[min(k, len(self._levels) - 1)]
        starts = self._starts[min(k, len(self._levels) - 1)]
        # in range, and one point beyond on each side so that lines reach the plot's edges
        inside = (x >= lo) & (x <= hi)
        same = line[1:] == line[:-1]
        keep = inside.copy()
        keep[1:] |= inside[:-1] & same
        keep[:-1] |= inside[1:] & same
        if hidden:
            keep &= ~np.isin(line, list(hidden))
        for slot in range(self.n_items):
            a, b = starts[slot], starts[slot + 1]
            sel = keep[a:b]
            sx, sy, sl = x[a:b][sel], y[a:b][sel], line[a:b][sel]
            item = self.items[slot]
            if not len(sx):
                item.clear_points()
            else:
                connect = np.empty(len(sx), np.int32)  # lines are not joined to each other
                np.equal(sl[1:], sl[:-1], out=connect[:-1], casting="unsafe")
                connect[-1] = 0
                item.set_points(sx, sy, connect, self._spans[slot])
            if self.show_markers:
                self._marker(slot).setData(sx, sy, brush=pg.mkBrush(self.colors[slot]))

    def clear(self) -> None:
        self.lines = []
        self._levels, self._starts, self._spans = [], [], []
        for item in self.items:
            item.clear_points()
        for m in self.markers:
            m.setData([], [])
        self._key = None
