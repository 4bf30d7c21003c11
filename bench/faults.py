"""Fault trials: the README's promises under kills, concurrency, storage faults, unusable
catalog files and invalid input, counted as (trials, failures).

    python bench/faults.py [--random 24] [--rounds 5] [--write] [--tiny]

- kill at every named point (`workbench.core.faults.POINTS`, in a `workbench run` process),
  and at random times (SIGKILL during a run with a checkpoint every step): afterwards every
  checkpoint the catalog lists has its complete file, nothing else is left in the run's
  folder, the run is `interrupted`, and a resume reaches the end with one point per step;
- concurrency: a second `workbench resume` of a run that trains must be refused (exit 2, one
  line) and the run must end with no step written twice;
- storage: checkpoint disk full (ENOSPC), catalog full and catalog busy (injected SQLite
  errors) must pause and lose nothing;
- catalog files: folders, random bytes, other programs' SQLite files, a newer version, an
  unknown revision, a missing column, corrupted pages: one line, exit 2, file unchanged;
- fuzz: the invalid invocations of `bench/fuzz_corpus.py`: exit 2, one line, no run.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import stamp, write_section  # noqa: E402
from workbench.api import trainer_for  # noqa: E402
from workbench.catalog import Catalog, CatalogListener  # noqa: E402
from workbench.catalog.errors import CatalogError  # noqa: E402
from workbench.core.config import RunConfig, default_config  # noqa: E402
from workbench.core.faults import POINTS  # noqa: E402
from workbench.files import complete as _complete  # noqa: E402

STEPS = 8


def flags(steps: int, ckpt_every: int = 2) -> list[str]:
    return [
        "run", "--quiet", "--steps", str(steps), "--seed", "1", "--set", f"ckpt_every={ckpt_every}",
        "--set", "keep_last=1", "--set", "val_every=4", "--set", "val_episodes=4",
        "--set", "test_episodes=4", "--set", "train.meta_batch=2",
    ]  # fmt: skip


def env(fault: str | None = None) -> dict[str, str]:
    e = {**os.environ, "WORKBENCH_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}
    e.pop("WORKBENCH_FAULT", None)
    if fault:
        e["WORKBENCH_FAULT"] = fault
    return e


def cli(db: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", "--db", str(db), *args],
        capture_output=True, text=True, cwd=ROOT, env=env(fault), timeout=1800,
    )  # fmt: skip


def check_after_kill(db: Path, steps: int) -> str | None:
    """None if the catalog kept every promise after a kill, else what broke."""
    with Catalog.open(db) as cat:
        runs = cat.list_runs()
        if not runs:
            return None  # killed before the run existed: nothing to keep
        run = runs[0]
        if run.status != "interrupted":
            return f"status {run.status}"
        for ck in cat.checkpoints(run.id):
            if not _complete(ck.path, ck.sha256):
                return f"listed checkpoint {ck.path} missing or partial"
        folder = cat.checkpoint_dir(run.id)
        listed = {c.path for c in cat.checkpoints(run.id)}
        extra = {str(p) for p in folder.iterdir()} - listed if folder.exists() else set()
        if extra:
            return f"left-over files {sorted(extra)}"
        latest = cat.checkpoint(run.id, "latest")
        config = RunConfig.from_json(run.config_json)
        trainer, _ = trainer_for(cat, config, [], run_id=run.id, resume=latest)
        result = trainer.run()
        for listener in trainer.listeners:
            listener.close()
        if result.status != "finished":
            return f"resume {result.status}: {result.error}"
        got = cat.metrics(run.id, "loss")[0].tolist()
        if got != list(range(1, steps + 1)):
            return f"loss steps after resume {got[:5]}... ({len(got)})"
    return None


def trial_kill_point(point: str, folder: Path) -> str | None:
    db = folder / "k.db"
    proc = cli(db, *flags(STEPS), fault=point)
    if proc.returncode != -signal.SIGKILL:
        return f"not killed at {point}: exit {proc.returncode} {proc.stderr[-300:]}"
    return check_after_kill(db, STEPS)


KILLED_AT: list[int] = []  # the step each random kill landed at, for the report


def trial_random_kill(rng: random.Random, folder: Path, steps: int) -> str | None:
    """SIGKILL at a random moment once the run trains (checkpoint every step, so the kill
    often lands inside the checkpoint sequence)."""
    db = folder / "r.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "--db", str(db), *flags(steps, ckpt_every=1)],
        cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600  # a hang guard
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if db.exists():
            with contextlib.closing(sqlite3.connect(db, timeout=30)) as c:
                try:
                    if c.execute("SELECT max(step) FROM runs").fetchone()[0]:
                        break
                except sqlite3.OperationalError:
                    pass
    time.sleep(rng.uniform(0.0, 3.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Catalog.open(db) as cat:
        run = cat.list_runs()[0]
        KILLED_AT.append(run.step)
        if run.status == "finished":
            return "the run finished before the kill: make it longer"
    return check_after_kill(db, steps)


def trial_concurrent_resume(folder: Path) -> str | None:
    db = folder / "c.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "--db", str(db), *flags(100000)],
        cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        rid = None
        while rid is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if db.exists():
                with Catalog.open(db) as cat:
                    runs = cat.list_runs()
                    if runs and cat.checkpoint(runs[0].id, "latest") is not None:
                        rid = runs[0].id
        if rid is None:
            return "the run never checkpointed"
        second = cli(db, "resume", str(rid), "--steps", "200000", "--quiet")
        lines = second.stderr.strip().splitlines()
        if second.returncode != 2 or len(lines) != 1 or "stop it there first" not in lines[0]:
            return f"second resume: exit {second.returncode}: {second.stderr[-300:]}"
    finally:
        proc.terminate()
        proc.wait()
    with Catalog.open(db) as cat:
        got = cat.metrics(rid, "loss")[0].tolist()
        if got != list(range(1, len(got) + 1)):
            return "duplicate or missing steps"
        if cat.get_run(rid).status != "cancelled":
            return f"status {cat.get_run(rid).status}"
    return None


def small(steps: int = STEPS) -> RunConfig:
    d = default_config("maml", "sinusoid").to_dict()
    d.update(steps=steps, ckpt_every=2, keep_last=1, val_every=4, val_episodes=4, seed=1)
    d.update(test_episodes=4, threads=1)
    d["train"]["meta_batch"] = 2
    return RunConfig.from_dict(d)


def trial_checkpoint_disk_full(folder: Path) -> str | None:
    import workbench.core.engine as engine

    real, retry = engine.write_temp, engine.STORAGE_RETRY_S
    left = {"n": 2}

    def full(*a, **k):  # type: ignore[no-untyped-def]
        if left["n"] > 0:
            left["n"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    engine.write_temp, engine.STORAGE_RETRY_S = full, 0.05
    try:
        with Catalog.open(folder / "d.db") as cat:
            trainer, rid = trainer_for(cat, small(), [])
            result = trainer.run()
            for listener in trainer.listeners:
                listener.close()
            if result.status != "finished":
                return f"{result.status}: {result.error}"
            if cat.metrics(rid, "loss")[0].tolist() != list(range(1, STEPS + 1)):
                return "points lost"
    finally:
        engine.write_temp, engine.STORAGE_RETRY_S = real, retry
    return None


def trial_catalog_error(folder: Path, code: int) -> str | None:
    from sqlalchemy.exc import OperationalError

    from workbench.core.events import RunStarted, StepMetrics

    with Catalog.open(folder / f"e{code}.db") as cat:
        rid = cat.create_run_from_config(small())
        listener = CatalogListener(cat, rid, flush_s=3600, max_buffer=50)
        holds: list[str] = []

        class Control:
            def hold(self, key: str, reason: str) -> None:
                holds.append(reason)

            def release(self, key: str) -> None:
                holds.append("released")

            def abort(self, reason: str) -> None:
                holds.append("aborted")

        listener.attach(Control())
        listener.on_start(RunStarted("{}", 0, 300, "cpu", "cpu"))
        real = cat.add_metrics
        left = {"n": 3}

        def flaky(*a, **k):  # type: ignore[no-untyped-def]
            if left["n"] > 0:
                left["n"] -= 1
                orig = sqlite3.OperationalError("injected")
                orig.sqlite_errorcode = code  # type: ignore[attr-defined]
                raise OperationalError("INSERT", {}, orig)
            return real(*a, **k)

        cat.add_metrics = flaky  # type: ignore[method-assign]
        for i in range(1, 301):
            listener.on_step(StepMetrics(i, {"loss": float(i)}, time.time()))
            if i % 100 == 0:
                listener.flush()
        listener.flush()
        listener.close()
        cat.add_metrics = real  # type: ignore[method-assign]
        if not holds or holds[-1] != "released":
            return f"holds {holds}"
        if code == 13 and not (holds[0].startswith("disk full: ") and str(folder) in holds[0]):
            return f"the pause does not say 'disk full' and the folder: {holds[0]!r}"
        if cat.metrics(rid, "loss")[0].tolist() != list(range(1, 301)):
            return "points lost"
    return None


def file_cases() -> dict[str, Callable[[Path], None]]:
    def other(p: Path) -> None:
        with contextlib.closing(sqlite3.connect(p)) as c:
            c.execute("CREATE TABLE notes (body TEXT)")
            c.commit()

    def stamped(sql: str) -> Callable[[Path], None]:
        def make(p: Path) -> None:
            Catalog.open(p).close()
            with contextlib.closing(sqlite3.connect(p)) as c:
                c.executescript(sql)
                c.commit()

        return make

    def corrupted(p: Path) -> None:
        with Catalog.open(p) as cat:
            for i in range(300):
                cat.create_run("{}", name="x" * 200 + str(i))
        with contextlib.closing(sqlite3.connect(p)) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = bytearray(p.read_bytes())
        for page in range(2, len(data) // 4096):
            data[page * 4096 + 8 : page * 4096 + 200] = os.urandom(192)
        p.write_bytes(bytes(data))

    return {
        "folder": lambda p: p.mkdir(),
        "parent is a file": lambda p: None,
        "random bytes": lambda p: p.write_bytes(os.urandom(5000)),
        "text": lambda p: p.write_text("hello\n"),
        "other SQLite": other,
        "newer version": stamped("PRAGMA user_version = 99;"),
        "unknown revision": stamped(
            "UPDATE alembic_version SET version_num='zz'; PRAGMA application_id = 0;"
        ),
        "no alembic_version": stamped("DROP TABLE alembic_version; PRAGMA application_id = 0;"),
        "missing column": stamped("ALTER TABLE runs DROP COLUMN preset;"),
        "corrupted pages": corrupted,
    }


def trial_file_case(name: str, make: Callable[[Path], None], folder: Path) -> str | None:
    path = folder / "c.db"
    if name == "parent is a file":
        (folder / "f").write_text("x")
        path = folder / "f" / "c.db"
    make(path)
    before = path.read_bytes() if path.is_file() else None
    for command in ("runs", "export 1 --csv /dev/null", "run --steps 2 --quiet"):
        proc = cli(path, *command.split())
        lines = proc.stderr.strip().splitlines()
        if proc.returncode != 2 or len(lines) != 1:
            return f"{command}: exit {proc.returncode}, {len(lines)} lines: {proc.stderr[-300:]}"
    if before is not None and path.read_bytes() != before:
        return "file changed"
    return None


def trial_fuzz(argv: list[str], db: Path) -> str | None:
    from workbench.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code  # type: ignore[assignment]
    lines = err.getvalue().strip().splitlines()
    if code != 2 or len(lines) != 1 or "Traceback" in err.getvalue():
        return f"{argv[:6]}: exit {code}, {len(lines)} lines"
    if db.exists():
        try:
            with Catalog.open(db, readonly=True) as cat:
                if cat.list_runs():
                    return f"{argv[:6]}: a run was recorded"
        except CatalogError:
            pass
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--random", type=int, default=24, help="random SIGKILL trials")
    p.add_argument("--rounds", type=int, default=5, help="concurrent-resume rounds")
    p.add_argument("--tiny", action="store_true", help="a few trials of each kind (tests)")
    p.add_argument("--write", action="store_true", help="write the table into RESULTS.md")
    args = p.parse_args()
    if args.tiny:
        args.random, args.rounds = 1, 1
    rows: list[tuple[str, int, int, list[str]]] = []

    def run(label: str, trials: list[Callable[[Path], str | None]]) -> None:
        fails: list[str] = []
        t0 = time.perf_counter()
        for trial in trials:
            with tempfile.TemporaryDirectory() as d:
                try:
                    why = trial(Path(d))
                except Exception as exc:  # a crash of the trial is a failure too
                    why = f"{type(exc).__name__}: {exc}"
            if why:
                fails.append(why)
        rows.append((label, len(trials), len(fails), fails))
        print(
            f"{label}: {len(trials)} trials, {len(fails)} failures ({time.perf_counter() - t0:.0f} s)"
        )
        for f in fails[:5]:
            print(f"    {f}")

    points = POINTS[:3] if args.tiny else POINTS
    run(
        "kill at every named point",
        [
            lambda d, pt=pt: trial_kill_point(pt if pt.startswith("run.") else f"{pt}@2", d)
            for pt in points
        ],
    )
    rng = random.Random(0)
    run(
        "random SIGKILL during training",
        [lambda d: trial_random_kill(rng, d, 400)] * args.random,
    )
    if KILLED_AT:
        print(f"    random kills landed at steps {sorted(KILLED_AT)}")
    run("second resume of a training run", [trial_concurrent_resume] * args.rounds)
    from bench.full_disk_run import check as really_full_disk

    run(
        "storage faults (ckpt ENOSPC, catalog full, catalog busy, a really full tmpfs x 3)",
        [
            trial_checkpoint_disk_full,
            lambda d: trial_catalog_error(d, 13),
            lambda d: trial_catalog_error(d, 5),
            *[really_full_disk] * (1 if args.tiny else 3),
        ],
    )
    cases = file_cases()
    names = list(cases)[:2] if args.tiny else list(cases)
    run(
        "unusable catalog files x 3 commands",
        [lambda d, n=n: trial_file_case(n, cases[n], d) for n in names],
    )
    from bench.fuzz_corpus import invalid_invocations

    with tempfile.TemporaryDirectory() as d:
        corpus = invalid_invocations(Path(d) / "fuzz.db")
        if args.tiny:
            corpus = corpus[:10]
        run(
            "fuzz: invalid invocations",
            [lambda _d, a=a, db=Path(d) / "fuzz.db": trial_fuzz(a, db) for a in corpus],
        )
    table = "| trials of | trials | failures |\n|---|---:|---:|\n" + "\n".join(
        f"| {label} | {n} | {f} |" for label, n, f, _ in rows
    )
    print(table)
    if args.write and not args.tiny:
        body = (
            "## Fault trials (`bench/faults.py --write`)\n\n"
            f"{stamp()}. Each trial checks the promise end to end (see the script's docstring);"
            " a failure is any broken promise or a crash of the trial. Random kills landed at"
            f" steps {sorted(KILLED_AT)} of 400 (a checkpoint every step).\n\n" + table
        )
        write_section("faults", body)
    return 0 if all(f == 0 for _, _, f, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
