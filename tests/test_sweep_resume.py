"""Sweeps in the catalog (issue 15): the tables on both databases, an upgrade from the previous
release, and the driver killed at every point of its sequence (`SWEEP_POINTS`, and the
launcher's) then `sweep resume` finishing the budget with every configuration trained once;
a trial's process killed -> interrupted, the others finish, `sweep resume` completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweeps import ROOT, spec

from workbench import launcher
from workbench.catalog import Catalog, RunBusyError
from workbench.catalog import store as store_module
from workbench.catalog.errors import LeaseLost
from workbench.catalog.store import new_owner
from workbench.core.faults import SWEEP_POINTS
from workbench.sweeps.driver import TRIAL_ENV


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A SQLite file, then a fresh database on the session's PostgreSQL server."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "experiments.db"


def _sweep(cat: Catalog, owner: str) -> int:
    return cat.sweeps.create(
        name="s", spec_json=json.dumps({"spec": {}, "base": {}}), method="grid",
        metric="val_mse", maximize=False, executor="local", owner=owner,
    )  # fmt: skip


def test_sweep_tables_lease_and_trials(target: Path | str) -> None:
    with Catalog.open(target) as cat:
        _lease_and_trials(cat)


def _lease_and_trials(cat: Catalog) -> None:
    me = new_owner()
    sid = _sweep(cat, me)
    ids = [cat.sweeps.add_trial(sid, n, seed, {"algorithm.inner_lr": lr})
           for n, lr in enumerate([0.1, 0.01]) for seed in (2**40, 1)]  # fmt: skip
    cat.sweeps.update_trial(ids[0], status="finished", objective=0.5)
    cat.sweeps.update_trial(ids[2], status="finished", objective=0.25)
    trials = cat.sweeps.trials(sid)
    assert [(t.number, t.seed) for t in trials] == [(0, 1), (0, 2**40), (1, 1), (1, 2**40)]
    (rec,) = cat.sweeps.list()
    assert (rec.status, rec.trials, rec.done, rec.best) == ("running", 4, 2, 0.25)
    # a second driver is refused while the first beats; a cancel reaches the first
    with pytest.raises(RunBusyError, match="driven by a live process"):
        cat.sweeps.claim(sid, new_owner())
    assert cat.sweeps.request_cancel(sid) is True
    assert cat.sweeps.beat(sid, me) == "cancel"
    cat.sweeps.release(sid, me, "cancelled")
    assert cat.sweeps.get(sid).status == "cancelled"
    # a driver whose process is gone: its sweep reads interrupted and can be claimed
    other = _sweep(cat, f"{os.uname().nodename}:{2**22 + 7}:dead")
    assert cat.sweeps.get(other).status == "interrupted"
    taker = new_owner()
    assert cat.sweeps.claim(other, taker).status == "running"
    with pytest.raises(LeaseLost):
        cat.sweeps.beat(other, "someone:1:else")
    assert cat.sweeps.request_cancel(sid) is False  # no live driver: nothing to ask


def test_a_previous_release_catalog_gains_the_sweep_tables(target: Path | str) -> None:
    db = target
    from alembic import command
    from sqlalchemy import create_engine, inspect

    url = db if isinstance(db, str) else f"sqlite:///{db}"
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg = store_module._alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.exec_driver_sql(
            "INSERT INTO runs (name, status, algorithm, dataset, device, config_json, seed, "
            "created_at, notes, attempt, step) VALUES ('old', 'finished', 'maml', 'sinusoid', "
            "'cpu', '{}', 7, 1.0, '', 1, 10)"
        )
        assert "sweeps" not in inspect(conn).get_table_names()
    engine.dispose()
    with Catalog.open(db) as cat:
        assert cat.migrated
        assert [r.name for r in cat.list_runs()] == ["old"]
        sid = _sweep(cat, new_owner())
        assert cat.sweeps.get(sid).trials == 0


# ---- the driver and its trials killed ----------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "WORKBENCH_THREADS": "1", **extra}
    env.pop("WORKBENCH_FAULT", None)
    env.update(extra)
    return env


def _cli(db: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", "--db", str(db), "sweep", *args],
        capture_output=True, text=True, cwd=ROOT, env=_env(**env), timeout=1800,
    )  # fmt: skip


def _wait_until_over(db: Path) -> None:
    """Trials a killed driver left training finish on their own (they are detached)."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        with Catalog.open(db) as cat:
            if not cat.live_runs():
                return
        time.sleep(0.5)
    raise AssertionError("trials still live after 900 s")


def _one_finished_run_per_configuration(db: Path, lrs: list[float]) -> None:
    with Catalog.open(db) as cat:
        runs = cat.list_runs()
        (sw,) = cat.sweeps.list()
        trials = cat.sweeps.trials(sw.id)
    finished = sorted(r.config["algorithm"]["inner_lr"] for r in runs if r.status == "finished")
    assert finished == sorted(lrs), [
        (r.id, r.status, r.config["algorithm"]["inner_lr"]) for r in runs
    ]
    # at most one run per configuration (none launched twice); every trial row has its run
    assert len(runs) == len(lrs), [(r.id, r.status) for r in runs]
    assert sorted(t.status for t in trials) == ["finished"] * len(lrs)
    assert {t.run_id for t in trials} == {r.id for r in runs}
    assert sw.status == "finished" and sw.done == len(lrs)


LRS = [0.003, 0.01, 0.03, 0.1]


@pytest.mark.parametrize(
    ("point", "adopt"),
    [(f"{p}@2", False) for p in SWEEP_POINTS]
    + [("launch.spawned@3", False), ("sweep.told@1", False)]
    # resumed at once: the trials the killed driver launched are still starting or training
    + [("sweep.launched@2", True), ("sweep.started@2", True)],
)
def test_driver_killed_at_each_point_then_resume_finishes_the_budget_once(
    tmp_path: Path, point: str, adopt: bool
) -> None:
    db = tmp_path / "k.db"
    path = spec(tmp_path, 60 if not adopt else 300)
    killed = _cli(db, "start", str(path), WORKBENCH_FAULT=point)
    assert killed.returncode == -signal.SIGKILL, (killed.stdout, killed.stderr)
    if not adopt:
        _wait_until_over(db)
    with Catalog.open(db) as cat:
        (sw,) = cat.sweeps.list()
        assert sw.status == "interrupted"  # its driver is gone
        live = len(cat.live_runs())
        starting = [t.id for t in cat.sweeps.trials(sw.id) if launcher.marked(TRIAL_ENV, str(t.id))]
    if adopt:  # something to adopt: trials training, or processes still starting
        assert live or starting, (live, starting)
    resumed = _cli(db, "resume", str(sw.id))
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert "sweep: 4 of 4 trials finished" in resumed.stdout, resumed.stdout
    _one_finished_run_per_configuration(db, LRS)


def test_a_killed_trial_is_interrupted_the_others_finish_and_resume_completes_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "--db", str(db), "sweep", "start",
         str(spec(tmp_path, 400, max_concurrent=2))],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    victim = None
    deadline = time.monotonic() + 900
    while victim is None and time.monotonic() < deadline:
        if db.exists():
            with Catalog.open(db) as cat:
                live = [r for r in cat.live_runs() if r.step > 20]
                if live:
                    victim = live[0]
        time.sleep(0.2)
    assert victim is not None
    pid = int(victim.owner.split(":")[1])
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err
    assert "sweep: 3 of 4 trials finished" in out, out
    with Catalog.open(db) as cat:
        assert cat.get_run(victim.id).status == "interrupted"
        (sw,) = cat.sweeps.list()
        assert sorted(t.status for t in cat.sweeps.trials(sw.id)) == ["finished"] * 3 + [
            "interrupted"
        ]
    resumed = _cli(db, "resume", str(sw.id))
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    _one_finished_run_per_configuration(db, LRS)
    with Catalog.open(db) as cat:
        assert cat.get_run(victim.id).attempt == 2  # resumed, not trained again from scratch
    shown = _cli(db, "show", str(sw.id))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    values = [float(ln.split()[4]) for ln in lines[2:6]]
    assert values == sorted(values)  # best (lowest val_mse) first
    assert json.loads(shown.stdout[shown.stdout.index("{") :])["algorithm"]["inner_lr"] in LRS
    listed = _cli(db, "list")
    assert f"{sw.id}" in listed.stdout and "finished" in listed.stdout and "4/4" in listed.stdout


def _running(db: Path, n: int) -> list[int]:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if db.exists():
            with Catalog.open(db) as cat:
                live = [r.id for r in cat.live_runs() if r.status == "running" and r.step > 0]
                if len(live) >= n:
                    return live
        time.sleep(0.3)
    raise AssertionError(f"{n} trials not running after 900 s")


def test_sweep_cancel_from_another_shell_with_and_without_its_driver(tmp_path: Path) -> None:
    # with a live driver: it takes the request, stops its trials (stop checkpoints), ends cancelled
    db = tmp_path / "c.db"
    driver = subprocess.Popen(
        [sys.executable, "-m", "workbench", "--db", str(db), "sweep", "start",
         str(spec(tmp_path, 10**7))],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    live = _running(db, 2)
    asked = _cli(db, "cancel", "1")
    assert asked.returncode == 0 and "cancel asked of its driver" in asked.stdout, asked
    out, err = driver.communicate(timeout=1800)
    assert driver.returncode == 130, err
    with Catalog.open(db) as cat:
        assert cat.sweeps.get(1).status == "cancelled"
        assert len(cat.list_runs()) == 2  # nothing started after the cancel
        for rid in live:
            assert cat.get_run(rid).status == "cancelled"
            assert cat.checkpoint(rid, "latest").kind == "stop"
    # with its driver killed: the trials still train; cancel stops them itself
    db2 = tmp_path / "d.db"
    killed = subprocess.Popen(
        [sys.executable, "-m", "workbench", "--db", str(db2), "sweep", "start",
         str(spec(tmp_path, 10**7))],
        cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    live = _running(db2, 2)
    killed.kill()
    killed.wait()
    done = _cli(db2, "cancel", "1")
    assert done.returncode == 0 and "its driver was gone" in done.stdout, done
    _wait_until_over(db2)
    with Catalog.open(db2) as cat:
        assert cat.sweeps.get(1).status == "cancelled"
        assert all(cat.get_run(rid).status == "cancelled" for rid in live)
