"""The sweep view: every sweep in the catalog, the selected sweep's trials, and its plots.

Two Qt model/view tables (`SweepTableModel`, `TrialTableModel`) and four pyqtgraph plots:
parallel coordinates (one vertical axis per parameter plus the objective, each normalised to
[0, 1]: log10 for `loguniform` parameters, categorical and grid values spread evenly; one
polyline per trial coloured by its objective, trials without one drawn faint), the objective
against a parameter chosen in a combo box, the best objective so far against finish order,
and the validation curves of the top five trials.

A 1 s QTimer runs only while the view is shown (started in `showEvent`, stopped in
`hideEvent`) and polls the catalog's `change_token()`, one tiny query. On a change the sweep
list and the selected sweep's trials are read (two small queries); the tables are updated in
place and the plots are redrawn only when the trials differ from what is drawn. Sweep
statuses also change without a commit (a driver whose heartbeat went stale reads
"interrupted"), so the list is re-read every `STALE_CHECK_S` seconds as well.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from workbench.catalog import Catalog
from workbench.catalog.sweep_store import SweepRecord, TrialRecord

POLL_MS = 1000
STALE_CHECK_S = 5.0  # a driver that stopped beating changes no row: re-read this often
TOP_K = 5
COLORMAP = "viridis"
FAINT = QColor(150, 150, 150, 70)

Index = QModelIndex | QPersistentModelIndex


def fmt_num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def fmt_time(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def short_key(key: str) -> str:
    """`algorithm.inner_lr` -> `inner_lr` (the last part names it well enough on an axis)."""
    return key.rsplit(".", 1)[-1]


def best_first(trials: list[TrialRecord], maximize: bool) -> list[TrialRecord]:
    """Trials with a finite objective, best first; then the others by number and seed."""

    def key(t: TrialRecord) -> tuple[Any, ...]:
        ok = t.objective is not None and math.isfinite(t.objective)
        obj = (-t.objective if maximize else t.objective) if ok else 0.0  # type: ignore[operator]
        return (not ok, obj, t.number, t.seed)

    return sorted(trials, key=key)


def best_trial(trials: list[TrialRecord], maximize: bool) -> TrialRecord | None:
    done = [
        t
        for t in trials
        if t.status == "finished" and t.objective is not None and math.isfinite(t.objective)
    ]
    return best_first(done, maximize)[0] if done else None


# ---- axes of the parallel coordinates -------------------------------------------------------
@dataclass
class Axis:
    """How one parameter (or the objective) maps to [0, 1], and its tick labels."""

    key: str
    kind: str  # "linear", "log" or "category"
    low: float = 0.0
    high: float = 1.0
    categories: tuple[Any, ...] = ()

    def norm(self, v: Any) -> float:
        if v is None:
            return math.nan
        if self.kind == "category":
            try:
                i = self.categories.index(v)
            except ValueError:
                return math.nan
            n = len(self.categories)
            return 0.5 if n == 1 else i / (n - 1)
        try:
            x = float(v)
        except (TypeError, ValueError):
            return math.nan
        if self.kind == "log":
            if x <= 0:
                return math.nan
            x = math.log10(x)
        if not math.isfinite(x):
            return math.nan
        if self.high == self.low:
            return 0.5
        return (x - self.low) / (self.high - self.low)

    def ticks(self) -> list[tuple[float, str]]:
        if self.kind == "category":
            n = len(self.categories)
            return [
                (0.5 if n == 1 else i / (n - 1), fmt_num(c)) for i, c in enumerate(self.categories)
            ]
        if self.high == self.low:
            value = 10**self.low if self.kind == "log" else self.low
            return [(0.5, f"{value:.3g}")]
        out = []
        for f in (0.0, 0.5, 1.0):
            x = self.low + f * (self.high - self.low)
            out.append((f, f"{10**x if self.kind == 'log' else x:.3g}"))
        return out


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def param_axes(spec: dict[str, Any], trials: list[TrialRecord]) -> list[Axis]:
    """One axis per sweep parameter, in the spec's order (keys seen only in trials after)."""
    params = spec.get("spec", {}).get("parameters", []) if isinstance(spec, dict) else []
    keys: list[str] = []
    domain: dict[str, dict[str, Any]] = {}
    for p in params:
        key = p.get("key")
        if not key:
            continue
        if key not in keys:
            keys.append(key)
        d = domain.setdefault(key, {})
        for name in ("values", "uniform", "loguniform", "int"):
            if p.get(name) is not None:
                d.setdefault(name, []).extend(p[name])
    for t in trials:
        for k in t.params:
            if k not in keys:
                keys.append(k)
    axes = []
    for key in keys:
        d = domain.get(key, {})
        seen = [t.params[key] for t in trials if key in t.params and t.params[key] is not None]
        if "loguniform" in d:
            xs = [math.log10(x) for x in d["loguniform"] + seen if _numeric(x) and x > 0]
            axes.append(Axis(key, "log", min(xs), max(xs)))
        elif "uniform" in d or "int" in d:
            xs = [float(x) for x in d.get("uniform", []) + d.get("int", []) + seen if _numeric(x)]
            axes.append(Axis(key, "linear", min(xs), max(xs)))
        else:  # a list of values (a grid or a choice): discrete, spread evenly
            cats: list[Any] = []
            for v in d.get("values", []) + seen:
                if v not in cats:
                    cats.append(v)
            if cats and all(_numeric(c) for c in cats):
                cats.sort()
            axes.append(Axis(key, "category", categories=tuple(cats)))
    return axes


def wide(values: list[float]) -> bool:
    """Positive values spanning over two decades (a diverged trial among good ones): log."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100


def objective_axis(metric: str, trials: list[TrialRecord]) -> Axis:
    """Linear, or log10 when the objectives span over two decades."""
    xs = [t.objective for t in trials if t.objective is not None and math.isfinite(t.objective)]
    if not xs:
        return Axis(metric, "linear", 0.0, 1.0)
    if wide(xs):
        return Axis(metric, "log", math.log10(min(xs)), math.log10(max(xs)))
    return Axis(metric, "linear", min(xs), max(xs))


def decade_ticks(low: float, high: float) -> list[tuple[float, str]]:
    """Ticks at powers of ten for an axis drawn in log10 units."""
    ks = range(math.floor(low), math.ceil(high) + 1)
    return [(float(k), f"{10.0**k:g}") for k in ks]


# ---- table models ---------------------------------------------------------------------------
SWEEP_COLUMNS = ["ID", "Name", "Method", "Status", "Trials", "Objective", "Best", "Created"]


class SweepTableModel(QAbstractTableModel):
    """Every sweep, newest first (as `SweepStore.list` returns them)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[SweepRecord] = []

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(SWEEP_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return SWEEP_COLUMNS[section]
        return None

    def text(self, r: SweepRecord, col: int) -> str:
        return [
            str(r.id),
            r.name,
            r.method,
            r.status,
            f"{r.done}/{r.trials}",
            f"{r.metric} ({'max' if r.maximize else 'min'})",
            fmt_num(r.best),
            fmt_time(r.created_at),
        ][col]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.text(r, index.column())
        if role == Qt.ItemDataRole.UserRole:
            return r.id
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (0, 4, 6):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def set_rows(self, rows: list[SweepRecord]) -> None:
        """In place when the same sweeps are listed (keeps the selection), else a reset."""
        if [r.id for r in rows] == [r.id for r in self.rows]:
            changed = [i for i, (a, b) in enumerate(zip(rows, self.rows, strict=True)) if a != b]
            self.rows = rows
            if changed:
                self.dataChanged.emit(
                    self.index(min(changed), 0), self.index(max(changed), len(SWEEP_COLUMNS) - 1)
                )
            return
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def row_of(self, sweep_id: int) -> int:
        for i, r in enumerate(self.rows):
            if r.id == sweep_id:
                return i
        return -1


class TrialTableModel(QAbstractTableModel):
    """The selected sweep's trials, best first, one column per parameter."""

    FIXED = ["#", "Seed", "Run", "Status", "Objective"]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[TrialRecord] = []
        self.keys: list[str] = []

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.FIXED) + len(self.keys)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = 0) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            if section < len(self.FIXED):
                return self.FIXED[section]
            return short_key(self.keys[section - len(self.FIXED)])
        if role == Qt.ItemDataRole.ToolTipRole and section >= len(self.FIXED):
            return self.keys[section - len(self.FIXED)]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        t = self.rows[index.row()]
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if c >= len(self.FIXED):
                return fmt_num(t.params.get(self.keys[c - len(self.FIXED)]))
            return [
                str(t.number),
                str(t.seed),
                "" if t.run_id is None else str(t.run_id),
                t.status,
                fmt_num(t.objective),
            ][c]
        if role == Qt.ItemDataRole.ToolTipRole and c == 3 and t.error:
            return t.error
        if role == Qt.ItemDataRole.UserRole:
            return t.id
        if role == Qt.ItemDataRole.TextAlignmentRole and c != 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def set_trials(self, trials: list[TrialRecord], keys: list[str], maximize: bool) -> None:
        self.beginResetModel()
        self.rows = best_first(trials, maximize)
        self.keys = list(keys)
        self.endResetModel()


# ---- the view -------------------------------------------------------------------------------
class SweepView(QWidget):
    """The "Sweeps" tab. `useConfig(dict)` carries the best trial's RunConfig dict."""

    useConfig = Signal(dict)

    def __init__(self, catalog: Catalog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self._token: Any = object()  # never equal to a token: the first poll reads
        self._listed_at = 0.0
        self._sweep: SweepRecord | None = None
        self._trials: list[TrialRecord] = []
        self._drawn: tuple[Any, ...] | None = None  # what the plots show (sweep, trials)
        self._curve_cache: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self.parallel_curves: list[pg.PlotDataItem] = []  # one per trial (tests count them)
        self.last_poll_ms = 0.0  # the GUI thread's cost of the latest poll
        self.last_redraw_ms = 0.0

        self.sweep_model = SweepTableModel()
        self.trial_model = TrialTableModel()
        self._build()
        self.poll_timer = QTimer(self, interval=POLL_MS)
        self.poll_timer.timeout.connect(self._poll_if_shown)

    # ---- layout ------------------------------------------------------------------------
    def _table(self, model: QAbstractTableModel) -> QTableView:
        t = QTableView()
        t.setModel(model)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setAlternatingRowColors(True)
        t.verticalHeader().setVisible(False)
        t.verticalHeader().setDefaultSectionSize(22)
        t.horizontalHeader().setStretchLastSection(True)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        model.modelReset.connect(t.resizeColumnsToContents)  # a few dozen rows: cheap
        return t

    def _plot(self, title: str, left: str = "", bottom: str = "") -> pg.PlotWidget:
        w = pg.PlotWidget(title=title)
        w.setBackground("w")
        w.showGrid(x=True, y=True, alpha=0.2)
        if left:
            w.setLabel("left", left)
        if bottom:
            w.setLabel("bottom", bottom)
        w.setMinimumHeight(180)
        return w

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        split = QSplitter(Qt.Orientation.Vertical)
        lay.addWidget(split)

        tables = QSplitter(Qt.Orientation.Horizontal)
        self.sweep_table = self._table(self.sweep_model)
        self.sweep_table.selectionModel().selectionChanged.connect(lambda *_: self._selected())
        tables.addWidget(self.sweep_table)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.summary = QLabel("No sweep selected")
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        head.addWidget(self.summary, 1)
        self.use_best_button = QPushButton("Use best configuration")
        self.use_best_button.setToolTip(
            "Copy the best finished trial's configuration into the run setup panel"
        )
        self.use_best_button.setEnabled(False)
        self.use_best_button.clicked.connect(self.use_best)
        head.addWidget(self.use_best_button)
        rl.addLayout(head)
        self.trial_table = self._table(self.trial_model)
        self.trial_table.horizontalHeader().setStretchLastSection(False)
        rl.addWidget(self.trial_table)
        tables.addWidget(right)
        tables.setSizes([560, 840])
        split.addWidget(tables)

        plots = QWidget()
        grid = QGridLayout(plots)
        grid.setContentsMargins(0, 0, 0, 0)
        self._tick_font = QFont(self.font())
        self._tick_font.setPointSize(8)
        self.parallel_plot = self._plot(
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
        self.scatter_plot = self._plot("Objective against a parameter")
        self.scatter_item = pg.ScatterPlotItem(size=9, pen=pg.mkPen("k", width=0.5))
        self.scatter_plot.addItem(self.scatter_item)
        sl.addWidget(self.scatter_plot)
        grid.addWidget(scatter_box, 0, 1)

        self.best_plot = self._plot("Best so far", bottom="trials finished")
        self.best_line = self.best_plot.plot(
            [], [], pen=pg.mkPen("#d62728", width=2), stepMode=None, name="best so far"
        )
        self.best_points = pg.ScatterPlotItem(size=6, brush=pg.mkBrush(80, 80, 80, 150), pen=None)
        self.best_plot.addItem(self.best_points)
        grid.addWidget(self.best_plot, 1, 0)

        self.topk_plot = self._plot(f"Top {TOP_K} trials: validation", bottom="step")
        self.topk_legend = self.topk_plot.addLegend(offset=(-10, 10), labelTextSize="8pt")
        self.topk_curves: list[pg.PlotDataItem] = []
        grid.addWidget(self.topk_plot, 1, 1)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        split.addWidget(plots)
        split.setSizes([260, 540])
        split.setStretchFactor(1, 1)

    # ---- polling -----------------------------------------------------------------------
    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.poll()
        self.poll_timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self.poll_timer.stop()

    def _poll_if_shown(self) -> None:
        if self.isVisible():
            self.poll()

    def poll(self) -> None:
        """Re-read the catalog when it changed (or a stale driver may have gone quiet)."""
        t0 = time.perf_counter()
        try:
            token = self.catalog.change_token()
            stale = time.monotonic() - self._listed_at > STALE_CHECK_S
            if token is not None and token == self._token and not stale:
                return
            self._token = token
            self.refresh()
        except Exception as exc:  # a busy or vanished catalog must not break the GUI
            self.summary.setText(f"catalog read failed: {exc}")
        finally:
            self.last_poll_ms = 1000 * (time.perf_counter() - t0)

    def refresh(self) -> None:
        self._listed_at = time.monotonic()
        selected = self.selected_id()
        self.sweep_model.set_rows(self.catalog.sweeps.list())
        if selected is None and self.sweep_model.rows:
            selected = self.sweep_model.rows[0].id
        row = -1 if selected is None else self.sweep_model.row_of(selected)
        if row >= 0 and self.selected_id() != selected:
            self.select_row(row)  # -> _selected -> _load
        else:
            self._load()

    def selected_id(self) -> int | None:
        rows = self.sweep_table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.sweep_model.rows[rows[0].row()].id

    def select_row(self, row: int) -> None:
        self.sweep_table.selectionModel().select(
            self.sweep_model.index(row, 0),
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows,
        )

    def _selected(self) -> None:
        self._load()

    def _load(self) -> None:
        """The selected sweep's trials; tables and plots only where something changed."""
        sid = self.selected_id()
        if sid is None:
            self._sweep, self._trials = None, []
        else:
            self._sweep = self.sweep_model.rows[self.sweep_model.row_of(sid)]
            self._trials = self.catalog.sweeps.trials(sid)
        state = (self._sweep, tuple(self._trials))
        if state == self._drawn:
            return
        t0 = time.perf_counter()
        self._drawn = state
        self._update_summary()
        sw = self._sweep
        axes = param_axes(sw.spec, self._trials) if sw is not None else []
        self._axes = axes
        self.trial_model.set_trials(self._trials, [a.key for a in axes], bool(sw and sw.maximize))
        self._update_combo([a.key for a in axes])
        self._draw_parallel()
        self._draw_scatter()
        self._draw_best()
        self._draw_topk()
        self.last_redraw_ms = 1000 * (time.perf_counter() - t0)

    def _update_summary(self) -> None:
        sw = self._sweep
        if sw is None:
            self.summary.setText("No sweep selected")
            self.use_best_button.setEnabled(False)
            return
        best = best_trial(self._trials, sw.maximize)
        text = f"Sweep #{sw.id} {sw.name!r}: {sw.status}, {sw.done}/{sw.trials} finished"
        if best is not None:
            text += f"; best {sw.metric} {fmt_num(best.objective)} (trial {best.number}"
            text += f", run #{best.run_id})" if best.run_id is not None else ")"
        self.summary.setText(text)
        self.use_best_button.setEnabled(best is not None)

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
        ax = next((a for a in getattr(self, "_axes", []) if a.key == key), None)
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
            xs = [math.log10(v) if _numeric(v) and v > 0 else math.nan for _, v in pts]
            bottom.setTicks([decade_ticks(ax.low, ax.high)])
        else:
            xs = [float(v) if _numeric(v) else math.nan for _, v in pts]
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
            steps, values, _ = self.catalog.metrics(run_id, metric)
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

    # ---- actions -----------------------------------------------------------------------
    def best_config(self) -> dict[str, Any] | None:
        """The best finished trial's RunConfig dict (its base, point and seed)."""
        sw = self._sweep
        if sw is None:
            return None
        best = best_trial(self._trials, sw.maximize)
        if best is None:
            return None
        from workbench.sweeps.spec import config_for

        return config_for(sw.spec["base"], best.params, best.seed).to_dict()

    def use_best(self) -> None:
        try:
            config = self.best_config()
        except Exception as exc:  # a stored base this version no longer accepts
            self.summary.setText(f"cannot rebuild the best configuration: {exc}")
            return
        if config is not None:
            self.useConfig.emit(config)

    def shutdown(self) -> None:
        self.poll_timer.stop()
