"""`workbench.track`: a user's own training loop in the catalog, with the built-in runs'
guarantees (honest status, points kept when killed, checkpoints hashed, concurrent writers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_detached import run_of, wait_for  # noqa: E402  (tests/ is on the path)

from workbench.catalog import Catalog
from workbench.core.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "workbench" / "resources" / "examples" / "track_sine.py"


def script(db: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_FAULT"}
    return subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--db", str(db), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
    )  # fmt: skip


def points(db: Path, run_id: int) -> list[int]:
    with Catalog.open(db) as cat:
        steps, _, _ = cat.metrics(run_id, "loss")
    return [int(s) for s in steps]


def ids(db: Path) -> list[int]:
    if not db.exists():
        return []
    with Catalog.open(db) as cat:
        return sorted(r.id for r in cat.list_runs())


def test_the_example_script_is_recorded_like_a_built_in_run(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = script(db, "--steps", "250")
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out
    (run_id,) = ids(db)
    run = run_of(db, run_id)
    assert run.status == "finished" and run.step == 250 and run.algorithm == "tracked"
    assert run.name == "track_sine" and "example" in run.tags
    assert run.config == {"dataset": "sine", "lr": 0.01, "model": "mlp-40", "steps": 250}
    env = run.environment
    assert env["script"] == str(EXAMPLE) and env["command"][0] == str(EXAMPLE)
    assert "script_commit" in env and isinstance(env["script_dirty"], bool)
    assert points(db, run_id) == list(range(1, 251))
    with Catalog.open(db) as cat:
        ckpts = cat.checkpoints(run_id)
        (test,) = [e for e in cat.evaluations(run_id) if e.split == "test"]
    assert sorted(c.step for c in ckpts) == [100, 200]  # keep 2 periodic
    state = load_checkpoint(ckpts[-1].path, ckpts[-1].sha256)  # hashed as the trainer's
    assert set(state["state_dict"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert test.metric == "mse" and test.episodes == 600 and test.mean < 0.5


def test_an_exception_fails_the_run_with_its_message(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = script(db, "--steps", "100", "--fail-at", "40")
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 1 and "loss diverged at step 40" in out
    (run_id,) = ids(db)
    run = run_of(db, run_id)
    assert run.status == "failed" and run.error == "RuntimeError: loss diverged at step 40"
    assert points(db, run_id) == list(range(1, 41))


def test_killed_it_is_interrupted_and_keeps_what_was_committed(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = script(db, "--steps", "100000", "--sleep", "0.002")
    try:
        run_id = int(wait_for(lambda: ids(db) and ids(db)[0]))  # type: ignore[arg-type]
        wait_for(lambda: len(points(db, run_id)) >= 50)
        seen = points(db, run_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = run_of(db, run_id)  # opening the catalog marks a dead owner's run interrupted
    assert run.status == "interrupted"
    kept = points(db, run_id)
    assert kept[: len(seen)] == seen and kept == list(range(1, len(kept) + 1))


@pytest.mark.parametrize("how", ["ctrl-c", "workbench stop"])
def test_ctrl_c_or_a_stop_request_cancels_it(tmp_path: Path, how: str) -> None:
    db = tmp_path / "c.db"
    proc = script(db, "--steps", "100000", "--sleep", "0.002")
    try:
        run_id = int(wait_for(lambda: ids(db) and ids(db)[0]))  # type: ignore[arg-type]
        wait_for(lambda: len(points(db, run_id)) >= 20)
        if how == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            got = subprocess.run(
                [sys.executable, "-m", "workbench", "--db", str(db), "stop", str(run_id)],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            assert got.returncode == 0, got.stderr
        proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = run_of(db, run_id)
    assert run.status == "cancelled" and run.error == "stopped by the user"
    assert points(db, run_id) == list(range(1, run.step + 1))


def test_two_scripts_tracking_into_one_catalog_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    procs = [script(db, "--steps", "400", "--name", f"s{i}") for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with Catalog.open(db) as cat:
        runs = {r.name: r for r in cat.list_runs()}
    assert set(runs) == {"s0", "s1"}
    for run in runs.values():
        assert run.status == "finished" and points(db, run.id) == list(range(1, 401))


def test_importing_workbench_and_track_loads_neither_qt_nor_torch() -> None:
    code = (
        "import sys, workbench, workbench.tracking; workbench.track;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('PySide6','pyqtgraph','torch')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stdout + got.stderr


def test_a_config_that_is_not_json_is_refused_before_a_run_exists(tmp_path: Path) -> None:
    import workbench

    db = tmp_path / "c.db"
    with pytest.raises(TypeError, match="config must be JSON-able"):
        workbench.track(config={"f": object()}, db=db)  # type: ignore[arg-type]
    assert ids(db) == []


def test_ctrl_c_while_a_checkpoint_writes_the_queued_points_drops_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint first writes the points queued before it, on the script's thread; a Ctrl-C
    landing in that write once dropped them (9 points lost in CI). Held until the checkpoint
    is done, the interrupt still ends the run cancelled, with every logged point and the
    checkpoint."""
    import _thread
    import threading
    import time

    import torch

    from workbench import track

    db = tmp_path / "k.db"
    with pytest.raises(KeyboardInterrupt):
        with track(name="k", db=str(db)) as run:
            run.writer.flush_s = 3600.0  # the points wait for the checkpoint's own write...
            run.writer._wake.set()  # ...once the writer thread waits again, with that period
            wait_for(lambda: not run.writer._wake.is_set())
            time.sleep(0.2)
            for step in range(1, 11):
                run.log(step, loss=1.0 / step)
            add = run.catalog.add_metrics

            def add_then_ctrl_c(*args: object, **kw: object) -> object:
                if threading.current_thread() is threading.main_thread():
                    _thread.interrupt_main()  # Ctrl-C, in the middle of the points' write
                    time.sleep(0.05)
                return add(*args, **kw)

            monkeypatch.setattr(run.catalog, "add_metrics", add_then_ctrl_c)
            run.checkpoint({"w": torch.zeros(2)}, 10)
            raise AssertionError("the held Ctrl-C was not raised after the checkpoint")
    run_id = run.run_id
    assert points(db, run_id) == list(range(1, 11))
    rec = run_of(db, run_id)
    assert rec.status == "cancelled" and rec.step == 10
    with Catalog.open(db) as cat:
        assert cat.checkpoint(run_id, "latest").step == 10
