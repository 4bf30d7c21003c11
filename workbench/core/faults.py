"""Named fault points, for tests of crash safety only.

`fault_point("ckpt.prepared")` SIGKILLs this process when the environment variable
`WORKBENCH_FAULT` names that point (`name` or `name@N` for its N-th pass, counted from 1), so a
test can kill a run at every step of the checkpoint and catalog sequences instead of hoping a
timed kill lands there. Unset (every user's case) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

POINTS: tuple[str, ...] = (
    "run.created",  # the run row exists, nothing started yet
    "run.started",  # the attempt row is committed
    "ckpt.written",  # temporary file complete and fsynced, no row yet
    "ckpt.prepared",  # pending row committed, file not renamed
    "ckpt.renamed",  # file in place, row still pending
    "ckpt.committed",  # row ready, older rows of its kind not yet retired
    "ckpt.retired",  # older rows deleted, their files not yet unlinked
    "metrics.committed",  # a batch of metric points committed
    "run.finishing",  # the final checkpoint is written, the final status not yet
)
LAUNCH_POINTS: tuple[str, ...] = (
    "launch.spawned",  # the launcher started the run's process and has not heard from it
    "launch.reported",  # the launcher read the run id, before it returned it
)
SWEEP_POINTS: tuple[str, ...] = (
    "sweep.recorded",  # a trial's row is committed, its process not launched
    "sweep.launched",  # its process is launched, which process it is not recorded yet
    "sweep.started",  # its run id is recorded
    "sweep.told",  # a trial's result is recorded, the search not told yet
)
_passes: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill the process here if `WORKBENCH_FAULT` asks for this point (tests only)."""
    want = os.environ.get("WORKBENCH_FAULT")
    if not want:
        return
    target, _, nth = want.partition("@")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= (int(nth) if nth else 1):
        os.kill(os.getpid(), signal.SIGKILL)
