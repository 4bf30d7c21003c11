"""One run on several processes (torch.distributed): the same numbers as one process, rank 0
alone writes the records, control reaches every rank at the same step, a lost rank fails the
run with its name, and checkpoints resume on any world size."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch.distributed as dist
from test_detached import run_of, wait_for  # noqa: E402  (tests/ is on the path)

from workbench.catalog import Catalog
from workbench.core import distributed

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch without gloo"
)

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("helpers_dist_equivalence.py")
WAIT_S = 900.0  # generous: a loaded 2-core machine imports torch slowly, three times at once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    out = {**os.environ, "WORKBENCH_THREADS": "1"}
    out.pop("WORKBENCH_FAULT", None)
    return out


def cli(db: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", "--db", str(db), *args],
        capture_output=True, text=True, cwd=cwd, env=env(), timeout=1800,
    )  # fmt: skip


def start(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "--db", str(db), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env(),
        start_new_session=True,
    )  # fmt: skip


def only_run(db: Path) -> int:
    with Catalog.open(db) as cat:
        runs = cat.list_runs()
    assert len(runs) == 1, runs
    return runs[0].id


def first_run(db: Path) -> int:
    """The id of the catalog's first run once it exists, else 0."""
    if not db.exists():
        return 0
    with Catalog.open(db) as cat:
        runs = cat.list_runs()
    return runs[-1].id if runs else 0


def losses(db: Path, run_id: int) -> dict[int, float]:
    with Catalog.open(db) as cat:
        steps, values, _ = cat.metrics(run_id, "loss")
    return {int(s): float(v) for s, v in zip(steps, values, strict=True)}


SINUSOID = ["run", "--dataset", "sinusoid", "--meta-batch", "5", "--seed", "7", "--quiet",
            "--set", "val_every=10", "--set", "val_episodes=7", "--set", "test_episodes=9"]  # fmt: skip


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_the_ranks_shares_cover_the_meta_batch_once_each(world: int) -> None:
    for n in range(world, 40):
        shares = [distributed.Group(r, world, r, world, "gloo").shard(n) for r in range(world)]
        assert [i for s in shares for i in s] == list(range(n))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="cannot be shared"):
        distributed.Group(0, world + 1, 0, world + 1, "gloo").shard(world)


def test_backend_and_device_per_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """NCCL (with gloo for the small CPU objects) when every local rank has a GPU of its own,
    gloo when ranks would share one or the run is on the CPU; a rank takes its local GPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.backend_for("auto") == "cpu:gloo,cuda:nccl"
    assert distributed.backend_for("cpu") == "gloo"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    assert distributed.backend_for("cuda") == "gloo"
    g = distributed.Group(3, 4, 1, 2, "cpu:gloo,cuda:nccl")
    assert distributed.rank_device(torch.device("cuda", 0), g) == torch.device("cuda", 1)
    assert distributed.rank_device(torch.device("cpu"), g) == torch.device("cpu")
    assert distributed.rank_device(torch.device("cuda", 0), None) == torch.device("cuda", 0)


def test_two_ranks_in_float64_equal_one_process_to_1e10() -> None:
    """MAML (second and first order), ProtoNet, Meta-LSTM (support mini-batches) and the
    pretrain baseline, 20 steps on 2 gloo ranks against one process: step losses, validation
    and test scores and final weights within 1e-10, with meta-batches of 3 and 5 (uneven
    shares: a rank's gradient weighted 1/2 instead of by its share of the tasks fails this)."""
    port = free_port()
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"wb-dist-eq-{port}.json"
    base = {**env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
            "LOCAL_WORLD_SIZE": "2"}  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, str(HELPER), str(out)],
            cwd=ROOT,
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    logs = [p.communicate(timeout=WAIT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    gaps = json.loads(out.read_text())
    out.unlink()
    assert len(gaps) == 6
    for name, g in gaps.items():
        assert g["steps"] == 20, name
        assert g["evals"] >= 3, name  # two validations and the test
        assert g["loss"] <= 1e-10, (name, g)
        assert g["scores"] <= 1e-10, (name, g)
        assert g["weights"] <= 1e-10, (name, g)


def test_a_two_rank_run_trains_detached_records_its_ranks_and_no_other_catalog(
    tmp_path: Path,
) -> None:
    """`run --nproc 2 --detach`: the launcher gets the run id from rank 0; the run finishes
    with its test score; its environment names both ranks; the other rank, started in an
    empty folder, creates no catalog there."""
    work = tmp_path / "work"
    work.mkdir()
    db = tmp_path / "cat" / "c.db"
    db.parent.mkdir()
    got = cli(db, *SINUSOID, "--steps", "30", "--nproc", "2", "--detach", cwd=work)
    assert got.returncode == 0, got.stderr
    run_id = int(got.stdout.split()[1].rstrip(":"))
    run = wait_for(lambda: (r := run_of(db, run_id)).status not in ("queued", "running") and r)
    assert run.status == "finished", run.error
    assert run.step == 30
    env_ = run.environment
    assert env_["world_size"] == 2 and env_["backend"] == "gloo"
    assert [r["rank"] for r in env_["ranks"]] == [0, 1]
    assert all(r["host"] == socket.gethostname() and r["device"] == "cpu" for r in env_["ranks"])
    with Catalog.open(db) as cat:
        assert [e.split for e in cat.evaluations(run_id)].count("test") == 1
        log = cat.log_path(run_id).read_text()
    assert "rank 1: finished at step 30" in log
    assert sorted(p.name for p in work.iterdir()) == [], "a rank created files in its folder"


def test_more_ranks_than_tasks_is_refused_with_one_line(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    got = cli(db, "run", "--dataset", "sinusoid", "--meta-batch", "2", "--nproc", "3")
    assert got.returncode == 2
    assert got.stderr.strip().count("\n") == 0
    assert "--nproc" in got.stderr and "meta-batch of 2 tasks" in got.stderr
    with Catalog.open(db) as cat:
        assert cat.list_runs() == []


def test_a_checkpoint_resumes_on_another_world_size(tmp_path: Path) -> None:
    """2 ranks to step 10, then 1 process to 20; and 1 process to 10, then 2 ranks to 20:
    both continue the one-process curve (float32: the ranks sum in another order)."""
    ref_db, a_db, b_db = tmp_path / "ref.db", tmp_path / "a.db", tmp_path / "b.db"
    assert cli(ref_db, *SINUSOID, "--steps", "20").returncode == 0
    ref = losses(ref_db, only_run(ref_db))
    for db, first, second in ((a_db, ["--nproc", "2"], []), (b_db, [], ["--nproc", "2"])):
        got = cli(db, *SINUSOID, "--steps", "10", *first)
        assert got.returncode == 0, got.stderr + got.stdout
        run_id = only_run(db)
        got = cli(db, "resume", str(run_id), "--steps", "20", "--quiet", *second)
        assert got.returncode == 0, got.stderr + got.stdout
        run = run_of(db, run_id)
        assert run.status == "finished" and run.step == 20, run.error
        curve = losses(db, run_id)
        assert sorted(curve) == sorted(ref)
        for step, value in ref.items():
            assert curve[step] == pytest.approx(value, rel=1e-4, abs=1e-6), (db.name, step)


def test_bare_torchrun_runs_the_cli_unchanged(tmp_path: Path) -> None:
    """The multi-machine recipe's command on one machine: torchrun's own launcher (no
    `--nproc` agent) starting `-m workbench run` on 2 ranks."""
    db = tmp_path / "c.db"
    got = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "workbench", "--db", str(db), *SINUSOID, "--steps", "12"],
        capture_output=True, text=True, cwd=ROOT, env=env(), timeout=1800,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    run = run_of(db, only_run(db))
    assert run.status == "finished" and run.step == 12, run.error
    assert run.environment["world_size"] == 2


def rank_pid(agent: int, rank: int) -> int:
    """The pid of rank `rank` among the children of the agent `agent`."""
    want = f"RANK={rank}".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == agent and want in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except (OSError, IndexError, ValueError):
            continue
    return 0


@contextmanager
def training(db: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A long 2-rank run that has taken 5 steps: its agent and run id. Whatever is still alive
    at the end (a failed test) is killed: the agent and its ranks (their own sessions)."""
    agent = start(db, *SINUSOID, "--steps", "1000000", "--nproc", "2")
    ranks = []
    try:
        run_id = int(wait_for(lambda: first_run(db)))  # type: ignore[arg-type]
        wait_for(lambda: run_of(db, run_id).step >= 5)
        ranks = [rank_pid(agent.pid, r) for r in (0, 1)]
        yield agent, run_id
    finally:
        for pid in [agent.pid, *ranks] if agent.poll() is None else ranks:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        agent.wait()


def test_pause_resume_and_ctrl_c_reach_every_rank_at_the_same_step(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with training(db) as (agent, run_id):
        assert cli(db, "pause", str(run_id)).returncode == 0
        wait_for(lambda: run_of(db, run_id).status == "paused")
        held = run_of(db, run_id).step
        time.sleep(3 * 1.0 + 1)  # three HOLD ticks: the ranks wait together, nobody times out
        assert run_of(db, run_id).step == held
        assert cli(db, "resume", str(run_id)).returncode == 0
        wait_for(lambda: run_of(db, run_id).step >= held + 5)
        os.kill(agent.pid, signal.SIGINT)  # Ctrl-C in the agent's terminal
        out = agent.communicate(timeout=WAIT_S)[0]
    assert agent.returncode == 130, out
    run = run_of(db, run_id)
    assert run.status == "cancelled" and run.error == "stopped by the user"
    with Catalog.open(db) as cat:
        stops = [c.step for c in cat.checkpoints(run_id) if c.kind == "stop"]
    assert stops == [run.step]
    assert f"rank 1: cancelled at step {run.step}" in out


def test_a_killed_rank_fails_the_run_naming_the_rank_and_its_signal(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    with training(db) as (agent, run_id):
        victim = int(wait_for(lambda: rank_pid(agent.pid, 1)))
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        out = agent.communicate(timeout=WAIT_S)[0]
        ended_s = time.monotonic() - killed_at
    print(f"run failed {ended_s:.1f} s after SIGKILL of rank 1: {run_of(db, run_id).error}")
    assert agent.returncode == 1, out
    run = run_of(db, run_id)
    assert run.status == "failed", (run.status, run.error)
    assert "rank 1 of 2" in run.error and "SIGKILL" in run.error, run.error
    assert "stopped by the user" not in run.error
    assert "rank 1 of 2" in out and "SIGKILL" in out
