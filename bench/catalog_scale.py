"""Does the catalog stay fast when it is big?

Builds a synthetic catalog (default 10,000 runs and 10,000,000 metric points: one run with a
100,000-step curve, the others with a few hundred steps of four metrics each, plus summary rows
and tags), bulk-inserted with `executemany` in large transactions on the catalog's own schema
(opened and migrated by `Catalog.open`), then times through the `Catalog` API:

- listing every run (`list_runs()`, what the experiments browser loads), target < 200 ms;
- loading the long run's 100,000-point curve (`metrics()`), target < 100 ms;
- the cost of metric logging while training (sinusoid MAML, a few ms per step, into this big
  catalog): the time `CatalogListener` takes on the training thread per step plus the CPU time
  of its writer thread per step (which competes for the GIL), as a share of a step; and, as a
  cross-check, the steps/s of alternating runs with and without the listener. Target < 1%.

Medians and interquartile ranges of repeated measurements.

On SQLite (a temporary file, or `--db FILE`) by default; `--url postgresql+psycopg://...` runs
the same on PostgreSQL, in an empty database (bulk-built with COPY; checkpoints of the logging
runs in a temporary folder).

    .venv/bin/python bench/catalog_scale.py [--runs 10000] [--points 10000000] [--write]
    .venv/bin/python bench/catalog_scale.py --url postgresql+psycopg://user@host/db [--write]
    .venv/bin/python bench/catalog_scale.py --tiny
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

NAMES = ("loss", "mse", "meta_lr", "steps_per_s")
SINUSOID = {
    "algorithm": {"name": "maml", "inner_lr": 0.01}, "dataset": {"name": "sinusoid"},
    "train": {"ways": 1, "shots": 10, "queries": 10, "meta_batch": 5, "inner_steps": 1},
    "eval": {"ways": 1, "shots": 10, "queries": 10, "meta_batch": 10, "inner_steps": 3},
    "val_every": 0, "ckpt_every": 0, "test_on_finish": False, "device": "cpu",
}  # fmt: skip


def iqr(xs: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    return float(q2), float(q1), float(q3)


def fmt(xs: list[float], unit: str = "ms", scale: float = 1000.0, digits: int = 1) -> str:
    m, q1, q3 = iqr([x * scale for x in xs])
    return f"{m:.{digits}f} {unit} (IQR {q1:.{digits}f}-{q3:.{digits}f})"


class _SQLiteBulk:
    """Bulk rows into a SQLite catalog: executemany in large transactions."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.path = path

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]

    def insert(self, table: str, cols: list[str], rows: list) -> None:
        with self.db:
            self.db.executemany(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                rows,
            )

    def run_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM runs ORDER BY id")]

    def finish(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("ANALYZE")
        self.db.close()

    def size_mb(self) -> float:
        return self.path.stat().st_size / 2**20


class _PostgresBulk:
    """Bulk rows into a PostgreSQL catalog: COPY."""

    def __init__(self, url: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        u = make_url(url).set(drivername="postgresql")
        self.db = psycopg.connect(u.render_as_string(hide_password=False), autocommit=True)

    def columns(self, table: str) -> list[str]:
        rows = self.db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        return [r[0] for r in rows]

    def insert(self, table: str, cols: list[str], rows: list) -> None:
        with self.db.transaction(), self.db.cursor() as cur:
            with cur.copy(f"COPY {table} ({', '.join(f'{c!s}' for c in cols)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)

    def run_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM runs ORDER BY id")]

    def finish(self) -> None:
        self.db.execute("ANALYZE")

    def size_mb(self) -> float:
        return self.db.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20

    def close(self) -> None:
        self.db.close()


def build(
    path: Path | str, runs: int, points: int, long_steps: int, checkpoint_root: Path | None = None
) -> tuple[int, int, float, float]:
    """Fill the catalog at `path` (a SQLite file or an empty PostgreSQL database's URL);
    returns (id of the long run, points written, seconds, size in MiB)."""
    from workbench.catalog import Catalog

    with Catalog.open(path, checkpoint_root=checkpoint_root) as cat:  # schema and migrations
        if cat.list_runs(limit=1):
            raise SystemExit(f"{cat.display} already has runs: give an empty database")
    t0 = time.perf_counter()
    db: Any = _SQLiteBulk(path) if isinstance(path, Path) else _PostgresBulk(path)
    cols = [c for c in db.columns("runs") if c != "id"]
    now = time.time()
    algos, datasets = (
        ("maml", "protonet", "fomaml", "meta-lstm"),
        ("sinusoid", "omniglot", "glyphs"),
    )
    statuses = ("finished", "finished", "finished", "failed", "cancelled", "interrupted")
    rows = []
    for i in range(runs):
        total = long_steps if i == 0 else 0
        r = {c: None for c in cols}
        r.update(name=f"run-{i}", status=statuses[i % len(statuses)], algorithm=algos[i % 4], dataset=datasets[i % 3],
                 device="cpu", config_json=f'{{"seed": {i}}}', seed=i, created_at=now - 60 * (runs - i),
                 started_at=now - 60 * (runs - i), ended_at=now - 60 * (runs - i) + 50, heartbeat_at=now - 60 * (runs - i) + 50,
                 notes="", attempt=1, total_steps=total, step=total)  # fmt: skip
        rows.append([r[c] for c in cols])
    db.insert("runs", cols, rows)
    ids = db.run_ids()
    long_id = ids[0]
    other = max(1, (points - long_steps * len(NAMES)) // max(1, (len(ids) - 1) * len(NAMES)))
    steps_of = {rid: (long_steps if rid == long_id else other) for rid in ids}

    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(4096)).tolist()
    written = 0

    def points_of(rid: int):  # (run_id, attempt, step, name, value, wall_time)
        n = steps_of[rid]
        w0 = now - 60 * (runs - rid)
        for step in range(1, n + 1):
            base = 1.0 / (1.0 + 0.01 * step)
            e = noise[(rid * 7 + step) & 4095]
            wall = w0 + step * 0.005
            yield (rid, 1, step, "loss", base + e, wall, False)
            yield (rid, 1, step, "mse", base * 0.9 + e, wall, False)
            yield (rid, 1, step, "meta_lr", 0.001, wall, False)
            yield (rid, 1, step, "steps_per_s", 200.0 + 10 * e, wall, False)

    mcols = ["run_id", "attempt", "step", "name", "value", "wall_time", "superseded"]
    batch: list[tuple] = []
    for rid in ids:
        batch.extend(points_of(rid))
        if len(batch) >= 1_000_000:
            db.insert("metrics", mcols, batch)
            written += len(batch)
            batch = []
    if batch:
        db.insert("metrics", mcols, batch)
        written += len(batch)

    # what the writer keeps beside the points: one summary row per (run, metric), some tags
    scols = set(db.columns("run_summary"))
    summ = []
    for rid in ids:
        n = steps_of[rid]
        for name, latest, best in (("loss", 0.3, 0.25), ("mse", 0.28, 0.2), ("meta_lr", 0.001, 0.001), ("steps_per_s", 200.0, 210.0),
                                   ("val_mse", 0.4, 0.35), ("val_mse_ci95", 0.02, 0.02), ("test_mse", 0.38, 0.38), ("test_mse_ci95", 0.02, 0.02)):  # fmt: skip
            summ.append({"run_id": rid, "name": name, "latest_value": latest, "latest_step": n, "latest_wall_time": now,
                         "best_value": best, "best_step": n, "count": n})  # fmt: skip
    keys = [k for k in summ[0] if k in scols]
    db.insert("run_summary", keys, [[s[k] for k in keys] for s in summ])
    db.insert(
        "run_tags",
        ["run_id", "tag"],
        [(rid, ("paper", "sweep", "debug")[rid % 3]) for rid in ids if rid % 4 == 0],
    )
    db.finish()
    size = db.size_mb()
    if hasattr(db, "close"):
        db.close()
    return long_id, written, time.perf_counter() - t0, size


def logging_cost(catalog, steps: int, pairs: int) -> dict:
    """CatalogListener's share of a training step: direct (training-thread time in on_step + the
    writer thread's CPU time, per step) and as an A/B of steps/s."""
    import torch

    from workbench.catalog import CatalogListener
    from workbench.core.config import RunConfig
    from workbench.core.engine import Trainer
    from workbench.core.events import Listener

    torch.set_num_threads(1)
    cfg = RunConfig.from_dict({**SINUSOID, "steps": steps})
    warm = max(5, steps // 20)

    class Walls(Listener):
        def __init__(self) -> None:
            self.walls: list[float] = []

        def on_step(self, event) -> None:  # type: ignore[no-untyped-def]
            self.walls.append(event.wall_time)

    class Timed(Listener):
        """Forwards to the CatalogListener and times it on the training thread."""

        def __init__(self, inner: CatalogListener) -> None:
            self.inner, self.on_step_s = inner, 0.0
            self.writer_cpu_s = 0.0
            drain = inner._drain

            def timed_drain(
                final: bool = False,
            ) -> None:  # runs on the writer thread (and at close)
                c0 = time.thread_time()
                drain(final)
                self.writer_cpu_s += time.thread_time() - c0

            inner._drain = timed_drain  # type: ignore[method-assign]

        def on_step(self, event) -> None:  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            self.inner.on_step(event)
            self.on_step_s += time.perf_counter() - t

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(self.inner, name)

    def run(with_catalog: bool) -> tuple[float, float]:
        run_id = catalog.create_run_from_config(cfg)
        w = Walls()
        listeners: list = [w]
        timed = None
        if with_catalog:
            timed = Timed(CatalogListener(catalog, run_id))
            listeners.insert(0, timed)
        Trainer(cfg, listeners, checkpoint_dir=catalog.checkpoint_dir(run_id)).run()
        walls = w.walls[warm:]
        step_s = (walls[-1] - walls[0]) / (len(walls) - 1)
        share = 0.0
        if timed is not None:
            timed.inner.close()
            share = (timed.on_step_s + timed.writer_cpu_s) / steps / step_s
        return step_s, share

    run(True)  # warm-up
    with_s, without_s, shares, ab = [], [], [], []
    for i in range(pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        got = {}
        for flag in order:
            got[flag] = run(flag)
        with_s.append(got[True][0])
        without_s.append(got[False][0])
        shares.append(got[True][1])
        ab.append(got[True][0] / got[False][0] - 1)
        print(f"logging pair {i + 1}: step {got[False][0] * 1000:.2f} ms without, {got[True][0] * 1000:.2f} ms with the catalog; "
              f"listener + writer share {100 * got[True][1]:.2f}%", flush=True)  # fmt: skip
    return {
        "with": with_s,
        "without": without_s,
        "share": shares,
        "ab": ab,
        "threads": threading.active_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--points", type=int, default=10_000_000)
    p.add_argument("--long", type=int, default=100_000, help="steps of the long run's curve")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--pairs", type=int, default=5, help="with/without-catalog training pairs")
    p.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="steps of each training run of the logging measurement",
    )
    p.add_argument("--db", type=Path, help="catalog file (default: a temporary one, deleted)")
    p.add_argument(
        "--url",
        help="an empty PostgreSQL database to run on instead (postgresql+psycopg://user@host/db)",
    )
    p.add_argument(
        "--tiny", action="store_true", help="200 runs, 20,000 points: checks that the script works"
    )
    p.add_argument(
        "--write", action="store_true", help="write the catalog-scale section of bench/RESULTS.md"
    )
    args = p.parse_args(argv)
    if args.tiny:
        args.runs, args.points, args.long, args.repeats, args.pairs, args.steps = (
            200,
            20_000,
            2_000,
            3,
            1,
            120,
        )

    from workbench.catalog import Catalog

    tmp = Path(tempfile.mkdtemp(prefix="wb-catalog-scale-"))
    path: Path | str
    if args.url:
        path, backend = args.url, "PostgreSQL"
    else:
        path, backend = args.db or tmp / "scale.db", "SQLite"
        if path.exists():
            path.unlink()
    root = tmp / "checkpoints"
    long_id, written, build_s, size_mb = build(path, args.runs, args.points, args.long, root)
    print(
        f"built a catalog of {args.runs:,} runs and {written:,} metric points in {build_s:.1f} s ({size_mb:.0f} MiB, {backend})",
        flush=True,
    )

    cat = Catalog.open(path, checkpoint_root=root)
    try:
        list_s, load_s = [], []
        n_listed = n_loaded = 0
        for _ in range(args.repeats):
            t = time.perf_counter()
            n_listed = len(cat.list_runs())
            list_s.append(time.perf_counter() - t)
        for _ in range(args.repeats):
            t = time.perf_counter()
            steps, _, _ = cat.metrics(long_id, "loss")
            load_s.append(time.perf_counter() - t)
            n_loaded = len(steps)
        print(f"list the runs ({n_listed:,}): {fmt(list_s)}; target < 200 ms", flush=True)
        print(
            f"load one run's {n_loaded:,}-point curve: {fmt(load_s)}; target < 100 ms", flush=True
        )
        log = logging_cost(cat, args.steps, args.pairs)
    finally:
        cat.close()
    share = fmt(log["share"], "%", 100.0, 2)
    ab = fmt(log["ab"], "%", 100.0, 1)
    step_ms = fmt(log["without"], "ms", 1000.0, 2)
    print(f"metric logging per step (sinusoid MAML, step {step_ms} without the catalog): step time with vs without the "
          f"CatalogListener {ab} (target < 1%); CPU time of on_step + the writer thread: {share} of a step (the rest of the "
          f"A/B difference is GIL hand-offs between the threads)", flush=True)  # fmt: skip

    if args.write:
        from bench.results import stamp, write_section

        lm, _, _ = iqr([x * 1000 for x in list_s])
        cm, _, _ = iqr([x * 1000 for x in load_s])
        am, _, _ = iqr([x * 100 for x in log["ab"]])
        pg = backend == "PostgreSQL"
        how = "COPY" if pg else "`executemany` in 1M-row transactions"
        flag = " --url postgresql+psycopg://..." if pg else ""
        lines = [
            "## Catalog at scale" + (" (PostgreSQL)" if pg else ""),
            "",
            f"{stamp()}; `bench/catalog_scale.py --runs {args.runs} --points {args.points}{flag}`"
            + (
                " (PostgreSQL 15 on this machine, default settings: fsync and synchronous_commit on; "
                "psycopg 3 over TCP to 127.0.0.1)."
                if pg
                else "."
            ),
            "",
            f"Synthetic {backend} catalog: {args.runs:,} runs, {written:,} metric points ({size_mb:.0f} MiB; one run with a {args.long:,}-step "
            f"curve, the others a few hundred steps of 4 metrics), 8 summary rows per run, tags on a quarter of the runs; bulk-built "
            f"with {how} in {build_s:.1f} s. Timings through the `Catalog` API on a fresh connection; "
            f"median (IQR) of {args.repeats} repeats. Logging cost: sinusoid MAML (1 torch thread, {args.steps} steps a run, "
            f"{args.pairs} alternating pairs) into this catalog: the change of the mean step time with the listener attached vs "
            "not (the measure of the target); for comparison, the training thread's time in `CatalogListener.on_step` plus the "
            "writer thread's CPU time, per step. The A/B is larger than that CPU time: every wake-up of the writer makes the "
            "training thread hand over the GIL and wait to get it back (Python's 5 ms switch interval).",
            "",
            "| measurement | result | target | |",
            "|---|---:|---:|---|",
            f"| list all {n_listed:,} runs (`list_runs()`) | {fmt(list_s)} | < 200 ms | {'ok' if lm < 200 else 'missed'} |",
            f"| load one run's {n_loaded:,}-point curve (`metrics()`) | {fmt(load_s)} | < 100 ms | {'ok' if cm < 100 else 'missed'} |",
            f"| metric logging: step time with vs without the listener (step {step_ms}) | {ab} | < 1% | {'ok' if am < 1 else 'missed'} |",
            f"| metric logging: CPU time of `on_step` + writer thread per step | {share} | | |",
        ]
        key = "catalog-scale-postgresql" if pg else "catalog-scale"
        write_section(key, "\n".join(lines))
        print(f"wrote the {key} section of bench/RESULTS.md")
    import shutil

    shutil.rmtree(root, ignore_errors=True)  # the logging runs' checkpoint folders
    if args.db is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
