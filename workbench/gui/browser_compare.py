"""The browser's Compare tab: the selected runs side by side, their status and results, then
only the configuration keys whose values differ (what tells two runs apart)."""

from __future__ import annotations

import json

from PySide6.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem, QWidget

from workbench.catalog import RunRecord
from workbench.gui.browser_model import flatten, fmt_value, test_metric, val_metric

RESULT_ROWS = ["status", "best val", "test"]


class CompareTab(QTableWidget):
    """One column per run; empty unless at least two runs are selected."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)

    def show_runs(self, recs: list[RunRecord]) -> None:
        if len(recs) < 2:
            self.clear()
            self.setRowCount(0)
            self.setColumnCount(0)
            return
        flats = [flatten(r.config) for r in recs]
        keys = sorted(set().union(*flats))
        diff = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
        self.clear()
        self.setRowCount(len(diff) + len(RESULT_ROWS))
        self.setColumnCount(len(recs))
        self.setHorizontalHeaderLabels([f"#{r.id} {r.name}" for r in recs])
        self.setVerticalHeaderLabels(RESULT_ROWS + diff)
        for c, (r, f) in enumerate(zip(recs, flats, strict=True)):
            m, v = val_metric(r)
            tm, tv, tci = test_metric(r)
            values = [r.status, fmt_value(m, v), fmt_value(tm, tv, tci)] + [
                json.dumps(f.get(k)) for k in diff
            ]
            for row, text in enumerate(values):
                self.setItem(row, c, QTableWidgetItem(text))
        self.resizeColumnsToContents()
