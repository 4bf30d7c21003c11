"""The experiments browser: every run in the catalog, filters, details, comparison, actions.

This module puts the parts together and decides when to read the catalog; each part is a
module of its own:

- `browser_filters`: the filter bar;  `browser_table`: the runs table (its model and proxy
  are in `browser_model`);  `browser_sync`: how the table follows the catalog cheaply;
- `browser_details`: the tabs below the table (`browser_curves`, `browser_compare`,
  `browser_config`, `browser_checkpoints`);  `browser_actions`: the action bar.

A 1 s QTimer polls the catalog's `change_token()` (one tiny query: SQLite's
`PRAGMA data_version`, PostgreSQL's snapshot; it changes whenever any connection, in this
process or another, commits); on a change `TableSync.update` brings the table up to date. A
full reload (and the detail pane's curves) waits while the browser is hidden; otherwise it
happens after our own edits and at most every `FULL_RELOAD_S` seconds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QThread, QTimer, Signal
from PySide6.QtWidgets import QMessageBox, QSplitter, QVBoxLayout, QWidget

from workbench.catalog import HEARTBEAT_S, Catalog, CheckpointRecord, RunRecord
from workbench.gui import settings as qs
from workbench.gui.browser_actions import ActionBar
from workbench.gui.browser_curves import mean_band
from workbench.gui.browser_details import DetailTabs
from workbench.gui.browser_filters import FilterBar
from workbench.gui.browser_model import (
    IGNORED_IN_GROUP,
    RunFilterProxy,
    RunTableModel,
    flatten,
    group_key,
)
from workbench.gui.browser_sync import TableSync
from workbench.gui.browser_table import RunTableView
from workbench.gui.evaluate_dialog import EvaluationJob

# re-exported: they lived here before the browser was split, and callers import them from here
__all__ = ["ExperimentsBrowser", "IGNORED_IN_GROUP", "flatten", "group_key", "mean_band"]

POLL_MS = 1000
FULL_RELOAD_S = 30.0


class ExperimentsBrowser(QWidget):
    """The Experiments tab. The window connects to its signals alone; the parts' widgets are
    also reachable under their old flat names (`metric_combo`, `ckpt_table`, ...)."""

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
        self.sync = TableSync(catalog, self.model)
        self.load_ms = 0.0
        self._version: str | None = None
        self._stale_checked = 0.0
        self.shown_ids: list[int] = []  # the runs the detail pane shows
        self._details_stale = False  # the shown runs changed while the browser was hidden

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        self.filter_bar = FilterBar(self)
        self.filter_bar.changed.connect(self.apply_filters)
        lay.addWidget(self.filter_bar)
        self.action_bar = ActionBar(self)
        lay.addWidget(self.action_bar)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        lay.addWidget(self.splitter, 1)
        self.table = RunTableView(self.model, self.proxy)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._details_timer.start())
        self.splitter.addWidget(self.table)
        self.tabs = DetailTabs(catalog, self.selected_records)
        self.splitter.addWidget(self.tabs)
        self.splitter.setSizes([300, 400])
        self._alias_parts()

        self._details_timer = QTimer(self, singleShot=True, interval=60)
        self._details_timer.timeout.connect(self.show_details)
        self.poll_timer = QTimer(self, interval=POLL_MS)
        self.poll_timer.timeout.connect(self._poll_if_shown)
        self.reload()
        self._recall()
        self.poll_timer.start()

    # ---- what the user chose, per catalog ---------------------------------------------
    def _memory_key(self) -> str:
        target = self.catalog.display if self.catalog.server else self.catalog.location
        return f"browser/{hashlib.sha1(str(target).encode()).hexdigest()[:16]}"

    def _recall(self) -> None:
        """The columns, sort and filters last chosen for this catalog; then keep them."""
        state = qs.load_json(self._memory_key(), {}) or {}
        if isinstance(state, dict):
            self.table.restore_columns(state.get("columns") or {})
            self.filter_bar.restore(state.get("filters") or {})
        self.table.columnsChanged.connect(self.remember)
        self.filter_bar.changed.connect(self.remember)

    def remember(self) -> None:
        qs.save_json(
            self._memory_key(),
            {"columns": self.table.column_state(), "filters": self.filter_bar.state()},
        )

    def _alias_parts(self) -> None:
        """The parts' widgets under the names they had when the browser was one class, for the
        window, tests and scripts that reach for them."""
        f, a, c, t = self.filter_bar, self.action_bar, self.tabs.curves, self.tabs
        self.text_filter = f.text_filter
        self.status_filter = f.status_filter
        self.algo_filter = f.algo_filter
        self.dataset_filter = f.dataset_filter
        self.tag_filter = f.tag_filter
        self.date_filter = f.date_filter
        self.count_label = f.count_label
        self.resume_button = a.resume_button
        self.resume_detached_button = a.resume_detached_button
        self.eval_button = a.eval_button
        self.clone_button = a.clone_button
        self.delete_button = a.delete_button
        self.metric_combo = c.metric_combo
        self.group_check = c.group_check
        self.curve_plot = c.curve_plot
        self.legend = c.legend
        self.compare_table = t.compare
        self.config_text = t.config
        self.env_text = t.environment
        self.ckpt_table = t.checkpoints
        self.eval_table = t.evaluations

    @property
    def _curve_items(self) -> dict[int, Any]:
        return self.tabs.curves.items

    @property
    def eval_thread(self) -> QThread | None:
        return self.action_bar.eval_thread

    @property
    def eval_worker(self) -> EvaluationJob | None:
        return self.action_bar.eval_worker

    @property
    def last_eval(self) -> tuple[Any, Any] | None:
        return self.action_bar.last_eval

    def _ask(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    # ---- loading and polling ---------------------------------------------------------
    def reload(self, details: bool = False) -> None:
        """Read every run (runs + summary tables) and keep the selection; `details` refills
        the detail pane too (after an edit, or when runs appeared)."""
        t0 = time.perf_counter()
        selected = self.selected_ids()
        self.sync.load()
        self.select_ids(selected, notify=False)
        self.filter_bar.refresh_choices(self.model)
        self._update_count()
        self.load_ms = (time.perf_counter() - t0) * 1000
        if details:
            self.show_details()

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
        self.reload(details=True)
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
            if now - self._stale_checked >= HEARTBEAT_S:
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
        if self.isVisible() and time.monotonic() - self.sync.last_full > FULL_RELOAD_S:
            self.reload(details=True)
            return
        update = self.sync.update()
        if update.reload:
            self.reload(details=update.new_runs)
        elif update.changed & set(self.shown_ids):
            if self.isVisible():
                self.show_details(keep_items=True)
            else:
                self._details_stale = True

    def showEvent(self, ev: Any) -> None:
        super().showEvent(ev)
        self.poll()  # the timer does not poll while hidden
        if time.monotonic() - self.sync.last_full > FULL_RELOAD_S:
            self.reload(details=True)
        elif self._details_stale:
            self.show_details(keep_items=True)
        self._details_stale = False

    def shutdown(self) -> None:
        self.poll_timer.stop()
        self._details_timer.stop()
        self.action_bar.shutdown()

    # ---- filters and selection -------------------------------------------------------
    def apply_filters(self) -> None:
        self.proxy.set_filters(self.filter_bar.filters())
        self._update_count()

    def _update_count(self) -> None:
        self.filter_bar.show_count(self.proxy.rowCount(), self.model.rowCount())

    def selected_ids(self) -> list[int]:
        return self.table.selected_ids()

    def selected_records(self) -> list[RunRecord]:
        return self.table.selected_records()

    def select_ids(self, ids: list[int], notify: bool = True) -> None:
        self.table.select_ids(ids, notify)
        if notify:
            self.show_details()

    # ---- details ---------------------------------------------------------------------
    def show_details(self, keep_items: bool = False) -> None:
        """Fill the detail tabs and the action bar for the selection; `keep_items` updates the
        curves in place when the same runs are still shown (a poll while they train)."""
        recs = self.selected_records()
        ids = [r.id for r in recs]
        new_selection = not keep_items or ids != self.shown_ids
        self.shown_ids = ids
        self.tabs.show_runs(recs, keep_items=keep_items, new_selection=new_selection)
        self.action_bar.update_for(recs)

    def plot_curves(self, keep_items: bool = False) -> None:
        self.tabs.curves.plot(keep_items=keep_items)

    # ---- actions (see browser_actions) ---------------------------------------------
    def chosen_checkpoint(self, run_id: int, default: str = "latest") -> CheckpointRecord | None:
        return self.action_bar.chosen_checkpoint(run_id, default)

    def resume_selected(self, detached: bool = False) -> None:
        self.action_bar.resume_selected(detached)

    def evaluate_selected(self, episodes: int | None = None, device: str = "auto") -> bool:
        return self.action_bar.evaluate_selected(episodes, device)

    def cancel_evaluation(self) -> None:
        self.action_bar.cancel_evaluation()

    def clone_selected(self) -> None:
        self.action_bar.clone_selected()

    def rename_selected(self, name: str | None = None) -> None:
        self.action_bar.rename_selected(name)

    def edit_notes_tags(self, notes: str | None = None, tags: list[str] | None = None) -> None:
        self.action_bar.edit_notes_tags(notes, tags)

    def select_seed_group(self) -> None:
        self.action_bar.select_seed_group()

    def delete_selected(self) -> int:
        return self.action_bar.delete_selected()

    def export_csv(self, path: str | None = None) -> str | None:
        return self.action_bar.export_csv(path)

    def export_png(self, path: str | None = None) -> str | None:
        return self.action_bar.export_png(path)
