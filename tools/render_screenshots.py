"""Render the main window offscreen to docs/screenshots/*.png in three states:
configured (a preset chosen), training (mid-run, curves and adaptation view), two live runs
in their own processes overlaid, browsing (two finished runs compared), and one run on 2
processes picked in the device picker (data-parallel). Uses a temporary catalog and temporary
QSettings.

    .venv/bin/python tools/render_screenshots.py [--out docs/screenshots] [--only data-parallel]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1600, 1000)


def pump(app: QApplication, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(app: QApplication, cond, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError("gave up waiting")
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    p.add_argument("--only", choices=["data-parallel"], help="render this state alone")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="wb-shots-"))
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    app = QApplication.instance() or QApplication(["workbench"])

    from workbench.catalog import Catalog
    from workbench.gui.main_window import MainWindow

    catalog = Catalog.open(tmp / "runs.db")
    win = MainWindow(catalog, restore=False)
    win.confirm = lambda *_: True
    win.resize(*SIZE)
    win.show()
    pump(app, 0.3)

    if args.only == "data-parallel":
        data_parallel(app, win, out)
        win.shutdown()
        catalog.close()
        return 0

    # 1. configured: the MAML sinusoid preset, its published number under the picker
    if any(pr.name == "maml-sinusoid" for pr in win.form.presets):
        win.form.apply_preset("maml-sinusoid")
    pump(app, 0.3)
    win.grab().save(str(out / "configured.png"))
    print("configured.png")

    small = {"steps": 600, "val_every": 50, "val_episodes": 25, "ckpt_every": 200, "test_episodes": 50,
             "train.meta_batch": 5, "eval.meta_batch": 25, "eval.shots": 10}  # fmt: skip

    # two seeds of a short run, for the comparison shot
    for k, v in small.items():
        win.form.set_field(k, v)
    win.form.set_field("name", "maml-sinusoid")
    win.form.set_field("seed", "1,2")
    win.start()
    wait(app, lambda: not win.queue.running and not win.queue.pending)

    # 2. training: a longer run, caught mid-way
    win.form.set_field("seed", "3")
    win.form.set_field("steps", 3000)
    win.form.set_field("val_every", 100)
    win.form.set_field("name", "maml-sinusoid-long")
    win.start()
    wait(app, lambda: win.queue.worker is not None and win.queue.worker.trainer.step >= 1400)
    pump(app, 0.4)
    win.grab().save(str(out / "training.png"))
    print("training.png")
    win.stop()
    wait(app, lambda: not win.queue.running)

    # 3. two live runs, each in its own process, overlaid (one colour per run)
    win.form.set_field("seed", "4,5")
    win.form.set_field("steps", 3000)
    win.form.set_field("name", "maml-sinusoid-proc")
    win.live.clear_ended()  # the two runs alone in the list (and in its first colours)
    launched: list[int] = []
    win.detachedLaunched.connect(launched.append)
    win.start_detached()
    wait(app, lambda: len(launched) == 2)
    wait(app, lambda: all(win.live.point_count("loss", r) >= 1200 for r in launched))
    win.live.select(launched[0])
    pump(app, 1.0)
    win.grab().save(str(out / "two-live-runs.png"))
    print("two-live-runs.png")
    for r in launched:
        win.live.select(r)
        win.stop()
    wait(app, lambda: all(win.runs[r]["state"] == "cancelled" for r in launched))

    # 4. browsing: the two seeds selected and compared
    win.tabs.setCurrentIndex(1)
    b = win.browser
    b.reload()
    ids = sorted(r.id for r in catalog.list_runs() if r.name.startswith("maml-sinusoid-s"))[:2]
    b.select_ids(ids)
    b.metric_combo.setCurrentText("val_mse")
    pump(app, 0.3)
    win.grab().save(str(out / "browsing.png"))
    print("browsing.png")
    b.tabs.setCurrentIndex(1)  # the differing hyperparameters
    pump(app, 0.2)
    win.grab().save(str(out / "browsing-compare.png"))
    print("browsing-compare.png")

    data_parallel(app, win, out)
    win.shutdown()
    win.close()
    catalog.close()
    return 0


def data_parallel(app: QApplication, win, out: Path) -> None:  # type: ignore[no-untyped-def]
    """5. one run on 2 processes: "cpu, 2 processes, data-parallel" in the device picker."""
    win.tabs.setCurrentIndex(0)
    if any(pr.name == "maml-sinusoid" for pr in win.form.presets):
        win.form.apply_preset("maml-sinusoid")
    for k, v in {"steps": 4000, "val_every": 200, "val_episodes": 25, "ckpt_every": 1000,
                 "train.meta_batch": 8, "name": "maml-sinusoid-2proc", "seed": "6"}.items():  # fmt: skip
        win.form.set_field(k, v)
    combo = win.form.device_combo
    combo.setCurrentIndex(
        next(i for i in range(combo.count()) if "data-parallel" in combo.itemText(i))
    )
    win.live.clear_ended()
    launched: list[int] = []
    win.detachedLaunched.connect(launched.append)
    win.start()
    wait(app, lambda: len(launched) == 1)
    wait(app, lambda: win.live.point_count("loss", launched[0]) >= 1500)
    win.form.scroll.ensureWidgetVisible(combo)  # the picker's choice in view
    pump(app, 1.0)
    win.grab().save(str(out / "data-parallel.png"))
    print("data-parallel.png")
    win.stop()
    wait(app, lambda: win.runs[launched[0]]["state"] == "cancelled")


if __name__ == "__main__":
    sys.exit(main())
