"""How long does one redraw of a long curve take with the live view's plot settings?

One pyqtgraph plot (800 x 300 px, offscreen raster) set up as `LivePlots` sets up each of its
plots: clip to view, automatic peak downsampling, 1-px cosmetic pens, a faint raw curve behind
the smoothed one. A redraw = `setData` of both curves (what LivePlots does when points
arrive) + the paint that follows, timed until the paint has finished. Full view (the whole
curve in view) and zoomed (1% of it); medians and IQR of repeated redraws. For reference, the
same with the 1.8-px pen the live view used before (Qt's raster engine strokes any pen wider
than 1 px on a slow path).

    .venv/bin/python bench/plot_redraw.py [--points 1000000] [--write]
    .venv/bin/python bench/plot_redraw.py --tiny
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

TARGET_MS = 30.0


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    return float(q2), float(q1), float(q3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument(
        "--tiny", action="store_true", help="10,000 points, 3 repeats: checks that the script works"
    )
    p.add_argument(
        "--write", action="store_true", help="write the plot-redraw section of bench/RESULTS.md"
    )
    args = p.parse_args(argv)
    n, repeats = (10_000, 3) if args.tiny else (args.points, args.repeats)
    app = QApplication.instance() or QApplication(["plot-redraw"])

    from workbench.gui.buffers import Series
    from workbench.gui.live_plots import COLORS, _pen, _TimedLayoutWidget

    view = _TimedLayoutWidget()
    view.resize(800, 300)
    plot = view.addPlot(title="Meta-train loss")
    plot.setClipToView(True)
    plot.setDownsampling(auto=True, mode="peak")
    plot.getAxis("left").setWidth(48)
    plot.enableAutoRange(x=False, y=False)
    raw = plot.plot(pen=_pen(COLORS["loss"], 1, 45))
    smooth = plot.plot(pen=_pen(COLORS["loss"], 1))
    for c in (raw, smooth):
        c.setClipToView(True)
        c.setDownsampling(auto=True, method="peak")
    view.show()
    app.processEvents()

    rng = np.random.default_rng(0)
    steps = np.arange(1, n + 1, dtype=np.float64)
    values = 2.0 / np.sqrt(steps) + 0.05 + 0.05 * rng.standard_normal(n)
    t0 = time.perf_counter()
    s = Series(n)
    s.set_alpha(0.9)
    s.extend(
        steps.tolist(), (steps * 0.005).tolist(), values.tolist()
    )  # the live view's buffer (EMA included)
    fill_s = time.perf_counter() - t0
    x, y, ys = s.x("step"), s.y(False), s.y(True)

    def redraw() -> tuple[float, float]:
        painted = view.paint_done
        t = time.perf_counter()
        smooth.setData(x, ys, skipFiniteCheck=True)
        raw.setData(x, y, skipFiniteCheck=True)
        for _ in range(100):  # the scene's update and the paint arrive through the event loop
            app.processEvents()
            if view.paint_done != painted:
                break
        return (time.perf_counter() - t) * 1000, view.last_paint_s * 1000

    cases = {"full view": (1.0, float(n) + 1), "zoomed (1% of the curve)": (n * 0.5, n * 0.51)}
    pens = (
        {"1 px (live view)": 1.0}
        if args.tiny
        else {"1 px (live view)": 1.0, "1.8 px (before)": 1.8}
    )
    rows = []
    for pen_name, width in pens.items():
        smooth.setPen(_pen(COLORS["loss"], width))
        for case, (lo, hi) in cases.items():
            plot.setXRange(lo, hi, padding=0)
            sel = (x >= lo) & (x <= hi)
            plot.setYRange(float(y[sel].min()), float(y[sel].max()), padding=0.05)
            redraw()  # warm up (downsampling caches, pixmaps)
            totals, paints = [], []
            for _ in range(repeats):
                tot, pnt = redraw()
                totals.append(tot)
                paints.append(pnt)
            tm, tq1, tq3 = quartiles(totals)
            pm, _, _ = quartiles(paints)
            rows.append((pen_name, case, tm, tq1, tq3, pm))
            ok = "meets" if tm < TARGET_MS else "misses"
            print(f"redraw of a {n:,}-point curve, {case}, pen {pen_name}: median {tm:.1f} ms (IQR {tq1:.1f}-{tq3:.1f}), "
                  f"of which paint {pm:.1f} ms; {ok} the {TARGET_MS:.0f} ms target", flush=True)  # fmt: skip
    print(f"buffer fill ({n:,} points with EMA): {fill_s * 1000:.0f} ms")
    view.close()

    if args.write:
        from bench.results import stamp, write_section

        lines = [
            "## Live plot redraw of a long curve",
            "",
            f"{stamp()}; `bench/plot_redraw.py --points {n}`.",
            "",
            f"One 800x300 px pyqtgraph plot, offscreen raster, set up as each live-view plot (clip to view, automatic peak "
            f"downsampling, a faint raw curve behind the smoothed one, {n:,} points each). Redraw = `setData` of both curves + "
            f"the paint that follows; median (IQR) of {repeats} redraws. Target < {TARGET_MS:.0f} ms.",
            "",
            "| pen | view | redraw (ms) | IQR (ms) | of which paint (ms) |",
            "|---|---|---:|---:|---:|",
        ]
        lines += [
            f"| {pn} | {case} | {tm:.1f} | {q1:.1f}-{q3:.1f} | {pm:.1f} |"
            for pn, case, tm, q1, q3, pm in rows
        ]
        write_section("plot-redraw", "\n".join(lines))
        print("wrote the plot-redraw section of bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
