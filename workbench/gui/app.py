"""Entry point of the desktop app: `workbench` (no arguments) or `python -m workbench.gui`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from workbench import __version__
from workbench.gui.settings import APPLICATION, ORGANIZATION


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="workbench", description="Meta-Learning Workbench desktop app")
    p.add_argument(
        "--db", metavar="PATH", help="run catalog (default: $WORKBENCH_DB or ./experiments.db)"
    )
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, qt_args = parse_args(list(sys.argv[1:] if argv is None else argv))
    from workbench.catalog import Catalog, default_db_path
    from workbench.gui.log_pane import QtLogHandler
    from workbench.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(["workbench", *qt_args])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationVersion(__version__)
    try:
        catalog = Catalog.open(args.db or default_db_path())
    except Exception as exc:
        print(f"workbench: cannot open the catalog: {exc}", file=sys.stderr)
        return 2
    window = MainWindow(catalog)
    handler = QtLogHandler(window.log)
    logging.getLogger("workbench").addHandler(handler)

    # Ctrl+C in the terminal closes the window cleanly (the run ends cancelled)
    def on_sigint(*_: object) -> None:
        window.confirm = lambda *_a: True
        window.close()

    signal.signal(signal.SIGINT, on_sigint)
    pump = QTimer(interval=200)  # lets Python run its signal handlers while Qt's loop waits
    pump.timeout.connect(lambda: None)
    pump.start()
    window.show()
    try:
        rc = app.exec()
    finally:
        window.shutdown()
        logging.getLogger("workbench").removeHandler(handler)
        catalog.close()
    return int(rc)


if __name__ == "__main__":
    raise SystemExit(main())
