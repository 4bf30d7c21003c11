"""Run the tasks of a meta-batch on several CPU threads at once.

Why: the ops of a few-shot episode (5 images of 28x28) are too small for torch's intra-op
threads: a second thread makes a higher/learn2learn MAML step only 8-10% faster. The tasks
of a meta-batch are independent until their meta-gradients are summed, so each CPU thread
here takes a few consecutive tasks at a time (a unit) with ONE intra-op thread of its own;
torch kernels release the GIL, so the units overlap.

Results stay deterministic: the units depend only on the task count and unit size, and the
caller sums their results in unit order, whichever thread ran which. A worker sees what the
caller's thread had set (grad mode, autocast, context variables such as
`closed_form_double_backward`), none of which a new thread inherits by itself.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from workbench.core.device_policy import policy_for

T = TypeVar("T")
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def task_workers(device: torch.device, n_tasks: int) -> int:
    """How many threads share a meta-batch: the caller's torch thread count on CPU (at most one
    per task); 1 where the device policy has no task threads (accelerators, whose kernels run
    asynchronously on one stream anyway)."""
    if not policy_for(device).task_threads:
        return 1
    return max(1, min(torch.get_num_threads(), n_tasks))


def units_of(n_tasks: int, size: int) -> list[range]:
    """Consecutive task ranges of `size` (the last may be shorter)."""
    return [range(i, min(i + size, n_tasks)) for i in range(0, n_tasks, max(1, size))]


def map_units(fn: Callable[[range], T], units: Sequence[range], workers: int) -> list[T]:
    """`fn(unit)` for every unit, results in unit order. The threads take the next unit as they
    finish one, so a core slowed by other work simply takes fewer; the results, being in unit
    order, do not depend on which thread ran what."""
    if workers <= 1 or len(units) <= 1:
        return [fn(u) for u in units]
    results: list[T | None] = [None] * len(units)
    taken = itertools.count()  # next() on a count is atomic under the GIL

    def work() -> None:
        while (i := next(taken)) < len(units):
            results[i] = fn(units[i])

    run = _in_callers_state(work)
    pool = _pool(workers)
    for f in [pool.submit(contextvars.copy_context().run, run) for _ in range(workers)]:
        f.result()
    return results  # type: ignore[return-value]


def sum_in_order(parts: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
    """Element-wise sum of equally long tensor lists, left to right (a fixed rounding order)."""
    total = [t.clone() for t in parts[0]]
    for part in parts[1:]:
        for acc, t in zip(total, part, strict=True):
            acc.add_(t)
    return total


def background() -> ThreadPoolExecutor:
    """One lasting thread, with one intra-op thread, for work beside a step (the next batch)."""
    return _pool(1)


def _in_callers_state(fn: Callable[[], None]) -> Callable[[], None]:
    """fn, to run on another thread under this thread's grad mode and CPU autocast."""
    grad = torch.is_grad_enabled()
    autocast = torch.is_autocast_enabled("cpu")
    dtype = torch.get_autocast_dtype("cpu")

    def run() -> None:
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=dtype, enabled=autocast):
            fn()

    return run


def _pool(workers: int) -> ThreadPoolExecutor:
    """A lasting pool of `workers` threads, each set to one intra-op thread.

    `torch.set_num_threads` also sets the count that threads started later begin with (the GUI
    starts one per run), so once every worker has set its own, the caller's count is put back."""
    with _POOLS_LOCK:
        if workers in _POOLS:
            return _POOLS[workers]
        callers = torch.get_num_threads()
        ready = threading.Barrier(workers + 1)
        pool = ThreadPoolExecutor(workers, f"workbench-{workers}", initializer=_one_intra_op_thread)
        for _ in range(workers):  # each waits for all: one task per thread, all initialised
            pool.submit(ready.wait)
        ready.wait()
        torch.set_num_threads(callers)
        _POOLS[workers] = pool
        return pool


def _one_intra_op_thread() -> None:
    # torch gives each thread the process-wide count on its first parallel op (a lazy,
    # per-thread init), which would undo a set_num_threads made before it: init first
    torch.get_num_threads()
    torch.set_num_threads(1)
