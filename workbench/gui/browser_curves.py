"""The browser's Curves tab: one metric of the selected runs overlaid (distinct colours, a
legend), or the mean ± std band of each seed group.

While the shown runs train, `plot(keep_items=True)` calls `setData` on the existing curves
instead of rebuilding the plot (pyqtgraph: never recreate plot items per update).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from workbench.catalog import Catalog, RunRecord
from workbench.gui.browser_model import group_key

# the metrics a reader looks at first; any others follow in alphabetical order
METRIC_ORDER = ["val_accuracy", "val_mse", "loss", "accuracy", "mse", "meta_lr", "steps_per_s"]


def mean_band(
    curves: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over runs, interpolated on the steps of the longest run."""
    grid = max((s for s, _ in curves), key=len).astype(np.float64)
    ys = []
    for s, v in curves:
        ok = np.isfinite(v)
        if ok.sum() == 0:
            continue
        y = np.interp(grid, s[ok], v[ok], left=np.nan, right=np.nan)
        ys.append(y)
    arr = np.vstack(ys)
    with np.errstate(all="ignore"):
        return grid, np.nanmean(arr, axis=0), np.nanstd(arr, axis=0)


class CurvesTab(QWidget):
    """`selected` gives the runs to draw at the moment of drawing, so a metric or grouping
    change always plots the current selection."""

    def __init__(
        self,
        catalog: Catalog,
        selected: Callable[[], list[RunRecord]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.selected = selected
        self.items: dict[int, Any] = {}  # run id -> its curve (a group's mean, when grouped)
        cl = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Metric"))
        self.metric_combo = QComboBox()
        self.metric_combo.setMinimumContentsLength(16)
        self.metric_combo.currentIndexChanged.connect(lambda _: self.plot())
        row.addWidget(self.metric_combo)
        self.group_check = QCheckBox("Mean ± std over seed groups")
        self.group_check.toggled.connect(lambda _: self.plot())
        row.addWidget(self.group_check)
        row.addStretch(1)
        cl.addLayout(row)
        self.curve_plot = pg.PlotWidget()
        self.curve_plot.showGrid(x=True, y=True, alpha=0.25)
        self.curve_plot.setLabel("bottom", "step")
        self.legend = self.curve_plot.addLegend(offset=(-10, 10), labelTextSize="9pt")
        cl.addWidget(self.curve_plot, 1)

    def fill_metrics(self, recs: list[RunRecord]) -> None:
        """Offer the metrics these runs recorded (test results are single numbers, not curves),
        keeping the current one when it is still there."""
        names: set[str] = set()
        for r in recs:
            names.update(r.summary.keys())
        names = {n for n in names if not n.startswith("test_") and not n.endswith("_ci95")}
        ordered = [n for n in METRIC_ORDER if n in names] + sorted(names - set(METRIC_ORDER))
        current = self.metric_combo.currentText()
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        self.metric_combo.addItems(ordered)
        if current in ordered:
            self.metric_combo.setCurrentText(current)
        self.metric_combo.blockSignals(False)

    def plot(self, keep_items: bool = False) -> None:
        """Overlay the selected runs' curves of the chosen metric (distinct colours, legend);
        `keep_items` updates the drawn curves in place when the same runs are shown ungrouped."""
        name = self.metric_combo.currentText()
        recs = self.selected()
        plot = self.curve_plot.getPlotItem()
        grouped = self.group_check.isChecked()
        if not (keep_items and not grouped and set(self.items) == {r.id for r in recs}):
            plot.clear()
            self.legend.clear()
            self.items = {}
            keep_items = False
        if not name or not recs:
            return
        plot.setTitle(name)
        n = max(len(recs), 1)
        data = {r.id: self.catalog.metrics(r.id, name)[:2] for r in recs}
        if keep_items:
            for r in recs:
                self.items[r.id].setData(*data[r.id])
            return
        groups: dict[str, list[RunRecord]] = {}
        if grouped:
            for r in recs:
                groups.setdefault(group_key(r.config), []).append(r)
        else:
            groups = {str(r.id): [r] for r in recs}
        for i, members in enumerate(groups.values()):
            color = (
                pg.intColor(i, hues=max(len(groups), 1), values=1, maxValue=200)
                if n > 1
                else pg.mkColor("#1f77b4")
            )
            if len(members) == 1:
                r = members[0]
                item = plot.plot(
                    *data[r.id], pen=pg.mkPen(color, width=1.8), name=f"#{r.id} {r.name}"
                )
                item.setClipToView(True)
                item.setDownsampling(auto=True, method="peak")
                self.items[r.id] = item
                continue
            curves = [data[m.id] for m in members if len(data[m.id][0])]
            if not curves:
                continue
            grid, mean, std = mean_band(curves)
            band_color = pg.mkColor(color)
            band_color.setAlpha(60)
            lo = plot.plot(grid, mean - std, pen=pg.mkPen(None))
            hi = plot.plot(grid, mean + std, pen=pg.mkPen(None))
            plot.addItem(pg.FillBetweenItem(lo, hi, brush=pg.mkBrush(band_color)))
            label = f"{members[0].algorithm}/{members[0].dataset} mean of {len(members)} seeds"
            item = plot.plot(grid, mean, pen=pg.mkPen(color, width=2.2), name=label)
            for m in members:
                self.items[m.id] = item

    def export_png(self, path: str) -> None:
        """The plot as drawn, at least 800 pixels wide."""
        from pyqtgraph.exporters import ImageExporter

        exporter = ImageExporter(self.curve_plot.getPlotItem())
        exporter.parameters()["width"] = max(800, self.curve_plot.width())
        exporter.export(path)
