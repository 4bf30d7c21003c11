"""Runs in their own process (issue 13): the launcher, control requests through the catalog,
logs, kills of the run's process and of the launcher, and the rule for sharing the cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from workbench import launcher
from workbench.catalog import Catalog, CatalogListener, NotRunningError
from workbench.catalog.store import new_owner
from workbench.core.config import default_config
from workbench.core.cores import thread_share
from workbench.core.faults import LAUNCH_POINTS

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 600.0  # generous: a loaded 2-core machine imports torch slowly


def config(steps: int) -> dict:
    cfg = default_config("maml", "sinusoid").to_dict()
    cfg.update(steps=steps, val_every=0, ckpt_every=50, test_on_finish=False, threads=1)
    return cfg


def wait_for(what: Callable[[], object], timeout: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def run_of(db: Path, run_id: int):  # type: ignore[no-untyped-def]
    """The run as a catalog opened now sees it (opening marks dead owners' runs interrupted)."""
    with Catalog.open(db) as cat:
        return cat.get_run(run_id)


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBENCH_THREADS": "1"}
    env.pop("WORKBENCH_FAULT", None)
    return subprocess.run(
        [sys.executable, "-m", "workbench", "--db", str(db), *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800,
    )  # fmt: skip


def test_a_detached_run_reports_its_id_then_trains_to_the_end_with_its_log(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    got = launcher.spawn_config(config(300), db).wait(timeout_s=WAIT_S)
    assert got.pid != os.getpid() and got.run_id == 1
    assert got.log_path == tmp_path / "d.db.checkpoints" / "1" / "run.log"
    wait_for(lambda: run_of(db, 1).status == "finished")
    with Catalog.open(db) as cat:
        steps = cat.metrics(1, "loss")[0].tolist()
        assert steps == list(range(1, 301))  # every step's point, none lost
        assert cat.log_path(1) == got.log_path
    assert "run 1: finished at step 300" in got.log_path.read_text()
    assert not list((tmp_path / "d.db.checkpoints").glob("launch-*"))  # temporary files gone


def test_pause_resume_and_stop_from_another_process(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    got = launcher.spawn_config(config(10**7), db).wait(timeout_s=WAIT_S)
    wait_for(lambda: run_of(db, got.run_id).step > 0)
    out = cli(db, "pause", str(got.run_id))
    assert out.returncode == 0 and "pause requested" in out.stdout
    wait_for(lambda: run_of(db, got.run_id).status == "paused")
    step = run_of(db, got.run_id).step
    time.sleep(1.5)
    assert run_of(db, got.run_id).step <= step + 1  # at most the step it was in
    out = cli(db, "resume", str(got.run_id))  # a paused live run: a request, not a new attempt
    assert out.returncode == 0 and "resume requested" in out.stdout, out.stderr
    wait_for(lambda: run_of(db, got.run_id).step > step + 5)
    assert run_of(db, got.run_id).status == "running"
    out = cli(db, "stop", str(got.run_id))
    assert out.returncode == 0, out.stderr
    wait_for(lambda: run_of(db, got.run_id).status == "cancelled")
    with Catalog.open(db) as cat:
        assert cat.checkpoint(got.run_id, "latest").kind == "stop"  # as Ctrl-C: a stop checkpoint
        assert [a["status"] for a in cat.attempts(got.run_id)] == ["cancelled"]
        n = cat.get_run(got.run_id).step
        assert cat.metrics(got.run_id, "loss")[0].tolist() == list(range(1, n + 1))
    again = cli(db, "stop", str(got.run_id))
    assert again.returncode == 2
    assert (
        again.stderr.strip()
        == f"workbench stop: error: run {got.run_id} is not running (cancelled)"
    )


def test_a_killed_run_process_is_interrupted_and_refuses_requests(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    got = launcher.spawn_config(config(10**7), db).wait(timeout_s=WAIT_S)
    wait_for(lambda: run_of(db, got.run_id).step > 0)
    os.kill(got.pid, signal.SIGKILL)
    # its owner is a process of this host that no longer exists: interrupted at once, by
    # the next catalog that opens (or the app's periodic check), not after the stale window
    wait_for(lambda: run_of(db, got.run_id).status == "interrupted", timeout=30)
    with Catalog.open(db) as cat:
        assert cat.live_runs() == []
        with pytest.raises(NotRunningError, match=f"run {got.run_id} is not running"):
            cat.request(got.run_id, "pause")


@pytest.mark.parametrize("point", LAUNCH_POINTS)
def test_a_launcher_killed_while_it_waits_leaves_a_run_that_trains_or_none(
    tmp_path: Path, point: str
) -> None:
    db = tmp_path / "l.db"
    code = (
        "import json, sys; from workbench import launcher; "
        f"launcher.spawn_config(json.loads(sys.argv[1]), {str(db)!r}).wait()"
    )
    env = {**os.environ, "WORKBENCH_FAULT": point}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(config(200))], cwd=ROOT, env=env, timeout=1800,
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    # the run's process lives in its own session: it creates its run and trains on
    wait_for(lambda: db.exists() and Catalog.open(db, stale_s=None).list_runs())
    wait_for(lambda: run_of(db, 1).status == "finished")
    with Catalog.open(db) as cat:
        assert [r.id for r in cat.list_runs()] == [1]  # one run, whole
        assert cat.metrics(1, "loss")[0].tolist() == list(range(1, 201))


def test_cli_detach_logs_follow_and_errors_before_the_run_exists(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    out = cli(
        db,
        "run",
        "--steps",
        "60",
        "--set",
        "val_every=0",
        "--set",
        "test_on_finish=false",
        "--detach",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("run 1: training in process ")
    follow = cli(db, "logs", "1", "--follow")
    assert follow.returncode == 0
    assert follow.stdout.rstrip().endswith("run 1: finished at step 60")
    # bad input: refused at the flag, in the launching process, nothing created
    bad = cli(db, "run", "--steps", "5", "--set", "algorithm.inner_lr=-1", "--detach")
    assert bad.returncode == 2 and "algorithm.inner_lr" in bad.stderr
    # an error only the run's process finds (no images in the folder): its one line, no run
    empty = tmp_path / "empty"
    empty.mkdir()
    late = cli(db, "run", "--dataset", "image-folder", "--data-dir", str(empty), "--detach")
    assert late.returncode == 2, late.stdout
    assert len(late.stderr.strip().splitlines()) == 1 and "workbench run: error:" in late.stderr
    with Catalog.open(db) as cat:
        assert [r.id for r in cat.list_runs()] == [1]
    assert cli(db, "logs", "7").returncode == 2


def test_the_thread_rule_splits_the_cores_between_runs_training_here() -> None:
    assert thread_share(1, cores=2) == 2
    assert thread_share(2, cores=2) == 1  # two runs on 2 cores: one thread each
    assert thread_share(3, cores=2) == 1  # never below one
    assert thread_share(3, cores=16) == 5


def test_a_run_takes_its_share_as_other_runs_start_training_here(tmp_path: Path) -> None:
    """The writer's heartbeat counts the runs training on this host (live leases) and hands
    the Trainer its share: with a second run training, cores // 2."""
    with Catalog.open(tmp_path / "s.db") as cat:
        cat.create_run("{}", name="other", status="running", owner=new_owner())
        mine = cat.create_run("{}", name="mine")
        shares: list[int] = []

        class Control:
            def share_threads(self, n: int) -> None:
                shares.append(n)

        listener = CatalogListener(cat, mine, heartbeat_s=0.2)
        listener.attach(Control())
        try:
            wait_for(lambda: shares, timeout=120)
        finally:
            listener.close()
        assert shares[-1] == thread_share(2)
