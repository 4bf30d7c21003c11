"""The app's sweep view (issue 15): sweeps and trials from the catalog, the parallel
coordinates, "Use best configuration" filling the run form, and a sweep started from the CLI
appearing live. Most tests write the catalog rows directly (no training); one runs a tiny
sweep through the CLI in a subprocess."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QPushButton, QTabWidget  # noqa: E402

from workbench.catalog import Catalog  # noqa: E402
from workbench.catalog.store import new_owner  # noqa: E402
from workbench.gui.main_window import MainWindow  # noqa: E402
from workbench.gui.sweep_view import SweepView, param_axes  # noqa: E402
from workbench.sweeps.spec import base_config, parse_spec  # noqa: E402

HANG_MS = 600_000  # only stops a hung test; no test depends on the machine's speed
LRS = [0.003, 0.01, 0.03, 0.1]
OBJECTIVES = {0: 0.9, 1: 0.2, 2: 0.5}  # trial number -> val_mse (3 is still running)


def make_sweep(cat: Catalog, steps: int = 50) -> tuple[int, list[int]]:
    """A grid over 4 inner learning rates: trials 0-2 finished with a val_mse curve each,
    trial 3 running. Returns the sweep id and the trial ids."""
    spec = parse_spec(
        {
            "name": "lr",
            "parameters": [{"key": "algorithm.inner_lr", "values": LRS}],
            "base": {"algorithm": {"name": "maml"}, "dataset": {"name": "sinusoid"}, "steps": 50},
        }
    )
    stored = {
        "spec": spec.model_dump(mode="json", by_alias=True, exclude={"base", "preset", "base_run"}),
        "base": base_config(spec),
    }
    sid = cat.sweeps.create(
        name="lr", spec_json=json.dumps(stored), method="grid", metric="val_mse",
        maximize=False, executor="local", owner=new_owner(),
    )  # fmt: skip
    ids = []
    for n, lr in enumerate(LRS):
        tid = cat.sweeps.add_trial(sid, n, 0, {"algorithm.inner_lr": lr})
        rid = cat.create_run("{}", name=f"lr-{n}", algorithm="maml", dataset="sinusoid", seed=0)
        cat.sweeps.update_trial(tid, run_id=rid, status="running")
        if n in OBJECTIVES:
            finish(cat, tid, rid, OBJECTIVES[n], steps)
        ids.append(tid)
    return sid, ids


def finish(cat: Catalog, tid: int, rid: int, objective: float, steps: int = 50) -> None:
    points = [(s, "val_mse", objective + 1.0 / s, float(s)) for s in range(10, steps + 1, 10)]
    cat.add_metrics(rid, points)
    cat.sweeps.update_trial(tid, status="finished", objective=objective)


def tab(win: MainWindow, text: str) -> int:
    tabs = win.findChild(QTabWidget)
    return next(i for i in range(tabs.count()) if tabs.tabText(i) == text)


def button(widget, text: str) -> QPushButton:
    return next(b for b in widget.findChildren(QPushButton) if b.text() == text)


def test_the_sweeps_tab_shows_trials_best_first_and_a_polyline_per_trial(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    sid, _ = make_sweep(catalog)
    window.tabs.setCurrentIndex(tab(window, "Sweeps"))
    view = window.tabs.currentWidget()
    assert isinstance(view, SweepView)
    qtbot.waitUntil(lambda: view.trial_model.rowCount() == 4, timeout=HANG_MS)

    sweeps = view.sweep_table.model()
    assert sweeps.rowCount() == 1
    row = [sweeps.data(sweeps.index(0, c)) for c in range(sweeps.columnCount())]
    assert row[:5] == [str(sid), "lr", "grid", "running", "3/4"]
    assert row[5] == "val_mse (min)" and row[6] == "0.2"

    trials = view.trial_table.model()
    header = [trials.headerData(c, Qt.Orientation.Horizontal) for c in range(trials.columnCount())]
    assert header == ["#", "Seed", "Run", "Status", "Objective", "inner_lr"]
    col = {h: c for c, h in enumerate(header)}
    shown = [
        (trials.data(trials.index(r, col["#"])), trials.data(trials.index(r, col["Objective"])))
        for r in range(4)
    ]
    assert shown == [("1", "0.2"), ("2", "0.5"), ("0", "0.9"), ("3", "")]  # best first
    assert trials.data(trials.index(0, col["inner_lr"])) == "0.01"

    assert len(view.parallel_curves) == 4  # one per trial, the running one faint
    # each polyline ends on the objective axis: the best at 0, the worst at 1, none for trial 3
    ends = sorted(float(c.yData[-1]) for c in view.parallel_curves if c.yData[-1] == c.yData[-1])
    assert ends == pytest.approx([0.0, 0.3 / 0.7, 1.0])
    assert len(view.topk_curves) == 3
    assert view.best_line.yData.tolist() == [0.9, 0.2, 0.2]  # finish order 0, 1, 2
    assert view.scatter_item.data.size == 3


def test_a_trial_finishing_appears_after_a_poll(qtbot, window: MainWindow, catalog: Catalog):
    sid, ids = make_sweep(catalog)
    window.tabs.setCurrentIndex(tab(window, "Sweeps"))
    view = window.sweeps
    qtbot.waitUntil(lambda: view.trial_model.rowCount() == 4, timeout=HANG_MS)
    assert view.poll_timer.isActive()

    run_id = catalog.sweeps.trials(sid)[3].run_id
    finish(catalog, ids[3], run_id, 0.05)  # written as another process would: the view polls
    qtbot.waitUntil(lambda: view.trial_model.rows[0].number == 3, timeout=HANG_MS)
    assert view.sweep_model.rows[0].done == 4
    assert len(view.parallel_curves) == 4 and len(view.topk_curves) == 4
    assert view.best_line.yData.tolist()[-1] == 0.05

    window.tabs.setCurrentIndex(tab(window, "Training"))  # hidden: no polling at all
    assert not view.poll_timer.isActive()


def test_use_best_configuration_fills_the_run_form(qtbot, window: MainWindow, catalog: Catalog):
    make_sweep(catalog)
    window.tabs.setCurrentIndex(tab(window, "Sweeps"))
    view = window.sweeps
    use = button(view, "Use best configuration")
    qtbot.waitUntil(use.isEnabled, timeout=HANG_MS)
    with qtbot.waitSignal(view.useConfig, timeout=HANG_MS) as sig:
        qtbot.mouseClick(use, Qt.MouseButton.LeftButton)
    config = sig.args[0]
    assert config["algorithm"]["inner_lr"] == 0.01 and config["seed"] == 0
    assert config["steps"] == 50 and config["dataset"]["name"] == "sinusoid"
    assert window.form.valid
    assert window.form.config.algorithm.inner_lr == 0.01
    assert window.form.config.steps == 50


def test_log_and_categorical_axes_are_normalised_to_the_unit_interval() -> None:
    from workbench.catalog.sweep_store import TrialRecord

    spec = {
        "spec": {
            "parameters": [
                {"key": "algorithm.inner_lr", "loguniform": [0.001, 1.0]},
                {"key": "algorithm.name", "values": ["maml", "fomaml", "protonet"]},
            ]
        }
    }

    def trial(n: int, lr: float, name: str) -> TrialRecord:
        params = {"algorithm.inner_lr": lr, "algorithm.name": name}
        return TrialRecord(n, 1, n, 0, params, None, "finished", 1.0, None, None, 0.0, 0.0)

    lr, name = param_axes(spec, [trial(0, 0.01, "fomaml"), trial(1, 0.1, "protonet")])
    assert (lr.kind, name.kind) == ("log", "category")
    assert lr.norm(0.001) == 0.0 and lr.norm(1.0) == 1.0
    assert lr.norm(0.031622776601683794) == pytest.approx(0.5)
    assert [name.norm(v) for v in ("maml", "fomaml", "protonet")] == [0.0, 0.5, 1.0]
    assert [label for _, label in name.ticks()] == ["maml", "fomaml", "protonet"]


def test_a_sweep_started_from_the_cli_appears_live(qtbot, catalog: Catalog, tmp_path: Path):
    from test_sweeps import spec, sweep

    view = SweepView(catalog)
    qtbot.addWidget(view)
    view.resize(1400, 800)
    view.show()
    path = spec(tmp_path, 40, parameters=[{"key": "algorithm.inner_lr", "values": [0.01, 0.1]}])
    data = json.loads(path.read_text())
    data["base"]["val_every"] = 20
    path.write_text(json.dumps(data))
    proc = sweep(catalog.path, str(path))
    try:
        qtbot.waitUntil(lambda: view.sweep_model.rowCount() == 1, timeout=HANG_MS)
        qtbot.waitUntil(lambda: view.trial_model.rowCount() >= 1, timeout=HANG_MS)
        assert view.trial_model.rows[0].status in ("starting", "running", "finished")
        qtbot.waitUntil(
            lambda: (
                view.sweep_model.rows[0].status == "finished"
                and view.trial_model.rowCount() == 2
                and all(t.status == "finished" for t in view.trial_model.rows)
            ),
            timeout=HANG_MS,
        )
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert len(view.parallel_curves) == 2 and len(view.topk_curves) == 2
    assert all(t.objective is not None for t in view.trial_model.rows)
    # a poll with nothing new is one tiny query: measure it (reported, not asserted)
    t0 = time.perf_counter()
    view.poll()
    print(
        f"idle poll {1000 * (time.perf_counter() - t0):.2f} ms; last redraw {view.last_redraw_ms:.1f} ms"
    )
    view.shutdown()
