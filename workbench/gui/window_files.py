"""The File and Help menus' actions and the window's settings: open a catalog (or a recent
one), export a figure, start a sweep, About, and the layout kept between sessions.

A part of `MainWindow` (`gui/main_window.py`), which mixes it in: the attributes it uses are
the window's."""

from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import QByteArray

from workbench.catalog import Catalog
from workbench.gui import help_menu
from workbench.gui import settings as qs

# a run in one of these states can still be paused or stopped ("starting": its thread or
# process is getting ready; "stopping": asked to stop, not stopped yet)
LIVE_STATES = ("queued", "starting", "running", "paused", "stopping")
SETTING_DETACHED = "run/detached_default"
LABELS_EVERY_S = 2.0  # the run list's step counts refresh this often


class FilesMixin:
    def open_catalog(self, dialog: Any = None) -> Catalog | None:
        """File → Open catalog: ask for a file or URL, open it (errors stay in the dialog) and
        hand it to the app, which replaces this window. Refused while a run trains here; runs in
        their own processes go on, in the catalog they were started in."""
        if self.queue.running:
            self.log.add(
                "warning", "stop the run training in this window before opening another catalog"
            )
            return None
        if dialog is None:
            from workbench.gui.catalog_dialog import OpenCatalogDialog

            dialog = OpenCatalogDialog(
                self.catalog.display if self.catalog.server else self.catalog.location, self
            )
        if not dialog.exec() or dialog.catalog is None:
            return None
        self.log.add("info", f"opened catalog {dialog.catalog.display}")
        self.catalogOpened.emit(dialog.catalog)
        return dialog.catalog

    def export_figure(self, dialog: Any = None) -> Any:
        """File → Export figure…: the live view's grid of plots, as on screen (smoothing and
        legend included), at the size and DPI the dialog asks for."""
        if dialog is None:
            from workbench.gui.figure_export import FigureDialog

            run = self.runs.get(self.live.current or -1, {})
            dialog = FigureDialog(self.live.view, str(run.get("name") or "training"), self)
        if dialog.exec() and dialog.written is not None:
            self.log.add("info", f"figure written to {dialog.written}")
        return dialog.written

    def _fill_recent(self) -> None:
        """File → Open recent: the catalogs opened before, newest first, this one left out."""
        self.recent_menu.clear()
        here = self._catalog_target()
        for target in [t for t in qs.recent_catalogs() if t != here]:
            self._action(self.recent_menu, target, lambda t=target: self.open_recent(t))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none yet)").setEnabled(False)

    def _catalog_target(self) -> str:
        """How this catalog is named in the recent list: the file, or the URL with no password."""
        return self.catalog.display if self.catalog.server else self.catalog.location

    def open_recent(self, target: str) -> Catalog | None:
        """Open a catalog of the recent list; one that cannot be opened now (moved, server down)
        is said in the log and the status bar, and this window stays on its catalog."""
        if self.queue.running:
            self.log.add(
                "warning", "stop the run training in this window before opening another catalog"
            )
            return None
        from workbench.gui.catalog_dialog import open_error

        try:
            if "://" not in target and not os.path.exists(target):  # moved: not made anew
                raise FileNotFoundError(f"{target} no longer exists")
            catalog = Catalog.open(target)
        except Exception as exc:
            self.log.add("error", f"cannot open {target}: {open_error(exc)}")
            self.statusBar().showMessage(f"cannot open {target}: {open_error(exc)}", 10_000)
            return None
        self.log.add("info", f"opened catalog {catalog.display}")
        self.catalogOpened.emit(catalog)
        return catalog

    def new_sweep(self, dialog: Any = None) -> Any:
        """Run setup → New sweep…: the form's configuration is the base; the sweep's driver
        starts as a process of its own and the Sweeps tab shows it. Returns the process."""
        if self.form.config is None:
            self.log.add("error", f"fix the run setup first: {self.form.error}")
            return None
        if dialog is None:
            from workbench.gui.sweep_dialog import SweepDialog

            dialog = SweepDialog(self.form.config.to_dict(), self)
        if not dialog.exec():
            return None
        from workbench.gui.sweep_dialog import start_sweep

        spec = dialog.spec_dict()
        proc = start_sweep(
            spec,
            self.catalog.location,
            dialog.executor.currentText(),
            self.catalog.checkpoint_root / "sweeps",
        )
        self.log.add("info", f"sweep {spec['name']!r} started (driver process {proc.pid})")
        self.tabs.setCurrentWidget(self.sweeps)
        return proc

    def about_text(self) -> str:
        return help_menu.about_text(self.catalog)

    def show_about(self) -> None:
        help_menu.show_about(self, self.catalog)

    def restore_settings(self) -> None:
        s = qs.settings()
        geo = s.value("window/geometry")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        state = s.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        split = s.value("window/train_split")
        if isinstance(split, QByteArray):
            self.train_split.restoreState(split)
        bsplit = s.value("window/browser_split")
        if isinstance(bsplit, QByteArray):
            self.browser.splitter.restoreState(bsplit)
        lsplit = s.value("window/live_split")
        if isinstance(lsplit, QByteArray):
            self.live.split.restoreState(lsplit)
        detached = s.value(SETTING_DETACHED, False)
        self.detached_default_action.setChecked(str(detached).lower() in ("true", "1"))
        last = qs.load_json("form/last_config")
        if isinstance(last, dict):
            try:
                self.form.set_config(last)
            except Exception as exc:
                self.log.add("error", f"last settings not restored: {exc}")

    def save_settings(self) -> None:
        s = qs.settings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/train_split", self.train_split.saveState())
        s.setValue("window/browser_split", self.browser.splitter.saveState())
        s.setValue("window/live_split", self.live.split.saveState())
        s.setValue(SETTING_DETACHED, self.detached_default)
        s.sync()
        qs.save_json("form/last_config", self.form.to_dict())
