"""Qt fixtures: offscreen platform, QSettings in a temporary folder, and a check that no test
leaves a QThread running (the idea of napari's conftest)."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt

import gc

import pytest


@pytest.fixture(autouse=True, scope="session")
def _gc_on_the_main_thread_only() -> object:
    """As the app does (`gui/gc_guard.py`): no automatic cyclic collection, which could run in
    a follower or worker thread and destroy a Qt object there (a deadlock with the GUI
    thread); each test's garbage is collected on the main thread after it."""
    gc.disable()
    yield
    gc.enable()


@pytest.fixture(autouse=True)
def _collect_after_each_test() -> object:
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _qt_settings_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """QSettings (INI format, user scope) go to a fresh temporary folder for every test."""
    from PySide6.QtCore import QSettings

    QSettings.setPath(
        QSettings.Format.IniFormat,
        QSettings.Scope.UserScope,
        str(tmp_path_factory.mktemp("qsettings")),
    )


@pytest.fixture(autouse=True)
def _no_running_qthreads(monkeypatch: pytest.MonkeyPatch) -> object:
    """Fail a test that leaves a QThread it started still running."""
    from PySide6.QtCore import QThread

    started: list[QThread] = []
    original = QThread.start

    def start(self: QThread, *args: object) -> None:
        started.append(self)
        original(self, *args)

    monkeypatch.setattr(QThread, "start", start)
    yield
    leaked = []
    for t in started:
        try:
            if t.isRunning() and not t.wait(500):
                leaked.append(t.objectName() or repr(t))
        except RuntimeError:  # the C++ object is gone: it was finished and deleted
            pass
    if leaked:
        pytest.fail(f"QThread(s) still running after the test: {', '.join(leaked)}")


# the main window most GUI tests drive (a module's own `catalog` or `window` fixture overrides)
@pytest.fixture
def catalog(tmp_path):  # type: ignore[no-untyped-def]
    from workbench.catalog import Catalog

    cat = Catalog.open(tmp_path / "runs.db")
    yield cat
    cat.close()


@pytest.fixture
def window(qtbot, catalog):  # type: ignore[no-untyped-def]
    from gui_fixtures import make_window

    win = make_window(qtbot, catalog)
    yield win
    win.shutdown()


# PostgreSQL: one server for the session (`pg_server`) and a fresh database per test (`pg_url`)
# the real Omniglot archives, when beside the project (`omniglot_cache` skips without them)
from omniglot_fixture import omniglot_cache  # noqa: E402, F401
from postgres_fixture import pg_server, pg_url  # noqa: E402, F401
