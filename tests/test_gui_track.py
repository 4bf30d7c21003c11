"""A tracked script (`workbench.track`) in the app: followed live like any run of another
process, its curves drawn from the catalog."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from test_gui_detached import HANG_MS, make_window, state  # noqa: E402
from test_track import ids, script  # noqa: E402

from workbench.catalog import Catalog  # noqa: E402


def test_a_tracked_script_appears_live_with_its_curves(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "c.db"
    proc = script(db, "--steps", "100000", "--sleep", "0.002")
    try:
        qtbot.waitUntil(lambda: bool(ids(db)), timeout=HANG_MS)
        (run_id,) = ids(db)
        with Catalog.open(db) as catalog:
            win = make_window(qtbot, catalog)
            qtbot.waitUntil(lambda: run_id in win.runs, timeout=HANG_MS)
            assert win.runs[run_id]["detached"]
            qtbot.waitUntil(lambda: win.live.point_count("loss", run_id) >= 50, timeout=HANG_MS)
            proc.send_signal(signal.SIGINT)
            qtbot.waitUntil(lambda: state(win, run_id) == "cancelled", timeout=HANG_MS)
            assert win.live.point_count("loss", run_id) == catalog.get_run(run_id).step
            win.shutdown()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
