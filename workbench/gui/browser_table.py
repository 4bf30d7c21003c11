"""The experiments browser's runs table: the view over `RunTableModel` (see `browser_model`)
and the selection in terms of run ids, which survive sorting, filtering and reloads.
"""

from __future__ import annotations

from PySide6.QtCore import QItemSelection, QItemSelectionModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

from workbench.catalog import RunRecord
from workbench.gui.browser_model import COL, COLUMNS, RunFilterProxy, RunTableModel

COLUMN_WIDTHS = [50, 80, 200, 90, 80, 80, 120, 90, 70, 60, 120, 120]
ROW_HEIGHT = 22  # fixed, so Qt need not measure rows: thousands of runs scroll smoothly


class RunTableView(QTableView):
    """Rows of `runs` through `proxy` (sorting is the source model's key sort), newest first."""

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
        self.horizontalHeader().setStretchLastSection(True)
        for c, w in enumerate(COLUMN_WIDTHS):
            self.setColumnWidth(c, w)
        self.sortByColumn(COL["ID"], Qt.SortOrder.DescendingOrder)

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
                sel.select(p, self.proxy.index(p.row(), len(COLUMNS) - 1))
        if not notify:
            sm.blockSignals(True)
        sm.select(sel, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if not notify:
            sm.blockSignals(False)
            self.viewport().update()
        if ids and sel.indexes():
            self.scrollTo(sel.indexes()[0])
