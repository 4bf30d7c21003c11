"""The desktop app, driven through its widgets with real (short) sinusoid MAML training."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from workbench.catalog import Catalog  # noqa: E402
from workbench.core.config import RunConfig  # noqa: E402
from workbench.gui.browser_model import COL  # noqa: E402
from workbench.gui.main_window import MainWindow  # noqa: E402

SMALL = {
    "steps": 60, "val_every": 20, "val_episodes": 10, "test_episodes": 10, "ckpt_every": 20,
    "train.meta_batch": 4, "eval.meta_batch": 10, "eval.inner_steps": 3,
}  # fmt: skip
LONG = {**SMALL, "steps": 1_000_000, "val_every": 0, "ckpt_every": 0}
# waits end as soon as their condition holds; the limit only stops a hung test, so it is large
# enough that a busy machine never reaches it (no test may depend on how fast the machine is)
HANG_MS = 600_000


def fill(win: MainWindow, values: dict) -> None:
    for key, value in values.items():
        win.form.set_field(key, value)
    assert win.form.valid, win.form.error_label.text()


def wait_idle(qtbot, win: MainWindow, timeout: int = HANG_MS) -> None:
    qtbot.waitUntil(lambda: not win.queue.running and not win.queue.pending, timeout=timeout)


def wait_step(qtbot, win: MainWindow, step: int, timeout: int = HANG_MS) -> None:
    qtbot.waitUntil(
        lambda: win.queue.worker is not None and win.queue.worker.trainer.step >= step,
        timeout=timeout,
    )


def test_start_trains_in_a_thread_and_the_run_appears_finished(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    fill(window, SMALL)
    assert (
        window.form.config.algorithm.name == "maml"
        and window.form.config.dataset.name == "sinusoid"
    )
    with qtbot.waitSignal(window.queue.jobStarted, timeout=HANG_MS):
        qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    assert window.queue.running and window.start_button.text() == "Queue"
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.live.point_count("loss") == 60, timeout=HANG_MS)
    assert window.live.point_count("val") == 3
    x, y = window.live.curves["loss"].getData()
    assert x is not None and len(x) > 0
    assert window.adapt.last is not None and window.adapt.last["kind"] == "regression"
    assert set(window.adapt.last["preds"]) == {0, 1, 10}
    (run,) = catalog.list_runs()
    assert run.status == "finished" and run.step == 60
    assert "val_mse" in run.summary and "test_mse" in run.summary
    window.browser.poll()
    model = window.browser.model
    assert model.rowCount() == 1
    assert model.data(model.index(0, 1)) == "finished"
    assert model.data(model.index(0, COL["Test ± CI"]))  # test MSE ± CI
    assert any("finished at step 60" in m for _, m in window.log.entries)
    # a sinusoid task is too small to share: one torch thread, shown with the device
    window.update_status_bar(force=True)
    assert window.sb_device.text() == "cpu, 1 thread"
    assert any("training on cpu, 1 thread" in m for _, m in window.log.entries)


def test_invalid_input_disables_start_and_writes_nothing(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    window.form.set_field("algorithm.inner_lr", -1)
    assert not window.start_button.isEnabled()
    assert "algorithm.inner_lr" in window.reason_label.text()
    assert window.form.editors["algorithm.inner_lr"].property("invalid")
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    assert window.start() == []
    window.form.set_field("algorithm.inner_lr", 0.01)
    assert window.start_button.isEnabled()
    window.form.editors["algorithm.name"].set_value("protonet")  # does not work on regression
    assert not window.start_button.isEnabled() and "sinusoid" in window.reason_label.text()
    window.form.editors["algorithm.name"].set_value("maml")
    window.form.set_field("seed", "1, x")
    assert not window.start_button.isEnabled() and "seed" in window.reason_label.text()
    assert window.start() == []
    assert catalog.list_runs() == []


def test_stop_mid_run_ends_cancelled_within_a_step_then_resume_continues(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    fill(window, LONG)
    (run_id,) = window.start()
    wait_step(qtbot, window, 15)
    window.toggle_pause()
    qtbot.waitUntil(lambda: window._run.get("state") == "paused", timeout=HANG_MS)
    assert window.pause_button.text() == "Resume"
    paused_at = window.queue.worker.trainer.step
    qtbot.wait(300)
    assert window.queue.worker.trainer.step == paused_at
    qtbot.waitUntil(lambda: catalog.get_run(run_id).status == "paused", timeout=HANG_MS)
    window.toggle_pause()
    wait_step(qtbot, window, paused_at + 5)
    before_stop = window.queue.worker.trainer.step
    qtbot.keyClick(window, Qt.Key.Key_Period, Qt.KeyboardModifier.ControlModifier)  # Ctrl+. = Stop
    at_stop = window.queue.worker.trainer.step  # the stop flag is set: at most the current step
    wait_idle(qtbot, window)
    rec = catalog.get_run(run_id)
    assert rec.status == "cancelled"
    assert before_stop <= rec.step <= at_stop + 1
    ck = catalog.checkpoint(run_id, "latest")
    assert ck is not None and ck.kind == "stop" and ck.step == rec.step

    # resume from the stop checkpoint: same run, the step count continues
    window.browser.reload()
    window.browser.select_ids([run_id])
    window.browser.resume_selected()
    qtbot.waitUntil(lambda: window.queue.running, timeout=HANG_MS)
    assert window.live.point_count("loss") == rec.step  # earlier points preloaded
    wait_step(qtbot, window, rec.step + 10)
    window.stop()
    wait_idle(qtbot, window)
    after = catalog.get_run(run_id)
    assert after.status == "cancelled" and after.attempt == 2 and after.step >= rec.step + 10
    steps, _, _ = catalog.metrics(run_id, "loss")
    assert steps[0] == 1 and list(steps) == list(range(1, after.step + 1))


def test_seed_list_queues_runs_and_two_runs_overlay_in_the_browser(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    fill(window, {**SMALL, "steps": 30, "val_every": 10, "test_episodes": 5, "seed": "1,2"})
    ids = window.start()
    assert len(ids) == 2
    assert [j.run_id for j in window.queue.pending] == ids[1:]  # the first runs, the second waits
    assert catalog.get_run(ids[1]).status == "queued"
    wait_idle(qtbot, window)
    assert [catalog.get_run(i).status for i in ids] == ["finished", "finished"]
    b = window.browser
    b.reload()
    b.select_ids(ids)
    b.metric_combo.setCurrentText("loss")
    assert len(b._curve_items) == 2
    pens = {b._curve_items[i].opts["pen"].color().name() for i in ids}
    assert len(pens) == 2  # distinct colours
    assert len(b.legend.items) == 2
    rows = [b.compare_table.verticalHeaderItem(r).text() for r in range(b.compare_table.rowCount())]
    assert "seed" in rows and "steps" not in rows
    b.group_check.setChecked(True)  # the seed group's mean with a band
    assert len(b.legend.items) == 1 and "mean of 2 seeds" in b.legend.items[0][1].text
    csv_path = b.export_csv(str(Path(catalog.path).parent / "curves.csv"))
    lines = Path(csv_path).read_text().splitlines()
    assert lines[0] == "run_id,run_name,step,metric,value,wall_time" and len(lines) > 120
    png = b.export_png(str(Path(catalog.path).parent / "curves.png"))
    assert Path(png).stat().st_size > 1000


def test_queue_reorder_and_remove(qtbot, window: MainWindow, catalog: Catalog) -> None:
    fill(window, LONG)
    first = window.start()
    window.form.set_field("seed", "7,8,9")
    queued = window.start()
    assert [j.run_id for j in window.queue.pending] == queued
    window.queue.move(2, -1)
    assert [j.run_id for j in window.queue.pending] == [queued[0], queued[2], queued[1]]
    window.queue_list.setCurrentRow(0)
    window._remove_queued()
    assert [j.run_id for j in window.queue.pending] == [queued[2], queued[1]]
    assert not catalog.has_run(queued[0])
    window.clear_queue()
    window.stop()
    wait_idle(qtbot, window)
    assert catalog.get_run(first[0]).status == "cancelled"
    assert {r.id for r in catalog.list_runs()} == set(first)


def test_clone_fills_the_form(qtbot, window: MainWindow, catalog: Catalog) -> None:
    cfg = RunConfig.from_dict({
        "name": "mine", "algorithm": {"name": "fomaml", "inner_lr": 0.02}, "dataset": {"name": "sinusoid"},
        "train": {"shots": 7, "meta_batch": 3}, "eval": {"meta_batch": 9}, "steps": 1234, "seed": 5,
        "tags": ["a", "b"],
    })  # fmt: skip
    run_id = catalog.create_run_from_config(cfg, status="finished")
    window.browser.reload()
    window.browser.select_ids([run_id])
    window.browser.clone_selected()
    got = window.form.config
    assert got is not None
    assert got.algorithm.name == "fomaml" and got.algorithm.inner_lr == 0.02
    assert (got.train.shots, got.train.meta_batch, got.steps, got.seed, got.tags) == (
        7,
        3,
        1234,
        5,
        ["a", "b"],
    )
    assert got.name == "mine-clone"
    # evaluation does not read its meta-batch: greyed out, but a stored value is kept
    assert got.eval.meta_batch == 9
    assert not window.form.editors["eval.meta_batch"].isEnabled()
    assert "not used" in window.form.editors["eval.meta_batch"].toolTip()
    assert window.form.editors["train.meta_batch"].isEnabled()


def test_evaluate_a_checkpoint_stores_an_evaluation(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    fill(window, {**SMALL, "steps": 20, "test_on_finish": False})
    (run_id,) = window.start()
    wait_idle(qtbot, window)
    b = window.browser
    b.reload()
    b.select_ids([run_id])
    assert b.ckpt_table.rowCount() >= 1
    with qtbot.waitSignal(
        b.log, timeout=HANG_MS, check_params_cb=lambda lv, msg: "evaluation of run" in msg
    ):
        assert b.evaluate_selected(episodes=12)
    evs = catalog.evaluations(run_id)
    assert (
        len(evs) == 1
        and evs[0].episodes == 12
        and evs[0].ci95 is not None
        and evs[0].split == "test"
    )
    assert b.eval_table.rowCount() == 1
    assert b.model.data(b.model.index(b.model.row_of[run_id], COL["Test ± CI"]))  # test filled


def test_closing_mid_run_asks_stops_and_leaves_nothing_running(qtbot, catalog: Catalog) -> None:
    win = MainWindow(catalog, restore=False)
    qtbot.addWidget(win)
    win.show()
    fill(win, LONG)
    (run_id,) = win.start()
    win.form.set_field("seed", "3")
    (queued,) = win.start()
    wait_step(qtbot, win, 5)
    asked = []
    win.confirm = lambda *a: asked.append(a) or False  # the user says no: the window stays
    win.close()
    assert asked and win.isVisible() and win.queue.running
    win.confirm = lambda *a: True
    win.close()
    assert not win.isVisible() and not win.queue.running
    assert catalog.get_run(run_id).status == "cancelled"
    assert catalog.get_run(queued).status == "cancelled"
    assert not catalog.list_runs(status=["running", "paused", "queued"])


def test_a_failed_run_is_logged_and_the_next_one_runs(
    qtbot, window: MainWindow, catalog: Catalog, tmp_path: Path
) -> None:
    window.form.editors["dataset.name"].set_value("omniglot")
    window.form.editors["algorithm.name"].set_value("protonet")
    window.form.data_dir.setCurrentText(str(tmp_path / "missing"))
    fill(window, {**SMALL, "dataset.download": False})
    (bad,) = window.start()
    window.form.editors["algorithm.name"].set_value("maml")  # back as a user would
    window.form.editors["dataset.name"].set_value("sinusoid")
    fill(window, {**SMALL, "steps": 10, "test_on_finish": False})
    (good,) = window.start()
    wait_idle(qtbot, window)
    assert catalog.get_run(bad).status == "failed" and catalog.get_run(bad).error
    assert any(f"run #{bad} failed" in m for m in window.log.errors())
    assert catalog.get_run(good).status == "finished"
    window.browser.poll()
    m = window.browser.model
    assert m.data(m.index(m.row_of[bad], 1)) == "failed"


def test_browser_sees_runs_written_by_another_connection_by_polling(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    """The open browser polls every second (so it shows another process's runs within about
    2 s); the waits below only guard against a hang, so a busy machine cannot fail them."""
    window.tabs.setCurrentWidget(window.browser)  # the Experiments tab is open
    assert window.browser.poll_timer.isActive() and window.browser.poll_timer.interval() <= 1000
    other = Catalog.open(catalog.path)  # its own connections, as another process would have
    try:
        run_id = other.create_run(
            json.dumps({}), name="external", algorithm="maml", dataset="sinusoid", status="queued"
        )
        qtbot.waitUntil(lambda: run_id in window.browser.model.row_of, timeout=HANG_MS)
        other.start_run(run_id, total_steps=10)
        other.add_metrics(run_id, [(1, "loss", 0.5, time.time())])
        b = window.browser
        qtbot.waitUntil(
            lambda: b.model.rows[b.model.row_of[run_id]].status == "running", timeout=HANG_MS
        )
        other.finish_run(run_id, "finished", step=1)
        qtbot.waitUntil(
            lambda: b.model.rows[b.model.row_of[run_id]].status == "finished", timeout=HANG_MS
        )
    finally:
        other.close()


def test_hidden_browser_does_not_poll_and_catches_up_when_shown(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    """While the Training tab is open (a run's whole length), the browser leaves the GUI thread
    alone; opening the Experiments tab shows what happened meanwhile."""
    window.tabs.setCurrentIndex(0)
    run_id = catalog.create_run(
        json.dumps({}), name="meanwhile", algorithm="maml", dataset="sinusoid", status="queued"
    )
    qtbot.wait(1500)  # more than a poll interval
    assert run_id not in window.browser.model.row_of
    window.tabs.setCurrentWidget(window.browser)
    assert run_id in window.browser.model.row_of


def _bulk_runs(path: Path, n: int) -> None:
    db = sqlite3.connect(path)
    cols = [r[1] for r in db.execute("PRAGMA table_info(runs)")]
    now = time.time()
    base = {c: None for c in cols}
    rows = []
    for i in range(n):
        r = dict(
            base,
            name=f"run-{i}",
            status=("finished", "failed", "cancelled")[i % 3],
            algorithm=("maml", "protonet")[i % 2],
            dataset=("sinusoid", "glyphs")[i % 2],
            device="cpu",
            config_json="{}",
            seed=i,
            created_at=now - i,
            started_at=now - i,
            ended_at=now - i + 30,
            notes="",
            attempt=1,
            total_steps=100,
            step=100,
        )
        r.pop("id", None)
        rows.append(r)
    keys = [c for c in cols if c != "id"]
    db.executemany(
        f"INSERT INTO runs ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
        [[r.get(k) for k in keys] for r in rows],
    )
    ids = [r[0] for r in db.execute("SELECT id FROM runs")]
    scols = [r[1] for r in db.execute("PRAGMA table_info(run_summaries)")]
    if scols:
        srow = {
            "name": "val_mse",
            "latest_value": 1.0,
            "latest_step": 100,
            "latest_wall_time": now,
            "best_value": 0.5,
            "best_step": 90,
            "count": 5,
        }
        keys = ["run_id", *[k for k in srow if k in scols]]
        db.executemany(
            f"INSERT INTO run_summaries ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
            [[i, *[srow[k] for k in keys[1:]]] for i in ids],
        )
    db.commit()
    db.close()


def test_ten_thousand_runs_load_scroll_sort_and_filter(qtbot, tmp_path: Path) -> None:
    """What the table shows with 10,000 runs; how fast is measured by bench/catalog_scale.py
    (a test cannot depend on the speed of the machine it runs on)."""
    path = tmp_path / "big.db"
    Catalog.open(path).close()
    _bulk_runs(path, 10_000)
    cat = Catalog.open(path)
    try:
        win = MainWindow(cat, restore=False)
        qtbot.addWidget(win)
        win.show()
        b = win.browser
        assert b.model.rowCount() == 10_000
        b.reload()
        assert b.model.rowCount() == 10_000 and b.load_ms > 0
        win.tabs.setCurrentIndex(1)
        bar = b.table.verticalScrollBar()
        assert bar.maximum() > 0
        for v in range(0, bar.maximum(), max(1, bar.maximum() // 50)):
            bar.setValue(v)
            b.table.viewport().repaint()
        bar.setValue(bar.maximum())
        last = b.table.rowAt(b.table.viewport().height() - 1)
        assert last == b.proxy.rowCount() - 1  # scrolled to the end: the last row is drawn
        b.table.sortByColumn(COL["Best val acc"], Qt.SortOrder.DescendingOrder)
        b.text_filter.setText("run-99")
        assert b.proxy.rowCount() == 111  # run-99, run-990..999, run-9900..9999
        win.shutdown()
    finally:
        cat.close()


def test_preset_fills_the_form_and_shows_the_published_number(qtbot, window: MainWindow) -> None:
    if not window.form.presets:
        pytest.skip("no presets in workbench/resources/presets")
    preset = next(
        (p for p in window.form.presets if p.name == "maml-sinusoid"), window.form.presets[0]
    )
    window.form.apply_preset(preset)
    cfg = window.form.config
    assert cfg is not None and cfg.preset == preset.name
    assert cfg.steps == preset.config["steps"]
    assert (
        window.form.published_label.isVisibleTo(window.form)
        and preset.published[:20] in window.form.published_label.text()
    )
    if preset.name == "maml-sinusoid":
        assert window.live.ref_line.isVisible() and window.live.ref_line.value() == pytest.approx(
            0.35
        )
        assert window.live.ref_line.label.toPlainText() == "published 0.35"


def test_settings_persist_and_about_lists_versions(qtbot, catalog: Catalog) -> None:
    win = MainWindow(catalog, restore=False)
    qtbot.addWidget(win)
    win.form.set_field("steps", 4321)
    win.save_settings()
    win.shutdown()
    again = MainWindow(catalog)
    qtbot.addWidget(again)
    assert again.form.config.steps == 4321
    text = again.about_text()
    for word in ("python", "torch", "Qt", "workbench"):
        assert word in text
    again.shutdown()


def test_live_view_options(qtbot, window: MainWindow) -> None:
    from workbench.core.events import EvalResult, StepMetrics

    live = window.live
    live.reset("mse", reference=0.35)
    t = time.time()
    live.add_steps(
        [
            StepMetrics(
                i, {"loss": 1 / i, "mse": 1 / i, "meta_lr": 1e-3, "steps_per_s": 50.0}, t + i
            )
            for i in range(1, 3001)
        ]
    )
    live.add_eval(EvalResult(1000, "val", 0.5, 0.1, 10, "mse"))
    live.redraw()
    assert live.point_count("loss") == 3000 and live.point_count("val") == 1
    live.set_smoothing(0.9)
    assert (
        live.series["loss"].smooth[2999] > live.series["loss"].value[2999]
    )  # EMA lags a falling curve
    live.set_x_mode("wall")
    x, _ = live.curves["loss"].getData()
    assert x[0] == pytest.approx(0.0, abs=1.5)
    live.set_log(True)
    live.redraw(force=True)
    lo, hi = live.plots["speed"].vb.viewRange()[1]
    assert lo <= 50.0 <= hi  # steps/s stays linear under log scale, fitted in its own scale
    assert "step" in live.show_cursor(10.0)
    live.set_x_mode("step")
    assert "val 0.5" in live.show_cursor(1000.0)


def test_image_dataset_adaptation_view_shows_an_episode_with_predictions(
    qtbot, window: MainWindow
) -> None:
    cfg = RunConfig.from_dict({
        "algorithm": {"name": "protonet"}, "dataset": {"name": "glyphs"},
        "train": {"ways": 5, "shots": 1, "queries": 5, "meta_batch": 1, "inner_steps": 0},
        "eval": {"ways": 5, "shots": 1, "queries": 5, "meta_batch": 10, "inner_steps": 0},
        "steps": 20, "val_every": 10, "val_episodes": 10, "test_episodes": 10, "ckpt_every": 0,
    })  # fmt: skip
    window.form.set_config(cfg.to_dict())
    assert window.form.valid, window.form.error_label.text()
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.adapt.last is not None, timeout=HANG_MS)
    shown = window.adapt.last
    assert shown["kind"] == "classification" and shown["ways"] == 5
    assert (
        shown["support_x"].shape[0] == 5 and shown["query_x"].shape[0] == 10
    )  # 5 ways x 2 queries
    assert shown["pred"] is not None and len(shown["pred"]) == 10
    assert set(shown["pred"].tolist()) <= set(range(5))


def test_launch_default_and_switching_task_kind_resets_the_task_shapes(
    qtbot, window: MainWindow
) -> None:
    cfg = window.form.config
    assert cfg is not None and (cfg.algorithm.name, cfg.dataset.name) == ("maml", "sinusoid")
    assert cfg.train.ways == 1 and cfg.train.shots == 10 and cfg.algorithm.inner_lr == 0.01
    window.form.set_field("dataset.name", "glyphs")
    cfg = window.form.config
    assert cfg is not None and cfg.dataset.name == "glyphs"
    assert (cfg.train.ways, cfg.train.shots, cfg.eval.ways) == (
        5,
        1,
        5,
    ) and cfg.algorithm.inner_lr == 0.4
    window.form.set_field("dataset.name", "sinusoid")
    assert window.form.config.train.ways == 1 and window.form.config.algorithm.inner_lr == 0.01


def test_resuming_from_an_older_checkpoint_creates_a_child_run(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    fill(window, SMALL)
    qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    (run,) = catalog.list_runs()
    older = min(catalog.checkpoints(run.id), key=lambda c: c.step)
    assert older.step < catalog.checkpoint(run.id, "latest").step
    window.queue.resume(run.id, older)
    wait_idle(qtbot, window)
    child = next(r for r in catalog.list_runs() if r.id != run.id)
    assert child.parent_id == run.id and child.status == "finished" and child.step == 60
    assert (
        catalog.get_run(run.id).step == 60 and catalog.get_run(run.id).attempt == 1
    )  # the parent is untouched
    steps, _, _ = catalog.metrics(child.id, "loss")
    assert steps[0] == older.step + 1


def _status_shown(win: MainWindow, run_id: int) -> str:
    m = win.browser.model
    return m.rows[m.row_of[run_id]].status


def test_reload_f5_marks_a_run_whose_process_died_interrupted(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    """A run left "running" by a killed process shows as interrupted after F5 (its heartbeat is
    older than the stale window), without reopening the catalog."""
    window.tabs.setCurrentWidget(window.browser)
    run_id = catalog.create_run(
        json.dumps({}), name="orphan", algorithm="maml", dataset="sinusoid", status="queued"
    )
    catalog.start_run(run_id, total_steps=10)
    window.browser.reload()
    assert _status_shown(window, run_id) == "running"
    long_ago = time.time() - 3600  # the process stopped an hour ago
    db = sqlite3.connect(catalog.path)
    db.execute(
        "UPDATE runs SET heartbeat_at = ?, started_at = ? WHERE id = ?",
        (long_ago, long_ago, run_id),
    )
    db.commit()
    db.close()
    qtbot.keyClick(window, Qt.Key.Key_F5)
    assert _status_shown(window, run_id) == "interrupted"
    assert catalog.get_run(run_id).status == "interrupted"
    assert any(f"#{run_id}" in m and "interrupted" in m for _, m in window.log.entries)
    # a live run (fresh heartbeat) is left alone
    live = catalog.create_run(
        json.dumps({}), name="alive", algorithm="maml", dataset="sinusoid", status="queued"
    )
    catalog.start_run(live, total_steps=10)
    qtbot.keyClick(window, Qt.Key.Key_F5)
    assert _status_shown(window, live) == "running"


def test_a_failed_resume_is_logged_and_the_browser_shows_the_catalog_as_it_is(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    fill(window, {**SMALL, "steps": 20, "test_on_finish": False})
    (first,) = window.start()
    window.form.set_field("seed", "4")
    (gone,) = window.start()
    wait_idle(qtbot, window)
    b = window.browser
    window.tabs.setCurrentWidget(b)
    b.reload()
    # another process deletes a run while the browser still lists it: resuming it fails
    ck = catalog.checkpoint(gone, "latest")
    other = Catalog.open(catalog.path)
    other.delete_run(gone)
    other.close()
    window.resume_run(gone, ck)
    assert any(f"cannot resume run #{gone}" in m for m in window.log.errors())
    assert gone not in b.model.row_of
    # a tampered checkpoint: the resume fails before it starts; the run keeps its status,
    # step and history, the reason is recorded, and the browser shows the catalog as it is
    before = catalog.get_run(first)
    latest = catalog.checkpoint(first, "latest")
    Path(latest.path).write_bytes(b"not a checkpoint")
    b.select_ids([first])
    b.resume_selected()
    wait_idle(qtbot, window)
    after = catalog.get_run(first)
    assert (after.status, after.step) == (before.status, before.step) == ("finished", 20)
    assert after.error.startswith("resume failed: ") and "sha256" in after.error
    assert len(catalog.metrics(first, "loss")[0]) == 20
    assert any(f"run #{first} failed" in m for m in window.log.errors())
    window.tabs.setCurrentWidget(b)
    assert _status_shown(window, first) == "finished"


def test_a_run_that_pauses_itself_says_why_and_goes_on(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    """The catalog's writer holds the run (disk full): the log names the reason and folder,
    Pause stays Pause (the user did not pause), and the run continues once it is released."""
    fill(window, LONG)
    (run_id,) = window.start()
    wait_step(qtbot, window, 5)
    trainer = window.queue.worker.trainer
    trainer.hold("catalog", "disk full: 3 MB free in /data/runs")
    qtbot.waitUntil(
        lambda: any("disk full: 3 MB free in /data/runs" in e for e in window.log.errors()),
        timeout=HANG_MS,
    )
    at = trainer.step
    qtbot.wait(300)
    assert trainer.step <= at + 1 and window.pause_button.text() == "Pause"
    assert "disk full" in window.sb_state.toolTip()
    trainer.release("catalog")
    wait_step(qtbot, window, at + 5)
    window.stop()
    wait_idle(qtbot, window)
    steps, _, _ = catalog.metrics(run_id, "loss")
    assert list(steps) == list(range(1, catalog.get_run(run_id).step + 1))


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    import socket

    cfg = RunConfig.from_dict({**window.form.to_dict(), "steps": 30, "val_every": 10,
                               "val_episodes": 5, "test_on_finish": False})  # fmt: skip
    dead = f"{socket.gethostname()}:999999999:gone"  # its owner process no longer exists
    run_id = catalog.create_run_from_config(cfg, status="queued", owner=dead)
    window.tabs.setCurrentIndex(1)
    window.browser.reload_catalog()  # F5: the dead owner's run becomes interrupted
    assert catalog.get_run(run_id).status == "interrupted"
    assert "no checkpoint" in catalog.get_run(run_id).error
    window.browser.select_ids([run_id])
    window.browser.resume_selected()
    qtbot.waitUntil(lambda: window.queue.running or not window.queue.pending, timeout=HANG_MS)
    wait_idle(qtbot, window)
    r = catalog.get_run(run_id)
    assert (r.status, r.step) == ("finished", 30), r.error
    assert list(catalog.metrics(run_id, "loss")[0]) == list(range(1, 31))


def test_the_browser_shows_a_dead_owners_run_interrupted_without_a_reload(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    """A process that dies changes nothing in the file, so polling for changes cannot see it;
    the shown browser checks for dead owners once per heartbeat."""
    import socket

    rid = catalog.create_run("{}", status="queued", owner=f"{socket.gethostname()}:999999999:x")
    catalog.set_status(rid, "running")
    window.tabs.setCurrentWidget(window.browser)
    window.browser.reload()
    qtbot.waitUntil(lambda: _status_shown(window, rid) == "interrupted", timeout=HANG_MS)
    assert "no checkpoint" in catalog.get_run(rid).error


def test_the_training_tab_is_current_when_the_user_returns_to_it(qtbot, window: MainWindow) -> None:
    """Away on the Experiments tab while the run trains on, then paused: back on Training, the
    curves reach the step the status bar says, without another step to trigger a redraw."""
    fill(window, LONG)
    window.start()
    wait_step(qtbot, window, 10)
    window.tabs.setCurrentIndex(1)
    away = window.queue.worker.trainer.step
    wait_step(qtbot, window, away + 150)
    window.toggle_pause()
    qtbot.waitUntil(lambda: window._run.get("state") == "paused", timeout=HANG_MS)
    step = window.queue.worker.trainer.step
    window.tabs.setCurrentIndex(0)

    def drawn() -> float:
        x, _ = window.live.traces[window.live.current].curves["loss"].getData()
        return float(x[-1]) if x is not None and len(x) else 0.0

    qtbot.waitUntil(lambda: drawn() == step, timeout=60_000)
    assert f"step {step}/" in window.sb_step.text()
    window.stop()
    wait_idle(qtbot, window)


def test_the_window_fits_a_1366_px_screen_with_nothing_cut_off(qtbot, window: MainWindow) -> None:
    """A laptop's 1366-px-wide screen: the window can be that narrow (frame included), and the
    live plot grid then still fits its view (a long panel title once made it wider, cut off)."""
    from PySide6.QtCore import QSizeF

    assert window.minimumSizeHint().width() <= 1366 - 16
    window.resize(1366 - 16, 740)
    window.tabs.setCurrentIndex(0)
    window.live.set_metric("accuracy")
    qtbot.wait(50)
    grid = window.live.view.ci  # pyqtgraph's GraphicsLayout of the panels
    need = grid.effectiveSizeHint(Qt.SizeHint.MinimumSize, QSizeF(-1, -1)).width()
    assert need <= window.live.view.width(), (need, window.live.view.width())
    export = window.browser.action_bar.export_button.menu()
    assert [a.text() for a in export.actions()] == ["Metrics as CSV…", "Curves as PNG…"]
