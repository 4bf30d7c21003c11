"""Meta-Learning Workbench: MAML, Meta-LSTM and ProtoNet with a run catalog and a desktop app."""

import os
import sys

__version__ = "0.1.0"

# OpenMP threads that finish their share of an op sleep at once instead of spinning, set
# before torch loads its OpenMP runtime (the user's own setting wins). A spinning thread keeps
# its core from the thread the op waits for whenever another process or thread wants the CPU
# (a second run, the app's GUI thread, a benchmark), and every op of a step then waits out a
# scheduler slice: a small MAML step (a 40-40 MLP) took 26,000 us on 2 threads of a busy
# 2-core machine against 270 us on 1; with passive waiting 430-710 us (bench/omp_wait.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if sys.platform.startswith("linux"):
    # Large tensors (>= 2 MB) on transparent huge pages, set before torch's first large
    # allocation reads it (the user's own setting wins). Training runs on a worker thread in the
    # app, and glibc serves a worker thread's large blocks with fresh mmaps and heaps that it
    # unmaps on free, so every step page-faults its activations in again, 4 KiB at a time: a
    # 60-way ProtoNet step took 550 ms on a thread against 302 on the main thread (132k faults a
    # step); with huge pages 326 ms (3k faults). `core.memory` covers the main thread.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def track(*args: object, **kwargs: object) -> object:
    """Record your own training loop in the catalog: `with workbench.track(...) as run:`
    (`workbench.tracking.track`; imported on first use, so `import workbench` stays light)."""
    from workbench.tracking import track as _track

    return _track(*args, **kwargs)  # type: ignore[arg-type]
