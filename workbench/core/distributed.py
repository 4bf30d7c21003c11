"""One run on several processes (torch.distributed, started by torchrun or `--nproc`).

Data parallelism over the meta-batch: every rank draws the same meta-batch from the run's
seeded stream and meta-trains on its share of the tasks (`shard`); the meta-gradients are
summed across ranks in ONE all-reduce of a flat buffer (fixed order: the parameters', then the
step's metrics, then rank 0's control code), each rank's part weighted by its share of the
tasks, so the update equals the one-process mean over the whole meta-batch, whatever the
world size and whether or not it divides the meta-batch. DDP's wrapper does not fit here:
the inner loop differentiates through the learner's parameters many times per step.

Rank 0 is the run's voice: it alone opens the catalog and writes checkpoints, and it decides
pause and stop; the decision rides on the step's all-reduce (`GO`, `HOLD`, `STOP`), so every
rank acts on it at the same step. While the run is held, rank 0 broadcasts `HOLD` every second
(a long pause never runs into the collectives' timeout) and then `GO` or `STOP`.

Pure torch: no Qt, no catalog.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from workbench.core.errors import ConfigError

T = TypeVar("T")

GO, HOLD, STOP = 0, 1, 2
"""Rank 0's control codes (its flags when the step ended)."""

TIMEOUT_S = float(os.environ.get("WORKBENCH_DIST_TIMEOUT", "300"))
"""How long a collective waits for a rank that neither answers nor closes its connection
(a machine gone from the network). A rank that dies closes its sockets, and the others'
collective fails at once; a checkpoint rank 0 writes while the others wait must fit in it."""

HOLD_TICK_S = 1.0


def check_world(meta_batch: int, world: int) -> None:
    """Every rank trains on at least one task of the meta-batch: more ranks are refused at
    `--nproc` (the CLI before it launches, the Trainer for any other caller)."""
    if world > meta_batch:
        raise ConfigError(
            "--nproc",
            f"{world} processes cannot share a meta-batch of {meta_batch} "
            f"task{'s' if meta_batch != 1 else ''}; "
            f"use at most {meta_batch} or a larger train.meta_batch",
        )


class RankLost(RuntimeError):
    """A collective failed: another rank of the run died or is unreachable."""


@dataclass
class Group:
    """This process's place in the run's process group, and the collectives the engine uses."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    backend: str  # "gloo", or "cpu:gloo,cuda:nccl"
    started: bool = False  # rank 0 has handed the others the run's configuration
    reduce_s: float = 0.0  # time spent in the steps' all-reduce (bench/distributed_cost.py)

    # ---- the meta-batch --------------------------------------------------------------
    def shard(self, n: int) -> range:
        """This rank's contiguous share of n tasks (the first n % world ranks take one more)."""
        if n < self.world:
            raise ValueError(f"a meta-batch of {n} tasks cannot be shared by {self.world} ranks")
        return range(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def combine(
        self,
        params: Sequence[torch.Tensor],
        values: dict[str, float],
        weight: float,
        control: int,
    ) -> int:
        """Sum `weight` x (this rank's gradients and metrics) over the ranks, in place, and
        return rank 0's control code; one all-reduce per step."""
        ref = params[0]
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
        ]
        keys = sorted(values)
        # the metrics and the code travel in the gradients' dtype (float32 keeps a loss's 7
        # digits: the metrics are plotted, never computed with)
        tail = [values[k] * weight for k in keys] + [float(control if self.rank == 0 else 0)]
        flat = torch.cat(
            [torch.cat(grads).mul_(weight), torch.tensor(tail, dtype=ref.dtype, device=ref.device)]
        )
        self._all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            chunk = flat[offset : offset + n].view_as(p)
            if p.grad is None:
                # a parameter no task used keeps no gradient (Adam leaves it alone), as it
                # would in one process
                if bool(chunk.any()):
                    p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
            offset += n
        summed = flat[offset:].double().tolist()
        for k, v in zip(keys, summed[:-1], strict=True):
            values[k] = v
        return round(summed[-1])

    def _all_reduce(self, flat: torch.Tensor) -> None:
        t0 = time.perf_counter()
        try:
            dist.all_reduce(flat)
        except RuntimeError as exc:
            raise RankLost(lost_message(exc)) from None
        self.reduce_s += time.perf_counter() - t0

    # ---- control while held ----------------------------------------------------------
    def say(self, code: int) -> int:
        """Rank 0's code to every rank (the others pass anything and get rank 0's)."""
        box = torch.tensor([code], dtype=torch.int64)
        try:
            dist.broadcast(box, 0)
        except RuntimeError as exc:
            raise RankLost(lost_message(exc)) from None
        return int(box)

    # ---- objects -----------------------------------------------------------------------
    def share(self, obj: T | None = None) -> T:
        """Rank 0's object on every rank (pickled; for configs, checkpoints, flags)."""
        box = [obj if self.rank == 0 else None]
        try:
            dist.broadcast_object_list(box, 0, device=torch.device("cpu"))
        except RuntimeError as exc:
            raise RankLost(lost_message(exc)) from None
        return box[0]  # type: ignore[return-value]

    def gather(self, obj: T) -> list[T]:
        """Every rank's object, in rank order, on every rank."""
        out: list[T] = []
        for src in range(self.world):
            box = [obj if src == self.rank else None]
            try:
                dist.broadcast_object_list(box, src, device=torch.device("cpu"))
            except RuntimeError as exc:
                raise RankLost(lost_message(exc)) from None
            out.append(box[0])  # type: ignore[arg-type]
        return out

    def sync_parameters(self, tensors: Iterable[torch.Tensor]) -> None:
        """Rank 0's values of `tensors` on every rank (the initial weights, one broadcast)."""
        ts = [t.data for t in tensors]
        if not ts:
            return
        flat = torch.cat([t.reshape(-1) for t in ts])
        try:
            dist.broadcast(flat, 0)
        except RuntimeError as exc:
            raise RankLost(lost_message(exc)) from None
        offset = 0
        for t in ts:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def describe(self, device: torch.device) -> dict[str, Any]:
        """The environment's record of the group: world size, backend, each rank's host,
        process and device (gathered from the ranks)."""
        me = {"rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(),
              "device": str(device)}  # fmt: skip
        backend = "nccl" if device.type == "cuda" and "nccl" in self.backend else "gloo"
        return {"world_size": self.world, "backend": backend, "ranks": self.gather(me)}

    def close(self) -> None:
        """Leave the group together: a rank that tears its process group down while another
        still talks to it can abort at exit ("terminate called without an active exception",
        SIGABRT), which torchrun takes for a failed rank. A rank already gone is no reason to
        wait: the barrier fails at once then."""
        if not dist.is_initialized():
            return
        try:
            dist.barrier()
        except RuntimeError:
            pass
        dist.destroy_process_group()


def lost_message(exc: BaseException) -> str:
    """One line: gloo's and NCCL's messages start with a source location and go on with advice."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]
    return f"lost contact with another rank of the run ({first[:200]})"


def backend_for(device_spec: str) -> str:
    """gloo for CPU runs; NCCL for CUDA (with gloo beside it for the small CPU objects) when
    every local rank gets a GPU of its own; gloo where ranks would share a GPU."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    wants_cuda = device_spec.strip().lower() != "cpu" and torch.cuda.is_available()
    if wants_cuda and dist.is_nccl_available() and local_world <= torch.cuda.device_count():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def join(device_spec: str = "auto") -> Group:
    """Join the run's process group from torchrun's environment (MASTER_ADDR/PORT, RANK,
    WORLD_SIZE, LOCAL_RANK), with the collectives' timeout set."""
    backend = backend_for(device_spec)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if "nccl" in backend:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return Group(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=local_rank,
        local_world=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        backend=backend,
    )


def rank_device(device: torch.device, group: Group | None) -> torch.device:
    """A CUDA run's rank takes the GPU of its local rank (shared round-robin when ranks
    outnumber GPUs); a CPU run's ranks all use the CPU."""
    if group is None or device.type != "cuda":
        return device
    return torch.device("cuda", group.local_rank % max(torch.cuda.device_count(), 1))


def gather_ordered(group: Group | None, mine: dict[int, T]) -> list[T]:
    """Items computed by several ranks (item i by the rank `owns(i)`), gathered in item order
    on every rank (evaluation's chunks of episodes)."""
    parts = [mine] if group is None else group.gather(mine)
    out: dict[int, T] = {}
    for part in parts:
        out.update(part)
    return [out[i] for i in sorted(out)]


def owns(group: Group | None, item: int) -> bool:
    """Whether this rank computes item `item` of a list shared round-robin (all: one process)."""
    return group is None or item % group.world == group.rank
