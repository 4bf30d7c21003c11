"""The Curves tab's grid: one plot per metric (x linked), each with its overlaid runs, CI or
std bands, and a hint in place of the curves when the runs recorded nothing for it.

Colours: the live view's palette, one colour per run up to its length; beyond, every
len(PALETTE)-th run shares a colour (200 distinct hues could not be told apart anyway), and
runs sharing a colour share a plot item (see `browser_curves_overlay`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg

from workbench.gui.browser_curves_data import PanelData
from workbench.gui.browser_curves_overlay import Overlay
from workbench.gui.live_trace import PALETTE


def colors(n: int) -> list[Any]:
    """The palette's first n colours (all of them for more lines: line i takes colour i % len)."""
    return [pg.mkColor(c) for c in PALETTE[: max(1, min(n, len(PALETTE)))]]


class Panel:
    """One metric's plot in the grid."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.plot = pg.PlotItem()
        self.plot.getAxis("left").setWidth(54)
        for side in ("left", "bottom"):  # no units: the labels would re-render on every range
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.raw = Overlay(self.plot, alpha=45, z=0)
        self.curves = Overlay(self.plot, alpha=255, z=1)
        self.bands: list[Any] = []
        self.hint = pg.TextItem("", color="#777", anchor=(0.5, 0.5))
        self.hint.setParentItem(self.plot.vb)
        self.hint.hide()
        vb = self.plot.vb
        vb.sigXRangeChanged.connect(lambda *_: self.render())
        vb.sigResized.connect(lambda *_: self._resized())
        self.data: PanelData | None = None

    def _resized(self) -> None:
        vb = self.plot.vb
        self.hint.setPos(vb.width() / 2, vb.height() / 2)
        self.render()

    def render(self) -> None:
        self.raw.render()
        self.curves.render()

    def show(self, data: PanelData, palette: list[Any], hidden: set[int]) -> None:
        """Draw these lines (line i in palette[i % len]) less the hidden ones."""
        self.data = data
        for item in self.bands:
            self.plot.removeItem(item)
        self.bands = []
        for ov in (self.curves, self.raw):
            ov.hidden = hidden
        self.curves.show_markers = data.markers
        self.curves.set_lines(data.lines, palette)
        if data.raw is not None:
            self.raw.set_lines(data.raw, palette)
        else:
            self.raw.clear()
        for i, x, lo, hi in data.bands:
            if i in hidden:
                continue
            ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
            if ok.sum() < 2:
                continue
            color = pg.mkColor(palette[i % len(palette)])
            color.setAlpha(50)
            band = pg.FillBetweenItem(
                pg.PlotCurveItem(x[ok], lo[ok]),
                pg.PlotCurveItem(x[ok], hi[ok]),
                brush=pg.mkBrush(color),
            )
            band.setZValue(-1)
            self.plot.addItem(band)
            self.bands.append(band)
        empty = not any(len(x) for x, _ in data.lines)
        self.hint.setText(data.hint if empty else "")
        self.hint.setVisible(empty and bool(data.hint))

    def set_log(self, on: bool) -> None:
        self.plot.setLogMode(y=on)  # the axis shows 10^k; the lines are fed in log10 already

    def shown_lines(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every line as it was handed to the panel (y smoothed, and in log10 on a log axis)."""
        return [(ln.levels[0][0], ln.levels[0][1]) for ln in self.curves.lines]

    def clear(self) -> None:
        for item in self.bands:
            self.plot.removeItem(item)
        self.bands = []
        self.curves.clear()
        self.raw.clear()
        self.hint.hide()
