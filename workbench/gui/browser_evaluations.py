"""The browser's Evaluations tab: the run's evaluations (the table), and for the one selected
(the latest by default) its protocol, score and the histogram of its per-episode scores.

An evaluation stored before the catalog kept per-episode scores (revision 0006) shows its
row, score and protocol, with the histogram saying there is none.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from workbench.catalog import Catalog, EvaluationRecord
from workbench.exports import format_score, protocol_text
from workbench.gui.browser_checkpoints import EvaluationsTab
from workbench.gui.episode_histogram import EpisodeHistogram


class EvaluationsView(QSplitter):
    """The evaluations table above the selected evaluation's histogram."""

    def __init__(self, catalog: Catalog, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Vertical, parent)
        self.catalog = catalog
        self.records: list[EvaluationRecord] = []  # the table's rows, in order
        self.table = EvaluationsTab(catalog)
        self.addWidget(self.table)
        below = QWidget()
        lay = QVBoxLayout(below)
        lay.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        lay.addWidget(self.caption)
        self.histogram = EpisodeHistogram()
        lay.addWidget(self.histogram, 1)
        self.addWidget(below)
        self.setStretchFactor(0, 1)
        self.setStretchFactor(1, 1)
        self.table.itemSelectionChanged.connect(self._show_selected)

    def show_run(self, run_id: int) -> None:
        """Fill the table with the run's evaluations and show the latest, or the older one
        the user picked (a refresh while runs train keeps it; a new evaluation is shown when
        the latest was)."""
        before = self.selected()
        older = before is not None and before is not self.records[-1]
        self.records = self.catalog.evaluations(run_id)
        self.table.show_run(run_id)
        ids = [e.id for e in self.records]
        if ids:
            keep = older and before.run_id == run_id and before.id in ids  # type: ignore[union-attr]
            self.table.selectRow(ids.index(before.id) if keep else len(ids) - 1)  # type: ignore[union-attr]
        self._show_selected()

    def clear(self) -> None:
        self.records = []
        self.table.setRowCount(0)
        self._show_selected()

    def selected(self) -> EvaluationRecord | None:
        rows = self.table.selectionModel().selectedRows()
        if rows and rows[0].row() < len(self.records):
            return self.records[rows[0].row()]
        return None

    def _show_selected(self) -> None:
        e = self.selected()
        if e is None:
            self.caption.setText("")
            self.histogram.show_scores([], "accuracy")
            self.histogram.setTitle("")
            return
        step = "" if e.checkpoint_step is None else f" of step {e.checkpoint_step}"
        self.caption.setText(
            f"<b>{e.split} {e.metric} {format_score(e.mean, e.ci95, e.metric)}</b>{step}: "
            f"{protocol_text(e.protocol, e.metric) or f'{e.episodes} episodes'}"
        )
        self.histogram.show_scores(e.episode_scores, e.metric)
