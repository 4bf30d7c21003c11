"""The catalog on PostgreSQL: what only a server catalog has (URLs and their errors, the server's
clock, upgrades of a server database, several processes and machines writing at once). The
catalog's common suite (tests/test_catalog.py) runs on both databases already."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import test_crash_safety as crash
from postgres_fixture import PASSWORD, PASSWORD_ROLE, PLAIN_ROLE, PgServer
from test_catalog import steady_over_reads

from workbench.api import trainer_for
from workbench.catalog import Catalog, CatalogError, CatalogListener, RunBusyError
from workbench.catalog import store as store_module
from workbench.core.faults import POINTS

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "WORKBENCH_THREADS": "1", **extra}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("WORKBENCH_FAULT", None)
    return env


def _cli(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", "--db", db, *args],
        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=1800,
    )  # fmt: skip


# ---- URLs that cannot be used: one line, never a traceback -------------------------------------
def _bad_urls(pg_server: PgServer) -> dict[str, tuple[str, str]]:
    """name -> (url, a phrase its one-line error must contain)."""
    h, p = pg_server.host, pg_server.port
    closed = _closed_port()
    if not pg_server.sql("SELECT 1 FROM pg_database WHERE datname = 'wb_not_mine'"):
        # owned by postgres: the plain role cannot create tables in it
        pg_server.sql("CREATE DATABASE wb_not_mine")
    return {
        "unknown database": ("mysql://u@localhost/db", "unknown database 'mysql'"),
        "unknown driver": (f"postgresql+pg8000://postgres@{h}:{p}/x", "driver 'pg8000'"),
        "unreachable host": (f"postgresql+psycopg://postgres@{h}:{closed}/x", "cannot be opened"),
        "wrong password": (
            f"postgresql+psycopg://{PASSWORD_ROLE}:wrong@{h}:{p}/postgres",
            "password authentication failed",
        ),
        "no such database": (f"postgresql+psycopg://postgres@{h}:{p}/nowhere", "does not exist"),
        "no right to create the schema": (
            f"postgresql+psycopg://{PLAIN_ROLE}@{h}:{p}/wb_not_mine",
            "permission denied",
        ),
    }


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once the socket is


def test_bad_urls_are_one_line_in_the_api_and_exit_2_in_the_cli(pg_server: PgServer) -> None:
    for name, (url, phrase) in _bad_urls(pg_server).items():
        with pytest.raises(CatalogError) as info:
            Catalog.open(url)
        msg = str(info.value)
        assert "\n" not in msg and phrase in msg, (name, msg)
        assert "wrong" not in msg.replace("wrong password", ""), f"password shown: {msg}"
        proc = _cli(url, "runs")
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert phrase in lines[0], (name, lines)


def test_right_password_and_sqlite_url(pg_server: PgServer, tmp_path: Path) -> None:
    pg_server.sql(f"CREATE DATABASE wb_pw OWNER {PASSWORD_ROLE}")
    url = f"postgresql+psycopg://{PASSWORD_ROLE}:{PASSWORD}@{pg_server.host}:{pg_server.port}/wb_pw"
    with Catalog.open(url, checkpoint_root=tmp_path / "ck") as cat:
        assert cat.server and cat.path is None and PASSWORD not in cat.display
        assert cat.location == url  # what a child process is given as --db
        assert cat.checkpoint_dir(3) == tmp_path / "ck" / "3"
        rid = cat.create_run("{}", name="pw")
    with Catalog.open(url) as cat:
        assert cat.get_run(rid).name == "pw"
    with Catalog.open(f"sqlite:///{tmp_path / 'u.db'}") as cat:  # a SQLite URL is that file
        assert cat.path == tmp_path / "u.db" and not cat.server


# ---- schema ------------------------------------------------------------------------------------
def test_previous_release_database_is_upgraded(pg_url: str) -> None:
    """A database made by the previous release (revision 0003: 32-bit seed and metric ids)
    upgrades to 0004 on open and keeps its runs; a 64-bit seed then fits."""
    from alembic import command
    from sqlalchemy import create_engine

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        cfg = store_module._alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
        conn.exec_driver_sql(
            "INSERT INTO runs (name, status, algorithm, dataset, device, config_json, seed, "
            "created_at, notes, attempt, step) VALUES ('old', 'finished', 'maml', 'sinusoid', "
            "'cpu', '{}', 7, 1.0, '', 1, 10)"
        )
        assert (
            conn.exec_driver_sql(
                "SELECT data_type FROM information_schema.columns WHERE table_name = 'runs' AND column_name = 'seed'"
            ).scalar()
            == "integer"
        )
    engine.dispose()
    with Catalog.open(pg_url) as cat:
        assert cat.migrated
        (old,) = cat.list_runs()
        assert (old.name, old.seed) == ("old", 7)
        rid = cat.create_run("{}", seed=2**62 + 1)
        cat.add_metrics(rid, [(1, "loss", 1.0, 1.0)])
        assert cat.get_run(rid).seed == 2**62 + 1
    with Catalog.open(pg_url) as cat:
        assert not cat.migrated


def test_a_newer_release_database_is_refused(pg_url: str) -> None:
    Catalog.open(pg_url).close()
    from sqlalchemy import create_engine

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    engine.dispose()
    with pytest.raises(CatalogError, match="newer workbench"):
        Catalog.open(pg_url)


def test_two_processes_creating_the_schema_at_once(pg_url: str) -> None:
    code = "import sys; from workbench.catalog import Catalog; Catalog.open(sys.argv[1]).close(); print('ok')"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_url], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and out.strip() == "ok", err


# ---- the server's clock and the change token ---------------------------------------------------
def test_leases_use_the_servers_clock(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Catalog.open(pg_url) as cat:
        rid = cat.create_run("{}")
        real = time.time()
        monkeypatch.setattr(
            store_module.time, "time", lambda: real + 3600.0
        )  # a clock an hour fast
        cat.claim(rid, "elsewhere:1:abc")
        hb = cat.get_run(rid).heartbeat_at
        assert hb is not None and abs(hb - real) < 60
        # judged by the server's clock the lease is fresh, whatever this machine's clock says
        with pytest.raises(RunBusyError):
            cat.claim(rid, "here:2:def")


def test_change_token_moves_on_commits_not_on_reads(pg_url: str) -> None:
    with Catalog.open(pg_url) as cat, Catalog.open(pg_url) as other:
        rid = cat.create_run("{}")
        assert cat.change_token() is not None
        assert steady_over_reads(cat, lambda: (cat.list_runs(), cat.get_run(rid)))
        for _ in range(3):  # each commit of another connection (process) moves it
            t0 = cat.change_token()
            other.add_metrics(rid, [(1, "loss", 1.0, 1.0)])
            assert cat.change_token() != t0


# ---- several processes, several machines ------------------------------------------------------
FLAGS = [
    "run", "--quiet", "--steps", "30", "--set", "val_every=10", "--set", "val_episodes=4",
    "--set", "test_episodes=4", "--set", "ckpt_every=10", "--set", "train.meta_batch=2",
]  # fmt: skip


def test_three_training_processes_and_a_reader(pg_url: str) -> None:
    """Three `workbench run` processes train into one database while this process reads it
    all the time: nothing is lost, nothing is raised, every run ends finished with one point a
    step and its checkpoints."""
    Catalog.open(pg_url).close()
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with Catalog.open(pg_url, stale_s=None) as cat:
                after: dict[int, int] = {}
                while not stop.is_set():
                    cat.change_token()
                    for r in cat.list_runs():
                        pts = cat.points_after(r.id, after.get(r.id, 0))
                        if pts:
                            after[r.id] = pts[-1][0]
                    cat.live_runs()
                    seen.append(len(after))
                    time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "workbench.cli", "--db", pg_url, *FLAGS, "--seed", str(i)],
                cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for i in range(3)
        ]  # fmt: skip
        outs = [p.communicate(timeout=1800) for p in procs]
    finally:
        stop.set()
        reader.join()
    assert not errors, errors
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err and "catalog" not in err.lower(), err
    with Catalog.open(pg_url) as cat:
        runs = cat.list_runs()
        assert len(runs) == 3 and max(seen) >= 1
        for r in runs:
            assert r.status == "finished" and r.step == 30, (r.status, r.error)
            names = cat.metric_names(r.id)
            train = [n for n in names if not n.startswith(("val_", "test_"))]
            assert train
            for n in train:
                steps, _, _ = cat.metrics(r.id, n)
                assert steps.tolist() == list(range(1, 31)), n
                assert r.summary[n].count == 30
            assert cat.checkpoint(r.id, "final") is not None
            assert [a["status"] for a in cat.attempts(r.id)] == ["finished"]


HOLDER = """
import socket, sys, time
socket.gethostname = lambda: "another-machine"  # this process claims to run elsewhere
from workbench.catalog import Catalog
from workbench.catalog.store import new_owner
with Catalog.open(sys.argv[1], stale_s=None) as cat:
    owner = new_owner()
    cat.claim(int(sys.argv[2]), owner)
    cat.set_status(int(sys.argv[2]), "running", owner=owner)
    print(owner, flush=True)
    while True:
        time.sleep(0.1)
        cat.renew(int(sys.argv[2]), owner)
"""


def test_a_lease_held_on_another_machine_is_respected(pg_url: str) -> None:
    """A live run of a process on "another machine" (its pid means nothing here) cannot be
    claimed, resumed or marked interrupted from here while its heartbeat is fresh; once it stops
    beating the stale threshold frees it."""
    with Catalog.open(pg_url) as cat:
        rid = cat.create_run("{}")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, pg_url, str(rid)], cwd=ROOT, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        owner = holder.stdout.readline().strip()
        assert owner.startswith("another-machine:"), holder.stderr.read() if holder.stderr else ""
        time.sleep(0.5)
        with Catalog.open(pg_url, stale_s=2.0) as cat:
            assert cat.marked_interrupted == []
            with pytest.raises(RunBusyError, match="another-machine"):
                cat.claim(rid, "here:1:x")
            with pytest.raises(RunBusyError):
                cat.ensure_free(rid)
            assert [r.id for r in cat.live_runs()] == [rid]
            cat.request(rid, "pause")  # its owner is alive: the request is accepted
            assert cat.get_run(rid).owner == owner
            assert _cli(pg_url, "resume", str(rid), "--quiet").returncode == 2
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    time.sleep(2.5)  # no heartbeat for longer than the threshold: the machine is gone
    with Catalog.open(pg_url, stale_s=2.0) as cat:
        assert cat.marked_interrupted == [rid]
        cat.claim(rid, "here:1:x")


# ---- crash safety on a server catalog (tests/test_crash_safety.py's catalog parts) -------------
@pytest.mark.slow
@pytest.mark.parametrize("point", [p if p.startswith("run.") else f"{p}@2" for p in POINTS])
def test_kill_at_every_point_then_resume(pg_url: str, point: str) -> None:
    proc = crash.cli(pg_url, *crash.RUN_FLAGS, fault=point)  # type: ignore[arg-type]
    assert proc.returncode == -9, (point, proc.returncode, proc.stderr[-2000:])
    with Catalog.open(pg_url) as cat:  # the owner is dead: interrupted at once, leftovers repaired
        (run,) = cat.list_runs()
        assert run.status == "interrupted", (point, run.status)
        had = cat.checkpoint(run.id, "latest")
        assert ("no checkpoint" in (run.error or "")) == (had is None)
        crash.assert_listed_checkpoints_complete(cat, run.id)
        folder = cat.checkpoint_dir(run.id)
        listed = {c.path for c in cat.checkpoints(run.id)}
        # a dirty checkout's code.diff is the run's record, not a checkpoint left over
        on_disk = {
            str(p) for p in (folder.iterdir() if folder.exists() else ()) if p.suffix != ".diff"
        }
        assert on_disk == listed, f"left-overs after {point}: {sorted(on_disk - listed)}"
        before = cat.metrics(run.id, "loss")[0].tolist()
        crash.resume_to_the_end(cat, run.id)
        run = cat.get_run(run.id)
        steps = cat.metrics(run.id, "loss")[0].tolist()
        assert (run.status, run.step) == ("finished", crash.STEPS)
        assert steps == list(range(1, crash.STEPS + 1)), steps
        kept = had.step if had else 0
        assert before[:kept] == steps[:kept]
        assert [a["status"] for a in cat.attempts(run.id)][-1] == "finished"
        crash.assert_listed_checkpoints_complete(cat, run.id)


def test_a_second_owner_is_refused_while_the_first_is_alive(pg_url: str) -> None:
    with Catalog.open(pg_url) as cat:
        rid = cat.create_run_from_config(crash.small(), owner=None)
        first = CatalogListener(cat, rid)  # claims the run
        try:
            with pytest.raises(RunBusyError, match=f"run {rid} is .* in process {os.getpid()}"):
                CatalogListener(cat, rid)
            with pytest.raises(RunBusyError):
                trainer_for(cat, crash.small(), [], run_id=rid, resume=None)
        finally:
            first.close()
        CatalogListener(cat, rid).close()  # the first let go: a resume may proceed
        first_resume, _ = trainer_for(cat, crash.small(), [], run_id=rid, resume=None)
        assert cat.get_run(rid).status == "queued"
        with pytest.raises(RunBusyError):
            trainer_for(cat, crash.small(), [], run_id=rid, resume=None)
        for listener in first_resume.listeners:
            listener.close()


def test_resume_from_another_process_is_refused_while_the_run_trains(pg_url: str) -> None:
    Catalog.open(pg_url).close()
    long = [a if a != str(crash.STEPS) else "100000" for a in crash.RUN_FLAGS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "--db", pg_url, *long],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        runs: list = []
        deadline = time.monotonic() + 600  # a hang guard only
        while time.monotonic() < deadline:
            with Catalog.open(pg_url) as cat:
                runs = cat.list_runs()
                if runs and cat.checkpoint(runs[0].id, "latest") is not None:
                    break
            time.sleep(0.2)
        rid = runs[0].id
        second = _cli(pg_url, "resume", str(rid), "--steps", "200000", "--quiet")
        assert second.returncode == 2, second.stderr
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and f"run {rid} is running in process {proc.pid}" in err[0], err
    finally:
        proc.terminate()
        proc.communicate(timeout=1800)
    with Catalog.open(pg_url) as cat:
        r = cat.get_run(rid)
        assert r.status == "cancelled" and r.owner is None
        steps = cat.metrics(rid, "loss")[0].tolist()
        assert steps == list(range(1, len(steps) + 1))  # no step written twice


def test_killed_while_starting_resumes_from_scratch_with_the_cli(pg_url: str) -> None:
    assert crash.cli(pg_url, *crash.RUN_FLAGS, fault="run.created").returncode == -9  # type: ignore[arg-type]
    listed = _cli(pg_url, "runs")
    assert "interrupted" in listed.stdout, listed.stdout + listed.stderr
    again = _cli(pg_url, "resume", "1", "--quiet")
    assert again.returncode == 0, again.stderr
    assert "starting it again from step 0" in again.stdout
    with Catalog.open(pg_url) as cat:
        r = cat.get_run(1)
        assert (r.status, r.step) == ("finished", crash.STEPS)
        assert [a["number"] for a in cat.attempts(1)] == [1]


# ---- the server goes away and comes back ------------------------------------------------------
def test_a_run_rides_out_a_server_outage_and_loses_nothing(
    pg_server: PgServer, pg_url: str
) -> None:
    """The server stops (restarted by its admin) while a run trains and comes back: the
    run keeps training, says once that writes are delayed and once that they went through,
    and every step's point and the run's end reach the catalog."""
    steps = 2000
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "--db", pg_url, "run", "--preset",
         "maml-sinusoid", "--set", f"steps={steps}", "--set", "ckpt_every=1000", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env(),
    )  # fmt: skip
    try:
        with Catalog.open(pg_url) as cat:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline and not (
                (runs := cat.list_runs()) and runs[0].step > 20
            ):
                time.sleep(0.2)
            (run,) = cat.list_runs()
        pg_server.stop()
        try:
            time.sleep(4)  # the run trains on, its points waiting in memory
            assert proc.poll() is None, proc.communicate()
        finally:
            pg_server.start()
        out, err = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    assert err.count("catalog write delayed") == 1, err
    assert err.count("catalog reachable again") == 1, err
    with Catalog.open(pg_url) as cat:
        assert cat.get_run(run.id).status == "finished"
        assert cat.metrics(run.id, "loss")[0].tolist() == list(range(1, steps + 1))
