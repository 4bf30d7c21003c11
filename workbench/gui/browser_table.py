"""The experiments browser's runs table: the view over `RunTableModel` (see `browser_model`)
and the selection in terms of run ids, which survive sorting, filtering and reloads.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, QPoint, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QMenu, QTableView, QWidget

from workbench.catalog import RunRecord
from workbench.gui.browser_model import COL, COLUMNS, RunFilterProxy, RunTableModel, flatten

COLUMN_WIDTHS = [50, 80, 200, 90, 80, 55, 90, 90, 120, 90, 70, 60, 120, 120]
ALWAYS_SHOWN = ("ID", "Name")
NOT_PARAMS = ("name", "notes", "tags", "preset")  # config keys that are not hyperparameters
PARAM_WIDTH = 90
ROW_HEIGHT = 22  # fixed, so Qt need not measure rows: thousands of runs scroll smoothly


class RunTableView(QTableView):
    """Rows of `runs` through `proxy` (sorting is the source model's key sort), newest first.
    Right-click on the header picks the columns: hide fixed ones, add any config key as a
    column (like MLflow's column picker); `columnsChanged` says when (to remember them)."""

    columnsChanged = Signal()

    def __init__(
        self, runs: RunTableModel, proxy: RunFilterProxy, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.runs = runs
        self.proxy = proxy
        self.setModel(proxy)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setSortingEnabled(True)
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        vh = self.verticalHeader()
        vh.setVisible(False)
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(ROW_HEIGHT)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(self._header_menu)
        header.sortIndicatorChanged.connect(lambda *_: self.columnsChanged.emit())
        for c, w in enumerate(COLUMN_WIDTHS):
            self.setColumnWidth(c, w)
        self.sortByColumn(COL["ID"], Qt.SortOrder.DescendingOrder)

    # ---- the columns ---------------------------------------------------------------
    def param_keys(self, most: int = 500) -> list[str]:
        """Config keys of the runs (the first `most`), dotted, for the column picker."""
        keys: set[str] = set()
        for r in self.runs.rows[:most]:
            keys |= {k for k in flatten(r.config) if k.split(".")[0] not in NOT_PARAMS}
        return sorted(keys)

    def header_menu(self) -> QMenu:
        menu = QMenu(self)
        for c, name in enumerate(COLUMNS):
            a = menu.addAction(name)
            a.setCheckable(True)
            a.setChecked(not self.isColumnHidden(c))
            a.setEnabled(name not in ALWAYS_SHOWN)
            a.toggled.connect(lambda on, c=c: self.show_column(c, on))
        params = menu.addMenu("Parameter columns")
        for key in self.param_keys():
            a = params.addAction(key)
            a.setCheckable(True)
            a.setChecked(key in self.runs.params)
            a.toggled.connect(lambda on, k=key: self.show_param(k, on))
        return menu

    def _header_menu(self, pos: QPoint) -> None:
        self.header_menu().exec(self.horizontalHeader().mapToGlobal(pos))

    def show_column(self, column: int, on: bool) -> None:
        self.setColumnHidden(column, not on)
        self.columnsChanged.emit()

    def show_param(self, key: str, on: bool) -> None:
        keys = [k for k in self.runs.params if k != key] + ([key] if on else [])
        self.set_params(keys)
        self.columnsChanged.emit()

    def set_params(self, keys: list[str]) -> None:
        self.runs.set_params(keys)
        for i in range(len(self.runs.params)):
            self.setColumnWidth(len(COLUMNS) + i, PARAM_WIDTH)

    def column_state(self) -> dict[str, Any]:
        """What the user chose: hidden fixed columns, parameter columns, the sort."""
        header = self.horizontalHeader()
        sort = header.sortIndicatorSection()
        return {
            "hidden": [n for c, n in enumerate(COLUMNS) if self.isColumnHidden(c)],
            "params": list(self.runs.params),
            "sort": [self.runs.headerData(sort, Qt.Orientation.Horizontal) or "ID",
                     header.sortIndicatorOrder() == Qt.SortOrder.AscendingOrder],
        }  # fmt: skip

    def restore_columns(self, state: dict[str, Any]) -> None:
        """Apply a `column_state` (unknown names are skipped: a catalog's keys change)."""
        hidden = set(state.get("hidden") or []) - set(ALWAYS_SHOWN)
        for c, name in enumerate(COLUMNS):
            self.setColumnHidden(c, name in hidden)
        self.set_params([str(k) for k in state.get("params") or []])
        name, ascending = (list(state.get("sort") or []) + ["ID", False])[:2]
        names = [*COLUMNS, *self.runs.params]
        if name in names:
            order = Qt.SortOrder.AscendingOrder if ascending else Qt.SortOrder.DescendingOrder
            self.sortByColumn(names.index(name), order)

    def selected_ids(self) -> list[int]:
        """Ids of the selected rows, in the order shown."""
        rows = sorted({i.row() for i in self.selectionModel().selectedRows()})
        return [
            self.runs.rows[self.proxy.mapToSource(self.proxy.index(r, 0)).row()].id for r in rows
        ]

    def selected_records(self) -> list[RunRecord]:
        m = self.runs
        return [m.rows[m.row_of[i]] for i in self.selected_ids() if i in m.row_of]

    def select_ids(self, ids: list[int], notify: bool = True) -> None:
        """Select these runs (those shown; others are skipped) and scroll to the first; with
        `notify` off the selection model stays silent, as when a reload restores a selection."""
        sm = self.selectionModel()
        sel = QItemSelection()
        for run_id in ids:
            row = self.runs.row_of.get(run_id)
            if row is None:
                continue
            p = self.proxy.mapFromSource(self.runs.index(row, 0))
            if p.isValid():
                sel.select(p, self.proxy.index(p.row(), self.runs.columnCount() - 1))
        if not notify:
            sm.blockSignals(True)
        sm.select(sel, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if not notify:
            sm.blockSignals(False)
            self.viewport().update()
        if ids and sel.indexes():
            self.scrollTo(sel.indexes()[0])
