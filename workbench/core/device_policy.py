"""Which fast paths run on which device: the one place that decides.

Most of the workbench's speed was measured on CPUs, where a 5-image episode's ops are
dispatch-bound: task threads, glibc's heap kept, batched small-episode passes, closed-form
double backwards, channels-last and the centred batch-norm sums are answers to CPU kernels'
costs and inaccuracies. On CUDA the costs differ (one stream; kernels launch asynchronously;
cuDNN picks its own algorithms), so each CPU trick is OFF there until `bench/device_check.py`
has measured that it helps on a GPU (it times both). The engine, the algorithms and the
layers ask `policy_for(device)` instead of testing device types themselves.

Numbers do not depend on the policy beyond fp32 rounding: every path is tested against plain
autograd (tests/test_fast_layers.py), so turning a path on or off changes speed only.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DevicePolicy:
    task_threads: bool
    """Run a meta-batch's tasks on several CPU threads (`task_threads`). Needs CPU kernels that
    run on the calling thread; a GPU's kernels are queued on one stream, so threads add only
    contention for the GIL."""
    keep_heap: bool
    """Tell glibc to keep freed memory (`memory.reuse_freed_memory`): large activations live in
    host RAM only on CPU; on a GPU they live in CUDA's caching allocator already."""
    small_tasks_one_thread: bool
    """One torch thread for tasks too small to share (THREAD_WORK_MIN): a CPU intra-op matter."""
    channels_last: bool
    """Keep conv weights and activations channels-last (`model.channels_last` is honoured only
    where this is on). On CPU oneDNN prefers it; on CUDA cuDNN gains from NHWC mainly with
    tensor-core dtypes and adds layout conversions around batch norm otherwise: off until
    measured (device_check times both)."""
    batched_tasks: bool
    """Groups of tasks through one batched pass (`task_gradients`, `second_order_tasks`): written
    against oneDNN's fixed cost per call and tuned on CPU caches (IMAGES_PER_PASS, SMALL_COLS)."""
    closed_form_double_backward: bool
    """Conv and batch norm second derivatives in closed form (`double_backward`): they replace
    PyTorch's CPU double backward, whose generic kernels are dispatch-bound on small episodes;
    CUDA's own double backward is untested against them for speed: off until measured."""
    centred_bn_sums: bool
    """Batch-norm statistics from centred, cascaded sums for large channels-last inputs: fixes the
    CPU channels-last kernel's drift (`batch_norm._needs_centred_sums`); CUDA's batch-norm
    kernels use Welford's algorithm, accurate as they are."""
    pin_memory: bool
    """Page-lock each meta-batch on the host so its copy to the device is asynchronous."""
    deterministic: bool
    """`torch.use_deterministic_algorithms` while a run trains (where the config asks): CPU kernels
    are deterministic already; CUDA's atomics-based kernels and cuDNN's autotuned algorithms are
    not, and a resumed run would drift from the uninterrupted one."""


CPU = DevicePolicy(
    task_threads=True,
    keep_heap=True,
    small_tasks_one_thread=True,
    channels_last=True,
    batched_tasks=True,
    closed_form_double_backward=True,
    centred_bn_sums=True,
    pin_memory=False,
    deterministic=False,
)
CUDA = DevicePolicy(
    task_threads=False,
    keep_heap=False,
    small_tasks_one_thread=False,
    channels_last=False,
    batched_tasks=False,
    closed_form_double_backward=False,
    centred_bn_sums=False,
    pin_memory=True,
    deterministic=True,
)
# Apple's MPS: nothing measured either; like CUDA but without pinned memory (unified memory)
# or deterministic switches (MPS has no deterministic implementations to ask for)
MPS = dataclasses.replace(CUDA, pin_memory=False, deterministic=False)

_POLICIES: dict[str, DevicePolicy] = {"cpu": CPU, "cuda": CUDA, "mps": MPS}


def policy_for(device: torch.device | str) -> DevicePolicy:
    """The policy of a device (or device type); an unknown accelerator gets CUDA's (all off)."""
    kind = device if isinstance(device, str) else device.type
    return _POLICIES.get(kind.split(":")[0], _POLICIES["cuda"])


@contextlib.contextmanager
def overridden(device_type: str, **changes: bool) -> Iterator[DevicePolicy]:
    """Change a device type's policy for the block (bench/device_check.py times both settings;
    tests). Not thread-safe against a run in progress: for benchmarks and tests only."""
    before = _POLICIES[device_type]
    _POLICIES[device_type] = dataclasses.replace(before, **changes)
    try:
        yield _POLICIES[device_type]
    finally:
        _POLICIES[device_type] = before


def pin_enabled(device: torch.device) -> bool:
    """Pin host batches for `device`: where the policy asks and a CUDA runtime exists
    (`pin_memory()` needs one; a CPU-only build raises)."""
    return policy_for(device).pin_memory and torch.cuda.is_available()


def to_device(batch_tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Tensors moved to `device` in one go: pinned then copied without blocking on CUDA (the
    copies queue behind the previous step's kernels), returned as they are on CPU."""
    if device.type == "cpu":
        return [t if t.device.type == "cpu" else t.cpu() for t in batch_tensors]
    pin = pin_enabled(device)
    return [
        (t.pin_memory() if pin and t.device.type == "cpu" else t).to(device, non_blocking=pin)
        for t in batch_tensors
    ]


CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS's deterministic workspace setting (the value PyTorch's reproducibility notes give)."""


@contextlib.contextmanager
def deterministic_algorithms(on: bool) -> Iterator[None]:
    """`torch.use_deterministic_algorithms(True)` (and cuDNN's benchmark mode off,
    CUBLAS_WORKSPACE_CONFIG set) for the block when `on`, the caller's settings back after.

    Cost on CUDA: cuDNN may use only its deterministic convolution algorithms (no autotuning),
    scatter/index_add style backwards take their sorted, slower kernels, cuBLAS keeps a fixed
    workspace per stream (8 x 4 MiB), and an op without a deterministic CUDA kernel raises
    (the run fails naming it: set `deterministic=false` for such a model). CPU: no cost."""
    if not on:
        yield
        return
    import os

    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        enabled, warn_only, bench, det, env = before
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = bench
        torch.backends.cudnn.deterministic = det
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
