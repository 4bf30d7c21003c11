"""Subprocess driver for tests/test_catalog.py (run with sys.executable, not collected).

python helpers_catalog_writer.py log DB RUN_ID N START_AT
python helpers_catalog_writer.py increment DB RUN_ID N START_AT
python helpers_catalog_writer.py heartbeat DB RUN_ID
"""

from __future__ import annotations

import sys
import time

from workbench.catalog import Catalog, CatalogListener
from workbench.core.events import RunFinished, RunStarted, StepMetrics


def _wait_until(t: float) -> None:
    while time.time() < t:
        time.sleep(0.001)


def main(argv: list[str]) -> int:
    mode, db, run_id = argv[0], argv[1], int(argv[2])
    if mode == "log":
        n, start_at = int(argv[3]), float(argv[4])
        listener = CatalogListener(db, run_id, flush_s=0.01, max_batch=20)
        listener.on_start(RunStarted("{}", 0, n, "cpu", "test cpu"))
        _wait_until(start_at)
        for i in range(1, n + 1):
            listener.on_step(StepMetrics(i, {"loss": 1.0 / i, "accuracy": i / n}, time.time()))
            if i % 50 == 0:
                time.sleep(0.002)  # let the writer commit often: many small transactions
        listener.on_finish(RunFinished("finished", n))
        if listener.errors:
            print("\n".join(listener.errors), file=sys.stderr)
            return 1
        print("done", listener.points_written)
        return 0
    if mode == "increment":
        n, start_at = int(argv[3]), float(argv[4])
        with Catalog.open(db, stale_s=None) as cat:
            _wait_until(start_at)
            for _ in range(n):
                cat.begin_attempt(run_id, 0)
        print("done")
        return 0
    if mode == "heartbeat":
        listener = CatalogListener(db, run_id, flush_s=0.05, heartbeat_s=0.1)
        listener.on_start(RunStarted("{}", 0, 10**9, "cpu", "test cpu"))
        print("ready", flush=True)
        step = 0
        while True:  # until killed
            step += 1
            listener.on_step(StepMetrics(step, {"loss": 1.0}, time.time()))
            time.sleep(0.01)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
