"""Run setup → New sweep…: fields ticked and filled as a user does, checked inline with the
CLI's messages, and a sweep started from the app that the Sweeps tab follows to its end."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QDialogButtonBox
from test_gui_detached import make_window

from workbench.catalog import Catalog
from workbench.core.config import default_config
from workbench.gui.sweep_dialog import SweepDialog


def _base(steps: int) -> dict:
    cfg = default_config().to_dict()
    cfg.update(steps=steps, val_every=10, test_on_finish=False)
    return cfg


def _fill(dialog: SweepDialog, key: str, kind: str, text: str) -> None:
    tick, kinds, field = dialog.rows[key]
    tick.setChecked(True)
    kinds.setCurrentText(kind)
    field.setText(text)


def _start(dialog: SweepDialog):  # type: ignore[no-untyped-def]
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)


def test_the_dialog_checks_what_the_user_types(qtbot) -> None:  # type: ignore[no-untyped-def]
    dialog = SweepDialog(_base(30))
    qtbot.addWidget(dialog)
    assert not _start(dialog).isEnabled() and "tick at least one" in dialog.error.text()
    _fill(dialog, "algorithm.inner_lr", "values", "0.01, 0.1")
    assert _start(dialog).isEnabled() and dialog.error.text() == ""
    dialog.rows["algorithm.inner_lr"][2].setText("0.01, -1")
    assert not _start(dialog).isEnabled()
    assert dialog.error.text().startswith("algorithm.inner_lr: -1 is not allowed")
    _fill(dialog, "algorithm.inner_lr", "loguniform", "0, 1")
    dialog.method.setCurrentText("random")
    assert "must lie above 0" in dialog.error.text() and not _start(dialog).isEnabled()
    dialog.rows["algorithm.inner_lr"][2].setText("0.001, 1")
    dialog.seeds.setText("0, x")
    assert dialog.error.text().startswith("seeds:")
    dialog.seeds.setText("0, 1")
    assert _start(dialog).isEnabled()
    spec = dialog.spec_dict()
    assert spec["parameters"] == [{"key": "algorithm.inner_lr", "loguniform": [0.001, 1]}]
    assert spec["seeds"] == [0, 1] and spec["trials"] == 16 and spec["base"]["steps"] == 30


def test_a_sweep_started_from_the_app_runs_and_shows_in_the_sweeps_tab(  # type: ignore[no-untyped-def]
    qtbot, tmp_path: Path
) -> None:
    with Catalog.open(tmp_path / "s.db") as catalog:
        win = make_window(qtbot, catalog)
        try:
            win.form.set_config(_base(30))
            assert win.form.config is not None
            dialog = SweepDialog(win.form.config.to_dict(), win)
            _fill(dialog, "algorithm.inner_lr", "values", "0.01, 0.1")
            dialog.name.setText("from-the-app")
            dialog.concurrent.setValue(2)
            QTimer.singleShot(0, lambda: _start(dialog).click())
            proc = win.new_sweep(dialog)
            assert proc is not None and win.tabs.currentWidget() is win.sweeps
            assert proc.wait(timeout=1800) == 0
            (sw,) = catalog.sweeps.list()
            assert (sw.name, sw.status, sw.done) == ("from-the-app", "finished", 2)
            runs = catalog.list_runs()
            assert sorted(r.config["algorithm"]["inner_lr"] for r in runs) == [0.01, 0.1]
            assert all(r.config["steps"] == 30 for r in runs)
            qtbot.waitUntil(lambda: len(win.sweeps.parallel_curves) == 2, timeout=60_000)
        finally:
            win.shutdown()
