"""The live view's run list: live runs and recently ended ones, checked ones overlaid.

A mixin of `LivePlots` rather than a widget of its own: each item mirrors a `Trace` of the
view (its colour, visibility, the selected run the controls and cursor act on), so the list
and the traces change together in one place. The selected run's single-run views (`series`,
`point_count`, ...) are here too: they are what callers written for one run still read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, SignalInstance
from PySide6.QtWidgets import (
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from workbench.gui.buffers import Series
from workbench.gui.live_trace import PALETTE, Trace, swatch

MAX_ENDED = 6  # ended runs kept in the list (the oldest go when a new run comes)


class RunListMixin:
    """Adding, removing, checking and selecting runs (`LivePlots` provides the rest)."""

    traces: dict[int, Trace]
    plots: dict[str, pg.PlotItem]
    current: int | None
    alpha: float
    _dirty: bool
    selectionChanged: SignalInstance
    checkedChanged: SignalInstance

    if TYPE_CHECKING:  # drawn by LivePlots

        def redraw(self, force: bool = False) -> bool: ...

        def set_metric(self, metric: str) -> None: ...

    def _build_run_list(self) -> QWidget:
        """The list and its "Clear ended" button, for the left side of the splitter."""
        side = QWidget()
        side_lay = QVBoxLayout(side)
        side_lay.setContentsMargins(0, 0, 0, 0)
        side_lay.addWidget(QLabel("<b>Runs</b>"))
        self.run_list = QListWidget()
        self.run_list.setToolTip(
            "Live runs (in the app or in their own processes) and recently ended ones: "
            "checked runs are plotted, one colour each; Pause and Stop act on the selected one"
        )
        self.run_list.currentItemChanged.connect(self._current_item_changed)
        self.run_list.itemChanged.connect(self._item_changed)
        side_lay.addWidget(self.run_list, 1)
        self.clear_ended_button = QPushButton("Clear ended")
        self.clear_ended_button.setToolTip("Remove the runs that ended from the list and plots")
        self.clear_ended_button.clicked.connect(lambda _=False: self.clear_ended())
        side_lay.addWidget(self.clear_ended_button)
        return side

    def _trace(self, run_id: int | None = None) -> Trace:
        """The run's trace; without an id the selected one (made as run 0 if there is none),
        which is what a single-run caller feeds."""
        if run_id is None:
            run_id = self.current if self.current is not None else 0
        t = self.traces.get(run_id)
        return t if t is not None else self.add_run(run_id)

    def _item(self, run_id: int) -> QListWidgetItem | None:
        for i in range(self.run_list.count()):
            item = self.run_list.item(i)
            if item.data(Qt.ItemDataRole.UserRole) == run_id:
                return item
        return None

    def add_run(
        self, run_id: int, metric: str | None = None, label: str = "", select: bool = False
    ) -> Trace:
        """Add a run to the list and the plots (checked), or return it if it is there. Ended
        runs are unchecked when a new one comes (one run at a time looks as it always did), and
        only the newest MAX_ENDED of them stay."""
        t = self.traces.get(run_id)
        if t is None:
            ended = [r for r, tr in self.traces.items() if tr.ended]
            for r in ended[: max(0, len(ended) - MAX_ENDED + 1)]:
                self.remove_run(r)
            for r in ended:
                if r in self.traces:
                    self.set_checked(r, False)
            used = {tr.color for tr in self.traces.values()}
            color = next(
                (c for c in PALETTE if c not in used), PALETTE[len(self.traces) % len(PALETTE)]
            )
            t = Trace(run_id, color, self.plots, self.alpha)
            self.traces[run_id] = t
            item = QListWidgetItem(swatch(color), label or f"#{run_id}")
            item.setData(Qt.ItemDataRole.UserRole, run_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.run_list.blockSignals(True)
            self.run_list.addItem(item)
            self.run_list.blockSignals(False)
            self._dirty = True
        if metric is not None:
            t.metric = metric
        if label:
            self.set_run_text(run_id, label)
        if select or self.current is None or self.current not in self.traces:
            self.select(run_id)
        return t

    def remove_run(self, run_id: int) -> None:
        t = self.traces.pop(run_id, None)
        if t is None:
            return
        t.remove()
        item = self._item(run_id)
        if item is not None:
            self.run_list.takeItem(self.run_list.row(item))
        if self.current == run_id:
            self.current = None
            nxt = next(reversed(self.traces), None) if self.traces else None
            if nxt is not None:
                self.select(nxt)
            else:
                self.selectionChanged.emit(-1)
        self._dirty = True

    def clear_ended(self) -> None:
        for run_id in [r for r, t in self.traces.items() if t.ended]:
            self.remove_run(run_id)
        self.redraw(force=True)

    def set_run_text(self, run_id: int, text: str, tooltip: str = "") -> None:
        item = self._item(run_id)
        if item is not None and item.text() != text:
            item.setText(text)
        if item is not None and tooltip and item.toolTip() != tooltip:
            item.setToolTip(tooltip)

    def set_ended(self, run_id: int, ended: bool = True) -> None:
        t = self.traces.get(run_id)
        if t is not None:
            t.ended = ended

    def select(self, run_id: int) -> None:
        item = self._item(run_id)
        if item is None:
            return
        if self.run_list.currentItem() is not item:
            self.run_list.setCurrentItem(item)  # -> _current_item_changed
        elif self.current != run_id:
            self._current_item_changed(item, None)

    def set_checked(self, run_id: int, on: bool) -> None:
        item = self._item(run_id)
        if item is not None:
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def checked(self) -> list[int]:
        return [r for r, t in self.traces.items() if t.visible]

    def _current_item_changed(self, item: QListWidgetItem | None, _prev: Any) -> None:
        run_id = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        self.current = run_id
        t = self.traces.get(run_id) if run_id is not None else None
        if t is not None:
            self.set_metric(t.metric)
        self.selectionChanged.emit(-1 if run_id is None else int(run_id))

    def _item_changed(self, item: QListWidgetItem) -> None:
        run_id = item.data(Qt.ItemDataRole.UserRole)
        t = self.traces.get(run_id)
        on = item.checkState() == Qt.CheckState.Checked
        if t is not None and t.visible != on:
            t.set_visible(on)
            self.redraw(force=True)
            self.checkedChanged.emit(int(run_id), on)

    # ---- single-run views (the selected run): what the cursor, tests and callers read -----
    @property
    def series(self) -> dict[str, Series]:
        return self._trace().series

    @property
    def curves(self) -> dict[str, Any]:
        return self._trace().curves

    @property
    def val_curve(self) -> Any:
        return self._trace().val_curve

    @property
    def origin(self) -> float:
        return self._trace().origin

    @property
    def val_step(self) -> list[float]:
        return self._trace().val_step

    def point_count(self, key: str = "loss", run_id: int | None = None) -> int:
        """Points received by a curve of a run (default: the selected one; "val": validations)."""
        t = self.traces.get(self.current if run_id is None else run_id)
        if t is None:
            return 0
        return len(t.val_step) if key == "val" else t.series[key].n
