"""The GPU path, checked without a GPU: which fast paths a CUDA device gets, the out-of-memory
message, the deterministic switch, bf16 for CUDA, and the pinned-transfer code path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from workbench.core import device_policy, devices
from workbench.core.algorithms import ALGORITHMS
from workbench.core.config import RunConfig, default_config
from workbench.core.device_policy import (
    CPU,
    CUDA,
    deterministic_algorithms,
    overridden,
    pin_enabled,
    policy_for,
)
from workbench.core.engine import Trainer, build_algorithm
from workbench.core.episode_stream import EpisodeStream
from workbench.core.events import Listener
from workbench.core.task_threads import task_workers
from workbench.core.tasks import DATASETS
from workbench.core.tasks.base import EpisodeBatch

CUDA_DEV = torch.device("cuda")  # a device object needs no GPU; nothing is allocated on it


def test_cuda_gets_none_of_the_cpu_tricks_and_cpu_keeps_them() -> None:
    for dev in (CUDA_DEV, torch.device("cuda:1"), "cuda"):
        p = policy_for(dev)
        assert p == CUDA
    cuda = policy_for(CUDA_DEV)
    assert not cuda.task_threads and not cuda.keep_heap and not cuda.small_tasks_one_thread
    assert not cuda.channels_last and not cuda.batched_tasks
    assert not cuda.closed_form_double_backward and not cuda.centred_bn_sums
    assert cuda.pin_memory and cuda.deterministic
    cpu = policy_for(torch.device("cpu"))
    assert cpu == CPU and cpu.task_threads and cpu.batched_tasks and cpu.channels_last
    assert cpu.closed_form_double_backward and not cpu.pin_memory and not cpu.deterministic
    assert policy_for("mps") == device_policy.MPS and not policy_for("mps").pin_memory


def test_task_threads_follow_the_policy() -> None:
    assert task_workers(CUDA_DEV, 32) == 1
    with overridden("cpu", task_threads=False):
        assert task_workers(torch.device("cpu"), 32) == 1
    assert policy_for("cpu") == CPU  # the override ends with its block


def test_channels_last_is_dropped_on_cuda_but_kept_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """build_algorithm asks the policy: the Conv-4 a CUDA run builds is NCHW (built on the CPU
    here: `.to(cuda)` is the only step skipped)."""
    cfg = default_config("maml", "glyphs")
    assert cfg.model.channels_last
    cpu = build_algorithm(cfg, (1, 28, 28), torch.device("cpu"))
    assert cpu.model.channels_last
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)
    cuda = build_algorithm(cfg, (1, 28, 28), CUDA_DEV)
    assert not cuda.model.channels_last
    assert all(p.is_contiguous() for p in cuda.parameters())


def _batch(tasks: int = 8):  # noqa: ANN202
    cfg = default_config("fomaml", "glyphs")
    dist = DATASETS.get("glyphs")().build(cfg.dataset, "train")
    return cfg, dist, dist.sample(cfg.train, tasks, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["maml", "fomaml"])
def test_maml_without_the_cpu_paths_gives_the_same_meta_gradient(name: str) -> None:
    """What a CUDA run computes (per-task autograd, native double backward, NCHW), run on the
    CPU: the same meta-gradient as the CPU's batched, closed-form path (float64: second order
    amplifies fp32 rounding, bench/speed.py)."""
    cfg, dist, batch = _batch()
    batch = EpisodeBatch(batch.support_x.double(), batch.support_y, batch.query_x.double(),
                         batch.query_y, batch.ways)  # fmt: skip
    cfg = cfg.with_overrides([f"algorithm.name={name}", "threads=1"])
    grads = []
    for change in ({}, dict(batched_tasks=False, closed_form_double_backward=False,
                            channels_last=False, task_threads=False)):  # fmt: skip
        with overridden("cpu", **change):
            torch.manual_seed(0)
            algo = build_algorithm(cfg, dist.input_shape, torch.device("cpu")).double()
            values = algo.meta_train_step(batch, cfg.train)
            assert set(values) == {"loss", "accuracy"}
            assert all(isinstance(v, float) for v in values.values())
            grads.append({k: p.grad.clone() for k, p in algo.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-7, atol=1e-10)


def test_the_step_reads_its_values_from_the_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-task float() of a device tensor: a step's metrics come back in one transfer."""
    cfg, dist, batch = _batch()
    cfg = cfg.with_overrides(["threads=1"])
    calls = []
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: calls.append(t.shape) or real(t))
    floats = []
    real_float = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: floats.append(1) or real_float(t))
    with overridden("cpu", batched_tasks=False):
        algo = build_algorithm(cfg, dist.input_shape, torch.device("cpu"))
        algo.meta_train_step(batch, cfg.train)
    assert calls == [torch.Size([2])] and not floats


class _Finish(Listener):
    def __init__(self) -> None:
        self.finished = None

    def on_finish(self, e):  # type: ignore[override]
        self.finished = e


def test_out_of_memory_ends_the_run_failed_with_what_was_asked_and_a_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A simulated CUDA out-of-memory error inside the step: the run ends `failed` (no exception
    reaches the caller, as the app's worker thread), naming the allocation, the free memory, and
    what to lower; the cache is released."""
    cfg = default_config("maml", "sinusoid").with_overrides(
        ["steps=5", "val_every=0", "ckpt_every=0", "test_on_finish=false", "threads=1"]
    )

    def boom(self, batch, shape):  # type: ignore[no-untyped-def]
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "139.72 GiB of which 1.10 GiB is free."
        )

    monkeypatch.setattr(ALGORITHMS.get("maml"), "meta_train_step", boom)
    monkeypatch.setattr(devices, "memory_info", lambda d: (int(1.1 * 2**30), int(139.72 * 2**30)))
    released = []
    monkeypatch.setattr("workbench.core.engine.release_device_memory", released.append)
    rec = _Finish()
    result = Trainer(cfg, [rec]).run()
    assert result.status == "failed" and rec.finished is result
    msg = result.error or ""
    assert msg.startswith("out of memory on cpu")
    assert "tried to allocate 2.00 GiB" in msg and "1.10 GiB free of 139.72 GiB" in msg
    assert (
        "algorithm.name=fomaml" in msg and f"train.meta_batch (now {cfg.train.meta_batch})" in msg
    )
    assert "Traceback" not in msg
    assert released == [torch.device("cpu")]


def test_out_of_memory_message_without_a_size_or_device_info() -> None:
    cfg = default_config("fomaml", "glyphs").with_overrides(["precision=bf16"])
    msg = devices.out_of_memory_message("CUDA error: out of memory", CUDA_DEV, cfg)
    assert "an allocation failed" in msg and "fomaml" not in msg and "precision" not in msg
    assert "train.meta_batch" in msg


def test_deterministic_switch_sets_and_restores_torch_and_cublas() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (env or device_policy.CUBLAS_WORKSPACE,)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() == before
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == env
    with deterministic_algorithms(False):
        assert torch.are_deterministic_algorithms_enabled() == before


def test_a_cuda_run_trains_deterministically_and_a_cpu_run_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Trainer switches deterministic algorithms on where the policy and the config ask
    (the CPU policy made to ask, as CUDA's does), off again afterwards."""
    seen = []

    class Probe(Listener):
        def on_step(self, e):  # type: ignore[override]
            seen.append(torch.are_deterministic_algorithms_enabled())

    base = ["steps=2", "val_every=0", "ckpt_every=0", "test_on_finish=false", "threads=1"]
    for asked in (True, False):
        cfg = default_config("maml", "sinusoid").with_overrides(
            [*base, f"deterministic={str(asked).lower()}"]
        )
        with overridden("cpu", deterministic=True):
            assert Trainer(cfg, [Probe()]).run().status == "finished"
        assert seen[-2:] == [asked, asked]
        assert not torch.are_deterministic_algorithms_enabled()
    cfg = default_config("maml", "sinusoid").with_overrides(base)
    assert Trainer(cfg, [Probe()]).run().status == "finished"
    assert seen[-1] is False  # the CPU's own policy: kernels deterministic already


def test_bf16_and_deterministic_configs_are_accepted_for_cuda() -> None:
    for algo in ("maml", "fomaml", "protonet"):
        cfg = default_config(algo, "glyphs").with_overrides(
            ["device=cuda", "precision=bf16", "deterministic=false"]
        )
        again = RunConfig.from_json(cfg.to_json())
        assert again.precision == "bf16" and again.device == "cuda" and not again.deterministic
    with pytest.raises(Exception, match="precision"):
        default_config("maml", "glyphs").with_overrides(["precision=fp16"])
    desc = RunConfig.model_fields["precision"].description or ""
    assert "fp16 is not offered" in desc and "inner-loop" in desc


def test_pinned_transfer_path_runs_on_a_machine_without_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CUDA transfer code path (pin, then non-blocking copies) exercised on the CPU: pinning
    is guarded by a CUDA runtime, and the batch arrives unchanged."""
    cfg, dist, batch = _batch(2)
    assert pin_enabled(CUDA_DEV) == torch.cuda.is_available()
    assert not pin_enabled(torch.device("cpu"))
    moved = batch.to(torch.device("cpu"))
    assert moved.support_x is batch.support_x  # nothing copied on the CPU
    # the stream's pin path, with pinning stood in for (a CPU-only torch cannot page-lock)
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(1) or t.clone())
    gen = torch.Generator().manual_seed(0)
    stream = EpisodeStream(dist, cfg.train, 2, gen, ahead=True, pin=True)
    got = stream.next().to(torch.device("cpu"))
    stream.close()
    want = dist.sample(cfg.train, 2, torch.Generator().manual_seed(0))
    drawn = len(pinned)
    assert drawn in (4, 8)  # the four tensors of each batch drawn (and of the one drawn ahead)
    assert torch.equal(got.support_x, want.support_x) and torch.equal(got.query_y, want.query_y)
    monkeypatch.setattr(device_policy, "pin_enabled", lambda d: True)
    copies = device_policy.to_device([batch.support_x], torch.device("meta"))
    assert copies[0].device.type == "meta" and len(pinned) == drawn + 1


def test_device_memory_text_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 812 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 1430 * 2**20)
    assert devices.device_memory_text(torch.device("cuda:0")) == " · cuda:0 812 MiB (peak 1430)"
    assert devices.device_memory_text(torch.device("cpu")) == ""
