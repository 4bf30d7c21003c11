"""How much does the GUI cost training? Same process, same torch thread count:

- steps/s of one sinusoid MAML configuration trained headless (Trainer + CatalogListener on
  the main thread, as the CLI does) and with the main window attached (worker QThread, Qt
  bridge, live plots, adaptation view, browser polling), in alternating pairs; medians;
- lateness of a 10 ms QTimer on the GUI thread while training (p99 and max).

    .venv/bin/python tools/measure_gui_overhead.py [--pairs 5] [--steps 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

CONFIG = {
    "algorithm": {"name": "maml", "inner_lr": 0.01}, "dataset": {"name": "sinusoid"},
    "train": {"ways": 1, "shots": 10, "queries": 10, "meta_batch": 5, "inner_steps": 1},
    "eval": {"ways": 1, "shots": 10, "queries": 10, "meta_batch": 10, "inner_steps": 3},
    "val_every": 100, "val_episodes": 10, "ckpt_every": 0, "test_on_finish": False, "device": "cpu",
}  # fmt: skip
WARMUP = 20


def rate(walls: list[tuple[int, float]]) -> float:
    """Steps per second between the warm-up step and the last step."""
    pts = [(s, w) for s, w in walls if s > WARMUP]
    (s0, w0), (s1, w1) = pts[0], pts[-1]
    return (s1 - s0) / (w1 - w0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="wb-overhead-"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    app = QApplication.instance() or QApplication(["workbench"])

    import torch

    from workbench.catalog import Catalog, CatalogListener
    from workbench.core.config import RunConfig
    from workbench.core.engine import Trainer
    from workbench.core.events import Listener
    from workbench.gui.main_window import MainWindow
    from workbench.gui.worker import leave_a_core_for_the_gui

    threads = leave_a_core_for_the_gui()
    cfg = RunConfig.from_dict({**CONFIG, "steps": args.steps})
    catalog = Catalog.open(tmp / "runs.db")
    win = MainWindow(catalog, restore=False)
    win.confirm = lambda *_: True
    win.resize(1600, 1000)
    win.show()
    app.processEvents()

    class Walls(Listener):
        def __init__(self) -> None:
            self.walls: list[tuple[int, float]] = []

        def on_step(self, event) -> None:  # type: ignore[no-untyped-def]
            self.walls.append((event.step, event.wall_time))

    def headless() -> float:
        run_id = catalog.create_run_from_config(cfg)
        w = Walls()
        Trainer(cfg, [CatalogListener(catalog, run_id), w], checkpoint_dir=catalog.checkpoint_dir(run_id)).run()
        return rate(w.walls)

    late: list[float] = []

    def with_gui() -> float:
        walls: list[tuple[int, float]] = []
        conn = win.queue.signals.steps.connect(lambda _id, batch: walls.extend((e.step, e.wall_time) for e in batch))
        timer = QTimer(timerType=Qt.TimerType.PreciseTimer, interval=10)
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            late.append((now - last[0]) * 1000 - 10.0)
            last[0] = now

        timer.timeout.connect(tick)
        loop = QEventLoop()
        done = win.queue.jobFinished.connect(lambda *_: loop.quit())
        win.queue.submit(cfg)
        timer.start()
        loop.exec()  # the real event loop: it waits in C++ without holding the GIL
        timer.stop()
        win.queue.jobFinished.disconnect(done)
        app.processEvents()
        win.queue.signals.steps.disconnect(conn)
        return rate(walls)

    gui_rates, head_rates = [], []
    for i in range(args.pairs):
        order = (headless, with_gui) if i % 2 == 0 else (with_gui, headless)
        for fn in order:
            r = fn()
            (head_rates if fn is headless else gui_rates).append(r)
        print(f"pair {i + 1}: headless {head_rates[-1]:.1f} steps/s, GUI {gui_rates[-1]:.1f} steps/s", flush=True)

    h, g = statistics.median(head_rates), statistics.median(gui_rates)
    lat = np.asarray(late)
    print(f"torch threads: {threads} (CPUs: {os.cpu_count()}), steps per run: {args.steps}, pairs: {args.pairs}")
    print(f"median steps/s headless: {h:.1f}")
    print(f"median steps/s with GUI: {g:.1f}  ({100 * (g / h - 1):+.1f}%)")
    print(f"10 ms QTimer lateness on the GUI thread during training: p50 {np.percentile(lat, 50):.2f} ms, "
          f"p99 {np.percentile(lat, 99):.2f} ms, max {lat.max():.2f} ms ({len(lat)} ticks)")  # fmt: skip
    win.shutdown()
    win.close()
    catalog.close()
    del torch
    return 0


if __name__ == "__main__":
    sys.exit(main())
