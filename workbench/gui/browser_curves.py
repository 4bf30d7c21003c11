"""The browser's Curves tab: a grid of panels (meta-train loss, query score, validation,
learning rate, and any other metric on request), one selected run or many overlaid (one
colour per run, a legend), or the mean ± std band of each seed group.

The view options sit above the grid: x by step or by seconds of training, the live view's
smoothing (EMA; the raw curve stays faint behind when few runs are shown), log-scale y, which
panels; they are remembered per catalog. The selected runs' points are read once per
selection or poll (`browser_curves_data`); the options redraw from them. With many runs a
pan or zoom stays cheap: see `browser_curves_overlay`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.catalog import Catalog, RunRecord
from workbench.gui import settings as qs
from workbench.gui.browser_curves_data import (
    PANEL_METRICS,
    PANEL_NAMES,
    PANELS,
    Entry,
    PanelSpec,
    RunCurves,
    entries,
    extra_spec,
    kind_label,
    load_run,
    mean_band,
    panel_data,
)
from workbench.gui.browser_curves_panels import Panel, colors
from workbench.gui.live_budget import _TimedLayoutWidget

__all__ = ["CurvesTab", "mean_band"]  # mean_band: browser.py re-exports it from here

NO_EXTRA = "(none)"
LEGEND_MAX = 10  # legend lines (one per palette colour); more runs are summed up in one line
DEFAULTS: dict[str, Any] = {
    "x": "step",
    "smoothing": 0.9,  # as the live view starts
    "log": False,
    "panels": list(PANELS),
    "extra": "",
}
SMOOTH_DELAY_MS = 120  # a slider drag recomputes the EMAs once it pauses, not at every tick


def memory_key(catalog: Catalog) -> str:
    """Per catalog, as the browser keys its columns and filters (`ExperimentsBrowser`)."""
    target = catalog.display if catalog.server else catalog.location
    return f"browser_curves/{hashlib.sha1(str(target).encode()).hexdigest()[:16]}"


class CurvesTab(QWidget):
    """`selected` gives the runs to draw at the moment of drawing, so an option change always
    plots the current selection."""

    redrawn = Signal()  # after every redraw (tests wait on it)

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
        self.runs: list[RunCurves] = []
        self.ids: list[int] = []
        self.entries: list[Entry] = []
        self.hidden: set[int] = set()  # entries hidden by a click on their legend line
        self._samples: dict[int, int] = {}  # id(legend sample) -> entry
        self._cache: dict[int, tuple[Any, RunCurves]] = {}  # run id -> (record signature, points)
        saved = qs.load_json(memory_key(catalog), {})
        self.state = {**DEFAULTS, **(saved if isinstance(saved, dict) else {})}
        self.alpha = min(0.99, max(0.0, float(self.state["smoothing"])))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(self._build_bar())
        self.curve_plot = _TimedLayoutWidget()  # times its paints (bench/overlay_redraw.py)
        self.panels = {k: Panel(k) for k in [*PANELS, "extra"]}
        self.zoomed = False  # the user panned or zoomed since the last fit
        for p in self.panels.values():
            p.plot.vb.sigRangeChangedManually.connect(lambda *_: setattr(self, "zoomed", True))
        self.legend = pg.LegendItem(labelTextSize="9pt", verSpacing=-6, labelTextColor="#333")
        self.legend.sigSampleClicked.connect(self._toggle_entry)
        self._side = pg.GraphicsLayout()  # the legend's column: the legend at its top
        self._side.addItem(self.legend, row=0, col=0)
        self._side.addItem(pg.GraphicsWidget(), row=1, col=0)  # takes the height below it
        self._side.layout.setRowStretchFactor(1, 1)
        lay.addWidget(self.curve_plot, 1)
        self._smooth_timer = QTimer(self, singleShot=True, interval=SMOOTH_DELAY_MS)
        self._smooth_timer.timeout.connect(self._apply_smoothing)
        self.arrange()
        self._set_axes()

    # ---- the options bar ---------------------------------------------------------------
    def _build_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        bar.addWidget(QLabel("X axis"))
        self.x_combo = QComboBox()
        self.x_combo.addItem("Step", "step")
        self.x_combo.addItem("Wall time (s)", "wall")
        self.x_combo.setToolTip(
            "Seconds of training since the run's first point (gaps between attempts left out)"
        )
        self.x_combo.setCurrentIndex(max(0, self.x_combo.findData(self.state["x"])))
        self.x_combo.currentIndexChanged.connect(
            lambda _: self._option("x", self.x_combo.currentData())
        )
        bar.addWidget(self.x_combo)
        bar.addSpacing(12)
        bar.addWidget(QLabel("Smoothing"))
        self.smooth_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=99)
        self.smooth_slider.setValue(round(self.alpha * 100))
        self.smooth_slider.setFixedWidth(120)
        self.smooth_slider.setToolTip(
            "Exponential moving average weight of the past, as in the live view; the stored "
            "points are unchanged (the raw curve stays faint behind when few runs are shown)"
        )
        self.smooth_label = QLabel(f"{self.alpha:.2f}")
        self.smooth_slider.valueChanged.connect(self._smoothing_moved)
        bar.addWidget(self.smooth_slider)
        bar.addWidget(self.smooth_label)
        bar.addSpacing(12)
        self.log_check = QCheckBox("Log scale")
        self.log_check.setToolTip("Log y on every panel but the learning rate")
        self.log_check.setChecked(bool(self.state["log"]))
        self.log_check.toggled.connect(lambda on: self._option("log", on))
        bar.addWidget(self.log_check)
        self.group_check = QCheckBox("Seed mean ± std")
        self.group_check.setToolTip(
            "Runs that differ only by seed drawn as one curve: their mean, and ± std as a band"
        )
        self.group_check.toggled.connect(lambda _: self.redraw(refit=True))
        bar.addWidget(self.group_check)
        self.panels_button = QToolButton(text="Panels")
        self.panels_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.panels_button.setStyleSheet("QToolButton { padding-right: 14px; }")  # the arrow
        menu = QMenu(self.panels_button)
        self.panel_actions = {}
        for key, name in PANEL_NAMES.items():
            act = menu.addAction(name)
            act.setCheckable(True)
            act.setChecked(key in self.state["panels"])
            act.toggled.connect(lambda _on: self._panels_changed())
            self.panel_actions[key] = act
        self.panels_button.setMenu(menu)
        bar.addWidget(self.panels_button)
        bar.addWidget(QLabel("Also plot"))
        self.metric_combo = QComboBox()
        self.metric_combo.setMinimumContentsLength(12)
        self.metric_combo.setToolTip("A panel for another recorded metric")
        self.metric_combo.addItem(NO_EXTRA)
        self.metric_combo.currentIndexChanged.connect(lambda _: self._extra_changed())
        bar.addWidget(self.metric_combo)
        bar.addStretch(1)
        return bar

    def _remember(self) -> None:
        self.state["smoothing"] = self.alpha
        qs.save_json(memory_key(self.catalog), self.state)

    def _option(self, key: str, value: Any) -> None:
        self.state[key] = value
        self._remember()
        self._set_axes()
        self.redraw(refit=True)

    def _smoothing_moved(self, value: int) -> None:
        self.smooth_label.setText(f"{value / 100:.2f}")
        self._smooth_timer.start()

    def _apply_smoothing(self) -> None:
        """The slider's value to every shown series' EMA (the raw points stay as read)."""
        self.alpha = self.smooth_slider.value() / 100
        specs = self._specs()
        for run in self.runs:
            for key, s in run.series.items():
                if specs.get(key, PANELS["lr"]).smooth:
                    s.set_alpha(self.alpha)
        self._remember()
        self.redraw(refit=False)

    def _panels_changed(self) -> None:
        self.state["panels"] = [k for k, a in self.panel_actions.items() if a.isChecked()]
        self._remember()
        self.arrange()
        self.redraw(refit=True)

    def _extra_changed(self) -> None:
        text = self.metric_combo.currentText()
        self.state["extra"] = "" if text == NO_EXTRA else text
        self._remember()
        self.arrange()
        self.plot()

    def fill_metrics(self, recs: list[RunRecord]) -> None:
        """Offer the other metrics these runs recorded for an extra panel (test results are
        single numbers, not curves), keeping the chosen one when it is still there."""
        names: set[str] = set()
        for r in recs:
            names.update(r.summary.keys())
        names = {
            n
            for n in names - PANEL_METRICS
            if not n.startswith("test_") and not n.endswith("_ci95")
        }
        want = self.state["extra"]
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        self.metric_combo.addItems([NO_EXTRA, *sorted(names)])
        self.metric_combo.setCurrentText(want if want in names else NO_EXTRA)
        self.metric_combo.blockSignals(False)
        self.arrange()

    # ---- layout ------------------------------------------------------------------------
    def _extra(self) -> str:
        text = self.metric_combo.currentText()
        return "" if text == NO_EXTRA else text

    def _specs(self) -> dict[str, PanelSpec]:
        """The panels shown, in grid order."""
        specs = {k: PANELS[k] for k in PANELS if k in self.state["panels"]}
        if self._extra():
            specs["extra"] = extra_spec(self._extra())
        return specs

    def arrange(self) -> None:
        """Place the shown panels two per row, the legend at the top of a column at the right."""
        keys = list(self._specs())
        if getattr(self, "_placed", None) == keys:
            return
        lay = self.curve_plot.ci
        lay.clear()
        cols = 1 if len(keys) == 1 else 2
        for i, key in enumerate(keys):
            lay.addItem(self.panels[key].plot, row=i // cols, col=i % cols)
            # x linked to the first shown panel (a view out of the grid would not pass it on)
            self.panels[key].plot.setXLink(self.panels[keys[0]].plot if i else None)
        lay.addItem(self._side, row=0, col=cols, rowspan=max(1, (len(keys) + cols - 1) // cols))
        for c in range(3):  # the panels share the width; the legend takes what it needs
            lay.layout.setColumnStretchFactor(c, 1 if c < cols else 0)
        self._placed = keys

    def _set_axes(self) -> None:
        label = "step" if self.state["x"] == "step" else "wall time (s)"
        for key, p in self.panels.items():
            p.plot.setLabel("bottom", label)
            spec = PANELS.get(key) or extra_spec("")
            p.set_log(bool(self.state["log"]) and spec.log)

    # ---- drawing -----------------------------------------------------------------------
    def plot(self, keep_items: bool = False) -> None:
        """Read the selected runs' points (those whose record changed: `keep_items` is implied)
        and draw them; the same runs again keep the user's zoom and the runs hidden from the
        legend, and without a zoom the view follows new points (a poll while they train)."""
        recs = self.selected()
        ids = [r.id for r in recs]
        same = ids == self.ids  # a reload of the same runs keeps a zoom and the hidden runs
        if not same:
            self.hidden = set()
        self.ids = ids
        specs = [*PANELS.values()] + ([extra_spec(self._extra())] if self._extra() else [])
        cache, self._cache = self._cache, {}
        for r in recs:  # a run whose record did not change is not read again (polls)
            sig = (
                self._extra(),
                r.status,
                r.step,
                r.attempt,
                sorted((k, v.count) for k, v in r.summary.items()),
            )
            old = cache.get(r.id)
            self._cache[r.id] = (
                sig,
                old[1] if old and old[0] == sig else load_run(self.catalog, r, specs, self.alpha),
            )
        self.runs = [self._cache[r.id][1] for r in recs]
        self.redraw(refit=not (same and self.zoomed))  # unzoomed, the view follows new points

    def redraw(self, refit: bool = False) -> None:
        """Draw the read points with the current options; `refit` fits every axis again."""
        self.entries = entries(self.runs, self.group_check.isChecked())
        palette = colors(len(self.entries))
        self._draw_panels(palette, refit)
        self._fill_legend(palette)
        self.redrawn.emit()

    def _draw_panels(self, palette: list[Any], refit: bool) -> None:
        specs = self._specs()
        kinds = {r.kind for r in self.runs}
        for key, panel in self.panels.items():
            spec = specs.get(key)
            if spec is None:
                panel.clear()
                continue
            panel.plot.setTitle(spec.title.format(kind=kind_label(kinds)))
            data = panel_data(
                spec, self.entries, self.state["x"], self.alpha > 0, self.state["log"]
            )
            panel.show(data, palette, self.hidden)
        if refit:
            self._fit(list(specs))
            self.zoomed = False
        first = next((self.panels[k] for k in specs), None)
        self.items = {}
        if first is not None and first.curves.items:
            n = len(first.curves.items)
            for i, e in enumerate(self.entries):
                for r in e.runs:
                    self.items[r.run_id] = first.curves.items[i % n]

    def _fit(self, keys: list[str]) -> None:
        """x to the data of every shown panel (set on the first: the others are linked to it,
        and a linked view's x auto-range would follow its own data), y auto-ranged."""
        spans = [s for k in keys if (s := self.panels[k].curves.x_extent()) is not None]
        for k in keys:
            self.panels[k].plot.enableAutoRange(x=False, y=True)
        if spans and keys:
            lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
            self.panels[keys[0]].plot.setXRange(lo, hi if hi > lo else lo + 1, padding=0.02)

    def _fill_legend(self, palette: list[Any]) -> None:
        self.legend.clear()
        self._samples = {}
        for i, e in enumerate(self.entries[:LEGEND_MAX]):
            sample = pg.PlotDataItem(pen=pg.mkPen(palette[i % len(palette)], width=2))
            sample.setVisible(i not in self.hidden)
            self.legend.addItem(sample, e.label)
            self._samples[id(sample)] = i
        more = len(self.entries) - LEGEND_MAX
        if more > 0:
            self.legend.addItem(pg.PlotDataItem(pen=None), f"… and {more} more")

    def _toggle_entry(self, sample: Any) -> None:
        """A click on a legend line hides (or shows again) that run on every panel."""
        i = self._samples.get(id(sample))
        if i is None:
            return
        if sample.isVisible():
            self.hidden.discard(i)
        else:
            self.hidden.add(i)
        self._draw_panels(colors(len(self.entries)), refit=False)  # the legend stays as it is
        self.redrawn.emit()

    def export_png(self, path: str) -> None:
        """The panels as drawn, at least 800 pixels wide."""
        from pyqtgraph.exporters import ImageExporter

        exporter = ImageExporter(self.curve_plot.scene())
        exporter.parameters()["width"] = max(800, self.curve_plot.width())
        exporter.export(path)
