"""The app with runs in their own processes (issue 13): launching without blocking, following
runs through the catalog, several live runs overlaid, Pause/Resume/Stop through catalog
requests, closing and reopening the app while they train, and a killed run's process."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from gui_fixtures import make_window  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from workbench import launcher  # noqa: E402
from workbench.catalog import Catalog  # noqa: E402
from workbench.catalog.store import owner_dead  # noqa: E402
from workbench.core.config import RunConfig, default_config  # noqa: E402
from workbench.core.events import EvalResult, StepMetrics  # noqa: E402
from workbench.gui import live_plots  # noqa: E402
from workbench.gui.follower import to_events  # noqa: E402
from workbench.gui.main_window import MainWindow  # noqa: E402

SMALL = {
    "steps": 60, "val_every": 20, "val_episodes": 10, "test_episodes": 10, "ckpt_every": 20,
    "train.meta_batch": 4, "eval.meta_batch": 10, "eval.inner_steps": 3, "threads": 1,
}  # fmt: skip
# waits end as soon as their condition holds; the limit only stops a hung test (a loaded 2-core
# machine imports torch in each child slowly), so no test depends on the machine's speed
HANG_MS = int(os.environ.get("WORKBENCH_TEST_HANG_MS", 600_000))
LATENCY_WRITER = r"""
import sys, time
from workbench.catalog import Catalog
from workbench.catalog.store import new_owner
db, commits = sys.argv[1], int(sys.argv[2])
owner = new_owner()
with Catalog.open(db) as cat:
    rid = cat.create_run("{}", name="latency", status="queued", owner=owner)
    cat.start_run(rid, total_steps=commits * 5, owner=owner)
    print(rid, flush=True)
    sys.stdin.readline()  # the app follows it now
    step = 0
    for _ in range(commits):
        time.sleep(0.5)  # as the run's writer: one commit every 0.5 s
        now = time.time()  # the points' wall time is the commit's: latency from commit
        pts = []
        for _ in range(5):
            step += 1
            pts += [(step, "loss", 1.0 / step, now), (step, "mse", 1.0 / step, now),
                    (step, "meta_lr", 1e-3, now), (step, "steps_per_s", 10.0, now)]
        cat.add_metrics(rid, pts, owner=owner)
        cat.renew(rid, owner)
    cat.finish_run(rid, "finished", step=step, owner=owner)
"""


def small_config(steps: int, seed: int = 0, **more: object) -> RunConfig:
    cfg = default_config("maml", "sinusoid").to_dict()
    cfg.update(steps=steps, val_every=0, ckpt_every=50, test_on_finish=False, threads=1, seed=seed)
    cfg.update(more)
    return RunConfig.from_dict(cfg)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
def catalog(db: Path) -> Iterator[Catalog]:
    cat = Catalog.open(db)
    yield cat
    cat.close()


@pytest.fixture
def children() -> Iterator[list[int]]:
    """Pids of the run processes a test started: any still alive at its end is killed (a
    failed test must not leave training processes behind)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def window(qtbot, catalog: Catalog) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    win = make_window(qtbot, catalog)
    yield win
    win.shutdown()


def fill(win: MainWindow, values: dict) -> None:
    for key, value in values.items():
        win.form.set_field(key, value)
    assert win.form.valid, win.form.error_label.text()


def launch(db: Path, cfg: RunConfig, children: list[int]) -> launcher.Launched:
    """A run in its own process, started as another app or a sweep would."""
    got = launcher.spawn_config(cfg, db).wait(timeout_s=HANG_MS / 1000)
    children.append(got.pid)
    return got


def state(win: MainWindow, run_id: int) -> str:
    return str(win.runs.get(run_id, {}).get("state", ""))


def catalog_points(catalog: Catalog, run_id: int, name: str = "loss") -> int:
    return len(catalog.metrics(run_id, name)[0])


# ---- pieces ------------------------------------------------------------------------------
def test_catalog_points_become_the_events_the_plots_take() -> None:
    pts = [
        (1, 1, "loss", 2.0, 100.0), (2, 1, "mse", 2.0, 100.0), (3, 1, "meta_lr", 1e-3, 100.0),
        (4, 2, "loss", None, 101.0), (5, 2, "mse", 1.5, 101.0),
        (6, 2, "val_mse", 1.2, 101.5), (7, 2, "val_mse_ci95", 0.1, 101.5),
        (8, 2, "val_mse_after_1", 1.3, 101.5), (9, 3, "test_accuracy", 0.5, 102.0),
    ]  # fmt: skip
    steps, evals = to_events(pts)
    assert [(s.step, s.wall_time) for s in steps] == [(1, 100.0), (2, 101.0)]
    assert steps[0].values == {"loss": 2.0, "mse": 2.0, "meta_lr": 1e-3}
    assert steps[1].values["loss"] != steps[1].values["loss"]  # NaN for a missing value
    (ev,) = evals
    assert (ev.step, ev.split, ev.metric, ev.mean, ev.ci95) == (2, "val", "mse", 1.2, 0.1)
    assert ev.values == {"mse_after_1": 1.3}
    _, evals = to_events([(1, 5, "val_accuracy", 0.9, 1.0)])
    assert evals[0].metric == "accuracy" and evals[0].ci95 == 0.0


def test_runs_are_overlaid_one_colour_each_and_unchecking_hides_one(qtbot) -> None:  # type: ignore[no-untyped-def]
    live = live_plots.LivePlots()
    qtbot.addWidget(live)
    live.resize(1000, 700)
    live.show()
    for run_id, offset in ((7, 0), (8, 1000)):
        live.add_run(run_id, "mse", f"#{run_id}")
        live.add_steps(
            [StepMetrics(i, {"loss": 1.0 / i, "mse": 2.0 / i, "meta_lr": 1e-3,
                             "steps_per_s": 50.0}, 1000.0 + i) for i in range(1, 101 + offset)],
            run_id,
        )  # fmt: skip
        live.add_eval(EvalResult(50, "val", 0.5, 0.1, 10, "mse"), run_id)
    live.redraw(force=True)
    a, b = live.traces[7], live.traces[8]
    assert a.color != b.color
    curve_a, curve_b = a.curves["loss"], b.curves["loss"]
    items_before = len(live.plots["loss"].items)
    assert curve_a in live.plots["loss"].items and curve_b in live.plots["loss"].items
    assert len(curve_a.getData()[0]) == 100 and len(curve_b.getData()[0]) == 1100
    assert live.plots["loss"].vb.viewRange()[0][1] >= 1100  # the longer run is in view
    # more points: fed to the same items (setData), none created per update
    live.add_steps([StepMetrics(101, {"loss": 0.01}, 1101.0)], 7)
    live.redraw()
    assert a.curves["loss"] is curve_a and len(curve_a.getData()[0]) == 101
    assert len(live.plots["loss"].items) == items_before
    # unchecking run 8 hides its curves and the x range fits run 7 alone
    live.set_checked(8, False)
    assert not curve_b.isVisible() and not b.val_curve.isVisible() and curve_a.isVisible()
    assert live.checked() == [7] and live.plots["loss"].vb.viewRange()[0][1] < 200
    live.set_checked(8, True)
    assert curve_b.isVisible() and live.plots["loss"].vb.viewRange()[0][1] >= 1100
    # the selection is what the cursor reads and what a caller without a run id feeds
    live.select(8)
    assert live.current == 8 and live.point_count("loss") == 1100
    assert live.show_cursor(50.0).startswith("#8  step 50")
    live.remove_run(8)
    assert curve_b not in live.plots["loss"].items and live.current == 7


def test_the_default_mode_setting_persists_and_a_failed_launch_is_shown(
    qtbot, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    win = make_window(qtbot, catalog)
    assert not win.detached_default and win.detached_button.text() == "Run in its own process"
    win.detached_default_action.setChecked(True)
    assert win.detached_button.text() == "Run in the app" and win.start_button.text() == "Start"
    win.save_settings()
    win.shutdown()
    win = make_window(qtbot, catalog, restore=True)
    assert win.detached_default  # restored from QSettings

    class FailingLaunch:
        polls = 0

        def poll(self) -> None:
            FailingLaunch.polls += 1
            if FailingLaunch.polls < 3:
                return None  # still starting: the GUI goes on meanwhile
            raise launcher.LaunchError("dataset folder /nowhere does not exist")

    monkeypatch.setattr(launcher, "spawn_config", lambda cfg, db, extra=(): FailingLaunch())
    fill(win, {**SMALL, "seed": "1,2"})
    assert win.start() == []  # Start launches (one process per seed), it does not queue
    assert not win.queue.running and not win.queue.pending and len(win._launches) == 2
    qtbot.waitUntil(lambda: not win._launches, timeout=HANG_MS)
    errors = [m for m in win.log.errors() if "dataset folder /nowhere" in m]
    assert len(errors) == 2 and win.isVisible()
    assert not catalog.list_runs()  # no run was created
    win.shutdown()


def test_a_request_to_a_run_whose_process_died_is_refused_with_the_reason(
    qtbot, window: MainWindow, catalog: Catalog
) -> None:
    import socket

    dead = f"{socket.gethostname()}:999999999:x"
    assert owner_dead(dead)
    rid = catalog.create_run("{}", name="orphan", status="queued", owner=dead)
    catalog.start_run(rid, total_steps=100, owner=dead)
    window.follower.stop()  # the request comes before the follower notices the dead owner
    window.follow_run(rid, select=True)
    assert window._target() == rid and window.pause_button.isEnabled()
    window.toggle_pause()  # NotRunningError inside: said, not raised
    assert any(f"run {rid} is not running" in m for m in window.log.errors())
    qtbot.waitUntil(lambda: state(window, rid) == "interrupted", timeout=HANG_MS)
    assert rid not in window.follower.followed and catalog.get_run(rid).status == "interrupted"
    assert window._target() is None and not window.stop_button.isEnabled()


# ---- real runs in their own processes ---------------------------------------------------
def test_run_in_its_own_process_button_launches_without_blocking_and_follows_it_live(
    qtbot, window: MainWindow, catalog: Catalog, children: list[int]
) -> None:
    fill(window, SMALL)
    with qtbot.waitSignal(window.detachedLaunched, timeout=HANG_MS) as sig:
        qtbot.mouseClick(window.detached_button, Qt.MouseButton.LeftButton)
        # the click returned while the child still imports torch: nothing waited for it
        assert len(window._launches) == 1 and not window.queue.running
    (rid,) = sig.args
    children.append(int(window.runs[rid]["pid"]))
    assert window.runs[rid]["detached"] and window.runs[rid]["pid"] != os.getpid()
    assert window.live.current == rid and "own process" in window.live._item(rid).text()
    qtbot.waitUntil(lambda: state(window, rid) == "finished", timeout=HANG_MS)
    assert catalog.get_run(rid).status == "finished"
    assert window.live.point_count("loss", rid) == catalog_points(catalog, rid) == 60
    assert window.live.point_count("val", rid) == 3
    x, _ = window.live.traces[rid].curves["loss"].getData()
    assert list(x) == list(range(1, 61))
    assert any(f"run #{rid} trains in its own process" in m for _lv, m in window.log.entries)
    # step -> screen: from a step's wall time (before its writer's 0.5 s commit batching);
    # the last redraw is painted later in the event loop (late on a busy machine)
    qtbot.waitUntil(lambda: any(r == rid for r, _w, _a in window.live.shown_log), timeout=HANG_MS)
    lat = sorted(at - wall for r, wall, at in window.live.shown_log if r == rid)
    print(
        f"\nstep -> screen latency of a real run: median {statistics.median(lat):.2f} s, "
        f"max {lat[-1]:.2f} s over {len(lat)} redraws"
    )


def test_two_runs_in_their_own_processes_and_one_in_the_app_are_plotted_together(
    qtbot, window: MainWindow, catalog: Catalog, children: list[int]
) -> None:
    fill(window, {**SMALL, "steps": 2000, "val_every": 500, "ckpt_every": 500, "seed": "1,2"})
    assert window.start_detached() == 2
    qtbot.waitUntil(lambda: len(window.follower.followed) == 2, timeout=HANG_MS)
    detached = sorted(window.follower.followed)
    children.extend(int(window.runs[r]["pid"]) for r in detached)
    qtbot.waitUntil(lambda: all(state(window, r) == "running" for r in detached), timeout=HANG_MS)
    fill(window, {**SMALL, "steps": 200, "seed": "3"})
    (in_app,) = window.start_in_app()
    qtbot.waitUntil(lambda: window.sb_count.text() == "3 running", timeout=HANG_MS)
    runs = [*detached, in_app]
    qtbot.waitUntil(
        lambda: all(state(window, r) == "finished" for r in runs) and not window.queue.running,
        timeout=HANG_MS,
    )
    window.live.redraw(force=True)
    colors = {window.live.traces[r].color for r in runs}
    assert len(colors) == 3
    for r in runs:  # every run's every step on screen, nothing lost
        n = catalog_points(catalog, r)
        assert n == catalog.get_run(r).total_steps
        assert window.live.point_count("loss", r) == n
        assert len(window.live.traces[r].curves["loss"].xData) == n
        assert window.live.traces[r].curves["loss"] in window.live.plots["loss"].items
    qtbot.waitUntil(lambda: window.sb_count.text() == "", timeout=HANG_MS)  # none live


def test_close_the_app_while_a_detached_run_trains_then_reopen_follows_it_to_the_end(
    qtbot, catalog: Catalog, db: Path, children: list[int]
) -> None:
    first = make_window(qtbot, catalog)
    fill(first, {**SMALL, "steps": 2000, "val_every": 500, "ckpt_every": 500})
    with qtbot.waitSignal(first.detachedLaunched, timeout=HANG_MS) as sig:
        first.start_detached()
    (rid,) = sig.args
    children.append(int(first.runs[rid]["pid"]))
    # paused from the app, so that it is certainly still live when the app is reopened
    qtbot.waitUntil(lambda: state(first, rid) == "running", timeout=HANG_MS)
    first.toggle_pause()
    qtbot.waitUntil(lambda: state(first, rid) == "paused", timeout=HANG_MS)
    assert first.pause_button.text() == "Resume" and first.sb_count.text() == "1 paused"
    asked: list[tuple[str, str]] = []
    first.confirm = lambda *a: asked.append(a) or True
    first.close()
    assert not first.isVisible()
    assert "1 run keeps training in its own process; reopen the app to follow it" in asked[0][1]
    time.sleep(1.0)  # the app is gone; the run is not
    assert catalog.get_run(rid).status == "paused" and not owner_dead(catalog.get_run(rid).owner)
    step_then = catalog.get_run(rid).step

    second_catalog = Catalog.open(db)
    try:
        second = make_window(qtbot, second_catalog)
        assert rid in second.runs and state(second, rid) == "paused"  # found at start-up
        # its history so far is preloaded from the catalog
        qtbot.waitUntil(lambda: second.live.point_count("loss", rid) >= step_then, timeout=HANG_MS)
        second.live.select(rid)
        assert second.pause_button.text() == "Resume"
        second.toggle_pause()
        qtbot.waitUntil(lambda: state(second, rid) == "finished", timeout=HANG_MS)
        assert catalog_points(second_catalog, rid) == 2000
        assert second.live.point_count("loss", rid) == 2000
        x = second.live.traces[rid].curves["loss"].xData  # all fed (getData: as drawn)
        assert list(x) == list(range(1, 2001))  # none twice, none missing across the reopen
        second.shutdown()
    finally:
        second_catalog.close()


def test_stop_from_a_second_app_and_a_killed_run_process_shows_interrupted(
    qtbot, window: MainWindow, catalog: Catalog, db: Path, children: list[int]
) -> None:
    stopped = launch(db, small_config(10**7, seed=1), children)
    killed = launch(db, small_config(10**7, seed=2), children)
    qtbot.waitUntil(
        lambda: all(r in window.runs for r in (stopped.run_id, killed.run_id)), timeout=HANG_MS
    )  # discovered by the app: another process started them
    qtbot.waitUntil(
        lambda: (
            window.live.point_count("loss", stopped.run_id) > 0
            and window.live.point_count("loss", killed.run_id) > 0
        ),
        timeout=HANG_MS,
    )
    window.live.select(stopped.run_id)
    window.stop()
    qtbot.waitUntil(lambda: state(window, stopped.run_id) == "cancelled", timeout=HANG_MS)
    n = catalog_points(catalog, stopped.run_id)
    assert (
        window.live.point_count("loss", stopped.run_id) == n == catalog.get_run(stopped.run_id).step
    )
    assert catalog.checkpoint(stopped.run_id, "latest").kind == "stop"

    os.kill(killed.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: state(window, killed.run_id) == "interrupted", timeout=HANG_MS)
    assert killed.run_id not in window.follower.followed  # no longer followed
    assert "interrupted" in window.live._item(killed.run_id).text()
    assert any(f"run #{killed.run_id} interrupted" in m for m in window.log.errors())
    window.live.select(killed.run_id)
    assert window._target() is None and not window.pause_button.isEnabled()


def test_step_to_screen_latency_of_a_run_in_another_process(
    qtbot, window: MainWindow, db: Path, children: list[int]
) -> None:
    """A writer in another process commits 5 steps every 0.5 s with the commit's time as the
    points' wall time; the plots log when a paint showed each newest point. Prints the
    latency from commit to screen (the follower polls every 0.5 s; the redraw budget)."""
    commits = 40
    proc = subprocess.Popen(
        [sys.executable, "-c", LATENCY_WRITER, str(db), str(commits)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    children.append(proc.pid)
    try:
        rid = int(proc.stdout.readline())  # type: ignore[union-attr]
        window.follow_run(rid, select=True)
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        qtbot.waitUntil(lambda: state(window, rid) == "finished", timeout=HANG_MS)
        assert proc.wait(timeout=HANG_MS / 1000) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert window.live.point_count("loss", rid) == commits * 5
    shown = {}
    for run_id, wall, at in window.live.shown_log:
        if run_id == rid:
            shown.setdefault(wall, at)  # the first paint that showed the commit's newest point
    lat = sorted(at - wall for wall, at in shown.items())
    assert lat  # painted (how many commits each paint shows depends on the machine's load)
    med, p95 = statistics.median(lat), lat[int(0.95 * (len(lat) - 1))]
    print(
        f"\ncommit -> screen latency over {len(lat)} commits: median {med:.2f} s, "
        f"p95 {p95:.2f} s, max {lat[-1]:.2f} s; follower poll median "
        f"{statistics.median(window.follower.poll_ms):.1f} ms"
    )


def test_resume_in_its_own_process_from_the_browser_continues_the_run_to_the_end(
    qtbot, window: MainWindow, catalog: Catalog, children: list[int]
) -> None:
    fill(window, {**SMALL, "steps": 1000, "val_every": 250, "ckpt_every": 100})
    (rid,) = window.start_in_app()
    qtbot.waitUntil(
        lambda: window.queue.worker is not None and window.queue.worker.trainer.step >= 30,
        timeout=HANG_MS,
    )
    window.stop()
    qtbot.waitUntil(lambda: not window.queue.running, timeout=HANG_MS)
    stopped_at = catalog.get_run(rid).step
    assert catalog.get_run(rid).status == "cancelled" and stopped_at < 1000
    window.browser.reload()
    window.browser.select_ids([rid])
    assert window.browser.resume_detached_button.isEnabled()
    with qtbot.waitSignal(window.detachedLaunched, timeout=HANG_MS) as sig:
        window.browser.resume_selected(detached=True)
    assert sig.args == [rid]  # from its latest checkpoint: the same run, a new attempt
    children.append(int(window.runs[rid]["pid"]))
    assert window.runs[rid]["detached"]
    qtbot.waitUntil(lambda: state(window, rid) == "finished", timeout=HANG_MS)
    assert [a["status"] for a in catalog.attempts(rid)] == ["cancelled", "finished"]
    assert list(window.live.traces[rid].curves["loss"].xData) == list(range(1, 1001))
    assert catalog_points(catalog, rid) == 1000


def test_the_device_picker_starts_a_data_parallel_run_in_its_own_processes(
    qtbot, window: MainWindow, catalog: Catalog, children: list[int]
) -> None:
    """ "cpu, N processes, data-parallel": a meta-batch smaller than N is refused at the
    meta-batch field; Start then launches the run on N ranks, followed live to its end."""
    combo = window.form.device_combo
    labels = [combo.itemText(i) for i in range(combo.count())]
    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one core: no data-parallel choice")
    choice = f"cpu, {cores} processes, data-parallel"
    assert choice in labels
    fill(window, {**SMALL, "steps": 20, "val_every": 10})
    combo.setCurrentIndex(labels.index(choice))
    window.form.set_field("train.meta_batch", 1)
    assert not window.start_button.isEnabled()
    meta_batch = window.form.editors["train.meta_batch"]
    assert (
        f"{cores} processes cannot share a meta-batch of 1 task"
        in meta_batch.toolTip() + window.form.error_label.text()
    )
    window.form.set_field("train.meta_batch", cores)
    assert window.start_button.isEnabled() and window.form.to_dict()["device"] == "cpu"
    with qtbot.waitSignal(window.detachedLaunched, timeout=HANG_MS) as sig:
        qtbot.mouseClick(window.start_button, Qt.MouseButton.LeftButton)
    (rid,) = sig.args
    children.append(int(window.runs[rid]["pid"]))
    qtbot.waitUntil(lambda: state(window, rid) == "finished", timeout=HANG_MS)
    run = catalog.get_run(rid)
    assert run.status == "finished" and run.environment["world_size"] == cores
    assert window.live.point_count("loss", rid) == catalog_points(catalog, rid) == 20
