"""Sweeps run end to end (issue 15, local executor): every trial an ordinary detached run,
at most max_concurrent at once, the best configuration reported, Ctrl-C stopping the
running trials cleanly, bad specs refused before anything starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench.catalog import Catalog

ROOT = Path(__file__).resolve().parents[1]


def spec(tmp_path: Path, steps: int, **more: object) -> Path:
    data = {
        "name": "lr",
        "parameters": [{"key": "algorithm.inner_lr", "values": [0.003, 0.01, 0.03, 0.1]}],
        "base": {
            "algorithm": {"name": "maml"},
            "dataset": {"name": "sinusoid"},
            "train": {"meta_batch": 4},  # small: a test's trials train in seconds
            "steps": steps,
            "val_every": 25,
            "val_episodes": 10,
            "test_on_finish": False,
        },
        "max_concurrent": 2,
        **more,
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return path


def sweep(db: Path, *args: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ}
    env.pop("WORKBENCH_FAULT", None)
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "--db", str(db), "sweep", "start", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_grid_of_four_trials_two_at_a_time_finishes_with_the_best_reported(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    proc = sweep(db, str(spec(tmp_path, 100)))
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err
    assert "sweep: 4 of 4 trials finished" in out
    with Catalog.open(db) as cat:
        runs = cat.list_runs()
        assert sorted(r.status for r in runs) == ["finished"] * 4
        assert all("sweep:lr" in r.tags for r in runs)
        lrs = sorted(r.config["algorithm"]["inner_lr"] for r in runs)
        assert lrs == [0.003, 0.01, 0.03, 0.1]
        for r in runs:  # every trial's every step recorded
            assert cat.metrics(r.id, "loss")[0].tolist() == list(range(1, 101))
        spans = [(a["started_at"], a["ended_at"]) for r in runs for a in cat.attempts(r.id)]
        best = min(runs, key=lambda r: r.summary["val_mse"].best)
    for start, _ in spans:  # never more than max_concurrent trials training at once
        assert sum(s <= start < e for s, e in spans) <= 2
    assert f"(run {best.id}), val_mse {best.summary['val_mse'].best:.4f}" in out
    assert (
        json.loads(out[out.index("{") :])["algorithm"]["inner_lr"]
        == best.config["algorithm"]["inner_lr"]
    )


def test_ctrl_c_stops_the_running_trials_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    proc = sweep(db, str(spec(tmp_path, 10**7)))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if db.exists():
            with Catalog.open(db) as cat:
                if sum(r.status == "running" and r.step > 0 for r in cat.list_runs()) == 2:
                    break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 130, err
    with Catalog.open(db) as cat:
        runs = cat.list_runs()
        assert len(runs) == 2  # no new trial started after Ctrl-C
        for r in runs:
            assert r.status == "cancelled"
            assert cat.checkpoint(r.id, "latest").kind == "stop"


def test_a_bad_spec_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    bad = spec(tmp_path, 10)
    data = json.loads(bad.read_text())
    data["parameters"][0]["values"] = [0.01, -1]
    bad.write_text(json.dumps(data))
    proc = sweep(db, str(bad))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        "workbench sweep: error: algorithm.inner_lr: -1 is not allowed: input should be greater "
        "than 0 (in the sweep point algorithm.inner_lr=-1)"
    ]
    assert not db.exists() or Catalog.open(db).list_runs() == []


def test_optuna_with_the_median_pruner_prunes_a_trial_and_keeps_its_checkpoints(
    tmp_path: Path,
) -> None:
    """TPE, seeded, one trial at a time (reproducible): inner learning rates over four decades,
    so that some trials' validation curves lie above the median of the earlier ones at the same
    step; such a trial is stopped early and recorded pruned, its run keeping its checkpoints."""
    db = tmp_path / "p.db"
    path = spec(
        tmp_path, 400, method="optuna", trials=8, max_concurrent=1, pruner="median",
        sampler_seed=3,
        parameters=[{"key": "algorithm.inner_lr", "loguniform": [1e-4, 1.0]}],
    )  # fmt: skip
    data = json.loads(path.read_text())
    data["base"].update(val_every=20, ckpt_every=20)
    path.write_text(json.dumps(data))
    proc = sweep(db, str(path))
    out, err = proc.communicate(timeout=3600)
    assert proc.returncode == 0, err
    with Catalog.open(db) as cat:
        (sw,) = cat.sweeps.list()
        trials = cat.sweeps.trials(sw.id)
        pruned = [t for t in trials if t.status == "pruned"]
        assert pruned, [(t.number, t.status, t.objective) for t in trials]
        for t in pruned:
            run = cat.get_run(t.run_id)
            assert run.status == "cancelled" and run.step < 400  # stopped early
            assert cat.checkpoint(t.run_id, "latest") is not None  # kept
        assert sum(t.status == "finished" for t in trials) + len(pruned) == 8
    assert "pruned" in out
