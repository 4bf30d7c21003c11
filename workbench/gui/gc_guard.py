"""Python's cyclic garbage collector, run on the GUI thread only.

Left automatic, a collection runs in whichever thread happens to allocate: the run follower's
or a worker's. If it frees an unreachable Qt object there (a closed window's wrapper in a
reference cycle), the C++ destructor takes Qt's locks in that thread and then waits for the
GIL, while the GUI thread, holding the GIL, waits for those locks: the app freezes (seen in
the test suite: ~QObject in the follower thread during `gc_collect_main`). So the app turns
automatic collection off and collects from a timer on the GUI thread instead: the young
generation often (cheap), older ones rarely; `gc.freeze()` keeps the objects of start-up out
of every later full collection.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 200
MIDDLE_EVERY = 10  # generation 1 every 2 s
FULL_EVERY = 150  # generation 2 every 30 s


class GuiThreadGC(QObject):
    """Installed once by the app (`start`); `stop` gives collection back to Python."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ticks = 0
        self._timer = QTimer(self, interval=INTERVAL_MS)
        self._timer.timeout.connect(self._collect)

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        gc.unfreeze()
        gc.enable()

    def _collect(self) -> None:
        self._ticks += 1
        if self._ticks % FULL_EVERY == 0:
            gc.collect(2)
        elif self._ticks % MIDDLE_EVERY == 0:
            gc.collect(1)
        else:
            gc.collect(0)
