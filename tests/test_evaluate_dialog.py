"""The Evaluate dialog, used as a user does: select a run in the browser, click Evaluate…,
change fields, run or cancel; the stored evaluation, its histogram, and bad input shown at
its field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from gui_fixtures import make_window  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from test_eval_protocol import tiny_run  # noqa: E402

from workbench.catalog import Catalog  # noqa: E402
from workbench.exports import format_score  # noqa: E402
from workbench.gui.browser_model import ID_ROLE  # noqa: E402
from workbench.gui.evaluate_dialog import EvaluateDialog  # noqa: E402

HANG_MS = 600_000  # only stops a hung test: waits end as soon as their condition holds


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One catalog with a FOMAML and a ProtoNet run on glyphs (5-way 1-shot, a few steps, no
    automatic test), made once and copied for each test (its checkpoint paths are relative)."""
    folder = tmp_path_factory.mktemp("trained")
    with Catalog.open(folder / "e.db") as cat:
        tiny_run(cat, "fomaml", "glyphs", test_on_finish=False)
        tiny_run(cat, "protonet", "glyphs", test_on_finish=False)
    return folder


@pytest.fixture
def cat(trained: Path, tmp_path: Path):
    shutil.copytree(trained, tmp_path / "copy")
    c = Catalog.open(tmp_path / "copy" / "e.db")
    yield c
    c.close()


@pytest.fixture
def window(qtbot, cat: Catalog):  # type: ignore[no-untyped-def]
    win = make_window(qtbot, cat)
    yield win
    win.shutdown()


def click(qtbot, widget) -> None:  # type: ignore[no-untyped-def]
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)


def type_into(qtbot, editor, text: str) -> None:  # type: ignore[no-untyped-def]
    editor.selectAll()
    qtbot.keyClicks(editor, text) if text else editor.clear()


def open_dialog(qtbot, window, run_name: str) -> EvaluateDialog:  # type: ignore[no-untyped-def]
    """Select the run by its row in the runs table and click Evaluate…"""
    b = window.browser
    b.reload()
    run = next(r for r in b.catalog.list_runs() if r.name.startswith(run_name))
    ids = [b.proxy.index(r, 0).data(ID_ROLE) for r in range(b.proxy.rowCount())]
    b.table.selectRow(ids.index(run.id))  # what a click on its row does
    assert [r.id for r in b.selected_records()] == [run.id]
    click(qtbot, b.eval_button)
    (dlg,) = [w for w in QApplication.topLevelWidgets()
              if isinstance(w, EvaluateDialog) and w.isVisible()]  # fmt: skip
    assert dlg.run.id == run.id
    return dlg


def test_evaluate_with_other_shots_stores_the_protocol_and_its_episodes(  # type: ignore[no-untyped-def]
    qtbot, window, cat: Catalog
) -> None:
    dlg = open_dialog(qtbot, window, "fomaml")
    # a gradient-based algorithm: inner steps and its test-time step size are offered
    assert dlg.fields["inner_steps"].isVisible() and dlg.fields["inner_lr"].isVisible()
    # no validation ran, so no best: the final checkpoint comes first, then each stored step
    assert dlg.editor("checkpoint").currentText() == "final (step 3)"
    type_into(qtbot, dlg.editor("shots"), "2")
    type_into(qtbot, dlg.editor("episodes"), "20")
    click(qtbot, dlg.evaluate_button)
    assert dlg.running and dlg.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not dlg.running, timeout=HANG_MS)
    (ev,) = cat.evaluations(dlg.run.id)
    assert ev.protocol["shots"] == 2 and ev.protocol["ways"] == 5 and ev.episodes == 20
    assert len(ev.episode_scores) == 20
    assert int(dlg.histogram.counts.sum()) == 20
    assert dlg.progress.value() == dlg.progress.maximum() == 20
    assert format_score(ev.mean, ev.ci95, "accuracy") in dlg.status.text()  # one score format
    # the browser's Evaluations tab: the row, and the same histogram below it
    view = window.browser.tabs.evaluation_view
    assert view.table.rowCount() == 1 and int(view.histogram.counts.sum()) == 20
    assert "2-shot" in view.caption.text()
    dlg.close()


def test_cancel_mid_way_stores_nothing_and_the_app_stays_up(qtbot, window, cat: Catalog) -> None:  # type: ignore[no-untyped-def]
    dlg = open_dialog(qtbot, window, "protonet")
    type_into(qtbot, dlg.editor("episodes"), "100000")
    click(qtbot, dlg.evaluate_button)
    qtbot.waitUntil(lambda: dlg.progress.value() > 0, timeout=HANG_MS)
    click(qtbot, dlg.cancel_button)
    qtbot.waitUntil(lambda: not dlg.running, timeout=HANG_MS)
    assert cat.evaluations(dlg.run.id) == []
    assert "nothing was stored" in dlg.status.text()
    assert dlg.progress.value() < dlg.progress.maximum()
    assert dlg.evaluate_button.isEnabled() and not dlg.cancel_button.isEnabled()
    assert window.isVisible() and any("cancelled" in m for _, m in window.log.entries)
    # closing the dialog mid-way cancels too: nothing stored, the window still up
    click(qtbot, dlg.evaluate_button)
    qtbot.waitUntil(lambda: dlg.progress.value() > 0, timeout=HANG_MS)
    dlg.close()
    qtbot.waitUntil(lambda: not dlg.isVisible() if _alive(dlg) else True, timeout=HANG_MS)
    assert cat.evaluations(window.browser.selected_records()[0].id) == []
    assert window.isVisible()


def _alive(widget) -> bool:  # type: ignore[no-untyped-def]
    from shiboken6 import isValid

    return isValid(widget)


def test_bad_input_is_shown_at_its_field(qtbot, window, cat: Catalog) -> None:  # type: ignore[no-untyped-def]
    dlg = open_dialog(qtbot, window, "fomaml")
    for key, text, words in [
        ("shots", "0", "0 is too small: at least 1"),
        ("ways", "3", "learns a 5-way output layer"),  # the model's head has 5 outputs
        ("queries", "30", "only 20"),  # glyphs' classes: 1 shot + 30 queries is too many
        ("inner_lr", "abc", "'abc' is not a number"),
        ("inner_lr", "0", "greater than 0"),
    ]:
        before = {"ways": "5", "shots": "1", "queries": "15", "inner_lr": ""}
        for k, v in before.items():
            type_into(qtbot, dlg.editor(k), v)
        type_into(qtbot, dlg.editor(key), text)
        click(qtbot, dlg.evaluate_button)
        assert not dlg.running
        message = dlg.fields[key].message
        assert message.isVisible() and words in message.text(), (key, message.text())
        others = [f for k, f in dlg.fields.items() if k != key]
        assert not any(f.message.isVisible() for f in others)
    assert cat.evaluations(dlg.run.id) == []
    dlg.close()
    # ProtoNet adapts without steps or a step size: neither field is offered
    proto = open_dialog(qtbot, window, "protonet")
    assert not proto.fields["inner_steps"].isVisible() and "inner_lr" not in proto.fields
    type_into(qtbot, proto.editor("ways"), "3")  # no head: any ways the split has
    assert proto.options() is not None
    proto.close()


def test_an_evaluation_without_episode_scores_shows_without_a_histogram(  # type: ignore[no-untyped-def]
    qtbot, window, cat: Catalog
) -> None:
    run = next(r for r in cat.list_runs() if r.name.startswith("protonet"))
    cat.add_evaluation(run.id, "test", "accuracy", 0.8, 0.02, 600, protocol={"ways": 5})
    window.browser.reload()
    window.browser.select_ids([run.id])
    view = window.browser.tabs.evaluation_view
    assert view.table.rowCount() == 1 and "80.00 ± 2.00 %" in view.caption.text()
    assert view.histogram.counts.sum() == 0
    assert "no per-episode scores" in view.histogram.getPlotItem().titleLabel.text
    # a newer one with its scores is shown first; the older one picked stays picked on refresh
    cat.add_evaluation(run.id, "test", "accuracy", 0.5, 0.49, 2, episode_scores=[0.0, 1.0])
    window.browser.show_details()
    assert view.table.rowCount() == 2 and int(view.histogram.counts.sum()) == 2
    view.table.selectRow(0)
    window.browser.show_details(keep_items=True)  # a poll while runs train
    assert view.selected().id == cat.evaluations(run.id)[0].id
    assert view.histogram.counts.sum() == 0
