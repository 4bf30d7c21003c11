"""The sweep view's two tables: every sweep in the catalog, and the selected sweep's trials,
best first with one column per parameter (Qt model/view, updated in place where possible).
"""

from __future__ import annotations

import math
import time
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from workbench.catalog.sweep_store import SweepRecord, TrialRecord
from workbench.gui.sweep_axes import fmt_num, short_key

Index = QModelIndex | QPersistentModelIndex


def fmt_time(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


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


def make_table(model: QAbstractTableModel) -> QTableView:
    """A read-only table of whole rows, one selected at a time, sized to its contents."""
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
