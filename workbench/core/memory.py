"""Keep freed memory in the process heap instead of handing it back to the OS (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap
and unmaps it on free, so each large activation or gradient tensor of a training step is
page-faulted in again, one zeroed 4 KiB page at a time. On a ProtoNet episode (600 images:
120 MB per activation) that made a batch-norm forward+backward 140 ms instead of 29 ms.
With mmap off and a high trim threshold, freed blocks are reused by the next step, the way
jemalloc/tcmalloc (which PyTorch's CPU tuning guides preload) behave. The cost: the heap
stays at the run's peak size until the process ends.

This holds for the main thread's heap only: another thread's arena still maps and unmaps its
large blocks (the app trains on a worker thread), which `workbench/__init__.py` softens by
putting large tensors on transparent huge pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_done = False


def reuse_freed_memory() -> bool:
    """Configure glibc malloc once per process; False where it does not apply (not glibc)."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    _done = ok
    return ok
