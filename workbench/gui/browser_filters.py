"""The experiments browser's filter bar: search text and the status/algorithm/dataset/tag/date
choices above the runs table, and how many runs they leave.

The bar only says what the user chose (`filters()`, the `changed` signal); the proxy model
applies it, so filtering stays one pass over precomputed rows (see `browser_model`).
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QWidget

from workbench.core.events import STATUSES
from workbench.gui.browser_model import Filters, RunTableModel, since_for

DATE_CHOICES = ["", "today", "7 days", "30 days"]


class FilterBar(QWidget):
    changed = Signal()  # any choice or the search text changed

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        bar = QHBoxLayout(self)
        bar.setContentsMargins(0, 0, 0, 0)  # a row of the browser's layout, as a bare layout was
        self.text_filter = QLineEdit(
            placeholderText="Search name, notes, tags, id…", clearButtonEnabled=True
        )
        self.text_filter.setMinimumWidth(120)  # the combos shrink first in a narrow window
        self.text_filter.textChanged.connect(lambda _: self.changed.emit())
        bar.addWidget(self.text_filter, 2)
        self.status_filter = self._combo(bar, "Status", ["", *STATUSES])
        self.algo_filter = self._combo(bar, "Algorithm", [""])
        self.dataset_filter = self._combo(bar, "Dataset", [""])
        self.tag_filter = self._combo(bar, "Tag", [""])
        self.date_filter = self._combo(bar, "Created", DATE_CHOICES)
        self.count_label = QLabel()
        bar.addWidget(self.count_label)
        self._wanted: dict[str, str] = {}  # restored choices waiting for the runs to offer them

    def _combo(self, bar: QHBoxLayout, label: str, items: list[str]) -> QComboBox:
        bar.addWidget(QLabel(label))
        c = QComboBox()
        c.setMinimumContentsLength(5)
        c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        for it in items:
            c.addItem(it or "any", it)
        c.currentIndexChanged.connect(lambda _: self.changed.emit())
        bar.addWidget(c, 1)
        return c

    def filters(self) -> Filters:
        return Filters(
            text=self.text_filter.text().strip(),
            status=self.status_filter.currentData() or "",
            algorithm=self.algo_filter.currentData() or "",
            dataset=self.dataset_filter.currentData() or "",
            tag=self.tag_filter.currentData() or "",
            since=since_for(self.date_filter.currentData() or ""),
        )

    def refresh_choices(self, model: RunTableModel) -> None:
        """Offer the algorithms, datasets and tags the runs have, keeping each current choice;
        a combo whose values did not change is left alone (no signal, no refilter)."""
        for combo, what in (
            (self.algo_filter, "algorithm"),
            (self.dataset_filter, "dataset"),
            (self.tag_filter, "tags"),
        ):
            current = combo.currentData() or self._wanted.pop(what, "")
            values = model.distinct(what)
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

    def state(self) -> dict[str, str]:
        """The search text and each choice (as data), to remember per catalog."""
        return {
            "text": self.text_filter.text(), "status": self.status_filter.currentData() or "",
            "algorithm": self.algo_filter.currentData() or "",
            "dataset": self.dataset_filter.currentData() or "",
            "tags": self.tag_filter.currentData() or "", "date": self.date_filter.currentData() or "",
        }  # fmt: skip

    def restore(self, state: dict[str, str]) -> None:
        """Apply a `state`; a choice the runs do not offer yet is applied when they do."""
        self.blockSignals(True)
        self.text_filter.setText(str(state.get("text", "")))
        for combo, key in ((self.status_filter, "status"), (self.date_filter, "date")):
            combo.setCurrentIndex(max(combo.findData(state.get(key, "")), 0))
        for combo, key in ((self.algo_filter, "algorithm"), (self.dataset_filter, "dataset"),
                           (self.tag_filter, "tags")):  # fmt: skip
            i = combo.findData(state.get(key, ""))
            if i >= 0:
                combo.setCurrentIndex(i)
            elif state.get(key):
                self._wanted[key] = str(state[key])
        self.blockSignals(False)
        self.changed.emit()

    def show_count(self, shown: int, total: int) -> None:
        self.count_label.setText(f"{shown} of {total} runs" if shown != total else f"{total} runs")
