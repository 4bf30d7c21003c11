"""What does the GUI cost training? Same torch thread count, alternating runs:

- steps/s of one configuration trained headless (Trainer + CatalogListener on the main
  thread, as the CLI does) and with the main window attached (worker QThread, Qt bridge,
  live plots, adaptation view, browser polling, status bar), in alternating pairs; medians;
  for a fast run (sinusoid MAML, a few ms per step: the worst case, the GIL is shared with
  the GUI thread), a conv run (glyphs 5-way 1-shot MAML, Conv-4, tasks on task threads) and
  a ProtoNet run (glyphs 20-way 5-shot, one large episode on torch's intra-op threads);
- lateness of a 10 ms QTimer on the GUI thread while training (p50, p99, max), i.e. how long
  the GUI thread can be kept from reacting.

    .venv/bin/python bench/gui_overhead.py [--pairs 5] [--write]
    .venv/bin/python bench/gui_overhead.py --tiny           # seconds; what the test suite runs
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

SINUSOID = {
    "algorithm": {"name": "maml", "inner_lr": 0.01}, "dataset": {"name": "sinusoid"},
    "train": {"ways": 1, "shots": 10, "queries": 10, "meta_batch": 5, "inner_steps": 1},
    "eval": {"ways": 1, "shots": 10, "queries": 10, "meta_batch": 10, "inner_steps": 3},
    "val_every": 100, "val_episodes": 10, "ckpt_every": 0, "test_on_finish": False, "device": "cpu",
}  # fmt: skip
CONV = {
    "algorithm": {"name": "maml", "inner_lr": 0.4}, "dataset": {"name": "glyphs"},
    "model": {"name": "conv4", "width": 64, "downsample": "stride"},
    "train": {"ways": 5, "shots": 1, "queries": 5, "meta_batch": 4, "inner_steps": 1},
    "eval": {"ways": 5, "shots": 1, "queries": 5, "meta_batch": 4, "inner_steps": 3},
    "val_every": 0, "ckpt_every": 0, "test_on_finish": False, "device": "cpu",
}  # fmt: skip
PROTONET = {
    **CONV, "algorithm": {"name": "protonet"}, "model": {"name": "conv4", "width": 64, "downsample": "maxpool"},
    "train": {"ways": 20, "shots": 5, "queries": 5, "meta_batch": 1},
    "eval": {"ways": 5, "shots": 1, "queries": 5, "meta_batch": 4},
}  # fmt: skip
# key -> (label, config, steps, warm-up steps excluded from the rate); --tiny uses the second numbers
WORKLOADS = {
    "sinusoid": ("sinusoid MAML (MLP 40-40)", SINUSOID, (1500, 60), (20, 10)),
    "conv": ("glyphs 5-way 1-shot MAML (Conv-4)", CONV, (40, 6), (4, 2)),
    "protonet": ("glyphs 20-way 5-shot ProtoNet (Conv-4)", PROTONET, (40, 6), (4, 2)),
}


def rate(walls: list[tuple[int, float]], warmup: int) -> float:
    """Steps per second between the warm-up step and the last step (StepMetrics wall times)."""
    pts = [(s, w) for s, w in walls if s > warmup]
    (s0, w0), (s1, w1) = pts[0], pts[-1]
    return (s1 - s0) / (w1 - w0)


def headless_run(config_json: str, db: str, warmup: int) -> tuple[float, int]:
    """One run the CLI's way (Trainer + CatalogListener on the main thread) in the child process
    that runs them all: steps/s and the torch threads it used.

    Not in the GUI's process: a main thread that has run torch's parallel regions keeps an
    OpenMP team, and with two teams alive libgomp throttles its spinning, so the training
    thread's workers sleep and wake at every region (a 20-way ProtoNet run on a thread after
    one on the main thread: 9,000 context switches instead of 140, 14.2 against 16.9 steps/s).
    The app's main thread trains nothing."""
    from workbench.catalog import Catalog, CatalogListener
    from workbench.core.config import RunConfig
    from workbench.core.engine import Trainer
    from workbench.core.events import Listener, RunStarted, StepMetrics

    class Walls(Listener):
        def __init__(self) -> None:
            self.walls: list[tuple[int, float]] = []
            self.threads = 0

        def on_start(self, event: RunStarted) -> None:
            self.threads = int(event.environment.get("threads", 0))

        def on_step(self, event: StepMetrics) -> None:
            self.walls.append((event.step, event.wall_time))

    cfg = RunConfig.from_json(config_json)
    catalog = Catalog.open(Path(db))
    try:
        run_id = catalog.create_run_from_config(cfg)
        w = Walls()
        Trainer(
            cfg,
            [CatalogListener(catalog, run_id), w],
            checkpoint_dir=catalog.checkpoint_dir(run_id),
        ).run()
    finally:
        catalog.close()
    return rate(w.walls, warmup), w.threads


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=5,
        help="alternating headless/GUI pairs per workload (default 5)",
    )
    p.add_argument(
        "--tiny", action="store_true", help="a few steps, 1 pair: checks that the script works"
    )
    p.add_argument("--only", choices=list(WORKLOADS), help="measure one workload")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads for both (the runs' `threads`; default: empty, as the app and CLI: "
        "all cores, one for tasks too small to share)",
    )
    p.add_argument(
        "--write", action="store_true", help="write the gui-overhead section of bench/RESULTS.md"
    )
    args = p.parse_args(argv)
    pairs = 1 if args.tiny else args.pairs
    tmp = Path(tempfile.mkdtemp(prefix="wb-gui-overhead-"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    app = QApplication.instance() or QApplication(["workbench"])

    from workbench.catalog import Catalog
    from workbench.core.config import RunConfig
    from workbench.gui.main_window import MainWindow

    catalog = Catalog.open(tmp / "runs.db")
    win = MainWindow(catalog, restore=False)
    win.confirm = lambda *_: True
    win.resize(1600, 1000)
    win.show()
    app.processEvents()

    ctx = multiprocessing.get_context("spawn")
    child = ctx.Pool(1)  # headless runs: the CLI's process, kept for all of them (warm caches)
    last_threads = [0]  # torch threads the last headless run used (RunStarted's environment)

    def headless(cfg: RunConfig, warmup: int, late: list[float] | None) -> float:
        steps_per_s, last_threads[0] = child.apply(
            headless_run, (cfg.to_json(), str(tmp / "headless.db"), warmup)
        )
        return steps_per_s

    def with_gui(cfg: RunConfig, warmup: int, late: list[float] | None) -> float:
        """One run trained by the window; with `late`, a 10 ms timer probes the GUI thread (the
        probe takes the GIL 100 times a second, so the throughput runs go without it)."""
        walls: list[tuple[int, float]] = []
        conn = win.queue.signals.steps.connect(
            lambda _id, batch: walls.extend((e.step, e.wall_time) for e in batch)
        )
        timer = QTimer(timerType=Qt.TimerType.PreciseTimer, interval=10)
        last = [0.0]

        def tick() -> None:
            now = time.perf_counter()
            if last[0] and late is not None:
                late.append((now - last[0]) * 1000 - 10.0)
            last[0] = now

        timer.timeout.connect(tick)
        loop = QEventLoop()
        # the training itself, not the thread's start-up
        started = win.queue.signals.started.connect(
            lambda *_: timer.start() if late is not None else None
        )
        done = win.queue.jobFinished.connect(lambda *_: loop.quit())
        win.queue.submit(cfg)
        loop.exec()  # the real event loop: it waits in C++ without holding the GIL
        timer.stop()
        for sig, c in (
            (win.queue.jobFinished, done),
            (win.queue.signals.started, started),
            (win.queue.signals.steps, conn),
        ):
            sig.disconnect(c)
        app.processEvents()
        return rate(walls, warmup)

    results = []
    for key, (name, base, steps, warm) in WORKLOADS.items():
        if args.only and args.only != key:
            continue
        n, warmup = (steps[1], warm[1]) if args.tiny else (steps[0], warm[0])
        cfg = RunConfig.from_dict({**base, "steps": n, "threads": args.threads})
        late: list[float] = []
        head_rates: list[float] = []
        gui_rates: list[float] = []
        redraws0, t_gui = win.live.redraws, 0.0
        headless(
            cfg.model_copy(update={"steps": max(warmup + 2, n // 4)}), warmup, []
        )  # warm caches (datasets, kernels)
        for i in range(pairs):
            order: tuple[Callable[..., float], ...] = (
                (headless, with_gui) if i % 2 == 0 else (with_gui, headless)
            )
            for fn in order:
                t0 = time.perf_counter()
                r = fn(cfg, warmup, None)
                if fn is with_gui:
                    t_gui += time.perf_counter() - t0
                (head_rates if fn is headless else gui_rates).append(r)
            print(
                f"{name} pair {i + 1}: headless {head_rates[-1]:.2f} steps/s, GUI {gui_rates[-1]:.2f} steps/s",
                flush=True,
            )
        redraws_per_s = (win.live.redraws - redraws0) / t_gui if t_gui else 0.0
        probe_rate = with_gui(cfg, warmup, late)  # one more GUI run, probed
        h, g = statistics.median(head_rates), statistics.median(gui_rates)
        ratios = [gr / hr - 1 for hr, gr in zip(head_rates, gui_rates, strict=True)]
        lat = np.asarray(late)
        res = {
            "name": name, "steps": n, "pairs": pairs, "head": h, "gui": g, "overhead": 100 * (g / h - 1),
            "pair_median": 100 * statistics.median(ratios), "p50": pct(lat, 50), "p99": pct(lat, 99),
            "max": float(lat.max()) if len(lat) else float("nan"), "ticks": len(lat),
            "redraws_per_s": redraws_per_s, "probe_rate": probe_rate, "threads": last_threads[0],
        }  # fmt: skip
        results.append(res)
        print(
            f"{name}: median steps/s headless {h:.2f}, with GUI {g:.2f} ({res['overhead']:+.1f}%; median of per-pair ratios {res['pair_median']:+.1f}%)"
        )
        print(f"{name}: 10 ms QTimer lateness on the GUI thread during training: p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms, "
              f"max {res['max']:.2f} ms ({res['ticks']} ticks, in an extra GUI run at {probe_rate:.2f} steps/s); "
              f"live plot redraws {res['redraws_per_s']:.1f}/s", flush=True)  # fmt: skip

    used = ", ".join(f"{r['name']}: {r['threads']}" for r in results)
    print(f"torch threads: {used} (CPUs: {os.cpu_count()}), pairs: {pairs}")
    child.close()
    child.join()
    win.shutdown()
    win.close()
    catalog.close()

    if args.write:
        from bench.results import stamp, write_section

        threads_text = (
            f"`threads` = {args.threads}"
            if args.threads
            else "`threads` left empty, as in the app and the CLI: all cores, one where the tasks are too small to share"
        )
        lines = [
            "## GUI overhead on training",
            "",
            f"{stamp()}; `bench/gui_overhead.py --pairs {pairs}`.",
            "",
            f"Same torch threads for both ({threads_text}): headless = Trainer + CatalogListener on the main thread of a child process (the CLI's way; the GUI's process trains nothing on its main thread, as in the app); "
            "GUI = the main window (1600x1000, offscreen) training in its worker QThread with live plots, adaptation view, browser "
            "polling and status bar. Steps/s from the runs' own step timestamps after a warm-up, medians of "
            f"{pairs} alternating pairs (after one warm-up run); timer lateness = how late a 10 ms QTimer on the GUI thread fires "
            "while training, in one more GUI run (the probe itself takes the GIL 100 times a second, so the pairs run without it).",
            "",
            "| workload | torch threads | steps/run | headless steps/s | GUI steps/s | GUI overhead | median per-pair | QTimer late p50 / p99 / max (ms) | plot redraws/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results:
            lines.append(
                f"| {r['name']} | {r['threads']} | {r['steps']} | {r['head']:.2f} | {r['gui']:.2f} | {r['overhead']:+.1f}% | {r['pair_median']:+.1f}% "
                f"| {r['p50']:.1f} / {r['p99']:.1f} / {r['max']:.1f} | {r['redraws_per_s']:.1f} |"
            )
        write_section("gui-overhead", "\n".join(lines))
        print("wrote the gui-overhead section of bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
