"""The headless CLI: runs, bad input (exit 2, one line, catalog untouched), signals, resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.catalog import Catalog
from workbench.cli import main

QUICK = [
    "--steps",
    "12",
    "--set",
    "val_every=4",
    "--set",
    "val_episodes=5",
    "--set",
    "test_episodes=5",
    "--set",
    "ckpt_every=4",
    "--quiet",
]


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "e.db"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "e.db"


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_run_records_a_finished_run_with_test_score(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--algorithm", "maml", "--dataset", "sinusoid", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "run 1: finished at step 12" in out and "test mse:" in out
    with Catalog.open(db) as cat:
        run = cat.get_run(1)
        assert run.status == "finished" and run.step == 12
        steps, _, _ = cat.metrics(1, "loss")
        assert steps.tolist() == list(range(1, 13))
        assert [e.split for e in cat.evaluations(1)] == ["test"]
        assert {c.kind for c in cat.checkpoints(1)} >= {"best", "final"}


BAD_INPUTS = [
    (["run", "--algorithm", "nope"], "algorithm.name: unknown algorithm 'nope'; allowed: maml"),
    (["run", "--dataset", "nope"], "dataset.name: unknown dataset 'nope'; allowed: sinusoid"),
    (
        ["run", "--algorithm", "protonet", "--dataset", "sinusoid"],
        "algorithm.name: protonet does not work on regression",
    ),
    (["run", "--dataset", "glyphs", "--ways", "5000"], "ways requested but the"),
    (["run", "--set", "algorithm.inner_lr=-0.1"], "algorithm.inner_lr: -0.1 is not allowed"),
    (["run", "--set", "algorithm.no_such_key=1"], "algorithm.no_such_key: unknown key"),
    (["run", "--set", "nonsense"], "--set: 'nonsense' is not key=value"),
    (
        ["run", "--dataset", "omniglot", "--data-dir", "/no/such/folder"],
        "--data-dir: /no/such/folder is not a folder",
    ),
    (
        ["run", "--device", "cuda:7"],
        "device: 'cuda:7' is not available on this machine; available: auto",
    ),
    (["run", "--preset", "nope"], "--preset: unknown preset 'nope'"),
    (["run", "--steps", "ten"], "argument --steps: invalid int value"),
    (["eval", "99"], "RUN_ID: no run 99"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_one_clear_line_and_touches_nothing(
    db: Path, args: list[str], message: str
) -> None:
    with Catalog.open(db) as cat:
        keep = cat.create_run('{"x": 1}', name="keep", status="finished")
    before = db.read_bytes()
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    with Catalog.open(db) as cat:
        assert [x.id for x in cat.list_runs()] == [keep]
    assert db.read_bytes() == before or Catalog.open(db).get_run(keep).name == "keep"


def test_tampered_checkpoint_is_refused_with_exit_2(db: Path) -> None:
    assert main(["run", *QUICK]) == 0
    with Catalog.open(db) as cat:
        ck = cat.checkpoint(1, "latest")
    with open(ck.path, "r+b") as f:
        f.seek(64)
        f.write(b"tampered")
    for args in (["eval", "1", "--checkpoint", str(ck.step)], ["resume", "1", "--steps", "20"]):
        r = cli(*args)
        assert (
            r.returncode == 2 and "sha256" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        ), r.stderr
    with Catalog.open(db) as cat:
        assert cat.get_run(1).status == "finished" and cat.get_run(1).step == 12


def test_eval_and_export(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--dataset", "glyphs", "--algorithm", "protonet", *QUICK]) == 0
    assert main(["eval", "1", "--episodes", "7", "--ways", "3"]) == 0
    assert "over 7 episodes" in capsys.readouterr().out
    with Catalog.open(db) as cat:
        evals = cat.evaluations(1)
        assert evals[-1].episodes == 7 and evals[-1].protocol["ways"] == 3
    assert main(["export", "1", "--csv", str(tmp_path / "m.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert rows[0].keys() == {"run_id", "step", "metric", "value", "wall_time"}
    assert sorted(int(r["step"]) for r in rows if r["metric"] == "loss") == list(range(1, 13))


def _wait_for_steps(
    db: Path, run_id: int, n: int, proc: subprocess.Popen[str], timeout: float = 90
) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if db.exists():
            with Catalog.open(db, stale_s=None) as cat:
                if cat.has_run(run_id) and cat.get_run(run_id).step >= n:
                    return
        time.sleep(0.3)
    raise AssertionError("the run did not start")


def _start(db: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", "--steps", "100000", "--threads", "1", "--set", "ckpt_every=50", "--quiet", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "WORKBENCH_DB": str(db)},
    )  # fmt: skip


def test_sigterm_cancels_after_writing_a_checkpoint(db: Path) -> None:
    proc = _start(db)
    _wait_for_steps(db, 1, 5, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    with Catalog.open(db) as cat:
        run = cat.get_run(1)
        assert run.status == "cancelled"
        stop = cat.checkpoint(1, "latest")
        assert stop is not None and stop.kind == "stop" and stop.step == run.step


def test_sigkill_is_marked_interrupted_and_resumes_the_same_run(db: Path) -> None:
    proc = _start(db)
    _wait_for_steps(db, 1, 60, proc)  # past the first periodic checkpoint at 50
    proc.kill()
    proc.wait(timeout=30)
    time.sleep(1.5)
    with Catalog.open(db, stale_s=1.0) as cat:
        run = cat.get_run(1)
        assert run.status == "interrupted"
        killed_at = run.step  # the last step the catalog had committed
        ck = cat.checkpoint(1, "latest")
    assert ck is not None and ck.step % 50 == 0 and 50 <= ck.step <= killed_at
    target = ck.step + 20
    r = cli("resume", "1", "--steps", str(target), "--quiet")
    assert r.returncode == 0, r.stderr
    with Catalog.open(db) as cat:
        run = cat.get_run(1)
        assert run.status == "finished" and run.step == target and run.attempt == 2
        steps, _, _ = cat.metrics(1, "loss")
        assert steps.tolist() == list(
            range(1, target + 1)
        )  # the killed attempt's later points are superseded
        all_steps, _, _ = cat.metrics(1, "loss", include_superseded=True)
        assert len(all_steps) >= target + (killed_at - ck.step)  # ... but kept, nothing deleted


def test_resume_from_an_older_checkpoint_creates_a_child_run(db: Path) -> None:
    assert main(["run", *QUICK]) == 0
    assert main(["resume", "1", "--checkpoint", "8", "--steps", "16", "--quiet"]) == 0
    with Catalog.open(db) as cat:
        child = cat.get_run(2)
        assert child.parent_id == 1 and child.status == "finished" and child.step == 16
        assert cat.get_run(1).step == 12


def test_runs_table_and_presets(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", *QUICK, "--tag", "demo"]) == 0
    capsys.readouterr()
    assert main(["runs", "--tag", "demo"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["id", "name", "status"] and "finished" in table[1]
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "maml-omniglot-5w1s" in out and "98.7" in out and "protonet-omniglot-20w1s" in out
