"""File → Open catalog in the app: SQLite files and PostgreSQL URLs; a catalog that cannot be
opened is reported in the dialog, in the CLI's words, and the app stays on its catalog."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from test_catalog_postgres import ROOT, _bad_urls, _env
from test_gui_detached import make_window

from workbench.catalog import Catalog
from workbench.gui.app import Shown
from workbench.gui.catalog_dialog import OpenCatalogDialog
from workbench.gui.log_pane import QtLogHandler
from workbench.gui.main_window import MainWindow


class _Window(MainWindow):
    """The app's window with its questions answered yes (a test cannot click a message box)."""

    def __init__(self, catalog: Catalog) -> None:
        super().__init__(catalog, restore=False)
        self.confirm = lambda *_: True


def _open_through_dialog(win: MainWindow, target: str) -> Catalog | None:
    """What a user does: File → Open catalog, type `target`, press Open (the modal dialog's own
    event loop runs; it closes itself when the catalog opened)."""
    dialog = OpenCatalogDialog("", win)
    dialog.field.setText(target)
    QTimer.singleShot(0, dialog.accept)
    return win.open_catalog(dialog)


def _browser_names(win: MainWindow) -> set[str]:
    return {r.name for r in win.browser.model.rows}


def test_bad_urls_show_the_cli_line_in_the_dialog_and_the_app_stays(  # type: ignore[no-untyped-def]
    qtbot, pg_server, tmp_path: Path
) -> None:
    with Catalog.open(tmp_path / "home.db") as home:
        win = make_window(qtbot, home)
        try:
            for name, (url, phrase) in _bad_urls(pg_server).items():
                dialog = OpenCatalogDialog("", win)
                qtbot.addWidget(dialog)
                dialog.field.setText(url)
                dialog.accept()
                assert dialog.catalog is None and not dialog.result(), name
                message = dialog.error.text()
                assert dialog.error.isVisibleTo(dialog) and phrase in message, (name, message)
                assert "\n" not in message and "Traceback" not in message, (name, message)
            assert win.catalog is home and not home._closed  # nothing replaced the catalog
        finally:
            win.shutdown()


def test_the_app_refuses_a_bad_url_at_start_in_one_line(pg_server) -> None:  # type: ignore[no-untyped-def]
    url, phrase = _bad_urls(pg_server)["wrong password"]
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.gui", "--db", url],
        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and phrase in lines[0]
        and "wrong" not in lines[0].replace("wrong password", "")
    ), lines


def test_open_a_postgresql_catalog_and_watch_another_machine_add_a_run(  # type: ignore[no-untyped-def]
    qtbot, pg_url: str, tmp_path: Path
) -> None:
    with Catalog.open(pg_url) as other:
        other.create_run("{}", name="from-the-lab")
    shown = Shown(_Window, QtLogHandler)
    shown.open(Catalog.open(tmp_path / "home.db"))
    try:
        first = shown.window
        first.catalog.create_run("{}", name="at-home")
        first.browser.reload()
        assert _browser_names(first) == {"at-home"}
        opened = _open_through_dialog(first, pg_url)
        assert opened is not None and opened.server
        win = shown.window
        assert win is not first and win.catalog is opened and first.catalog._closed
        assert "at-home" not in _browser_names(win)
        assert opened.display in win.windowTitle()
        win.tabs.setCurrentIndex(1)  # the browser polls while it is shown
        qtbot.waitUntil(lambda: "from-the-lab" in _browser_names(win), timeout=60_000)
        # another process (another machine) adds a run: the change token makes the browser see it
        subprocess.run(
            [sys.executable, "-c",
             "import sys; from workbench.catalog import Catalog\n"
             "with Catalog.open(sys.argv[1]) as c: c.create_run('{}', name='second-machine')",
             pg_url],
            check=True, cwd=ROOT, env={**_env(), "HOSTNAME": "elsewhere"}, timeout=600,
        )  # fmt: skip
        qtbot.waitUntil(lambda: "second-machine" in _browser_names(win), timeout=60_000)
    finally:
        shown.close()


def test_open_a_new_sqlite_file_and_a_folder_is_refused(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shown = Shown(_Window, QtLogHandler)
    shown.open(Catalog.open(tmp_path / "a.db"))
    try:
        first = shown.window
        dialog = OpenCatalogDialog("", first)
        qtbot.addWidget(dialog)
        dialog.field.setText(str(tmp_path))
        dialog.accept()
        assert dialog.catalog is None and "folder" in dialog.error.text().lower()
        assert shown.window is first
        opened = _open_through_dialog(first, str(tmp_path / "sub" / "b.db"))
        assert opened is not None and opened.path == tmp_path / "sub" / "b.db"
        assert shown.window is not first and (tmp_path / "sub" / "b.db").exists()
        assert os.path.basename(str(opened.path)) in shown.window.windowTitle()
    finally:
        shown.close()


def test_file_open_recent_lists_the_catalogs_opened_before_and_reopens_one(  # type: ignore[no-untyped-def]
    qtbot, tmp_path: Path
) -> None:
    """Each window remembers its catalog; File → Open recent lists the others newest first and
    opens one; an entry that cannot be opened any more is said in the log, the window stays."""
    first, second, gone = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "gone" / "c.db"
    gone.parent.mkdir()
    for path in (gone, first):
        with Catalog.open(path) as cat:
            make_window(qtbot, cat).shutdown()
    gone.parent.joinpath("c.db").unlink()
    gone.parent.rmdir()  # the folder is gone: this catalog cannot be made again
    with Catalog.open(second) as cat:
        win = make_window(qtbot, cat)
        win._fill_recent()
        entries = [a.text() for a in win.recent_menu.actions()]
        assert entries == [str(first), str(gone)]
        opened: list[Catalog] = []
        win.catalogOpened.connect(opened.append)
        next(a for a in win.recent_menu.actions() if a.text() == str(first)).trigger()
        assert [c.location for c in opened] == [str(first)]
        opened[0].close()
        assert win.open_recent(str(gone)) is None
        assert any(f"cannot open {gone}" in m for m in win.log.errors())
        win.shutdown()
