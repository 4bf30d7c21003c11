"""The browser's Curves tab: a grid of panels (loss, query score, validation, learning rate)
for one run or many overlaid, the live view's smoothing, log y, x by step or by seconds of
training, a hint where a run recorded nothing, and the choices remembered per catalog."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from workbench.catalog import Catalog  # noqa: E402
from workbench.gui.browser import ExperimentsBrowser  # noqa: E402

STEPS = np.arange(1, 41)


def add_run(
    cat: Catalog, seed: int, val: bool = True, score: str = "accuracy", wall0: float = 1e9
) -> int:
    """A finished run of 40 steps (loss, score, meta_lr; validation every 10 with a CI)."""
    cfg = {
        "algorithm": {"name": "maml", "inner_lr": 0.4},
        "dataset": {"name": "omniglot"},
        "seed": seed,
    }
    rid = cat.create_run(json.dumps(cfg), name=f"maml-s{seed}", algorithm="maml",
                         dataset="omniglot", seed=seed, status="finished")  # fmt: skip
    rng = np.random.default_rng(seed)
    pts = []
    for s in STEPS.tolist():
        w = wall0 + 0.5 * (s - 1)
        pts += [(s, "loss", float(2 / s + 0.1 * rng.random()), w),
                (s, score, float(1 - 1 / s), w), (s, "meta_lr", 1e-3 * (0.5 if s > 20 else 1), w)]  # fmt: skip
        if val and s % 10 == 0:
            pts += [(s, f"val_{score}", 0.5 + s / 100, w), (s, f"val_{score}_ci95", 0.02, w)]
    cat.add_metrics(rid, pts)
    return rid


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog.open(tmp_path / "c.db") as c:
        yield c


def browser(qtbot, cat: Catalog, ids: list[int]) -> ExperimentsBrowser:  # type: ignore[no-untyped-def]
    """The Experiments tab with these runs selected in its table (its Curves tab shown)."""
    b = ExperimentsBrowser(cat)
    qtbot.addWidget(b)
    b.resize(1100, 800)
    b.show()
    b.reload()
    b.select_ids(ids)
    qtbot.waitUntil(lambda: not b._details_timer.isActive())  # the selection's own refresh
    assert b.tabs.currentWidget() is b.tabs.curves
    return b


def placed(tab) -> list[str]:  # type: ignore[no-untyped-def]
    """The titles of the panels in the grid, in order."""
    items = tab.curve_plot.ci.items
    return [p.plot.titleLabel.text for p in tab.panels.values() if p.plot in items]


def drawn(tab, key: str, i: int = 0) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Line i of a panel as drawn (whole view: no clipping, far under the point budget)."""
    x, y = tab.panels[key].shown_lines()[i]
    return x, y


def test_one_run_fills_four_panels_with_the_catalogs_points(qtbot, cat: Catalog) -> None:  # type: ignore[no-untyped-def]
    rid = add_run(cat, 1)
    tab = browser(qtbot, cat, [rid]).tabs.curves
    assert placed(tab) == ["Meta-train loss", "Query accuracy",
                           "Validation accuracy ± 95% CI", "Meta learning rate"]  # fmt: skip
    for key, name in (("val", "val_accuracy"), ("lr", "meta_lr")):  # drawn unsmoothed
        steps, values, _ = cat.metrics(rid, name)
        x, y = drawn(tab, key)
        assert np.array_equal(x, steps) and np.array_equal(y, values), key
    # smoothed panels: the raw points are the faint curve behind the smoothed one
    for key, name in (("loss", "loss"), ("score", "accuracy")):
        steps, values, _ = cat.metrics(rid, name)
        raw = tab.panels[key].raw.lines[0].levels[0]
        assert np.array_equal(raw[0], steps) and np.array_equal(raw[1], values), key
        item = tab.panels[key].curves.items[0]  # what is on screen
        assert np.array_equal(item.getData()[0], steps)
    assert [label.text for _, label in tab.legend.items] == [f"#{rid} maml-s1"]


def test_three_runs_overlay_three_curves_per_panel_and_group_to_a_mean(qtbot, cat: Catalog) -> None:  # type: ignore[no-untyped-def]
    ids = [add_run(cat, s) for s in (1, 2, 3)]
    tab = browser(qtbot, cat, ids).tabs.curves
    for key in ("loss", "score", "val", "lr"):
        lines = tab.panels[key].shown_lines()
        assert len(lines) == 3 and all(len(x) for x, _ in lines), key
        pens = {i.opts["pen"].color().name() for i in tab.panels[key].curves.items}
        assert len(pens) == 3, key  # one colour per run
    assert sorted(label.text for _, label in tab.legend.items) == [
        f"#{i} maml-s{s}" for i, s in zip(ids, (1, 2, 3), strict=True)
    ]
    tab.group_check.setChecked(True)  # the three seeds of one config: their mean ± std
    assert [label.text for _, label in tab.legend.items] == ["maml/omniglot mean of 3 seeds"]
    assert len(tab.panels["loss"].shown_lines()) == 1 and tab.panels["loss"].bands


def test_smoothing_changes_the_drawn_curve_not_the_data(qtbot, cat: Catalog) -> None:  # type: ignore[no-untyped-def]
    rid = add_run(cat, 1)
    tab = browser(qtbot, cat, [rid]).tabs.curves
    _, values, _ = cat.metrics(rid, "loss")
    at_default = drawn(tab, "loss")[1].copy()
    assert not np.allclose(at_default, values)  # smoothed (0.9, as the live view starts)
    with qtbot.waitSignal(tab.redrawn):
        tab.smooth_slider.setValue(0)
    assert np.array_equal(drawn(tab, "loss")[1], values)
    assert tab.panels["loss"].raw.lines == []  # no faint copy behind an unsmoothed curve
    with qtbot.waitSignal(tab.redrawn):
        tab.smooth_slider.setValue(50)
    half = drawn(tab, "loss")[1]
    assert not np.allclose(half, values) and not np.allclose(half, at_default)
    assert tab.smooth_label.text() == "0.50"
    assert np.array_equal(cat.metrics(rid, "loss")[1], values)  # the stored points are as they were
    assert np.array_equal(tab.runs[0].series["loss"].y(False), values)


def test_log_scale_and_wall_time_and_memory_per_catalog(qtbot, cat: Catalog) -> None:  # type: ignore[no-untyped-def]
    rid = add_run(cat, 1)
    b = browser(qtbot, cat, [rid])
    tab = b.tabs.curves
    tab.smooth_slider.setValue(0)
    qtbot.waitUntil(lambda: tab.alpha == 0.0)
    _, loss, _ = cat.metrics(rid, "loss")
    tab.log_check.setChecked(True)
    for key in ("loss", "score", "val"):
        assert tab.panels[key].plot.getAxis("left").logMode, key
    assert not tab.panels["lr"].plot.getAxis("left").logMode  # a schedule, linear from 0
    assert np.allclose(drawn(tab, "loss")[1], np.log10(loss))  # pyqtgraph's log axis reads log10
    tab.x_combo.setCurrentIndex(tab.x_combo.findText("Wall time (s)"))
    x, _ = drawn(tab, "loss")
    assert np.allclose(x, 0.5 * (STEPS - 1))  # seconds since the run's first point
    assert tab.panels["loss"].plot.getAxis("bottom").labelText == "wall time (s)"
    next(a for a in tab.panels_button.menu().actions() if a.text() == "Learning rate").trigger()
    assert "Meta learning rate" not in placed(tab) and len(placed(tab)) == 3
    b.close()
    # the same catalog again: the choices are back
    tab2 = browser(qtbot, cat, [rid]).tabs.curves
    assert tab2.log_check.isChecked() and tab2.smooth_slider.value() == 0
    assert tab2.x_combo.currentData() == "wall" and len(placed(tab2)) == 3


def test_wall_time_leaves_out_the_gap_before_a_resume(qtbot, cat: Catalog) -> None:  # type: ignore[no-untyped-def]
    cfg = json.dumps({"algorithm": {"name": "maml"}, "dataset": {"name": "sinusoid"}})
    rid = cat.create_run(cfg, name="resumed", algorithm="maml", dataset="sinusoid")
    cat.start_run(rid)
    t0 = time.time() - 5000  # the first attempt, long ago: a point per second
    cat.add_metrics(rid, [(s, "loss", 1.0 / s, t0 + s) for s in range(1, 11)])
    cat.start_run(rid, start_step=5)  # resumed from step 5, more than an hour later
    t1 = time.time() + 1
    cat.add_metrics(rid, [(s, "loss", 1.0 / s, t1 + s) for s in range(6, 11)])
    tab = browser(qtbot, cat, [rid]).tabs.curves
    tab.x_combo.setCurrentIndex(tab.x_combo.findData("wall"))
    x, _ = drawn(tab, "loss")
    assert len(x) == 10 and np.all(np.diff(x) > 0)
    assert x[0] == 0.0 and x[4] == 4.0  # steps 1..5: the first attempt, from its first point
    assert x[5] - x[4] < 60  # not the hour between the attempts


def test_a_run_without_validation_leaves_that_panel_empty_with_a_hint(qtbot, cat: Catalog) -> None:  # type: ignore[no-untyped-def]
    rid = add_run(cat, 1, val=False, score="mse")
    tab = browser(qtbot, cat, [rid]).tabs.curves
    val = tab.panels["val"]
    assert not any(len(x) for x, _ in val.shown_lines())
    assert val.hint.isVisible() and "val_mse" in val.hint.textItem.toPlainText()
    assert val.plot.titleLabel.text == "Validation MSE ± 95% CI"
    assert not tab.panels["loss"].hint.isVisible() and len(drawn(tab, "loss")[0]) == len(STEPS)
