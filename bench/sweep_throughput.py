"""Sweep throughput: the same grid of trials with 1 and 2 concurrent workers, per executor.

A grid of `--trials` sinusoid MAML configurations (inner learning rates), each trial sized to
train about `--trial-s` seconds alone on one thread (calibrated first with a short run), runs
through `workbench sweep start` once with `--max-concurrent 1` and once with 2, per executor
(`local`, and `ray` when it is installed). Reported: the sweep's wall time, its speed-up from
1 to 2 workers, and each trial's start latency (from its row in the catalog to its run's first
attempt starting, both on the catalog's clock: process start, imports, dataset, catalog open).

    .venv/bin/python bench/sweep_throughput.py [--trials 8] [--trial-s 30] [--executors local ray] [--write]
    .venv/bin/python bench/sweep_throughput.py --tiny
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import stamp, write_section  # noqa: E402

BASE = {
    "algorithm": {"name": "maml"},
    "dataset": {"name": "sinusoid"},
    "val_every": 10**6,
    "ckpt_every": 10**6,
    "test_on_finish": False,
}


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("WORKBENCH_FAULT", None)
    env.pop("WORKBENCH_THREADS", None)
    return env


def calibrate(folder: Path, trial_s: float) -> tuple[int, float]:
    """Steps for a trial of about `trial_s` seconds on one thread, and the measured rate."""
    db = folder / "calibrate.db"
    steps = 400
    subprocess.run(
        [sys.executable, "-m", "workbench", "--db", str(db), "run", "--algorithm", "maml",
         "--dataset", "sinusoid", "--steps", str(steps), "--threads", "1", "--quiet",
         "--set", "val_every=1000000", "--set", "test_on_finish=false"],
        check=True, env=_env(), cwd=ROOT, capture_output=True, timeout=1800,
    )  # fmt: skip
    from workbench.catalog import Catalog

    with Catalog.open(db) as cat:
        (run,) = cat.list_runs()
        _, _, walls = cat.metrics(run.id, "loss")
    rate = (len(walls) - 1) / float(walls[-1] - walls[0])  # steps per second once training
    return max(50, math.ceil(rate * trial_s)), rate


def one_sweep(folder: Path, executor: str, workers: int, trials: int, steps: int) -> dict:
    db = folder / f"{executor}-{workers}.db"
    spec = {
        "name": f"{executor}-{workers}",
        "base": {**BASE, "steps": steps},
        "parameters": [
            {
                "key": "algorithm.inner_lr",
                "values": [round(0.001 * 1.5**i, 6) for i in range(trials)],
            }
        ],
        "max_concurrent": workers,
        "threads_per_trial": 1,
    }
    path = folder / f"{executor}-{workers}.json"
    path.write_text(json.dumps(spec))
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "workbench", "--db", str(db), "sweep", "start", str(path),
         "--executor", executor],
        env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=7200,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"sweep {executor} x{workers} failed: {out.stderr.strip()[-2000:]}")
    from workbench.catalog import Catalog

    with Catalog.open(db) as cat:
        (sw,) = cat.sweeps.list()
        rows = cat.sweeps.trials(sw.id)
        latency = []
        train_s = []
        for t in rows:
            attempts = cat.attempts(t.run_id)
            latency.append(attempts[0]["started_at"] - t.created_at)
            train_s.append(attempts[-1]["ended_at"] - attempts[0]["started_at"])
        finished = sum(t.status == "finished" for t in rows)
    return {
        "wall_s": wall,
        "finished": finished,
        "latency_median_s": statistics.median(latency),
        "latency_max_s": max(latency),
        "train_median_s": statistics.median(train_s),
    }


def report(results: dict, trials: int, steps: int, rate: float, trial_s: float) -> str:
    lines = [
        "## Sweep throughput (`bench/sweep_throughput.py`)",
        "",
        f"{stamp()}. Written by `python bench/sweep_throughput.py --write`.",
        "",
        f"A grid of {trials} sinusoid MAML trials (inner learning rates), each {steps} steps: "
        f"about {trial_s:.0f} s alone on one thread (calibrated: {rate:.0f} steps/s), one torch "
        "thread per trial, run by `workbench sweep start` with 1 and with 2 concurrent workers. "
        "Start latency: from the trial's row in the catalog to its run's first attempt starting "
        "(process start, imports, catalog open), median and max over the trials; trial time: "
        "median time a trial trained.",
        "",
        "| executor | workers | sweep wall s | speed-up vs 1 worker | trials finished | start latency median / max s | trial time median s |",
        "|---|---|---|---|---|---|---|",
    ]
    for executor, by_workers in results.items():
        one = by_workers.get(1, {}).get("wall_s")
        for workers, r in sorted(by_workers.items()):
            speed = f"{one / r['wall_s']:.2f}x" if one else "-"
            lines.append(
                f"| {executor} | {workers} | {r['wall_s']:.1f} | {speed} | {r['finished']}/{trials} | "
                f"{r['latency_median_s']:.2f} / {r['latency_max_s']:.2f} | {r['train_median_s']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--trial-s", type=float, default=30.0, help="seconds a trial trains alone")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument(
        "--executors", nargs="+", default=None, help="default: local, and ray if installed"
    )
    p.add_argument("--tiny", action="store_true", help="2 trials of about 2 s: checks the script")
    p.add_argument("--write", action="store_true", help="write the sweep-throughput section")
    args = p.parse_args(argv)
    if args.tiny:
        args.trials, args.trial_s = 2, 2.0
    executors = args.executors or ["local"] + (["ray"] if importlib.util.find_spec("ray") else [])
    with tempfile.TemporaryDirectory(prefix="wb-sweep-bench-") as tmp:
        folder = Path(tmp)
        steps, rate = calibrate(folder, args.trial_s)
        print(f"trial: {steps} steps ({rate:.0f} steps/s alone)", flush=True)
        results: dict[str, dict[int, dict]] = {}
        for executor in executors:
            for workers in args.workers:
                r = one_sweep(folder, executor, workers, args.trials, steps)
                results.setdefault(executor, {})[workers] = r
                print(f"{executor} x{workers}: {json.dumps(r)}", flush=True)
    text = report(results, args.trials, steps, rate, args.trial_s)
    print(text)
    if args.write:
        write_section("sweep-throughput", text)
        print("wrote the sweep-throughput section of bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
