"""The browser's action bar: what can be done to the selected runs (resume, evaluate, clone,
rename, notes and tags, seed group, delete, export), its buttons and their handlers.

The handlers act through the browser's public surface (selection, catalog, log, reload) and
its signals, so the main window still connects to the browser alone. Each dialog-driven
action also takes its answer as an argument, so tests and scripts can run it without one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QThread
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QWidget,
)

from workbench.catalog import CheckpointRecord, RunRecord, UnknownRunError
from workbench.core.errors import ConfigError
from workbench.exports import metrics_csv_name, write_metrics_csv
from workbench.gui.browser_model import LIVE, fmt_value, group_key
from workbench.gui.evaluate_dialog import EvaluateDialog, EvaluationJob

if TYPE_CHECKING:
    from workbench.gui.browser import ExperimentsBrowser


class ActionBar(QWidget):
    """The buttons above the runs table and their handlers; it also owns the Evaluate dialog,
    one at a time, so Evaluate knows whether an evaluation runs."""

    def __init__(self, browser: ExperimentsBrowser) -> None:
        super().__init__(browser)
        self.browser = browser
        self.eval_dialog: EvaluateDialog | None = None
        self.last_eval: tuple[Any, Any] | None = None  # (result, error) of the latest evaluation
        bar = QHBoxLayout(self)
        bar.setContentsMargins(0, 0, 0, 0)  # a row of the browser's layout, as a bare layout was

        self._tips: dict[QPushButton, str] = {}  # each button's own tooltip

        def button(text: str, tip: str, slot: Callable[[], Any]) -> QPushButton:
            b = QPushButton(text)
            b.setToolTip(tip)
            self._tips[b] = tip
            b.clicked.connect(lambda _=False: slot())
            bar.addWidget(b)
            return b

        self.resume_button = button(
            "Resume",
            "Continue the selected run from the checkpoint selected below (default: latest)",
            self.resume_selected,
        )
        self.resume_detached_button = button(
            "Resume in own process",
            "Continue the selected run in a separate process that keeps training when the app "
            "closes (from the checkpoint selected below, default: latest)",
            lambda: self.resume_selected(detached=True),
        )
        self.eval_button = button(
            "Evaluate…",
            "Evaluate a checkpoint of the selected run (default: the one selected below, else "
            "best) with its test protocol or another task shape, in the background",
            self.open_evaluation,
        )
        self.clone_button = button(
            "Clone", "Copy the run's configuration into the setup panel", self.clone_selected
        )
        button("Rename…", "Rename the selected run", self.rename_selected)
        button("Notes/tags…", "Edit the selected run's notes and tags", self.edit_notes_tags)
        button(
            "Seed group",
            "Select every run that differs from the selected one only by seed",
            self.select_seed_group,
        )
        self.delete_button = button(
            "Delete…", "Delete the selected runs with their checkpoint files", self.delete_selected
        )
        # the exports share one menu button, so the row fits a 1366-px screen
        self.export_button = QToolButton(text="Export")
        self.export_button.setStyleSheet("QToolButton { padding-right: 14px; }")  # the arrow
        self.export_button.setToolTip("Export the selected runs' metrics or the curve plot")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.export_button)
        csv = menu.addAction("Metrics as CSV…", self.export_csv)
        csv.setToolTip("All metric points of the selected runs, one row per point")
        menu.addAction("Curves as PNG…", self.export_png).setToolTip(
            "The curve plot as a PNG image"
        )
        menu.setToolTipsVisible(True)
        self.export_button.setMenu(menu)
        bar.addWidget(self.export_button)
        bar.addStretch(1)

    def update_for(self, recs: list[RunRecord]) -> None:
        """Enable what applies to this selection: resume a single run that is not live, clone
        a single run; neither, nor evaluate, for a run whose code is not a workbench algorithm
        here (the buttons' tooltips say why)."""
        why = not_ours(recs[0]) if len(recs) == 1 else None
        self.resume_button.setEnabled(len(recs) == 1 and recs[0].status not in LIVE and not why)
        self.resume_detached_button.setEnabled(self.resume_button.isEnabled())
        self.clone_button.setEnabled(len(recs) == 1 and not why)
        self.eval_button.setEnabled(not why)
        for b in (self.resume_button, self.resume_detached_button, self.clone_button,
                  self.eval_button):  # fmt: skip
            b.setToolTip(why or self._tips[b])

    def _one(self) -> RunRecord | None:
        recs = self.browser.selected_records()
        if len(recs) != 1:
            self.browser.log.emit("error", "select exactly one run")
            return None
        return recs[0]

    def chosen_checkpoint(self, run_id: int, default: str = "latest") -> CheckpointRecord | None:
        """The checkpoint selected in the Checkpoints tab, else the run's `default` one, else
        its latest."""
        chosen = self.browser.tabs.checkpoints.selected(run_id)
        if chosen is not None:
            return chosen
        cat = self.browser.catalog
        return cat.checkpoint(run_id, default) or cat.checkpoint(run_id, "latest")  # type: ignore[arg-type]

    def resume_selected(self, detached: bool = False) -> None:
        b = self.browser
        r = self._one()
        if r is None:
            return
        if why := not_ours(r):
            b.log.emit("error", why)
            return
        if r.status in LIVE:
            b.log.emit("error", f"run #{r.id} is {r.status}")
            return
        ck = self.chosen_checkpoint(r.id, "latest")
        if ck is None and r.status not in ("interrupted", "failed", "cancelled"):
            b.log.emit("error", f"run #{r.id} has no checkpoint to resume from")
            return
        # None: killed before its first checkpoint, from 0
        (b.resumeDetachedRequested if detached else b.resumeRequested).emit(r.id, ck)

    # ---- evaluation: the Evaluate dialog, its job in a background thread ---------------
    @property
    def evaluating(self) -> bool:
        return self.eval_dialog is not None and self.eval_dialog.running

    @property
    def eval_thread(self) -> QThread | None:
        return self.eval_dialog.thread if self.eval_dialog is not None else None

    @property
    def eval_worker(self) -> EvaluationJob | None:
        return self.eval_dialog.job if self.eval_dialog is not None else None

    def open_evaluation(self) -> EvaluateDialog | None:
        """The Evaluate dialog for the selected run (not modal: the browser stays usable while
        it runs), its checkpoint preset to the one chosen in the Checkpoints tab. One at a
        time: while one runs it is raised instead."""
        b = self.browser
        r = self._one()
        if r is None:
            return None
        if why := not_ours(r):
            b.log.emit("error", why)
            return None
        if self.evaluating:
            b.log.emit("error", "an evaluation is already running")
            self.eval_dialog.raise_()  # type: ignore[union-attr]
            return None
        if self.eval_dialog is not None:
            self.eval_dialog.close()
        try:
            dlg = EvaluateDialog(b.catalog, r, b.tabs.checkpoints.selected(r.id), b)
        except ConfigError as exc:  # a stored config this release no longer accepts
            b.log.emit("error", f"run #{r.id} cannot be evaluated: {exc}")
            return None
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.finished_evaluation.connect(self._eval_done)
        dlg.destroyed.connect(lambda _=None, d=dlg: self._forget(d))
        self.eval_dialog = dlg
        dlg.show()
        return dlg

    def _forget(self, dlg: EvaluateDialog) -> None:
        if self.eval_dialog is dlg:
            self.eval_dialog = None

    def evaluate_selected(self, episodes: int | None = None, device: str = "auto") -> bool:
        """Evaluate the selected run at once through the dialog (scripts, tests): its
        defaults, with `episodes` and `device`; True if it started."""
        dlg = self.open_evaluation()
        if dlg is None:
            return False
        if episodes is not None:
            dlg.editor("episodes").set_value(episodes)
        i = dlg.editor("device").findData(device)
        if i >= 0:
            dlg.editor("device").setCurrentIndex(i)
        return dlg.start()

    def cancel_evaluation(self) -> None:
        if self.eval_dialog is not None:
            self.eval_dialog.cancel()

    def _eval_done(self, run_id: int, score: Any, error: Any) -> None:
        b = self.browser
        result = None
        if score is not None:
            result = {"metric": score.metric, "mean": score.mean, "ci95": score.ci95,
                      "episodes": score.episodes}  # fmt: skip
            shown = fmt_value(score.metric, score.mean, score.ci95)
            b.log.emit("info", f"evaluation of run #{run_id}: {score.metric} {shown} on "
                               f"{score.episodes} episodes")  # fmt: skip
        else:
            level = "info" if "cancelled" in str(error) else "error"
            b.log.emit(level, f"evaluation of run #{run_id}: {error}")
        self.last_eval = (result, None if score is not None else str(error))
        try:
            b.model.update_runs([b.catalog.get_run(run_id)])
        except UnknownRunError:
            pass
        if run_id in b.shown_ids:
            b.show_details()

    def shutdown(self) -> None:
        """Stop a running evaluation and wait for its thread (the app is closing)."""
        if self.eval_dialog is not None:
            self.eval_dialog.shutdown()
            self.eval_dialog.close()

    # ---- editing the catalog ---------------------------------------------------------
    def clone_selected(self) -> None:
        r = self._one()
        if r is not None and (why := not_ours(r)):
            self.browser.log.emit("error", why)
        elif r is not None:
            cfg = dict(r.config)
            cfg["name"] = f"{r.name}-clone" if r.name else ""
            self.browser.cloneRequested.emit(cfg)

    def rename_selected(self, name: str | None = None) -> None:
        r = self._one()
        if r is None:
            return
        if name is None:
            name, ok = QInputDialog.getText(
                self.browser, "Rename run", f"New name of run #{r.id}:", text=r.name
            )
            if not ok:
                return
        self.browser.catalog.rename(r.id, name)
        self.browser.reload(details=True)

    def edit_notes_tags(self, notes: str | None = None, tags: list[str] | None = None) -> None:
        r = self._one()
        if r is None:
            return
        if notes is None and tags is None:
            dlg = QDialog(self.browser)
            dlg.setWindowTitle(f"Notes and tags of run #{r.id}")
            form = QFormLayout(dlg)
            notes_edit = QPlainTextEdit(r.notes)
            tags_edit = QLineEdit(", ".join(r.tags))
            form.addRow("Notes", notes_edit)
            form.addRow("Tags (comma-separated)", tags_edit)
            buttons = QDialogButtonBox(
                QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
            )
            buttons.accepted.connect(dlg.accept)
            buttons.rejected.connect(dlg.reject)
            form.addRow(buttons)
            if dlg.exec() != QDialog.DialogCode.Accepted:
                return
            notes, tags = notes_edit.toPlainText(), [t.strip() for t in tags_edit.text().split(",")]
        if notes is not None:
            self.browser.catalog.set_notes(r.id, notes)
        if tags is not None:
            self.browser.catalog.set_tags(r.id, tags)
        self.browser.reload(details=True)

    def select_seed_group(self) -> None:
        b = self.browser
        r = self._one()
        if r is None:
            return
        key = group_key(r.config)
        ids = [
            x.id
            for x in b.model.rows
            if x.algorithm == r.algorithm and x.dataset == r.dataset and group_key(x.config) == key
        ]
        b.tabs.curves.group_check.setChecked(len(ids) > 1)
        b.select_ids(ids)

    def delete_selected(self) -> int:
        """Delete the selected runs that are not running or paused, after `browser.confirm`;
        returns how many."""
        b = self.browser
        recs = [r for r in b.selected_records() if r.status not in ("running", "paused")]
        if not recs:
            return 0
        names = ", ".join(f"#{r.id}" for r in recs[:10]) + (" …" if len(recs) > 10 else "")
        if not b.confirm(
            "Delete runs",
            f"Delete {len(recs)} run(s) ({names}) with their metrics and checkpoint files?",
        ):
            return 0
        for r in recs:
            try:
                b.catalog.delete_run(r.id)
            except UnknownRunError:
                pass
        b.log.emit("info", f"deleted {names}")
        b.reload(details=True)
        return len(recs)

    # ---- export ------------------------------------------------------------------------
    def export_csv(self, path: str | None = None) -> str | None:
        """Every metric point of the selected runs, one row per point; asks for the file
        when `path` is None. Returns the path written, or None."""
        b = self.browser
        recs = b.selected_records()
        if not recs:
            return None
        if path is None:
            default = metrics_csv_name(recs[0]) if len(recs) == 1 else "curves.csv"
            path, _ = QFileDialog.getSaveFileName(b, "Export curves", default, "CSV (*.csv)")
            if not path:
                return None
        write_metrics_csv(b.catalog, [r.id for r in recs], path)  # the CLI's columns
        b.log.emit("info", f"exported curves of {len(recs)} run(s) to {path}")
        return path

    def export_png(self, path: str | None = None) -> str | None:
        """The curve plot as a PNG; asks for the file when `path` is None."""
        b = self.browser
        if path is None:
            path, _ = QFileDialog.getSaveFileName(b, "Export plot", "curves.png", "PNG (*.png)")
            if not path:
                return None
        b.tabs.curves.export_png(path)
        b.log.emit("info", f"exported plot to {path}")
        return path


def not_ours(rec: RunRecord) -> str | None:
    """Why the workbench cannot resume, evaluate or clone this run, or None: a run tracked from
    a user's script (`workbench.track`) is the script's code; a run whose algorithm is not
    registered here (a plugin that is missing now) cannot be rebuilt. Its curves, config,
    tags and notes still show, compare and export."""
    from workbench.core.algorithms import ALGORITHMS
    from workbench.tracking import TRACKED

    if rec.algorithm == TRACKED:
        return (
            f"run #{rec.id} was tracked from a script (workbench.track): its code is the "
            "script's, so it cannot be resumed, evaluated or cloned here"
        )
    if rec.algorithm and rec.algorithm not in ALGORITHMS:
        return (
            f"run #{rec.id} was made by algorithm {rec.algorithm!r}, which is not loaded here "
            "(a plugin that is missing?): it cannot be resumed, evaluated or cloned"
        )
    return None
