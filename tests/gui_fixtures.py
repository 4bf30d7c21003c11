"""The main window as the GUI tests drive it: confirmations answered yes (conftest's `window`
fixture uses it, with a catalog in the test's folder, and shuts it down after the test)."""

from __future__ import annotations

from workbench.catalog import Catalog
from workbench.gui.main_window import MainWindow


def make_window(qtbot, catalog: Catalog, restore: bool = False) -> MainWindow:  # type: ignore[no-untyped-def]
    win = MainWindow(catalog, restore=restore)
    win.confirm = lambda *_: True
    win.browser.confirm = lambda *_: True
    qtbot.addWidget(win)
    win.show()
    return win
