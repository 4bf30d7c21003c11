"""The browser's detail pane below the runs table: one tab per view of the selected runs.

Each tab is its own widget in its own module (curves, compare, config and environment,
checkpoints and evaluations); this pane only adds them and hands each the selection. A new
view of the runs is a new module and one `addTab` here.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QTabWidget, QWidget

from workbench.catalog import Catalog, RunRecord
from workbench.gui.browser_checkpoints import CheckpointsTab
from workbench.gui.browser_compare import CompareTab
from workbench.gui.browser_config import ConfigTab, EnvironmentTab
from workbench.gui.browser_curves import CurvesTab
from workbench.gui.browser_evaluations import EvaluationsView


class DetailTabs(QTabWidget):
    def __init__(
        self,
        catalog: Catalog,
        selected: Callable[[], list[RunRecord]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.curves = CurvesTab(catalog, selected)
        self.addTab(self.curves, "Curves")
        self.compare = CompareTab()
        self.addTab(self.compare, "Compare")
        self.config = ConfigTab()
        self.addTab(self.config, "Config")
        self.environment = EnvironmentTab()
        self.addTab(self.environment, "Environment")
        self.checkpoints = CheckpointsTab(catalog)
        self.addTab(self.checkpoints, "Checkpoints")
        self.evaluation_view = EvaluationsView(catalog)  # the table and a histogram
        self.evaluations = self.evaluation_view.table
        self.addTab(self.evaluation_view, "Evaluations")

    def show_runs(self, recs: list[RunRecord], keep_items: bool, new_selection: bool) -> None:
        """Fill every tab for these runs; `new_selection` re-reads the metric choices,
        `keep_items` lets the curves update in place (see `CurvesTab.plot`)."""
        if new_selection:
            self.curves.fill_metrics(recs)
        self.curves.plot(keep_items=keep_items)
        self.compare.show_runs(recs)
        self.config.show_runs(recs)
        self.environment.show_runs(recs)
        if len(recs) == 1:
            self.checkpoints.show_run(recs[0].id)
            self.evaluation_view.show_run(recs[0].id)
        else:
            self.checkpoints.setRowCount(0)
            self.evaluation_view.clear()
