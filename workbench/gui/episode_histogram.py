"""A histogram of an evaluation's per-episode scores, with its mean and 95% CI drawn over it.

Shared by the Evaluate dialog (the evaluation just made) and the browser's Evaluations tab
(the evaluation selected). The CI drawn is recomputed from the episodes shown
(`exports.episode_interval`, the rule of `core.evaluate.mean_ci`), so the band is the
interval of exactly these scores. One bar item, one line and one region are made once and
updated (pyqtgraph: never recreate plot items per update).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg

from workbench.exports import episode_interval

MAX_BINS = 30


def histogram(values: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, bar left edges, bar right edges) of finite scores: about sqrt(n) equal bins,
    at most MAX_BINS. Accuracy takes one bar per distinct value where there are few (a 5-way
    1-query task scores 0, 20, 40...100 %: bins between those would be empty stripes), each
    as wide as the smallest step between values."""
    distinct, counts = np.unique(values, return_counts=True)
    if metric.endswith("accuracy") and len(distinct) <= MAX_BINS:
        half = (np.diff(distinct).min() if len(distinct) > 1 else 0.02) / 2
        return counts, distinct - half, distinct + half
    bins = max(1, min(MAX_BINS, round(math.sqrt(len(values)))))
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        pad = 0.005 * (abs(lo) or 1.0)
        lo, hi = lo - pad, hi + pad
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return counts, edges[:-1], edges[1:]


class EpisodeHistogram(pg.PlotWidget):
    """Counts of episodes per score bin (accuracy in percent), the mean as a line and the
    95% CI as a band. `counts` holds what is drawn (its sum: the episodes shown)."""

    def __init__(self, parent: object = None) -> None:
        super().__init__(parent=parent)
        self.setBackground("w")
        self.setMinimumHeight(160)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.getPlotItem().setMenuEnabled(False)
        self.setLabel("left", "episodes")
        self.bars = pg.BarGraphItem(x0=[], x1=[], height=[], brush="#4a7fc1", pen="#2d5a8f")
        self.band = pg.LinearRegionItem(
            (0, 0), movable=False, brush=pg.mkBrush(208, 48, 48, 40), pen=pg.mkPen(None)
        )
        self.mean_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#d03030", width=2))
        for item in (self.band, self.bars, self.mean_line):
            self.addItem(item)
        self.counts = np.zeros(0, dtype=np.int64)
        self.hidden = 0  # non-finite scores left out of the bars
        self.show_scores(None, "accuracy")

    def show_scores(self, scores: Sequence[float] | None, metric: str) -> None:
        """Draw these per-episode scores; None (an evaluation stored before they were kept)
        or none at all shows an empty plot saying so."""
        values = np.asarray(scores if scores is not None else [], dtype=np.float64)
        finite = values[np.isfinite(values)]
        self.hidden = len(values) - len(finite)
        scale = 100.0 if metric.endswith("accuracy") else 1.0
        unit = f"{metric} (%)" if scale == 100.0 else metric
        if len(finite) == 0:
            self.counts = np.zeros(0, dtype=np.int64)
            self.bars.setOpts(x0=[], x1=[], height=[])
            for item in (self.band, self.mean_line):
                item.setVisible(False)
            self.setTitle(
                "no per-episode scores stored (an evaluation from an earlier release)"
                if scores is None
                else "no finite per-episode scores",
                size="9pt",
            )
            return
        counts, left, right = histogram(finite, metric)
        self.counts = counts
        gap = 0.04 * (right - left)
        self.bars.setOpts(x0=(left + gap) * scale, x1=(right - gap) * scale, height=counts)
        mean, ci = episode_interval(finite.tolist())
        self.mean_line.setValue(mean * scale)
        self.band.setRegion(((mean - ci) * scale, (mean + ci) * scale))
        for item in (self.band, self.mean_line):
            item.setVisible(True)
        left_out = f", {self.hidden} non-finite not shown" if self.hidden else ""
        self.setTitle(
            f"{len(finite)} episodes: mean (line) and 95% CI (band){left_out}", size="9pt"
        )
        self.setLabel("bottom", unit)
        self.getPlotItem().enableAutoRange()
