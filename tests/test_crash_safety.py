"""Crash safety: a run killed at every named point of the checkpoint and catalog sequences
leaves a catalog whose listed checkpoints all have their complete files, a run that becomes
interrupted at once and resumes to the end with one point per step; two owners of one run
are refused; storage faults pause a run instead of dropping what it wrote."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.api import trainer_for
from workbench.catalog import Catalog, CatalogListener
from workbench.catalog.errors import CatalogError, NotRunningError, RunBusyError
from workbench.core.config import RunConfig, default_config
from workbench.core.events import RunStarted, StepMetrics
from workbench.core.faults import POINTS
from workbench.files import complete as _complete

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
RUN_FLAGS = [
    "run", "--quiet", "--steps", str(STEPS), "--seed", "1",
    "--set", "ckpt_every=2", "--set", "keep_last=1", "--set", "val_every=4",
    "--set", "val_episodes=4", "--set", "test_episodes=4", "--set", "train.meta_batch=2",
]  # fmt: skip


def small(steps: int = STEPS) -> RunConfig:
    d = default_config("maml", "sinusoid").to_dict()
    d.update(steps=steps, ckpt_every=2, keep_last=1, val_every=4, val_episodes=4, seed=1)
    d.update(test_episodes=4, threads=1)
    d["train"]["meta_batch"] = 2
    return RunConfig.from_dict(d)


def cli(db: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "WORKBENCH_THREADS": "1"}
    env.pop("WORKBENCH_FAULT", None)
    if fault:
        env["WORKBENCH_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", "--db", str(db), *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800,
    )  # fmt: skip


def assert_listed_checkpoints_complete(cat: Catalog, run_id: int) -> None:
    for ck in cat.checkpoints(run_id):
        assert _complete(ck.path, ck.sha256), f"listed checkpoint {ck.path} is missing or partial"


def resume_to_the_end(cat: Catalog, run_id: int) -> None:
    """What `workbench resume` does: the newest usable checkpoint, or step 0 without one."""
    latest = cat.checkpoint(run_id, "latest")
    config = RunConfig.from_json(cat.get_run(run_id).config_json)
    trainer, rid = trainer_for(cat, config, [], run_id=run_id, resume=latest)
    assert rid == run_id
    result = trainer.run()
    for listener in trainer.listeners:
        listener.close()
    assert result.status == "finished", result.error


@pytest.mark.slow
@pytest.mark.parametrize("point", [p if p.startswith("run.") else f"{p}@2" for p in POINTS])
def test_kill_at_every_point_then_resume(tmp_path: Path, point: str) -> None:
    db = tmp_path / "k.db"
    proc = cli(db, *RUN_FLAGS, fault=point)
    assert proc.returncode == -9, (point, proc.returncode, proc.stderr[-2000:])
    with Catalog.open(db) as cat:  # the owner is dead: interrupted at once, leftovers repaired
        (run,) = cat.list_runs()
        assert run.status == "interrupted", (point, run.status)
        had = cat.checkpoint(run.id, "latest")
        assert ("no checkpoint" in (run.error or "")) == (had is None)
        assert_listed_checkpoints_complete(cat, run.id)
        folder = cat.checkpoint_dir(run.id)
        listed = {c.path for c in cat.checkpoints(run.id)}
        # a dirty checkout's code.diff is the run's record, not a checkpoint left over
        on_disk = {
            str(p) for p in (folder.iterdir() if folder.exists() else ()) if p.suffix != ".diff"
        }
        assert on_disk == listed, f"left-overs after {point}: {sorted(on_disk - listed)}"
        before = cat.metrics(run.id, "loss")[0].tolist()
        resume_to_the_end(cat, run.id)
        run = cat.get_run(run.id)
        steps = cat.metrics(run.id, "loss")[0].tolist()
        assert (run.status, run.step) == ("finished", STEPS)
        assert steps == list(range(1, STEPS + 1)), steps  # one point per step, none lost
        kept = had.step if had else 0
        assert before[:kept] == steps[:kept]  # the history up to the checkpoint is kept
        attempts = cat.attempts(run.id)
        assert [a["status"] for a in attempts][-1] == "finished"
        assert_listed_checkpoints_complete(cat, run.id)


def test_a_second_owner_is_refused_while_the_first_is_alive(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    with Catalog.open(db) as cat:
        rid = cat.create_run_from_config(small(), owner=None)
        first = CatalogListener(cat, rid)  # claims the run
        try:
            with pytest.raises(RunBusyError, match=f"run {rid} is .* in process {os.getpid()}"):
                CatalogListener(cat, rid)
            latest = cat.checkpoint(rid, "latest")
            with pytest.raises(RunBusyError):
                trainer_for(cat, small(), [], run_id=rid, resume=latest)
        finally:
            first.close()
        second = CatalogListener(cat, rid)  # the first let go: a resume may proceed
        second.close()
        # two resumes at once: the first queues the run under its lease before it trains, so
        # the second is refused even though nothing has started yet
        first_resume, _ = trainer_for(cat, small(), [], run_id=rid, resume=None)
        assert cat.get_run(rid).status == "queued"
        with pytest.raises(RunBusyError):
            trainer_for(cat, small(), [], run_id=rid, resume=None)
        for listener in first_resume.listeners:
            listener.close()


def test_resume_from_another_process_is_refused_while_the_run_trains(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    env = {**os.environ, "WORKBENCH_THREADS": "1"}
    env.pop("WORKBENCH_FAULT", None)
    long = [a if a != str(STEPS) else "100000" for a in RUN_FLAGS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "--db", str(db), *long],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600  # a hang guard only
        while time.monotonic() < deadline:
            if db.exists():
                with Catalog.open(db) as cat:
                    runs = cat.list_runs()
                    if runs and cat.checkpoint(runs[0].id, "latest") is not None:
                        break
            time.sleep(0.2)
        rid = runs[0].id
        second = cli(db, "resume", str(rid), "--steps", "200000", "--quiet")
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and f"run {rid} is running in process {proc.pid}" in err[0], err
    finally:
        proc.terminate()
        proc.communicate(timeout=1800)
    with Catalog.open(db) as cat:
        r = cat.get_run(rid)
        assert r.status == "cancelled" and r.owner is None
        steps = cat.metrics(rid, "loss")[0].tolist()
        assert steps == list(range(1, len(steps) + 1))  # no step written twice


class Control:
    """Stands in for the Trainer: records what the listener asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def hold(self, key: str, reason: str) -> None:
        self.calls.append(("hold", reason))

    def release(self, key: str) -> None:
        self.calls.append(("release", key))

    def abort(self, reason: str) -> None:
        self.calls.append(("abort", reason))


@pytest.mark.parametrize("code", [13, 5])  # SQLITE_FULL, SQLITE_BUSY
def test_catalog_full_or_busy_pauses_and_drops_nothing(tmp_path: Path, code: int) -> None:
    """Injected SQLite errors on metric writes: the run is held (full: "disk full" and the
    folder), released once writes go through, and every point is stored."""
    from bench.faults import trial_catalog_error

    assert trial_catalog_error(tmp_path, code) is None


def test_checkpoint_disk_full_pauses_then_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workbench.core.checkpoint as checkpoint
    import workbench.core.engine as engine

    real = checkpoint.write_temp
    failures = {"n": 2}

    def full(*a, **k):  # type: ignore[no-untyped-def]
        if failures["n"] > 0:
            failures["n"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(checkpoint, "write_temp", full)  # what save_two_phase writes with
    monkeypatch.setattr(engine, "STORAGE_RETRY_S", 0.05)
    statuses: list[tuple[str, str | None]] = []

    class Watch:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return lambda *a: statuses.append(a) if name == "on_status" else None

    with Catalog.open(tmp_path / "d.db") as cat:
        trainer, rid = trainer_for(cat, small(), [Watch()])
        result = trainer.run()
        for listener in trainer.listeners:
            getattr(listener, "close", lambda: None)()
        assert result.status == "finished", result.error
        assert statuses[0][0] == "paused" and statuses[0][1].startswith("disk full: ")
        assert statuses[1] == ("running",)
        assert cat.get_run(rid).status == "finished"
        assert_listed_checkpoints_complete(cat, rid)
        assert cat.metrics(rid, "loss")[0].tolist() == list(range(1, STEPS + 1))


def test_catalog_deleted_during_a_run_stops_it(tmp_path: Path) -> None:
    db = tmp_path / "gone.db"
    cat = Catalog.open(db)
    try:
        trainer, rid = trainer_for(cat, small(steps=100000), [])

        class DeleteAt(CatalogListener.__mro__[1]):  # a plain Listener
            def on_step(self, e):  # type: ignore[no-untyped-def]
                if e.step == 3:
                    for suffix in ("", "-wal", "-shm"):
                        Path(str(db) + suffix).unlink(missing_ok=True)

        trainer.listeners.append(DeleteAt())
        result = trainer.run()
        for listener in trainer.listeners:
            getattr(listener, "close", lambda: None)()
        assert result.status == "failed" and "was deleted" in (result.error or "")
        assert result.step < 100000
    finally:
        cat.close()


# ---- the catalog file itself ------------------------------------------------------------
def _file_cases() -> dict[str, object]:
    """bench/faults.py's unusable catalog files; "parent is a file" has its own test below."""
    from bench.faults import file_cases

    return {k: v for k, v in file_cases().items() if k != "parent is a file"}


CASES = _file_cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_file_that_is_not_a_usable_catalog_is_one_line_and_untouched(
    tmp_path: Path, case: str
) -> None:
    path = tmp_path / "c.db"
    CASES[case](path)  # type: ignore[operator]
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(CatalogError) as err:
        with Catalog.open(path) as cat:
            cat.list_runs()
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    if before is not None:
        assert path.read_bytes() == before  # not migrated, not switched to WAL
    from workbench.cli import main

    proc = cli(path, "runs")
    assert proc.returncode == 2, (case, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert callable(main)


def test_parent_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(CatalogError, match="is a file, not a folder"):
        Catalog.open(tmp_path / "f" / "c.db")


@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_previous_release_catalog_is_upgraded(tmp_path: Path, revision: str) -> None:
    """A catalog made by an earlier release (revision 0001, no application id; 0002, before
    control requests) opens, upgrades to the new schema and keeps its runs and checkpoints
    usable, and its runs take control requests' columns empty."""
    from alembic import command

    from workbench.catalog.store import _alembic_config

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA journal_mode = WAL")
    c.close()
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        if revision == "0002":  # that release stamped its files
            from workbench.catalog.store import APPLICATION_ID

            conn.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.exec_driver_sql("PRAGMA user_version = 2")
        conn.exec_driver_sql(
            "INSERT INTO runs (id, name, status, algorithm, dataset, device, config_json, "
            "created_at, notes, attempt, step) VALUES (1, 'old', 'finished', 'maml', "
            "'sinusoid', 'cpu', '{}', 1.0, '', 1, 10)"
        )
        conn.exec_driver_sql(
            "INSERT INTO checkpoints (run_id, step, kind, path, created_at) "
            "VALUES (1, 10, 'final', '/x/final.pt', 1.0)"
        )
    engine.dispose()
    with Catalog.open(path) as cat:
        assert cat.migrated and cat.get_run(1).name == "old"
        assert [c.step for c in cat.checkpoints(1)] == [10]  # old rows are complete: ready
        assert cat.get_run(1).request is None
        with pytest.raises(NotRunningError, match="run 1 is not running"):
            cat.request(1, "stop")


def _read_only_mount(folder: Path, code: str) -> subprocess.CompletedProcess[str] | None:
    """Run `code` with `folder` bind-mounted read-only in a private mount namespace (CI runs
    as root, where file permissions test nothing); None where namespaces are not allowed."""
    import shlex

    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    f = shlex.quote(str(folder))
    script = (
        f"mount --bind {f} {f} && mount -o remount,bind,ro {f} && "
        f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    )
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,
    )  # fmt: skip


def test_read_only_catalog_reads_and_refuses_writes_in_one_line(tmp_path: Path) -> None:
    """On a read-only mount a catalog lists runs and exports them; a command that writes
    exits 2 with one line, and nothing in the file changes."""
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "ro.db"
    with Catalog.open(db) as cat:
        rid = cat.create_run_from_config(small(), status="finished")
        cat.add_metrics(rid, [(1, "loss", 0.5, 1.0)])
    out = tmp_path / "out.csv"
    code = (
        "import sys; from workbench.cli import main; "
        f"print('runs', main(['--db', {str(db)!r}, 'runs'])); "
        f"print('export', main(['--db', {str(db)!r}, 'export', '{rid}', '--csv', {str(out)!r}])); "
        f"print('run', main(['--db', {str(db)!r}, 'run', '--steps', '2', '--quiet']))"
    )
    before = db.read_bytes()
    proc = _read_only_mount(folder, code)
    if proc is None:
        pytest.skip("no mount namespaces here for a read-only bind mount")
    assert "runs 0" in proc.stdout and "export 0" in proc.stdout, proc.stdout + proc.stderr
    assert "run 2" in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "read-only" in proc.stderr, proc.stderr
    assert out.read_text().count("\n") == 2  # header + the one point
    assert db.read_bytes() == before


def test_killed_while_starting_resumes_from_scratch_with_the_cli(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert cli(db, *RUN_FLAGS, fault="run.created").returncode == -9
    listed = cli(db, "runs")
    assert "interrupted" in listed.stdout, listed.stdout + listed.stderr
    again = cli(db, "resume", "1", "--quiet")
    assert again.returncode == 0, again.stderr
    assert "starting it again from step 0" in again.stdout
    with Catalog.open(db) as cat:
        r = cat.get_run(1)
        assert (r.status, r.step) == ("finished", STEPS)
        assert [a["number"] for a in cat.attempts(1)] == [1]  # it never started before


def test_a_write_lock_held_past_the_busy_timeout_never_fails_the_run(tmp_path: Path) -> None:
    """Another process holds the write lock longer than the busy timeout while a run starts
    and trains: the run goes on, the start and every point land once the lock is free."""
    db = tmp_path / "lock.db"
    with Catalog.open(db) as setup:
        rid = setup.create_run_from_config(small())
    cat = Catalog.open(db, busy_timeout_s=0.05)
    blocker = sqlite3.connect(db, timeout=5, check_same_thread=False)
    blocker.isolation_level = None
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        # the listener claims the run: it waits for the lock (here: taken again after the claim)
        claimed = threading.Event()
        real_claim = cat.claim

        def claim_then_lock_again(*a, **k):  # type: ignore[no-untyped-def]
            real_claim(*a, **k)
            blocker.execute("BEGIN IMMEDIATE")
            claimed.set()

        cat.claim = claim_then_lock_again  # type: ignore[method-assign]
        threading.Timer(0.3, lambda: blocker.execute("ROLLBACK")).start()
        listener = CatalogListener(cat, rid, flush_s=0.05, heartbeat_s=0.05)
        assert claimed.is_set()
        control = Control()
        listener.attach(control)
        listener.on_start(RunStarted("{}", 0, 50, "cpu", "cpu"))  # must not raise
        for i in range(1, 51):
            listener.on_step(StepMetrics(i, {"loss": float(i)}, time.time()))
        time.sleep(0.3)  # writes are refused meanwhile
        assert listener.points_written == 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    listener.flush()
    listener.close()
    r = cat.get_run(rid)
    assert r.status == "interrupted" and r.started_at is not None  # closed without on_finish
    assert cat.metrics(rid, "loss")[0].tolist() == list(range(1, 51))
    assert not any(c[0] == "abort" for c in control.calls)
    cat.close()


def test_migrations_have_a_single_head() -> None:
    from alembic.script import ScriptDirectory

    from workbench.catalog.store import REVISION_VERSIONS, SCHEMA_VERSION, _alembic_config

    script = ScriptDirectory.from_config(_alembic_config())
    heads = script.get_heads()
    assert len(heads) == 1, heads
    assert REVISION_VERSIONS[heads[0]] == SCHEMA_VERSION  # the head is the version we stamp
    assert {r.revision for r in script.walk_revisions()} == set(REVISION_VERSIONS)


def test_a_checkpoint_folder_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ck"
    folder.mkdir()
    db = folder / "c.db"
    Catalog.open(db).close()
    (folder / "c.db.checkpoints").mkdir()
    code = (
        "from workbench.cli import main; "
        f"print('run', main(['--db', {str(db)!r}, 'run', '--steps', '2', '--quiet']))"
    )
    proc = _read_only_mount(folder / "c.db.checkpoints", code)
    if proc is None:
        pytest.skip("no mount namespaces here for a read-only bind mount")
    assert "run 2" in proc.stdout, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint folder" in lines[0] and "cannot be written" in lines[0]
    with Catalog.open(db) as cat:
        assert cat.list_runs() == []  # the catalog is untouched


def test_the_app_queue_refuses_a_configuration_that_cannot_fit(
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import workbench.core.footprint as footprint
    from workbench.gui.run_queue import RunQueue

    monkeypatch.setattr(footprint, "available_bytes", lambda *a, **k: 64 * 2**20)
    with Catalog.open(tmp_path / "q.db") as cat:
        queue = RunQueue(cat)
        logged: list[tuple[str, str]] = []
        queue.log.connect(lambda level, msg: logged.append((level, msg)))
        d = default_config("fomaml", "glyphs").to_dict()
        d["train"]["meta_batch"] = 256
        assert queue.submit(RunConfig.from_dict(d)) == []
        assert logged and logged[-1][0] == "error" and "train.meta_batch" in logged[-1][1]
        assert cat.list_runs() == []
        queue.shutdown()


def test_a_really_full_disk_pauses_the_run_which_goes_on_once_there_is_room(
    tmp_path: Path,
) -> None:
    """On a small tmpfs (a private mount) filled up to 300 kB: torch's short write (which it
    reports as "unexpected pos", not ENOSPC) pauses the run with "disk full" and the folder;
    once the user frees space it finishes with every point and complete checkpoints."""
    from bench.full_disk_run import check, full_disk_run

    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces here for a small tmpfs")
    folder = tmp_path / "small"
    folder.mkdir()
    assert full_disk_run is not None
    assert check(folder) is None


def test_a_resume_that_fails_before_it_starts_keeps_the_runs_history(tmp_path: Path) -> None:
    """A tampered checkpoint fails the resume: the run keeps its status, step and metrics and
    only the reason is recorded (it was rewritten as failed at step 0)."""
    with Catalog.open(tmp_path / "h.db") as cat:
        trainer, rid = trainer_for(cat, small(), [])
        assert trainer.run().status == "finished"
        for listener in trainer.listeners:
            listener.close()
        cat.finish_run(rid, "interrupted", step=STEPS)  # as if it had died after its last step
        latest = cat.checkpoint(rid, "latest")
        with open(latest.path, "r+b") as f:
            f.seek(200)
            f.write(b"\x00\x01\x02\x03")
        resumed, _ = trainer_for(cat, small(steps=2 * STEPS), [], run_id=rid, resume=latest)
        result = resumed.run()
        for listener in resumed.listeners:
            listener.close()
        assert result.status == "failed" and "sha256" in (result.error or "")
        r = cat.get_run(rid)
        assert (r.status, r.step) == ("interrupted", STEPS)
        assert r.error.startswith("resume failed: ") and "sha256" in r.error
        assert cat.metrics(rid, "loss")[0].tolist() == list(range(1, STEPS + 1))
