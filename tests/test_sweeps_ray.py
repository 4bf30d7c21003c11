"""Sweeps on Ray (issue 15, `--executor ray`): every trial a Ray task running an ordinary
`workbench run`, on a local Ray the driver starts and on a Ray head the test starts itself
(joined with --address, PostgreSQL catalog); a cluster with a SQLite catalog refused in one
line; a killed trial ends interrupted, is not re-run by Ray (max_retries=0), and `sweep
resume` continues it.

Without Ray installed these tests are skipped, except with CI=true, where they fail (the rule
of tests/postgres_fixture.py). Ray starts slowly on two cores: no wall-clock assertions, the
timeouts are hang guards only."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sweeps import spec

from workbench.catalog import Catalog
from workbench.sweeps.driver import trial_tag

ROOT = Path(__file__).resolve().parents[1]
LRS = [0.003, 0.01, 0.03, 0.1]
REFUSED = (
    "workbench sweep: error: --address: a Ray cluster needs a catalog every machine reaches: "
    "use a PostgreSQL catalog (--db postgresql+psycopg://...)"
)


@pytest.fixture
def _ray_installed() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                "Ray tests cannot run (CI=true): ray is not installed (pip install '.[test]')"
            )
        pytest.skip("Ray tests need ray: pip install '.[ray]'")


needs_ray = pytest.mark.usefixtures("_ray_installed")


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "WORKBENCH_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    for name in ("WORKBENCH_FAULT", "RAY_ADDRESS"):
        env.pop(name, None)
    env.update(extra)
    return env


def _sweep(db: str | Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "--db", str(db), "sweep", *args],
        cwd=ROOT, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _grid_finished(db: str | Path, out: str, executor: str = "ray") -> None:
    """All four trials finished as runs tagged with their sweep and trial, never more than
    max_concurrent (2) training at once, one run per trial."""
    assert "sweep: 4 of 4 trials finished" in out, out
    with Catalog.open(db) as cat:
        runs = cat.list_runs()
        (sw,) = cat.sweeps.list()
        trials = cat.sweeps.trials(sw.id)
        assert sw.executor == executor and sw.status == "finished"
        assert sorted(r.status for r in runs) == ["finished"] * 4
        assert sorted(r.config["algorithm"]["inner_lr"] for r in runs) == LRS
        assert sorted(t.status for t in trials) == ["finished"] * 4
        by_id = {r.id: r for r in runs}
        for t in trials:
            run = by_id[t.run_id]
            assert "sweep:lr" in run.tags and trial_tag(t.id) in run.tags
            assert [r.id for r in cat.list_runs(tag=trial_tag(t.id))] == [run.id]
            assert run.config["threads"] == 1  # explicit torch threads for every trial
            assert run.log_path and Path(run.log_path).is_file()  # its output beside it
        spans = [(a["started_at"], a["ended_at"]) for r in runs for a in cat.attempts(r.id)]
    for start, _ in spans:  # never more than max_concurrent trials training at once
        assert sum(s <= start < e for s, e in spans) <= 2


@needs_ray
def test_a_grid_of_four_trials_two_at_a_time_on_a_local_ray(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    proc = _sweep(db, "start", str(spec(tmp_path, 80)), "--executor", "ray")
    out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, (out, err)
    _grid_finished(db, out)


# ---- a Ray head of the test's own ---------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session(sid: int) -> list[int]:
    """Live processes of session `sid` (the head's `ray start` and everything it started)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


@pytest.fixture
def ray_head() -> Iterator[str]:
    """`ray start --head --block` on a free port with its own temporary folder, in a session of
    its own; stopped by signalling that session only (`ray stop` would stop every Ray of this
    user). Token authentication off: the head and the driver run with RAY_AUTH_MODE=disabled."""
    ray_cli = Path(sys.executable).with_name("ray")
    folder = tempfile.mkdtemp(prefix="wb-ray-", dir="/tmp")  # short: Ray's socket paths
    port = _free_port()
    log = open(os.path.join(folder, "head.log"), "wb")  # noqa: SIM115
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", folder,
         "--object-store-memory", str(100 * 1024 * 1024)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, env=_env(RAY_AUTH_MODE="disabled"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "Ray runtime started" not in Path(folder, "head.log").read_text(errors="replace"):
            assert head.poll() is None, Path(folder, "head.log").read_text(errors="replace")
            assert time.monotonic() < deadline, "the Ray head did not start in 300 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        _signal_all(_session(head.pid), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _session(head.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        _signal_all(_session(head.pid), signal.SIGKILL)
        head.wait(timeout=60)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@needs_ray
def test_a_grid_on_a_ray_head_joined_by_address_with_a_postgresql_catalog(
    tmp_path: Path, ray_head: str, pg_url: str
) -> None:
    proc = _sweep(
        pg_url, "start", str(spec(tmp_path, 80)), "--executor", "ray", "--address", ray_head,
        RAY_AUTH_MODE="disabled",
    )  # fmt: skip
    out, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, (out, err)
    _grid_finished(pg_url, out)
    with Catalog.open(pg_url) as cat:  # the checkpoints went where the driver's catalog keeps them
        for r in cat.list_runs():
            assert Path(r.log_path).is_relative_to(tmp_path / "checkpoints")


@needs_ray
def test_a_cluster_address_with_a_sqlite_catalog_is_one_line_and_starts_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "a.db"
    path = str(spec(tmp_path, 10))
    for args, line in (
        (["--executor", "ray", "--address", f"127.0.0.1:{_free_port()}"], REFUSED),
        (["--executor", "ray", "--address", "auto"], REFUSED),
        (
            ["--address", "auto"],
            "workbench sweep: error: --address: only with --executor ray",
        ),
    ):
        proc = _sweep(db, "start", path, *args)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (out, err)
        assert err.strip().splitlines() == [line]
        assert out == ""
    with Catalog.open(db) as cat:
        assert cat.list_runs() == [] and cat.sweeps.list() == []


@needs_ray
def test_a_killed_trial_is_interrupted_not_rerun_by_ray_and_resume_completes_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "k.db"
    proc = _sweep(db, "start", str(spec(tmp_path, 400)), "--executor", "ray")
    victim = None
    deadline = time.monotonic() + 900
    while victim is None and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if db.exists():
            with Catalog.open(db) as cat:
                live = [r for r in cat.live_runs() if r.step > 20]
                victim = live[0] if live else None
        time.sleep(0.2)
    assert victim is not None
    os.kill(int(victim.owner.split(":")[1]), signal.SIGKILL)  # its `workbench run` process
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, (out, err)
    assert "sweep: 3 of 4 trials finished" in out, out
    with Catalog.open(db) as cat:
        assert cat.get_run(victim.id).status == "interrupted"
        assert cat.get_run(victim.id).attempt == 1  # Ray did not run it again
        (sw,) = cat.sweeps.list()
        trials = cat.sweeps.trials(sw.id)
        assert sorted(t.status for t in trials) == ["finished"] * 3 + ["interrupted"]
        assert len(cat.list_runs()) == 4  # nor started it from scratch as another run
        for t in trials:
            assert len(cat.list_runs(tag=trial_tag(t.id))) == 1
    resumed = _sweep(db, "resume", str(sw.id))
    out, err = resumed.communicate(timeout=1800)
    assert resumed.returncode == 0, (out, err)
    assert "sweep: 4 of 4 trials finished" in out, out
    with Catalog.open(db) as cat:
        assert cat.get_run(victim.id).status == "finished"
        assert cat.get_run(victim.id).attempt == 2  # resumed from its checkpoint
        assert len(cat.list_runs()) == 4


# ---- without a cluster --------------------------------------------------------------------------
def test_ray_is_imported_only_when_the_executor_is_used() -> None:
    code = (
        "import sys, workbench.cli, workbench.sweeps.ray_executor, workbench.sweeps.driver; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_without_ray_the_executor_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.core.errors import ConfigError
    from workbench.sweeps import ray_executor

    monkeypatch.setattr(ray_executor, "ray_missing", lambda: True)
    with Catalog.open(tmp_path / "m.db") as cat, pytest.raises(ConfigError) as got:
        ray_executor.RayExecutor(cat)
    assert str(got.value) == "--executor: ray is not installed: pip install '.[ray]'"


@needs_ray
def test_a_task_that_ended_without_a_run_fails_its_trial_with_the_childs_line(
    tmp_path: Path,
) -> None:
    """poll: no run under the trial's tag and the task over -> the child's own error line."""
    from workbench.sweeps.ray_executor import RayExecutor

    with Catalog.open(tmp_path / "p.db") as cat, RayExecutor(cat) as executor:
        handle = executor.start({"algorithm": {"name": "nope"}, "steps": 5}, trial_id=7)
        deadline = time.monotonic() + 300
        with pytest.raises(RuntimeError) as got:
            while time.monotonic() < deadline:
                assert executor.poll(handle) is None
                time.sleep(0.2)
        assert str(got.value).startswith(
            "workbench run: error: algorithm.name: unknown algorithm 'nope'"
        )
        assert "\n" not in str(got.value) and cat.list_runs() == []
