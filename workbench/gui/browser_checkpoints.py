"""The browser's Checkpoints and Evaluations tabs: one run's saved checkpoints (a row chosen
here is what Resume and Evaluate use) and the evaluations made of them."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem, QWidget

from workbench.catalog import Catalog, CheckpointRecord
from workbench.gui.browser_model import fmt_value


class RecordTable(QTableWidget):
    """Read-only rows of a run's records, one selectable at a time."""

    def __init__(self, headers: list[str], parent: QWidget | None = None) -> None:
        super().__init__(0, len(headers), parent)
        self.setHorizontalHeaderLabels(headers)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.horizontalHeader().setStretchLastSection(True)
        self.verticalHeader().setVisible(False)

    def set_rows(self, rows: list[list[str]]) -> list[list[QTableWidgetItem]]:
        """Replace the rows; returns their items (for callers that tag them)."""
        self.setRowCount(len(rows))
        items = []
        for i, texts in enumerate(rows):
            items.append([QTableWidgetItem(text) for text in texts])
            for j, item in enumerate(items[-1]):
                self.setItem(i, j, item)
        self.resizeColumnsToContents()
        return items


class CheckpointsTab(RecordTable):
    def __init__(self, catalog: Catalog, parent: QWidget | None = None) -> None:
        super().__init__(["Step", "Kind", "Size", "Metrics", "Path"], parent)
        self.catalog = catalog
        self.checkpoints: list[CheckpointRecord] = []  # the rows, in order

    def show_run(self, run_id: int) -> None:
        cks = self.catalog.checkpoints(run_id)
        rows = [
            [
                str(c.step),
                c.kind,
                f"{(c.bytes or 0) / 1024:.1f} KiB",
                ", ".join(f"{k}={v:.4g}" for k, v in c.metrics.items()),
                c.path,
            ]
            for c in cks
        ]
        for c, items in zip(cks, self.set_rows(rows), strict=True):
            for item in items:
                item.setData(Qt.ItemDataRole.UserRole, c.id)
        self.checkpoints = cks

    def selected(self, run_id: int) -> CheckpointRecord | None:
        """The checkpoint chosen in the table, if it is one of this run's."""
        rows = self.selectionModel().selectedRows()
        cks = self.checkpoints
        if rows and rows[0].row() < len(cks) and cks[rows[0].row()].run_id == run_id:
            return cks[rows[0].row()]
        return None


class EvaluationsTab(RecordTable):
    def __init__(self, catalog: Catalog, parent: QWidget | None = None) -> None:
        super().__init__(["Split", "Checkpoint", "Episodes", "Result", "Values", "Created"], parent)
        self.catalog = catalog

    def show_run(self, run_id: int) -> None:
        self.set_rows(
            [
                [
                    e.split,
                    str(e.checkpoint_step),
                    str(e.episodes),
                    f"{e.metric} {fmt_value(e.metric, e.mean, e.ci95)}",
                    ", ".join(
                        f"{k}={v:.4g}" for k, v in e.values.items() if not k.endswith("_ci95")
                    ),
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created_at)),
                ]
                for e in self.catalog.evaluations(run_id)
            ]
        )
