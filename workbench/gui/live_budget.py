"""When the live view redraws: at most `FPS` times a second and at most a share of the wall time.

The GUI thread shares the GIL with training in the app's thread, so every millisecond drawn
is a millisecond that trainer waits. `PaintBudget` measures what a redraw costs (its update
plus every paint it causes, timed by `_TimedLayoutWidget`) and spaces the next one so that
redraws take `duty` of the time; a hidden view only buffers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QWidget

FPS = 30
# share of wall time the curves may take (update + paint): the GIL is shared with training.
# A sinusoid run (2.4 ms steps, the most GIL-bound): 2% gave -2.0/-4.6% steps/s against
# headless at 1.3-1.6 redraws/s, 1.5% gave -1.8/-2.4% at 1.1-1.2 redraws/s (alternated runs)
PAINT_DUTY = 0.015
# with no run training in the app's own thread the GUI takes the GIL from nobody: runs in their
# own processes only share the cores, so the curves may redraw more often (faster to screen)
DETACHED_PAINT_DUTY = 0.05
MAX_WAIT_S = 2.0  # however slow a frame, redraw at least this often while data arrives
HIDDEN_INGEST_S = 0.5  # hidden: move queued points into the buffers this often, draw nothing


def _budget_wait(cost: float, duty: float = PAINT_DUTY) -> float:
    """Seconds until the next redraw so that redraws costing `cost` take `duty` of the time."""
    return min(MAX_WAIT_S, max(1.0 / FPS, cost / duty - cost))


class _TimedLayoutWidget(pg.GraphicsLayoutWidget):
    """Measures its own paint time so that redraws can be spaced to a CPU budget."""

    def __init__(self) -> None:
        super().__init__()
        self.last_paint_s = 0.0
        self.paint_done = 0.0
        self.paint_total_s = 0.0  # all paints so far: one redraw can cause several
        self.on_paint: Any = None  # called after each paint (latency bookkeeping)

    def paintEvent(self, ev: Any) -> None:
        t0 = time.perf_counter()
        super().paintEvent(ev)
        self.paint_done = time.perf_counter()
        self.last_paint_s = self.paint_done - t0
        self.paint_total_s += self.last_paint_s
        if self.on_paint is not None:
            self.on_paint()


class PaintBudget:
    """The redraw timer: calls `redraw` when the budget allows, `ingest` alone while hidden."""

    def __init__(
        self,
        owner: QWidget,
        view: _TimedLayoutWidget,
        shown: Callable[[], bool],
        ingest: Callable[[], object],
        redraw: Callable[[], bool],
    ) -> None:
        self.duty = PAINT_DUTY
        self.view = view
        self._shown, self._ingest, self._redraw = shown, ingest, redraw
        self._update_s = 0.0
        self._redraw_done = 0.0
        self._paint_mark = 0.0  # view.paint_total_s at the last redraw
        self.timer = QTimer(owner)
        self.timer.setInterval(int(1000 / FPS))
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def now(self) -> None:
        """Redraw at the next turn of the event loop (what arrived while hidden, say)."""
        self.timer.setInterval(1)

    def _tick(self) -> None:
        """Timer slot: redraw when the paint budget allows; the next tick comes when it will."""
        if not self._shown():
            self._ingest()
            self.timer.setInterval(int(HIDDEN_INGEST_S * 1000))
            return
        v = self.view
        # the cost of the last redraw: its update plus EVERY paint since (a redraw is often
        # painted in two or three passes, range and axis changes coming after the data)
        duty = self.duty
        wait = _budget_wait(v.paint_total_s - self._paint_mark + self._update_s, duty)
        since = time.perf_counter() - max(v.paint_done, self._redraw_done)
        if since < wait:
            self.timer.setInterval(max(1, int((wait - since) * 1000)))
            return
        t0 = time.perf_counter()
        painted_before = v.paint_total_s
        drew = self._redraw()
        self._redraw_done = time.perf_counter()
        if drew:  # its paints come later, in the event loop: the next tick counts them
            self._paint_mark = painted_before
            self._update_s = self._redraw_done - t0
            wait = _budget_wait(self._update_s, duty)
        else:  # nothing arrived: look again soon, it costs next to nothing
            wait = 1.0 / FPS
        self.timer.setInterval(max(1, int(wait * 1000)))
