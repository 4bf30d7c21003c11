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


def test_resume_evaluate_and_clone_say_why_a_run_is_not_ours(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A tracked run and a run whose plugin is gone: their curves show in the browser; Resume,
    Evaluate and Clone are off, their tooltips and the log saying why."""
    import workbench

    db = tmp_path / "c.db"
    for lr in (0.3, 0.1):  # two tracked runs, compared on their own config keys
        with workbench.track(name="mine", config={"lr": lr, "layers": 2}, db=db) as run:
            for step in range(1, 11):
                run.log(step, loss=lr / step)
    with Catalog.open(db) as catalog:
        gone = catalog.create_run('{"algorithm": {"name": "gone-algo"}}', name="plugin-run",
                                  algorithm="gone-algo", status="finished")  # fmt: skip
        win = make_window(qtbot, catalog)
        b = win.browser
        b.reload()
        for rid, phrase in ((run.run_id, "tracked from a script"), (gone, "not loaded here")):
            b.select_ids([rid])
            qtbot.waitUntil(lambda p=phrase: p in b.resume_button.toolTip(), timeout=HANG_MS)
            acts = b.action_bar
            assert not any(x.isEnabled() for x in (acts.resume_button, acts.eval_button,
                                                   acts.clone_button))  # fmt: skip
            assert phrase in acts.eval_button.toolTip() and phrase in acts.clone_button.toolTip()
            b.resume_selected()
            assert any(phrase in m for m in win.log.errors())
        b.select_ids([run.run_id - 1, run.run_id])
        qtbot.waitUntil(lambda: len(b._curve_items) == 2, timeout=HANG_MS)  # their curves
        ct = b.compare_table
        qtbot.waitUntil(lambda: ct.rowCount() > 0, timeout=HANG_MS)
        rows = [ct.verticalHeaderItem(r).text() for r in range(ct.rowCount())]
        assert "lr" in rows and "layers" not in rows  # the keys that differ, config unvalidated
        win.shutdown()
