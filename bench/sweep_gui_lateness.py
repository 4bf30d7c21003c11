"""How smooth is the app while a sweep streams? A 10 ms QTimer on the GUI thread while the main
window follows a sweep of `--trials` trials training at once in their own processes.

The window opens on a fresh catalog; a grid sweep (sinusoid MAML, `--steps` steps a trial, all
trials at once, one torch thread each) starts through the app's own path (`start_sweep`, as
Run setup → New sweep… does). The timer's lateness (how long past its 10 ms it fires: the time
the GUI thread could not react) is recorded while the Training tab overlays the live runs and,
separately, while the Sweeps tab is shown; p50, p99 and max of each.

    .venv/bin/python bench/sweep_gui_lateness.py [--trials 4] [--steps 3000] [--write]
    .venv/bin/python bench/sweep_gui_lateness.py --tiny
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from bench.results import stamp, write_section  # noqa: E402


def measure(win: object, tab: int, seconds: float, app: QApplication) -> np.ndarray:
    """Lateness (ms) of a 10 ms timer for `seconds` with tab `tab` of the window shown."""
    win.tabs.setCurrentIndex(tab)  # type: ignore[attr-defined]
    late: list[float] = []
    last = [0.0]
    timer = QTimer(timerType=Qt.TimerType.PreciseTimer, interval=10)

    def tick() -> None:
        now = time.perf_counter()
        if last[0]:
            late.append((now - last[0]) * 1000 - 10.0)
        last[0] = now

    timer.timeout.connect(tick)
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    timer.start()
    loop.exec()
    timer.stop()
    return np.asarray(late)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--steps", type=int, default=3000, help="steps of each trial")
    p.add_argument("--seconds", type=float, default=20.0, help="measured per tab")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--write", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.trials, args.steps, args.seconds = 2, 300, 3.0
    app = QApplication.instance() or QApplication(["bench"])
    with tempfile.TemporaryDirectory(prefix="wb-sweep-gui-") as tmp:
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tmp)
        from workbench.catalog import Catalog
        from workbench.core.config import default_config
        from workbench.gui.main_window import MainWindow
        from workbench.gui.sweep_dialog import start_sweep

        catalog = Catalog.open(Path(tmp) / "s.db")
        win = MainWindow(catalog, restore=False)
        win.confirm = lambda *_: True
        win.show()
        base = default_config().to_dict()
        base.update(steps=args.steps, val_every=100, test_on_finish=False, threads=1)
        spec = {
            "name": "lateness",
            "base": base,
            "parameters": [
                {"key": "algorithm.inner_lr", "values": [0.001 * 2**i for i in range(args.trials)]}
            ],
            "max_concurrent": args.trials,
            "threads_per_trial": 1,
        }
        proc = start_sweep(spec, str(catalog.location), "local", Path(tmp) / "sweeps")
        deadline = time.monotonic() + 600
        while (
            time.monotonic() < deadline
            and sum(r.step > 50 for r in catalog.live_runs()) < args.trials
        ):
            app.processEvents()
            time.sleep(0.1)
        live = len(catalog.live_runs())
        training = measure(win, 0, args.seconds, app)
        sweeps = measure(win, win.tabs.indexOf(win.sweeps), args.seconds, app)
        still = len(catalog.live_runs())
        proc.terminate()
        proc.wait(timeout=600)
        win.shutdown()
        catalog.close()

    def row(name: str, a: np.ndarray) -> str:
        return (
            f"| {name} | {len(a)} | {np.percentile(a, 50):.2f} | {np.percentile(a, 99):.2f} | "
            f"{a.max():.2f} |"
        )

    text = "\n".join([
        "## App smoothness while a sweep streams (`bench/sweep_gui_lateness.py`)",
        "",
        f"{stamp()}. Written by `python bench/sweep_gui_lateness.py --write`.",
        "",
        f"The main window on a fresh catalog follows a sweep of {args.trials} sinusoid MAML trials "
        f"training at once in their own processes (one torch thread each, {live} live when the "
        f"measurement began, {still} at its end) on this machine's {os.cpu_count()} cores. A 10 ms "
        f"PreciseTimer on the GUI thread for {args.seconds:.0f} s per tab; lateness = how long past "
        "10 ms it fired (ms).",
        "",
        "| tab shown | ticks | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        row("Training (live overlay of the trials)", training),
        row("Sweeps (trials table, four plots)", sweeps),
    ])  # fmt: skip
    print(text)
    if args.write:
        write_section("sweep-gui-lateness", text)
        print("wrote the sweep-gui-lateness section of bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
