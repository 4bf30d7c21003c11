"""How the runs on one machine share its cores (torch-free: the catalog's writer asks it).

The rule: each run training on a host takes `cores // runs` torch threads (at least one),
where `cores` are the CPUs this process may run on and `runs` the runs training there now
(live leases in the catalog, in any process). Two runs on a 2-core machine take one thread
each, not two each: oversubscribed threads spin against each other in torch's intra-op
barriers. A run re-reads its share every heartbeat, so a run that finishes hands its cores
back within seconds. A run whose config sets `threads` keeps that number.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def thread_share(runs: int, cores: int | None = None) -> int:
    """Threads for each of `runs` runs training at once on `cores` cores."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, runs))
