"""Run catalog: schema and migrations, store API, the listener's writer and heartbeat threads,
and several processes sharing one database."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect

from workbench.catalog import Catalog, CatalogListener, RunRecord, UnknownRunError, default_db_path
from workbench.catalog import store as store_module
from workbench.catalog.errors import LeaseLost
from workbench.catalog.schema import Base, Run, RunSummary, RunTag
from workbench.core.events import (
    EvalResult,
    RunFinished,
    RunStarted,
    StepMetrics,
)

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("helpers_catalog_writer.py")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The catalog every test of this file runs on: a SQLite file, then a fresh database on the
    session's PostgreSQL server (tests/postgres_fixture.py; skipped without one, failed with
    CI=true)."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "experiments.db"


@pytest.fixture
def cat(db: Path):
    c = Catalog.open(db)
    yield c
    c.close()


def _helper(*args: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, str(HELPER), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _new_run(cat: Catalog, **kw: object) -> int:
    args: dict = {
        "name": "r",
        "algorithm": "maml",
        "dataset": "sinusoid",
        "device": "cpu",
        "seed": 0,
    }
    args.update(kw)
    return cat.create_run(json.dumps({"seed": 0}), **args)


# ---- schema and migrations ----------------------------------------------------------------
def test_migrations_create_schema_and_reopen_is_noop(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat = Catalog.open(db)
    assert cat.migrated
    with cat._read_engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        assert {
            "runs",
            "run_tags",
            "metrics",
            "run_summary",
            "checkpoints",
            "evaluations",
            "sweeps",
            "sweep_trials",
            "alembic_version",
        } <= names
        assert MigrationContext.configure(conn).get_current_revision() == store_module.HEAD_REVISION
        # the hand-written migrations and the ORM models describe the same schema (on
        # PostgreSQL this includes revision 0004's BIGINT columns)
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        if cat.server:
            types = dict(
                conn.exec_driver_sql(
                    "SELECT table_name || '.' || column_name, data_type FROM "
                    "information_schema.columns WHERE column_name IN ('seed', 'id', 'bytes')"
                ).fetchall()
            )
            assert types["runs.seed"] == types["metrics.id"] == "bigint"
            assert types["checkpoints.bytes"] == "bigint"
        else:
            app_id = conn.exec_driver_sql("PRAGMA application_id").scalar()
            assert app_id == store_module.APPLICATION_ID
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    rid = _new_run(cat)
    cat.close()

    def no_upgrade(*_a: object, **_k: object) -> None:
        raise AssertionError("an up-to-date database must not be migrated again")

    import alembic.command

    monkeypatch.setattr(alembic.command, "upgrade", no_upgrade)
    with Catalog.open(db) as again:
        assert not again.migrated
        assert again.get_run(rid).name == "r"


def test_default_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cat: Catalog) -> None:
    monkeypatch.setenv("WORKBENCH_DB", str(tmp_path / "x.db"))
    assert default_db_path() == tmp_path / "x.db"
    monkeypatch.delenv("WORKBENCH_DB")
    assert default_db_path() == Path.cwd() / "experiments.db"
    if cat.path is not None:
        assert cat.checkpoint_dir(7) == cat.path.parent / "experiments.db.checkpoints" / "7"
    else:  # a server catalog: the configured root ($WORKBENCH_CHECKPOINT_ROOT in the tests)
        assert cat.checkpoint_dir(7) == tmp_path / "checkpoints" / "7"


def test_catalog_imports_neither_qt_nor_torch() -> None:
    code = "import sys, workbench.catalog; bad = [m for m in ('torch', 'PySide6', 'pyqtgraph') if m in sys.modules]; print(bad)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


# ---- store API ------------------------------------------------------------------------------
def test_round_trip(cat: Catalog, tmp_path: Path) -> None:
    parent = _new_run(cat, name="parent")
    rid = cat.create_run(
        '{"a": 1}', name="maml-5w1s", algorithm="maml", dataset="omniglot", device="cuda",
        seed=3, tags=["paper", "omniglot", "paper"], notes="first try", parent_id=parent,
        preset="maml-omniglot-5w1s", total_steps=100,
    )  # fmt: skip
    r = cat.get_run(rid)
    assert isinstance(r, RunRecord)
    assert (r.name, r.algorithm, r.dataset, r.device, r.seed, r.notes) == (
        "maml-5w1s",
        "maml",
        "omniglot",
        "cuda",
        3,
        "first try",
    )
    assert (r.status, r.attempt, r.step, r.total_steps, r.parent_id, r.preset) == (
        "queued",
        1,
        0,
        100,
        parent,
        "maml-omniglot-5w1s",
    )
    assert r.tags == ["omniglot", "paper"] and r.config == {"a": 1}

    cat.add_metrics(
        rid,
        [
            (1, "loss", 2.0, 1.0),
            (2, "loss", 1.0, 2.0),
            (3, "loss", 1.5, 3.0),
            (1, "accuracy", 0.2, 1.0),
            (2, "accuracy", float("nan"), 2.0),
        ],
    )
    cat.add_metrics(rid, [(4, "loss", 0.5, 4.0), (3, "accuracy", 0.1, 3.0)])
    steps, values, walls = cat.metrics(rid, "loss")
    assert (
        steps.tolist() == [1, 2, 3, 4]
        and values.tolist() == [2.0, 1.0, 1.5, 0.5]
        and walls.tolist() == [1, 2, 3, 4]
    )
    assert np.isnan(cat.metrics(rid, "accuracy")[1][1])
    assert cat.metric_names(rid) == ["accuracy", "loss"]
    s = cat.get_run(rid).summary
    assert (
        s["loss"].latest,
        s["loss"].latest_step,
        s["loss"].best,
        s["loss"].best_step,
        s["loss"].count,
    ) == (0.5, 4, 0.5, 4, 4)
    assert (
        s["accuracy"].latest,
        s["accuracy"].best,
        s["accuracy"].best_step,
        s["accuracy"].count,
    ) == (0.1, 0.2, 1, 3)
    assert cat.get_run(rid).step == 4

    p1, p2, pb = (str(tmp_path / n) for n in ("s10.pt", "s20.pt", "best.pt"))
    c1 = cat.add_checkpoint(rid, 10, "periodic", p1, 100, "aa", {"loss": 1.0})
    cat.add_checkpoint(rid, 20, "periodic", p2, 100, "bb")
    cb = cat.add_checkpoint(rid, 10, "best", pb, 100, "cc", {"val_accuracy": 0.9})
    assert cat.add_checkpoint(rid, 20, "best", pb, 101, "dd") == cb  # re-saved best.pt: same row
    assert [c.step for c in cat.checkpoints(rid)] == [10, 20, 20]
    assert cat.checkpoint(rid, "best").sha256 == "dd"
    assert cat.checkpoint(rid, "latest").step == 20
    assert cat.checkpoint(rid, 10).id == c1 and cat.checkpoint(rid, 10).metrics == {"loss": 1.0}
    assert cat.checkpoint(rid, "final") is None
    assert cat.remove_checkpoint(p1) and not cat.remove_checkpoint(p1)
    with pytest.raises(ValueError):
        cat.add_checkpoint(rid, 1, "sometimes", p1)  # type: ignore[arg-type]

    eid = cat.add_evaluation(
        rid,
        "test",
        "accuracy",
        0.95,
        0.01,
        600,
        {"acc_step_3": 0.95},
        {"ways": 5},
        checkpoint_step=20,
    )
    (ev,) = cat.evaluations(rid)
    assert (ev.id, ev.checkpoint_id, ev.split, ev.episodes, ev.mean, ev.ci95) == (
        eid,
        cb,
        "test",
        600,
        0.95,
        0.01,
    )
    assert ev.values == {"acc_step_3": 0.95} and ev.protocol == {"ways": 5}
    assert cat.get_run(rid).summary["test_accuracy"].latest == 0.95

    cat.rename(rid, "renamed")
    cat.set_notes(rid, "better notes")
    cat.set_tags(rid, ["b", "a", ""])
    r = cat.get_run(rid)
    assert (r.name, r.notes, r.tags) == ("renamed", "better notes", ["a", "b"])
    with pytest.raises(UnknownRunError):
        cat.get_run(10_000)
    with pytest.raises(UnknownRunError):
        cat.rename(10_000, "x")


def test_status_validation(cat: Catalog) -> None:
    rid = _new_run(cat)
    with pytest.raises(ValueError, match="unknown run status"):
        cat.set_status(rid, "done")
    with pytest.raises(ValueError):
        _new_run(cat, status="bogus")
    with pytest.raises(ValueError):
        cat.list_runs(status="bogus")
    cat.set_status(rid, "failed", error="boom")
    r = cat.get_run(rid)
    assert (r.status, r.error) == ("failed", "boom") and r.ended_at is not None
    cat.set_status(rid, "running")
    r = cat.get_run(rid)
    assert r.status == "running" and r.ended_at is None and r.heartbeat_at is not None


def test_list_runs_filters(cat: Catalog) -> None:
    a = _new_run(cat, name="alpha_1", tags=["keep"])
    b = _new_run(cat, name="beta", algorithm="protonet", dataset="omniglot", notes="100% done")
    c = _new_run(cat, name="gamma", status="finished")
    assert [r.id for r in cat.list_runs()] == [c, b, a]
    assert [r.id for r in cat.list_runs(status="finished")] == [c]
    assert [r.id for r in cat.list_runs(status=["queued", "finished"], limit=2)] == [c, b]
    assert [r.id for r in cat.list_runs(algorithm="protonet")] == [b]
    assert [r.id for r in cat.list_runs(dataset="omniglot")] == [b]
    assert [r.id for r in cat.list_runs(tag="keep")] == [a]
    assert [r.id for r in cat.list_runs(text="KEEP")] == [a]  # tags, case-insensitive
    assert [r.id for r in cat.list_runs(text="ALPHA")] == [a]
    assert [r.id for r in cat.list_runs(text="%")] == [b]  # LIKE wildcards are escaped
    assert [r.id for r in cat.list_runs(text="a_1")] == [a]
    assert cat.list_runs(text="nothing") == []


def test_checkpoint_paths_are_relative_to_the_root_so_a_catalog_can_move(
    db: Path | str, tmp_path: Path
) -> None:
    """Rows keep checkpoint paths relative to the checkpoint root (files elsewhere, and rows of
    older releases, absolute): a catalog moved with its checkpoint folder, or opened with its
    root at another place, still finds every file; retiring, removing and repairing work on
    both forms."""
    with Catalog.open(db) as cat:
        rid = _new_run(cat)
        folder = cat.checkpoint_dir(rid, create=True)
        inside = folder / "step-2.pt"
        inside.write_bytes(b"x")
        outside = tmp_path / "elsewhere.pt"
        outside.write_bytes(b"y")
        cat.add_checkpoint(rid, 2, "periodic", inside)
        cat.add_checkpoint(rid, 3, "best", outside)
        cat.add_checkpoint(rid, 2, "periodic", inside)  # re-saved: the same row
        with cat._read_engine.connect() as conn:
            stored = sorted(r[0] for r in conn.exec_driver_sql("SELECT path FROM checkpoints"))
        assert stored == sorted([f"{rid}/step-2.pt", str(outside)])
        assert [c.path for c in cat.checkpoints(rid)] == [str(inside), str(outside)]
        old_root = cat.checkpoint_root
    moved = tmp_path / "moved-root"
    old_root.rename(moved)
    target = db
    if isinstance(db, Path):  # a SQLite catalog moves with its folder beside it
        target = tmp_path / "new" / "experiments.db"
        target.parent.mkdir()
        for suffix in ("", "-wal", "-shm"):
            if Path(str(db) + suffix).exists():
                Path(str(db) + suffix).rename(str(target) + suffix)
        moved.rename(target.with_name("experiments.db.checkpoints"))
        moved = target.with_name("experiments.db.checkpoints")
    with Catalog.open(target, checkpoint_root=moved) as cat:
        ck = cat.checkpoint(rid, 2)
        assert ck is not None and ck.path == str(moved / str(rid) / "step-2.pt")
        assert Path(ck.path).read_bytes() == b"x"
        assert cat.checkpoint(rid, "best").path == str(outside)
        assert cat.remove_checkpoint(ck.path, delete_file=True)
        assert [c.path for c in cat.checkpoints(rid)] == [str(outside)]
        cat.delete_run(rid)
        assert outside.exists() is False and not (moved / str(rid)).exists()


def steady_over_reads(cat: Catalog, reads: object) -> bool:
    """Whether the change token stays put across `reads()` (a callable) at least once in a few
    tries: on PostgreSQL it is the server's snapshot, which other databases' writers on the same
    server may move at any time (a spurious refresh, allowed); a catalog whose own reads moved
    it would fail every try."""
    for _ in range(20):
        before = cat.change_token()
        reads()  # type: ignore[operator]
        if cat.change_token() == before:
            return True
        time.sleep(0.05)
    return False


def test_live_rows_and_change_token(db: Path | str) -> None:
    """What the browser polls, on both databases: a change token that moves when another
    connection commits (and not on reads), and the live rows query."""
    with Catalog.open(db) as cat, Catalog.open(db) as other:
        a, b, c = _new_run(cat), _new_run(cat), _new_run(cat)
        t0 = cat.change_token()
        assert t0 is not None
        assert steady_over_reads(cat, lambda: (cat.list_runs(), cat.live_rows(), cat.get_run(a)))
        t0 = cat.change_token()
        other.claim(b, "host:1:x")
        other.set_status(b, "running", owner="host:1:x")
        other.add_metrics(b, [(3, "val_loss", 0.5, 1.0), (4, "loss", 0.4, 1.0)])
        other.finish_run(c, "finished", step=2)
        assert cat.change_token() != t0
        rows = {r[0]: r for r in cat.live_rows(after_id=c)}
        # runs above after_id: none; queued a and the running b are live; c only when asked
        assert set(rows) == {a, b}
        assert rows[b][1:3] == ("running", 4) and rows[b][5] == 1 and rows[b][6] == 3
        assert rows[a][6] is None
        rows = {r[0]: r for r in cat.live_rows(after_id=a, ids=[c])}
        assert set(rows) == {a, b, c} and rows[c][1] == "finished" and rows[c][4] is not None


def test_begin_attempt_supersedes_later_points(cat: Catalog) -> None:
    rid = _new_run(cat)
    cat.add_metrics(rid, [(s, "loss", 10.0 - s, float(s)) for s in range(1, 11)])
    assert cat.begin_attempt(rid, 6) == 2
    r = cat.get_run(rid)
    assert (r.status, r.attempt, r.step) == ("running", 2, 6)
    assert (
        r.summary["loss"].count == 6
        and r.summary["loss"].best == 4.0
        and r.summary["loss"].latest_step == 6
    )
    cat.add_metrics(rid, [(s, "loss", 20.0, 100.0 + s) for s in range(7, 9)])
    steps, values, _ = cat.metrics(rid, "loss")
    assert steps.tolist() == [1, 2, 3, 4, 5, 6, 7, 8] and values[-2:].tolist() == [20.0, 20.0]
    steps_all, _, _ = cat.metrics(rid, "loss", include_superseded=True)
    assert len(steps_all) == 12  # the old attempt's steps 7..10 are kept
    s = cat.get_run(rid).summary["loss"]
    assert (s.count, s.latest, s.latest_step, s.best) == (8, 20.0, 8, 4.0)


def test_delete_run_removes_checkpoint_files(cat: Catalog, tmp_path: Path) -> None:
    rid = _new_run(cat)
    keep = _new_run(cat)
    child = _new_run(cat, parent_id=rid)
    folder = cat.checkpoint_dir(rid, create=True)
    inside = folder / "step_10.pt"
    inside.write_bytes(b"x" * 10)
    (folder / "stray.tmp").write_bytes(b"")
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"y")
    other = cat.checkpoint_dir(keep, create=True) / "best.pt"
    other.write_bytes(b"z")
    cat.add_checkpoint(rid, 10, "periodic", inside, 10, "h")
    cat.add_checkpoint(rid, 10, "best", outside, 1, "h")
    cat.add_checkpoint(keep, 5, "best", other, 1, "h")
    cat.add_metrics(rid, [(1, "loss", 1.0, 1.0)])
    cat.add_evaluation(rid, "test", "accuracy", 0.5, 0.1, 10, checkpoint_step=10)
    cat.delete_run(rid)
    assert not inside.exists() and not outside.exists() and not folder.exists()
    assert other.exists() and len(cat.checkpoints(keep)) == 1
    with pytest.raises(UnknownRunError):
        cat.get_run(rid)
    assert cat.metric_names(rid) == [] and cat.evaluations(rid) == [] and cat.checkpoints(rid) == []
    assert cat.get_run(child).parent_id is None
    with pytest.raises(UnknownRunError):
        cat.delete_run(rid)


def test_list_runs_10k_is_fast(cat: Catalog) -> None:
    n = 10_000
    config = json.dumps({"blob": "x" * 1500})  # about the size of a RunConfig
    now = time.time()
    runs = [
        {"name": f"run {i}", "status": "finished", "algorithm": ("maml", "protonet", "meta_lstm")[i % 3],
         "dataset": "omniglot", "device": "cpu", "config_json": config, "seed": i, "created_at": now,
         "notes": "", "attempt": 1, "step": 1000}
        for i in range(n)
    ]  # fmt: skip
    with cat._write_engine.begin() as conn:
        conn.execute(insert(Run.__table__), runs)
        ids = [r for (r,) in conn.exec_driver_sql("SELECT id FROM runs")]
        conn.execute(
            insert(RunSummary.__table__),
            [{"run_id": i, "name": m, "latest_value": 0.5, "latest_step": 1000, "latest_wall_time": now,
              "best_value": 0.4, "best_step": 900, "count": 1000}
             for i in ids for m in ("loss", "accuracy", "val_accuracy", "test_accuracy")],
        )  # fmt: skip
        conn.execute(insert(RunTag.__table__), [{"run_id": i, "tag": f"t{i % 7}"} for i in ids])
    cat.list_runs(limit=1)  # warm the connection
    t0 = time.perf_counter()
    runs_out = cat.list_runs()
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    filtered = cat.list_runs(algorithm="maml", tag="t3")
    dt_filtered = time.perf_counter() - t1
    print(
        f"\nlist_runs: {len(runs_out)} runs in {dt * 1000:.0f} ms; filtered ({len(filtered)}) in {dt_filtered * 1000:.0f} ms"
    )
    assert (
        len(runs_out) == n and runs_out[0].summary["val_accuracy"].best == 0.4 and runs_out[0].tags
    )
    assert all(r.algorithm == "maml" and r.tags == ["t3"] for r in filtered) and filtered


# ---- lifecycle and listener -----------------------------------------------------------------
def test_listener_commits_every_point_within_a_second(db: Path) -> None:
    writer_cat = Catalog.open(db)
    rid = _new_run(writer_cat)
    listener = CatalogListener(writer_cat, rid)
    listener.on_start(RunStarted("{}", 0, 5000, "cpu", "test cpu", {"torch": "2.x"}))
    events = [
        StepMetrics(i, {"loss": 1.0 / i, "accuracy": i / 5000, "meta_lr": 1e-3}, time.time())
        for i in range(1, 5001)
    ]
    t0 = time.perf_counter()
    for e in events:
        listener.on_step(e)
    per_point_us = (time.perf_counter() - t0) / len(events) * 1e6
    t_logged = time.perf_counter()
    reader = Catalog.open(db)
    try:
        latency = None
        while time.perf_counter() - t_logged < 120.0:  # a hang guard, not a speed limit
            if (
                len(reader.metrics(rid, "loss")[0]) == 5000
                and len(reader.metrics(rid, "meta_lr")[0]) == 5000
            ):
                latency = time.perf_counter() - t_logged
                break
            time.sleep(0.02)
        print(
            f"\non_step: {per_point_us:.2f} us per call on the training thread; all 15,000 points readable after {latency}s"
        )
        assert latency is not None  # speed lives in bench/catalog_scale.py, not in a test
        r = reader.get_run(rid)
        assert r.status == "running" and r.step == 5000 and r.summary["loss"].count == 5000
        assert (
            r.environment["torch"] == "2.x"
            and "python" in r.environment
            and r.device_name == "test cpu"
        )
    finally:
        listener.close()
        reader.close()
        writer_cat.close()
    with Catalog.open(db) as c:
        assert c.get_run(rid).status == "interrupted"  # closed without on_finish


def test_listener_full_run(cat: Catalog, tmp_path: Path) -> None:
    rid = _new_run(cat)
    ck = cat.checkpoint_dir(rid, create=True)
    listener = CatalogListener(cat.location, rid, flush_s=0.05, heartbeat_s=0.05)
    listener.on_start(RunStarted("{}", 0, 20, "cpu", "cpu"))
    for i in range(1, 11):
        listener.on_step(StepMetrics(i, {"loss": 1.0 / i}, time.time()))
    listener.on_eval(EvalResult(10, "val", 0.8, 0.05, 100, "accuracy", {"acc_step_1": 0.7}))

    def save(step: int, kind: str, name: str, keep: int = 1) -> list[str]:
        (ck / name).write_bytes(name.encode())
        sha = hashlib.sha256(name.encode()).hexdigest()
        token = listener.prepare(
            step, kind, str(ck / name), str(ck / ".tmp-x"), 5, sha, {"loss": 0.1}
        )
        assert cat.checkpoints(rid) == [] or all(
            c.path != str(ck / name) for c in cat.checkpoints(rid)
        )
        return listener.commit(token, keep)

    save(10, "periodic", "s10.pt")
    save(10, "best", "best.pt")
    listener.on_status("paused")
    listener.flush()
    assert cat.get_run(rid).status == "paused"
    hb = cat.get_run(rid).heartbeat_at
    time.sleep(0.3)
    assert cat.get_run(rid).heartbeat_at > hb  # heartbeat continues while paused
    listener.on_status("running")
    for i in range(11, 21):
        listener.on_step(StepMetrics(i, {"loss": 1.0 / i}, time.time()))
    assert save(20, "periodic", "s20.pt") == [str(ck / "s10.pt")]  # retired: row, then file
    assert not (ck / "s10.pt").exists()
    save(20, "final", "final.pt")
    test = EvalResult(
        10, "test", 0.9, 0.01, 600, "accuracy", checkpoint_step=10, protocol={"episodes_seed": 1}
    )
    listener.on_eval(test)  # the Trainer announces the test result once, through on_eval ...
    listener.on_finish(RunFinished("finished", 20, test=test))  # ... and repeats it here
    listener.close()  # idempotent
    r = cat.get_run(rid)
    assert (r.status, r.step, r.error) == ("finished", 20, None) and r.ended_at is not None
    assert r.summary["val_accuracy"].latest == 0.8 and r.summary["val_accuracy_ci95"].latest == 0.05
    assert r.summary["val_acc_step_1"].latest == 0.7 and r.summary["loss"].count == 20
    assert r.summary["test_accuracy"].latest == 0.9
    assert [c.kind for c in cat.checkpoints(rid)] == ["best", "periodic", "final"]
    (ev,) = cat.evaluations(rid)
    assert ev.checkpoint_id == cat.checkpoint(rid, "best").id and ev.protocol == {
        "episodes_seed": 1
    }
    assert listener.errors == []


def test_listener_resume_starts_new_attempt(cat: Catalog) -> None:
    rid = _new_run(cat)
    first = CatalogListener(cat, rid)
    first.on_start(RunStarted("{}", 0, 10, "cpu", "cpu"))
    for i in range(1, 9):
        first.on_step(StepMetrics(i, {"loss": float(i)}, time.time()))
    first.close()  # crash-like stop: interrupted
    assert cat.get_run(rid).status == "interrupted"
    second = CatalogListener(cat, rid)
    second.on_start(RunStarted("{}", 5, 10, "cpu", "cpu"))  # resumed from the step-5 checkpoint
    assert second.attempt == 2
    for i in range(6, 11):
        second.on_step(StepMetrics(i, {"loss": 100.0 + i}, time.time()))
    second.on_finish(RunFinished("finished", 10))
    steps, values, _ = cat.metrics(rid, "loss")
    assert steps.tolist() == list(range(1, 11)) and values[5:].tolist() == [
        106.0,
        107.0,
        108.0,
        109.0,
        110.0,
    ]
    assert len(cat.metrics(rid, "loss", include_superseded=True)[0]) == 13
    r = cat.get_run(rid)
    assert (r.status, r.attempt, r.summary["loss"].count) == ("finished", 2, 10)


def test_stale_runs_marked_interrupted_and_never_revived(db: Path) -> None:
    """A process suspended past the stale threshold finds its run taken away: its heartbeat
    and its writes are refused (LeaseLost), the run stays interrupted."""
    with Catalog.open(db) as cat:
        rid = _new_run(cat)
        queued = _new_run(cat)  # queued without an owner (e.g. by the plain API): left alone
        owned = cat.create_run("{}", status="queued", owner="host:1:dead")  # its owner died
        cat.claim(rid, "host:2:sleepy")
        cat.set_status(rid, "running", owner="host:2:sleepy")
    time.sleep(0.3)
    with Catalog.open(db, stale_s=0.1) as cat:
        assert sorted(cat.marked_interrupted) == [rid, owned]
        r = cat.get_run(rid)
        assert r.status == "interrupted" and "heartbeat" in r.error and r.owner is None
        assert "no checkpoint" in r.error  # it never promises a checkpoint that is not there
        assert cat.get_run(queued).status == "queued"
        assert cat.get_run(owned).status == "interrupted"
        with pytest.raises(LeaseLost):
            cat.heartbeat(rid, owner="host:2:sleepy")  # the process was only suspended
        with pytest.raises(LeaseLost):
            cat.add_metrics(rid, [(1, "loss", 1.0, time.time())], owner="host:2:sleepy")
        r = cat.get_run(rid)
        assert (r.status, r.step) == ("interrupted", 0)


# ---- several processes ----------------------------------------------------------------------
def test_two_processes_log_concurrently(db: Path) -> None:
    with Catalog.open(db) as cat:
        runs = [_new_run(cat), _new_run(cat)]
    start_at = time.time() + 1.5
    procs = [_helper("log", db, rid, 2000, start_at) for rid in runs]
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err.lower() and "Traceback" not in err, err
        assert out.strip() == "done 4000"
    with Catalog.open(db) as cat:
        for rid in runs:
            steps, _, _ = cat.metrics(rid, "loss")
            assert steps.tolist() == list(range(1, 2001))
            r = cat.get_run(rid)
            assert r.status == "finished" and r.summary["accuracy"].count == 2000


def test_concurrent_read_modify_write_loses_no_update(db: Path) -> None:
    with Catalog.open(db) as cat:
        rid = _new_run(cat)
    n = 150
    start_at = time.time() + 1.5
    procs = [_helper("increment", db, rid, n, start_at) for _ in range(2)]
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    with Catalog.open(db) as cat:
        assert cat.get_run(rid).attempt == 1 + 2 * n  # begin_attempt reads, then writes attempt + 1


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_process_becomes_interrupted(db: Path) -> None:
    with Catalog.open(db) as cat:
        rid = _new_run(cat)
    proc = _helper("heartbeat", db, rid)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        with Catalog.open(db, stale_s=0.5) as cat:  # alive: heartbeat is fresh
            assert cat.marked_interrupted == [] and cat.get_run(rid).status == "running"
            assert len(cat.metrics(rid, "loss")[0]) > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=1800)
    time.sleep(1.0)
    with Catalog.open(db, stale_s=0.5) as cat:
        assert cat.marked_interrupted == [rid]
        assert cat.get_run(rid).status == "interrupted"


# ---- default names and training time (issue 18) ---------------------------------------------
def _config(algorithm: str, dataset: str, **extra: object):  # noqa: ANN202 - a RunConfig
    from workbench.core.config import RunConfig, default_config

    base = default_config(algorithm, dataset).to_dict()
    base.update(extra)
    return RunConfig.from_dict(base)


def test_runs_without_a_name_get_a_readable_unique_one(cat: Catalog) -> None:
    omni = _config("maml", "omniglot", eval={"ways": 5, "shots": 1})
    names = [cat.get_run(cat.create_run_from_config(omni)).name for _ in range(3)]
    assert names == ["maml-omniglot-5w1s-s0", "maml-omniglot-5w1s-s0-2", "maml-omniglot-5w1s-s0-3"]
    proto = _config("protonet", "omniglot", seed=7, eval={"ways": 20, "shots": 5})
    assert cat.get_run(cat.create_run_from_config(proto)).name == "protonet-omniglot-20w5s-s7"
    sine = _config("maml", "sinusoid")  # regression: no task shape in the name
    assert cat.get_run(cat.create_run_from_config(sine)).name == "maml-sinusoid-s0"
    # a name the user gave is kept as given, even a repeated one; the next default skips it
    named = _config("maml", "sinusoid", name="maml-sinusoid-s0-2")
    assert cat.get_run(cat.create_run_from_config(named)).name == "maml-sinusoid-s0-2"
    assert cat.get_run(cat.create_run_from_config(sine)).name == "maml-sinusoid-s0-3"
    # the plain API names a run from what it is given; LIKE's wildcards ("_", "%") in a
    # plugin's name match only themselves
    cat.create_run("{}", name="myXalgo-10%-s2")
    cat.create_run("{}", name="myXalgo-10%-s2-7")
    rid = cat.create_run("{}", algorithm="my_algo", dataset="10%", seed=2)
    assert cat.get_run(rid).name == "my_algo-10%-s2"
    rid = cat.create_run("{}", algorithm="my_algo", dataset="10%", seed=2)
    assert cat.get_run(rid).name == "my_algo-10%-s2-2"


def test_a_catalog_holding_duplicate_names_opens_and_names_new_runs(db: Path) -> None:
    with Catalog.open(db) as cat:
        for _ in range(2):
            cat.create_run("{}", name="maml-sinusoid-s0")  # duplicates, as older releases made
            cat.create_run("{}", name="maml-sinusoid-s0-5")
    with Catalog.open(db) as cat:
        rid = cat.create_run_from_config(_config("maml", "sinusoid"))
        assert cat.get_run(rid).name == "maml-sinusoid-s0-6"
        assert [r.name for r in cat.list_runs()].count("maml-sinusoid-s0") == 2


def test_runs_created_at_once_get_distinct_names(db: Path) -> None:
    """Many writers creating runs of one config at the same moment: the name is chosen in the
    transaction that inserts the run, under the catalog's lock, so none repeats."""
    import threading

    config = _config("maml", "sinusoid")
    Catalog.open(db).close()
    per_thread, threads = 5, 6
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            with Catalog.open(db, stale_s=None) as cat:
                barrier.wait()
                for _ in range(per_thread):
                    cat.create_run_from_config(config)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=create) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
    assert not errors, errors
    with Catalog.open(db) as cat:
        names = sorted(r.name for r in cat.list_runs())
    n = per_thread * threads
    assert names == sorted(
        ["maml-sinusoid-s0"] + [f"maml-sinusoid-s0-{i}" for i in range(2, n + 1)]
    )


def _set_attempt_times(cat: Catalog, rid: int, spans: list[tuple[float, float | None]]) -> None:
    from sqlalchemy import select, update

    from workbench.catalog.schema import Attempt

    with cat._write() as s:
        ids = s.scalars(select(Attempt.id).where(Attempt.run_id == rid).order_by(Attempt.id)).all()
        assert len(ids) == len(spans)
        for aid, (start, end) in zip(ids, spans, strict=True):
            s.execute(
                update(Attempt).where(Attempt.id == aid).values(started_at=start, ended_at=end)
            )


def test_duration_is_training_time_summed_over_attempts(cat: Catalog) -> None:
    """A run queued for an hour, trained 60 s, crashed, resumed a day later and trained 30 s
    more took 90 s of training, not a day: that is its duration; creation and end stay."""
    rid = _new_run(cat)
    assert cat.get_run(rid).train_seconds is None and cat.get_run(rid).duration_s is None
    cat.start_run(rid, owner=None)
    cat.finish_run(rid, "interrupted", step=5)
    cat.start_run(rid, start_step=5)
    cat.finish_run(rid, "finished", step=10)
    _set_attempt_times(cat, rid, [(1000.0, 1060.0), (90_000.0, 90_030.0)])
    from sqlalchemy import update

    with cat._write() as s:
        s.execute(update(Run).where(Run.id == rid).values(created_at=0.0, started_at=1000.0,
                                                          ended_at=90_030.0))  # fmt: skip
    r = cat.get_run(rid)
    assert r.train_seconds == pytest.approx(90.0) and r.duration_s == pytest.approx(90.0)
    assert (r.created_at, r.started_at, r.ended_at) == (0.0, 1000.0, 90_030.0)
    (listed,) = [x for x in cat.list_runs() if x.id == rid]
    assert listed.train_seconds == pytest.approx(90.0)
    assert [x.train_seconds for x in cat.list_runs(text="r", limit=1)] == [pytest.approx(90.0)]


def test_a_live_attempt_counts_up_to_the_last_heartbeat(cat: Catalog) -> None:
    rid = _new_run(cat)
    cat.claim(rid, "host:1:me")
    cat.start_run(rid, owner="host:1:me")
    from sqlalchemy import update

    _set_attempt_times(cat, rid, [(500.0, None)])
    with cat._write() as s:
        s.execute(update(Run).where(Run.id == rid).values(heartbeat_at=512.5))
    assert cat.get_run(rid).train_seconds == pytest.approx(12.5)


def test_a_dead_owners_attempt_ends_at_its_last_heartbeat(cat: Catalog) -> None:
    """Taking over a run whose process died closes its attempt when it was last seen alive:
    the time the run lay dead is not training time."""
    rid = _new_run(cat)
    cat.claim(rid, "otherhost:1:gone")
    cat.start_run(rid, owner="otherhost:1:gone")
    from sqlalchemy import update

    _set_attempt_times(cat, rid, [(100.0, None)])
    with cat._write() as s:  # last heartbeat long ago: the lease is stale
        s.execute(update(Run).where(Run.id == rid).values(heartbeat_at=140.0))
    cat.claim(rid, "host:2:new", queue=True)
    (attempt,) = cat.attempts(rid)
    assert (attempt["status"], attempt["ended_at"]) == ("interrupted", 140.0)
    assert cat.get_run(rid).train_seconds == pytest.approx(40.0)


def test_a_run_from_before_attempt_rows_keeps_its_start_to_end_duration(cat: Catalog) -> None:
    from sqlalchemy import update

    rid = _new_run(cat)
    with cat._write() as s:
        s.execute(update(Run).where(Run.id == rid).values(started_at=10.0, ended_at=70.0,
                                                          status="finished"))  # fmt: skip
    r = cat.get_run(rid)
    assert r.train_seconds is None and r.duration_s == 60.0


# ---- per-episode scores (revision 0006) ---------------------------------------------------
def test_a_0005_catalog_upgrades_keeping_its_evaluations(db: Path | str) -> None:
    """A catalog of the previous release (revision 0005, no per-episode scores) opens,
    upgrades to 0006, keeps its evaluations (scores: None) and stores new ones with theirs,
    written as float32 and read back exactly, their CI the stored one."""
    from alembic import command
    from sqlalchemy import create_engine

    from workbench.exports import episode_interval

    url = db if isinstance(db, str) else f"sqlite:///{db}"
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg = store_module._alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        if not isinstance(db, str):  # that release stamped its files
            conn.exec_driver_sql(f"PRAGMA application_id = {store_module.APPLICATION_ID}")
            conn.exec_driver_sql("PRAGMA user_version = 5")
        conn.exec_driver_sql(
            "INSERT INTO runs (id, name, status, algorithm, dataset, device, config_json, "
            "created_at, notes, attempt, step) VALUES (1, 'old', 'finished', 'maml', 'glyphs', "
            "'cpu', '{}', 1.0, '', 1, 10)"
        )
        conn.exec_driver_sql(
            "INSERT INTO evaluations (run_id, checkpoint_step, split, protocol_json, episodes, "
            "metric, mean, ci95, values_json, created_at) VALUES (1, 10, 'test', "
            """'{"ways": 5, "shots": 1}', 600, 'accuracy', 0.9, 0.01, '{}', 2.0)"""
        )
        assert "episode_scores_json" not in {
            c["name"] for c in inspect(conn).get_columns("evaluations")
        }
    engine.dispose()
    with Catalog.open(db) as cat:
        assert cat.migrated
        (old,) = cat.evaluations(1)
        assert (old.mean, old.ci95, old.episodes, old.protocol) == (
            0.9, 0.01, 600, {"ways": 5, "shots": 1},
        )  # fmt: skip
        assert old.episode_scores is None
        scores = [2 / 3, 1.0, 0.2, float("nan"), 1 / 3]
        cat.add_evaluation(1, "test", "accuracy", 0.5, 0.2, 5, episode_scores=scores)
        new = cat.evaluations(1)[-1]
        assert new.episode_scores[:3] == [float(np.float32(v)) for v in scores[:3]]
        assert np.isnan(new.episode_scores[3]) and len(new.episode_scores) == 5
        with pytest.raises(ValueError, match="3 per-episode scores given for 4 episodes"):
            cat.add_evaluation(1, "test", "accuracy", 0.5, 0.2, 4, episode_scores=scores[:3])
        finite = [1.0, 0.5, 0.75, 0.25]
        mean, ci = episode_interval(finite)
        cat.add_evaluation(1, "test", "accuracy", mean, ci, 4, episode_scores=finite)
        assert episode_interval(cat.evaluations(1)[-1].episode_scores) == (mean, ci)
    with Catalog.open(db) as cat:
        assert not cat.migrated and len(cat.evaluations(1)) == 3
