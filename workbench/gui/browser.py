"""The experiments browser: every run in the catalog, filters, details, comparison, actions.

The table is a `RunTableModel` behind a `RunFilterProxy`. A 1 s QTimer polls the catalog's
`change_token()` (one tiny query: SQLite's `PRAGMA data_version`, PostgreSQL's snapshot; it
changes whenever any connection, in this process or another, commits). On a change one small
read-only query (`Catalog.live_rows`) returns the live runs
(queued/running/paused), those that just left that state and any newer ids, with the step of
their latest validation: a run that only made progress has its row's step and duration
updated in place; only a new status, attempt or validation re-reads that run's record, and
new runs reload the table. While a run trains, that keeps the GUI thread's share of each
second well under a millisecond. A full reload (and the detail pane's curves) waits while
the browser is hidden; otherwise it happens after our own edits and at most every
`FULL_RELOAD_S` seconds.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt, QThread, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from workbench.catalog import HEARTBEAT_S, Catalog, CheckpointRecord, RunRecord, UnknownRunError
from workbench.core.events import STATUSES
from workbench.gui.browser_model import (
    COL,
    COLUMNS,
    LIVE,
    Filters,
    RunFilterProxy,
    RunTableModel,
    fmt_value,
    since_for,
    test_metric,
    val_metric,
)
from workbench.gui.worker import EvalWorker, start_in_thread

POLL_MS = 1000
FULL_RELOAD_S = 30.0
IGNORED_IN_GROUP = ("seed", "name", "tags", "notes", "preset")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def group_key(config: dict[str, Any]) -> str:
    """Runs whose configs differ only by seed (and name/tags/notes) form a seed group."""
    return json.dumps(
        {k: v for k, v in config.items() if k not in IGNORED_IN_GROUP}, sort_keys=True
    )


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


class ExperimentsBrowser(QWidget):
    resumeRequested = Signal(int, object)  # run id, CheckpointRecord
    # run id, CheckpointRecord: continue it in its own process (it outlives the app)
    resumeDetachedRequested = Signal(int, object)
    cloneRequested = Signal(dict)  # a RunConfig dict
    log = Signal(str, str)  # level, message

    def __init__(self, catalog: Catalog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.confirm: Callable[[str, str], bool] = self._ask
        self.model = RunTableModel(self)
        self.proxy = RunFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.load_ms = 0.0
        self._version: str | None = None
        self._last_full = 0.0
        self._max_id = 0
        self._live_ids: set[int] = set()
        self._curve_items: dict[int, Any] = {}
        self._shown_ids: list[int] = []
        self.eval_thread: QThread | None = None
        self.eval_worker: EvalWorker | None = None
        self.last_eval: tuple[Any, Any] | None = None
        self._details_stale = False  # the shown runs changed while the browser was hidden

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(self._filter_bar())
        lay.addLayout(self._action_bar())
        split = QSplitter(Qt.Orientation.Vertical)
        self.splitter = split
        lay.addWidget(split, 1)

        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setSortingEnabled(True)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        vh = self.table.verticalHeader()
        vh.setVisible(False)
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(22)
        hh = self.table.horizontalHeader()
        hh.setStretchLastSection(True)
        widths = [50, 80, 200, 90, 80, 80, 120, 90, 70, 60, 120, 120]
        for c, w in enumerate(widths):
            self.table.setColumnWidth(c, w)
        self.table.sortByColumn(COL["ID"], Qt.SortOrder.DescendingOrder)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._details_timer.start())
        split.addWidget(self.table)

        self.tabs = QTabWidget()
        split.addWidget(self.tabs)
        split.setSizes([300, 400])
        self._build_detail_tabs()

        self._details_timer = QTimer(self, singleShot=True, interval=60)
        self._details_timer.timeout.connect(self.show_details)
        self.poll_timer = QTimer(self, interval=POLL_MS)
        self.poll_timer.timeout.connect(self._poll_if_shown)
        self.reload()
        self.poll_timer.start()

    # ---- layout ----------------------------------------------------------------------
    def _filter_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        self.text_filter = QLineEdit(
            placeholderText="Search name, notes, tags, id…", clearButtonEnabled=True
        )
        self.text_filter.textChanged.connect(self.apply_filters)
        bar.addWidget(self.text_filter, 2)
        self.status_filter = self._combo(bar, "Status", ["", *STATUSES])
        self.algo_filter = self._combo(bar, "Algorithm", [""])
        self.dataset_filter = self._combo(bar, "Dataset", [""])
        self.tag_filter = self._combo(bar, "Tag", [""])
        self.date_filter = self._combo(bar, "Created", ["", "today", "7 days", "30 days"])
        self.count_label = QLabel()
        bar.addWidget(self.count_label)
        return bar

    def _combo(self, bar: QHBoxLayout, label: str, items: list[str]) -> QComboBox:
        bar.addWidget(QLabel(label))
        c = QComboBox()
        c.setMinimumContentsLength(7)
        c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        for it in items:
            c.addItem(it or "any", it)
        c.currentIndexChanged.connect(self.apply_filters)
        bar.addWidget(c)
        return c

    def _action_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()

        def button(text: str, tip: str, slot: Callable[[], Any]) -> QPushButton:
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False: slot())
            bar.addWidget(b)
            return b

        self.resume_button = button(
            "Resume",
            "Continue the selected run from the checkpoint selected below (default: latest)",
            self.resume_selected,
        )
        self.resume_detached_button = button(
            "Resume in own process",
            "Continue the selected run in a separate process that keeps training when the app "
            "closes (from the checkpoint selected below, default: latest)",
            lambda: self.resume_selected(detached=True),
        )
        self.eval_button = button(
            "Evaluate",
            "Evaluate the selected checkpoint (default: best) on N test episodes, in the background",
            self.evaluate_selected,
        )
        self.episodes_spin = QSpinBox(minimum=1, maximum=100_000, value=600, suffix=" episodes")
        bar.addWidget(self.episodes_spin)
        self.cancel_eval_button = button(
            "Cancel eval", "Stop the running evaluation", self.cancel_evaluation
        )
        self.cancel_eval_button.setEnabled(False)
        self.clone_button = button(
            "Clone", "Copy the run's configuration into the setup panel", self.clone_selected
        )
        button("Rename…", "Rename the selected run", self.rename_selected)
        button("Notes/tags…", "Edit the selected run's notes and tags", self.edit_notes_tags)
        button(
            "Seed group",
            "Select every run that differs from the selected one only by seed",
            self.select_seed_group,
        )
        self.delete_button = button(
            "Delete…", "Delete the selected runs with their checkpoint files", self.delete_selected
        )
        button(
            "Export CSV…",
            "All metric points of the selected runs, one row per point",
            self.export_csv,
        )
        button("Export PNG…", "The curve plot as a PNG image", self.export_png)
        bar.addStretch(1)
        return bar

    def _build_detail_tabs(self) -> None:
        curves = QWidget()
        cl = QVBoxLayout(curves)
        row = QHBoxLayout()
        row.addWidget(QLabel("Metric"))
        self.metric_combo = QComboBox()
        self.metric_combo.setMinimumContentsLength(16)
        self.metric_combo.currentIndexChanged.connect(lambda _: self.plot_curves())
        row.addWidget(self.metric_combo)
        self.group_check = QCheckBox("Mean ± std over seed groups")
        self.group_check.toggled.connect(lambda _: self.plot_curves())
        row.addWidget(self.group_check)
        row.addStretch(1)
        cl.addLayout(row)
        self.curve_plot = pg.PlotWidget()
        self.curve_plot.showGrid(x=True, y=True, alpha=0.25)
        self.curve_plot.setLabel("bottom", "step")
        self.legend = self.curve_plot.addLegend(offset=(-10, 10), labelTextSize="9pt")
        cl.addWidget(self.curve_plot, 1)
        self.tabs.addTab(curves, "Curves")

        self.compare_table = QTableWidget()
        self.compare_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tabs.addTab(self.compare_table, "Compare")
        self.config_text = QPlainTextEdit(readOnly=True)
        self.config_text.setStyleSheet("font-family: monospace;")
        self.tabs.addTab(self.config_text, "Config")
        self.env_text = QPlainTextEdit(readOnly=True)
        self.env_text.setStyleSheet("font-family: monospace;")
        self.tabs.addTab(self.env_text, "Environment")
        self.ckpt_table = self._table(["Step", "Kind", "Size", "Metrics", "Path"])
        self.tabs.addTab(self.ckpt_table, "Checkpoints")
        self.eval_table = self._table(
            ["Split", "Checkpoint", "Episodes", "Result", "Values", "Created"]
        )
        self.tabs.addTab(self.eval_table, "Evaluations")

    def _table(self, headers: list[str]) -> QTableWidget:
        t = QTableWidget(0, len(headers))
        t.setHorizontalHeaderLabels(headers)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        t.horizontalHeader().setStretchLastSection(True)
        t.verticalHeader().setVisible(False)
        return t

    def _ask(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    # ---- loading and polling ---------------------------------------------------------
    def reload(self) -> None:
        """Read every run (runs + summary tables) and keep the selection."""
        t0 = time.perf_counter()
        selected = self.selected_ids()
        records = self.catalog.list_runs()
        self.model.set_runs(records)
        self._max_id = max((r.id for r in records), default=0)
        self._live_ids = {r.id for r in records if r.status in LIVE}
        self._last_full = time.monotonic()
        self.select_ids(selected, notify=False)
        self._refresh_filter_choices()
        self._update_count()
        self.load_ms = (time.perf_counter() - t0) * 1000

    def reload_catalog(self) -> list[int]:
        """Reload (F5): first mark runs whose process died (no heartbeat within the stale window)
        interrupted, as opening the catalog does, so the table tells the truth without a
        restart; returns their ids."""
        try:
            ids = self.catalog.mark_stale_interrupted()
        except Exception as exc:  # a locked database must not stop the reload
            ids = []
            self.log.emit("error", f"could not check for stopped runs: {exc}")
        if ids:
            self.log.emit(
                "info",
                f"run{'s' if len(ids) > 1 else ''} {', '.join(f'#{i}' for i in ids)} had no "
                "heartbeat (their process stopped): marked interrupted",
            )
        self.reload()
        self.show_details()
        return ids

    def poll(self) -> None:
        v = self.catalog.change_token()
        if v is not None and v == self._version:
            return
        self._version = v
        try:
            self.refresh()
        except Exception as exc:  # a locked or vanished database must not break the GUI
            self.log.emit("error", f"catalog refresh failed: {exc}")

    def _poll_if_shown(self) -> None:
        """The timer's poll: nothing while the browser is hidden (its tab not current during a
        run), since every millisecond on the GUI thread is taken from training; showing it polls."""
        if self.isVisible():
            now = time.monotonic()
            if now - getattr(self, "_stale_checked", 0.0) >= HEARTBEAT_S:
                # a dead process changes nothing in the file, so the data version cannot show it:
                # look for runs whose owner stopped once per heartbeat (a read, no write lock)
                self._stale_checked = now
                try:
                    if self.catalog.mark_stale_interrupted():
                        self._version = None  # force the refresh below
                except Exception:
                    pass  # busy: the next check may work
            self.poll()

    def refresh(self) -> None:
        """Cheap update: live runs in place; a full reload when runs were added."""
        if self.isVisible() and time.monotonic() - self._last_full > FULL_RELOAD_S:
            self.reload()
            self.show_details()
            return
        rows = self._live_rows()
        if rows is None:  # no fast path (e.g. an older schema): the catalog API
            self._refresh_records()
            return
        if self._live_ids - {r[0] for r in rows}:  # a live run was deleted
            self.reload()
            return
        m = self.model
        changed: list[int] = []
        progress: list[tuple[int, int, float | None]] = []
        for run_id, status, step, heartbeat, ended, attempt, val_step in rows:
            row = m.row_of.get(run_id)
            if row is None:  # a new run (or one we never saw): reload everything
                self.reload()
                self.show_details()
                return
            r = m.rows[row]
            summary_val = max(
                (v.latest_step or 0 for k, v in r.summary.items() if k.startswith("val_")),
                default=0,
            )
            if (
                status != r.status
                or attempt != r.attempt
                or ended != r.ended_at
                or (val_step or 0) != summary_val
            ):
                changed.append(run_id)
            elif step != r.step or heartbeat != r.heartbeat_at:
                progress.append((run_id, step, heartbeat))
        records = []
        for run_id in changed:
            try:
                records.append(self.catalog.get_run(run_id))
            except UnknownRunError:
                self.reload()
                return
        if m.update_runs(records):
            self.reload()
            return
        m.update_progress(progress)
        self._live_ids = {r[0] for r in rows if r[1] in LIVE}
        if set(changed) & set(self._shown_ids):
            if self.isVisible():
                self.show_details(keep_items=True)
            else:
                self._details_stale = True

    def _live_rows(self) -> list[tuple[Any, ...]] | None:
        try:
            return self.catalog.live_rows(self._max_id, self._live_ids)
        except Exception:  # busy or gone: the catalog API's path below reports it
            return None

    def _refresh_records(self) -> None:
        newest = self.catalog.list_runs(limit=1)
        if newest and newest[0].id > self._max_id:
            self.reload()
            self.show_details()
            return
        live = self.catalog.list_runs(status=list(LIVE))
        now_live = {r.id for r in live}
        records = list(live)
        for run_id in self._live_ids - now_live:
            try:
                records.append(self.catalog.get_run(run_id))
            except UnknownRunError:
                self.reload()
                return
        if self.model.update_runs(records):
            self.reload()
            return
        self._live_ids = now_live
        changed = {r.id for r in records}
        if changed & set(self._shown_ids):
            if self.isVisible():
                self.show_details(keep_items=True)
            else:
                self._details_stale = True

    def showEvent(self, ev: Any) -> None:
        super().showEvent(ev)
        self.poll()  # the timer does not poll while hidden
        if time.monotonic() - self._last_full > FULL_RELOAD_S:
            self.reload()
            self.show_details()
        elif self._details_stale:
            self.show_details(keep_items=True)
        self._details_stale = False

    def shutdown(self) -> None:
        self.poll_timer.stop()
        self._details_timer.stop()
        self.cancel_evaluation()
        if self.eval_thread is not None:
            self.eval_thread.wait()
            self._eval_cleanup()

    # ---- filters ---------------------------------------------------------------------
    def _refresh_filter_choices(self) -> None:
        for combo, what in (
            (self.algo_filter, "algorithm"),
            (self.dataset_filter, "dataset"),
            (self.tag_filter, "tags"),
        ):
            current = combo.currentData()
            values = self.model.distinct(what)
            have = [combo.itemData(i) for i in range(1, combo.count())]
            if have == values:
                continue
            combo.blockSignals(True)
            combo.clear()
            combo.addItem("any", "")
            for v in values:
                combo.addItem(v, v)
            i = combo.findData(current)
            combo.setCurrentIndex(max(i, 0))
            combo.blockSignals(False)

    def apply_filters(self) -> None:
        f = Filters(
            text=self.text_filter.text().strip(),
            status=self.status_filter.currentData() or "",
            algorithm=self.algo_filter.currentData() or "",
            dataset=self.dataset_filter.currentData() or "",
            tag=self.tag_filter.currentData() or "",
            since=since_for(self.date_filter.currentData() or ""),
        )
        self.proxy.set_filters(f)
        self._update_count()

    def _update_count(self) -> None:
        shown, total = self.proxy.rowCount(), self.model.rowCount()
        self.count_label.setText(f"{shown} of {total} runs" if shown != total else f"{total} runs")

    # ---- selection -------------------------------------------------------------------
    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [
            self.model.rows[self.proxy.mapToSource(self.proxy.index(r, 0)).row()].id for r in rows
        ]

    def selected_records(self) -> list[RunRecord]:
        return [
            self.model.rows[self.model.row_of[i]]
            for i in self.selected_ids()
            if i in self.model.row_of
        ]

    def select_ids(self, ids: list[int], notify: bool = True) -> None:
        sm = self.table.selectionModel()
        sel = QItemSelection()
        for run_id in ids:
            row = self.model.row_of.get(run_id)
            if row is None:
                continue
            p = self.proxy.mapFromSource(self.model.index(row, 0))
            if p.isValid():
                sel.select(p, self.proxy.index(p.row(), len(COLUMNS) - 1))
        if not notify:
            sm.blockSignals(True)
        sm.select(sel, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if not notify:
            sm.blockSignals(False)
            self.table.viewport().update()
        if ids and sel.indexes():
            self.table.scrollTo(sel.indexes()[0])
        if notify:
            self.show_details()

    # ---- details ---------------------------------------------------------------------
    def show_details(self, keep_items: bool = False) -> None:
        recs = self.selected_records()
        ids = [r.id for r in recs]
        if not keep_items or ids != self._shown_ids:
            self._fill_metric_combo(recs)
        self._shown_ids = ids
        self.plot_curves(keep_items=keep_items)
        self._fill_compare(recs)
        if len(recs) == 1:
            r = recs[0]
            self.config_text.setPlainText(json.dumps(r.config, indent=2, sort_keys=True))
            env = r.environment
            head = {
                "status": r.status,
                "error": r.error,
                "attempt": r.attempt,
                "device": r.device,
                "device_name": r.device_name,
            }
            self.env_text.setPlainText(
                json.dumps({**head, "environment": env}, indent=2, sort_keys=True, default=str)
            )
            self._fill_checkpoints(r.id)
            self._fill_evaluations(r.id)
        else:
            self.config_text.setPlainText(
                "" if not recs else "Select one run to see its configuration."
            )
            self.env_text.setPlainText("")
            self.ckpt_table.setRowCount(0)
            self.eval_table.setRowCount(0)
        self.resume_button.setEnabled(len(recs) == 1 and recs[0].status not in LIVE)
        self.resume_detached_button.setEnabled(self.resume_button.isEnabled())
        self.clone_button.setEnabled(len(recs) == 1)

    def _fill_metric_combo(self, recs: list[RunRecord]) -> None:
        names: set[str] = set()
        for r in recs:
            names.update(r.summary.keys())
        names = {n for n in names if not n.startswith("test_") and not n.endswith("_ci95")}
        order = ["val_accuracy", "val_mse", "loss", "accuracy", "mse", "meta_lr", "steps_per_s"]
        ordered = [n for n in order if n in names] + sorted(names - set(order))
        current = self.metric_combo.currentText()
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        self.metric_combo.addItems(ordered)
        if current in ordered:
            self.metric_combo.setCurrentText(current)
        self.metric_combo.blockSignals(False)

    def plot_curves(self, keep_items: bool = False) -> None:
        """Overlay the selected runs' curves of the chosen metric (distinct colours, legend)."""
        name = self.metric_combo.currentText()
        recs = self.selected_records()
        plot = self.curve_plot.getPlotItem()
        grouped = self.group_check.isChecked()
        if not (keep_items and not grouped and set(self._curve_items) == {r.id for r in recs}):
            plot.clear()
            self.legend.clear()
            self._curve_items = {}
            keep_items = False
        if not name or not recs:
            return
        plot.setTitle(name)
        n = max(len(recs), 1)
        data = {r.id: self.catalog.metrics(r.id, name)[:2] for r in recs}
        if keep_items:
            for r in recs:
                self._curve_items[r.id].setData(*data[r.id])
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
                self._curve_items[r.id] = item
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
                self._curve_items[m.id] = item

    def _fill_compare(self, recs: list[RunRecord]) -> None:
        t = self.compare_table
        if len(recs) < 2:
            t.clear()
            t.setRowCount(0)
            t.setColumnCount(0)
            return
        flats = [flatten(r.config) for r in recs]
        keys = sorted(set().union(*flats))
        diff = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
        extra = ["status", "best val", "test"]
        t.clear()
        t.setRowCount(len(diff) + len(extra))
        t.setColumnCount(len(recs))
        t.setHorizontalHeaderLabels([f"#{r.id} {r.name}" for r in recs])
        t.setVerticalHeaderLabels(extra + diff)
        for c, (r, f) in enumerate(zip(recs, flats, strict=True)):
            m, v = val_metric(r)
            tm, tv, tci = test_metric(r)
            values = [r.status, fmt_value(m, v), fmt_value(tm, tv, tci)] + [
                json.dumps(f.get(k)) for k in diff
            ]
            for row, text in enumerate(values):
                t.setItem(row, c, QTableWidgetItem(text))
        t.resizeColumnsToContents()

    def _fill_checkpoints(self, run_id: int) -> None:
        cks = self.catalog.checkpoints(run_id)
        t = self.ckpt_table
        t.setRowCount(len(cks))
        for i, c in enumerate(cks):
            size = f"{(c.bytes or 0) / 1024:.1f} KiB"
            metrics = ", ".join(f"{k}={v:.4g}" for k, v in c.metrics.items())
            for j, text in enumerate([str(c.step), c.kind, size, metrics, c.path]):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, c.id)
                t.setItem(i, j, item)
        self._checkpoints = cks
        t.resizeColumnsToContents()

    def _fill_evaluations(self, run_id: int) -> None:
        evs = self.catalog.evaluations(run_id)
        t = self.eval_table
        t.setRowCount(len(evs))
        for i, e in enumerate(evs):
            values = ", ".join(
                f"{k}={v:.4g}" for k, v in e.values.items() if not k.endswith("_ci95")
            )
            created = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created_at))
            for j, text in enumerate(
                [
                    e.split,
                    str(e.checkpoint_step),
                    str(e.episodes),
                    f"{e.metric} {fmt_value(e.metric, e.mean, e.ci95)}",
                    values,
                    created,
                ]
            ):
                t.setItem(i, j, QTableWidgetItem(text))
        t.resizeColumnsToContents()

    # ---- actions ---------------------------------------------------------------------
    def _one(self) -> RunRecord | None:
        recs = self.selected_records()
        if len(recs) != 1:
            self.log.emit("error", "select exactly one run")
            return None
        return recs[0]

    def chosen_checkpoint(self, run_id: int, default: str = "latest") -> CheckpointRecord | None:
        rows = self.ckpt_table.selectionModel().selectedRows()
        cks = getattr(self, "_checkpoints", [])
        if rows and rows[0].row() < len(cks) and cks[rows[0].row()].run_id == run_id:
            return cks[rows[0].row()]
        return self.catalog.checkpoint(run_id, default) or self.catalog.checkpoint(run_id, "latest")  # type: ignore[arg-type]

    def resume_selected(self, detached: bool = False) -> None:
        r = self._one()
        if r is None:
            return
        if r.status in LIVE:
            self.log.emit("error", f"run #{r.id} is {r.status}")
            return
        ck = self.chosen_checkpoint(r.id, "latest")
        if ck is None and r.status not in ("interrupted", "failed", "cancelled"):
            self.log.emit("error", f"run #{r.id} has no checkpoint to resume from")
            return
        # None: killed before its first checkpoint, from 0
        (self.resumeDetachedRequested if detached else self.resumeRequested).emit(r.id, ck)

    def evaluate_selected(self, episodes: int | None = None, device: str = "auto") -> bool:
        r = self._one()
        if r is None:
            return False
        if self.eval_thread is not None:
            self.log.emit("error", "an evaluation is already running")
            return False
        ck = self.chosen_checkpoint(r.id, "best")
        if ck is None:
            self.log.emit("error", f"run #{r.id} has no checkpoint to evaluate")
            return False
        n = episodes or self.episodes_spin.value()
        self.eval_worker = EvalWorker(self.catalog, r.id, ck, n, device)
        self.eval_worker.progress.connect(lambda msg: self.log.emit("info", msg))
        self.eval_worker.done.connect(self._eval_done)
        self.eval_thread = start_in_thread(self.eval_worker, f"eval-run-{r.id}")
        self.cancel_eval_button.setEnabled(True)
        self.eval_button.setEnabled(False)
        return True

    def cancel_evaluation(self) -> None:
        if self.eval_worker is not None:
            self.eval_worker.cancel()

    def _eval_done(self, result: Any, error: Any) -> None:
        run_id = self.eval_worker.run_id if self.eval_worker else None
        if self.eval_thread is not None:
            self.eval_thread.wait()
        self._eval_cleanup()
        self.last_eval = (result, error)
        if error:
            self.log.emit(
                "error" if "cancelled" not in str(error) else "info",
                f"evaluation of run #{run_id}: {error}",
            )
        else:
            self.log.emit(
                "info",
                f"evaluation of run #{run_id}: {result['metric']} {fmt_value(result['metric'], result['mean'], result['ci95'])} on {result['episodes']} episodes",
            )
        if run_id is not None:
            try:
                self.model.update_runs([self.catalog.get_run(run_id)])
            except UnknownRunError:
                pass
            if run_id in self._shown_ids:
                self.show_details()

    def _eval_cleanup(self) -> None:
        for obj in (self.eval_worker, self.eval_thread):
            if obj is not None:
                obj.deleteLater()
        self.eval_worker = self.eval_thread = None
        self.cancel_eval_button.setEnabled(False)
        self.eval_button.setEnabled(True)

    def clone_selected(self) -> None:
        r = self._one()
        if r is not None:
            cfg = dict(r.config)
            cfg["name"] = f"{r.name}-clone" if r.name else ""
            self.cloneRequested.emit(cfg)

    def rename_selected(self, name: str | None = None) -> None:
        r = self._one()
        if r is None:
            return
        if name is None:
            name, ok = QInputDialog.getText(
                self, "Rename run", f"New name of run #{r.id}:", text=r.name
            )
            if not ok:
                return
        self.catalog.rename(r.id, name)
        self.reload()
        self.show_details()

    def edit_notes_tags(self, notes: str | None = None, tags: list[str] | None = None) -> None:
        r = self._one()
        if r is None:
            return
        if notes is None and tags is None:
            dlg = QDialog(self)
            dlg.setWindowTitle(f"Notes and tags of run #{r.id}")
            form = QFormLayout(dlg)
            notes_edit = QPlainTextEdit(r.notes)
            tags_edit = QLineEdit(", ".join(r.tags))
            form.addRow("Notes", notes_edit)
            form.addRow("Tags (comma-separated)", tags_edit)
            buttons = QDialogButtonBox(
                QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
            )
            buttons.accepted.connect(dlg.accept)
            buttons.rejected.connect(dlg.reject)
            form.addRow(buttons)
            if dlg.exec() != QDialog.DialogCode.Accepted:
                return
            notes, tags = notes_edit.toPlainText(), [t.strip() for t in tags_edit.text().split(",")]
        if notes is not None:
            self.catalog.set_notes(r.id, notes)
        if tags is not None:
            self.catalog.set_tags(r.id, tags)
        self.reload()
        self.show_details()

    def select_seed_group(self) -> None:
        r = self._one()
        if r is None:
            return
        key = group_key(r.config)
        ids = [
            x.id
            for x in self.model.rows
            if x.algorithm == r.algorithm and x.dataset == r.dataset and group_key(x.config) == key
        ]
        self.group_check.setChecked(len(ids) > 1)
        self.select_ids(ids)

    def delete_selected(self) -> int:
        recs = [r for r in self.selected_records() if r.status not in ("running", "paused")]
        if not recs:
            return 0
        names = ", ".join(f"#{r.id}" for r in recs[:10]) + (" …" if len(recs) > 10 else "")
        if not self.confirm(
            "Delete runs",
            f"Delete {len(recs)} run(s) ({names}) with their metrics and checkpoint files?",
        ):
            return 0
        for r in recs:
            try:
                self.catalog.delete_run(r.id)
            except UnknownRunError:
                pass
        self.log.emit("info", f"deleted {names}")
        self.reload()
        self.show_details()
        return len(recs)

    def export_csv(self, path: str | None = None) -> str | None:
        recs = self.selected_records()
        if not recs:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export curves", "curves.csv", "CSV (*.csv)"
            )
            if not path:
                return None
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["run_id", "run_name", "metric", "step", "value", "wall_time"])
            for r in recs:
                for name in self.catalog.metric_names(r.id):
                    steps, values, walls = self.catalog.metrics(r.id, name)
                    for s, v, t in zip(
                        steps.tolist(), values.tolist(), walls.tolist(), strict=True
                    ):
                        w.writerow([r.id, r.name, name, s, "" if v != v else repr(v), repr(t)])
        self.log.emit("info", f"exported curves of {len(recs)} run(s) to {path}")
        return path

    def export_png(self, path: str | None = None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export plot", "curves.png", "PNG (*.png)")
            if not path:
                return None
        from pyqtgraph.exporters import ImageExporter

        exporter = ImageExporter(self.curve_plot.getPlotItem())
        exporter.parameters()["width"] = max(800, self.curve_plot.width())
        exporter.export(path)
        self.log.emit("info", f"exported plot to {path}")
        return path
