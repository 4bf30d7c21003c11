"""The cost of `run.log` in a tracked script (`workbench.track`): the caller's time per call.

The writer thread batches and commits the points, so a call only appends to a queue; this
measures that on the caller's thread (median of 5 blocks of calls) and the time the writer
needs to commit everything at the end.

    .venv/bin/python bench/track_overhead.py [--calls 20000] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(calls: int) -> dict[str, float]:
    import workbench

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "t.db"
        blocks = []
        with workbench.track(name="overhead", config={"calls": calls}, db=db) as run:
            step = 0
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(calls // 5):
                    step += 1
                    run.log(step, loss=1.0 / step, accuracy=0.5)
                blocks.append((time.perf_counter() - t0) / (calls // 5))
            t0 = time.perf_counter()
            run.writer.flush()
            drain = time.perf_counter() - t0
    return {"per_call_us": 1e6 * statistics.median(blocks), "drain_s": drain, "calls": calls}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--write", action="store_true")
    p.add_argument("--tiny", action="store_true", help="500 calls: checks the script")
    args = p.parse_args()
    r = measure(500 if args.tiny else args.calls)
    from bench.results import stamp

    text = (
        f"Measured {stamp()}. `bench/track_overhead.py`: {r['calls']:,} calls of "
        "`run.log(step, loss=..., accuracy=...)` into a SQLite catalog.\n\n"
        f"- caller's time per `log` call: {r['per_call_us']:.1f} µs (median of 5 blocks)\n"
        f"- writer's commit of what was still queued at the end: {r['drain_s'] * 1e3:.0f} ms"
    )
    print(text)
    if args.write:
        from bench.results import write_section

        write_section("track-overhead", "## Tracked scripts: the cost of `run.log`\n\n" + text)


if __name__ == "__main__":
    main()
