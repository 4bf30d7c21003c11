"""The Help menu: user guide, keyboard shortcuts, where files live, About.

The guide ships as package data (`workbench/resources/guide.md`) beside the presets and
examples, so an installed wheel has it; the shortcuts are read from the window's own actions,
so the list cannot fall behind the menus.
"""

from __future__ import annotations

import os
import platform
from importlib import resources
from pathlib import Path
from typing import Any

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QMessageBox,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from workbench.gui import settings as qs


def resource_dir() -> Path:
    """The package's resources (presets, examples, the guide)."""
    return Path(str(resources.files("workbench") / "resources"))


def guide_text() -> str:
    return (resource_dir() / "guide.md").read_text(encoding="utf-8")


def shortcuts(window: QWidget) -> list[tuple[str, str]]:
    """(action, its shortcuts) for every action of the window that has one, menu order."""
    out = []
    for action in window.findChildren(QAction):
        native = (k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts())
        keys = [k for k in native if k]  # a standard key this platform leaves unbound is ""
        if keys and action.text():
            out.append((action.text().replace("&", ""), ", ".join(keys)))
    return out


def file_places(catalog: Any) -> list[tuple[str, str]]:
    """Where the workbench keeps what, for this catalog and this user."""
    from workbench.core.tasks.cache import cache_dir

    data = os.environ.get("WORKBENCH_DATA")
    return [
        ("catalog", catalog.display),
        ("checkpoints and run logs", f"{catalog.checkpoint_root}/<run id>/"),
        ("datasets", data or "each run's data folder (set $WORKBENCH_DATA for a default)"),
        ("decoded-image cache", str(cache_dir())),
        ("app settings", qs.settings().fileName()),
        ("presets, examples, this guide", str(resource_dir())),
    ]


def versions() -> dict[str, str]:
    import pyqtgraph
    import PySide6
    import torch
    from PySide6.QtCore import qVersion

    from workbench import __version__

    return {
        "workbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "Qt": qVersion(),
        "PySide6": PySide6.__version__,
        "pyqtgraph": pyqtgraph.__version__,
    }


def about_text(catalog: Any) -> str:
    v = versions()
    rows = "".join(f"<tr><td>{k}</td><td>&nbsp;{val}</td></tr>" for k, val in v.items())
    return (f"<h3>Meta-Learning Workbench {v['workbench']}</h3>"
            "<p>MAML, first-order MAML, Meta-LSTM, ProtoNet and a fine-tuning baseline, "
            "with a run catalog.</p>"
            f"<table>{rows}</table><p>Catalog: {catalog.display}</p>")  # fmt: skip


def _dialog(parent: QWidget, title: str, body: QWidget, size: tuple[int, int]) -> QDialog:
    dlg = QDialog(parent)
    dlg.setWindowTitle(title)
    lay = QVBoxLayout(dlg)
    lay.addWidget(body)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dlg.reject)
    lay.addWidget(buttons)
    dlg.resize(*size)
    return dlg


def _table(rows: list[tuple[str, str]], headers: tuple[str, str]) -> QTableWidget:
    table = QTableWidget(len(rows), 2)
    table.setHorizontalHeaderLabels(list(headers))
    for i, (a, b) in enumerate(rows):
        table.setItem(i, 0, QTableWidgetItem(a))
        table.setItem(i, 1, QTableWidgetItem(b))
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setStretchLastSection(True)
    table.resizeColumnToContents(0)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    return table


def guide_dialog(parent: QWidget) -> QDialog:
    view = QTextBrowser()
    view.setObjectName("guide")
    view.setMarkdown(guide_text())
    return _dialog(parent, "User guide", view, (720, 640))


def shortcuts_dialog(window: QWidget) -> QDialog:
    table = _table(shortcuts(window), ("action", "keys"))
    table.setObjectName("shortcuts")
    return _dialog(window, "Keyboard shortcuts", table, (520, 420))


def files_dialog(parent: QWidget, catalog: Any) -> QDialog:
    table = _table(file_places(catalog), ("what", "where"))
    table.setObjectName("files")
    return _dialog(parent, "Where files live", table, (820, 280))


def show_about(parent: QWidget, catalog: Any) -> None:
    QMessageBox.about(parent, "About the Meta-Learning Workbench", about_text(catalog))
