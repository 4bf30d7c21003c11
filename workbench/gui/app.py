"""Entry point of the desktop app: `workbench` (no arguments) or `python -m workbench.gui`."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from workbench import __version__
from workbench.gui.settings import APPLICATION, ORGANIZATION

# Qt 6's xcb platform plugin loads these at start; a fresh desktop Linux often lacks them, and
# Qt then aborts with "could not load the Qt platform plugin xcb" (which suggests reinstalling
# Qt, not the missing system package)
XCB_LIBRARIES = {
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
}
XCB_FIX = "sudo apt-get install -y " + " ".join(XCB_LIBRARIES.values())


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def missing_xcb_libraries(
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
    loadable: Callable[[str], bool] | None = None,
) -> list[str]:
    """System libraries Qt's xcb plugin needs that cannot be loaded (empty when Qt will not use
    xcb: another QT_QPA_PLATFORM, no DISPLAY, or not Linux)."""
    env = os.environ if environ is None else environ
    if not (platform or sys.platform).startswith("linux"):
        return []
    if env.get("QT_QPA_PLATFORM", "xcb") not in ("", "xcb") or not env.get("DISPLAY"):
        return []
    can_load = loadable or _loadable
    return [lib for lib in XCB_LIBRARIES if not can_load(lib)]


def check_xcb(
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
    loadable: Callable[[str], bool] | None = None,
) -> int | None:
    """Print the one command that installs what is missing and return exit status 1, before
    Qt would abort with a misleading message; None when nothing is missing."""
    missing = missing_xcb_libraries(environ, platform, loadable)
    if not missing:
        return None
    print(
        f"workbench: the desktop app needs system libraries that are not installed "
        f"({', '.join(missing)}). Install them with:\n\n    {XCB_FIX}\n",
        file=sys.stderr,
    )
    return 1


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="workbench", description="Meta-Learning Workbench desktop app")
    p.add_argument(
        "--db",
        metavar="PATH|URL",
        help="run catalog: a SQLite file or postgresql+psycopg://user@host/db "
        "(default: $WORKBENCH_DB or ./experiments.db)",
    )
    return p.parse_known_args(argv)


class Shown:
    """The app's one window and the catalog it shows. File → Open catalog (the window's
    `catalogOpened`) replaces both: the old window saves its layout and stops, its catalog
    closes, a new window opens on the new catalog."""

    def __init__(self, window_type: Any, handler_type: Any) -> None:
        self._window_type, self._handler_type = window_type, handler_type
        self.window: Any = None
        self.catalog: Any = None
        self._handler: logging.Handler | None = None

    def open(self, catalog: Any) -> None:
        old = self.window
        if old is not None:
            old.save_settings()
        self.close()
        self.catalog = catalog
        self.window = self._window_type(catalog)
        self.window.catalogOpened.connect(self.open)
        self._handler = self._handler_type(self.window.log)
        logging.getLogger("workbench").addHandler(self._handler)
        if old is not None:
            old.close()
            old.deleteLater()
        self.window.show()

    def close(self) -> None:
        if self.window is not None:
            self.window.shutdown()
        if self._handler is not None:
            logging.getLogger("workbench").removeHandler(self._handler)
            self._handler = None
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = None


def main(argv: list[str] | None = None) -> int:
    args, qt_args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if QApplication.instance() is None and (rc := check_xcb()) is not None:
        return rc
    from workbench.catalog import Catalog
    from workbench.gui.catalog_dialog import open_error
    from workbench.gui.log_pane import QtLogHandler
    from workbench.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(["workbench", *qt_args])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationVersion(__version__)
    try:
        catalog = Catalog.open(args.db)
    except Exception as exc:
        print(f"workbench: cannot open the catalog: {open_error(exc)}", file=sys.stderr)
        return 2
    from workbench.gui.gc_guard import GuiThreadGC

    shown = Shown(MainWindow, QtLogHandler)
    shown.open(catalog)
    collector = GuiThreadGC(app)
    collector.start()

    # Ctrl+C in the terminal closes the window cleanly (the run ends cancelled)
    def on_sigint(*_: object) -> None:
        shown.window.confirm = lambda *_a: True
        shown.window.close()

    signal.signal(signal.SIGINT, on_sigint)
    pump = QTimer(interval=200)  # lets Python run its signal handlers while Qt's loop waits
    pump.timeout.connect(lambda: None)
    pump.start()
    try:
        rc = app.exec()
    finally:
        shown.close()
        collector.stop()
    return int(rc)


if __name__ == "__main__":
    raise SystemExit(main())
