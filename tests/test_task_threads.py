"""The meta-batch's tasks on several CPU threads: same meta-gradient, same scores, and the
threads see what the caller set (grad mode, autocast, the closed-form switch)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from workbench.core import task_threads
from workbench.core.algorithms import ALGORITHMS
from workbench.core.algorithms.base import Algorithm
from workbench.core.algorithms.maml import MAML
from workbench.core.config import ModelConfig, TaskShape
from workbench.core.models import batch_norm as bn_module
from workbench.core.models.conv4 import Conv4
from workbench.core.models.double_backward import closed_form_double_backward, enabled
from workbench.core.tasks.base import EpisodeBatch

SHAPE = TaskShape(ways=3, shots=1, queries=2, inner_steps=2)


def image_maml(
    first_order: bool, dtype: torch.dtype = torch.float64, tasks: int = 5
) -> tuple[MAML, EpisodeBatch]:
    torch.manual_seed(0)
    model = Conv4(ModelConfig(width=6), (1, 14, 14), 3).to(dtype)
    params = ALGORITHMS.get("maml").Params(inner_lr=0.4, first_order=first_order)
    algo = MAML(params, model, "classification")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(tasks, 9, 1, 14, 14, generator=g).to(dtype)
    y = torch.arange(3).repeat(3).expand(tasks, 9)
    return algo, EpisodeBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:], 3)


def step_with(
    algo: MAML, batch: EpisodeBatch, workers: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, float], list[torch.Tensor]]:
    monkeypatch.setattr(MAML, "workers", lambda self, b: workers)
    algo.zero_grad()
    out = algo.meta_train_step(batch, SHAPE)
    return out, [p.grad.clone() for p in algo.parameters()]


def test_units_cover_every_task_once_in_order() -> None:
    for n in range(1, 12):
        for size in range(1, n + 2):
            units = task_threads.units_of(n, size)
            assert [i for unit in units for i in unit] == list(range(n))
            assert all(len(u) == size for u in units[:-1]) and 1 <= len(units[-1]) <= size


def test_map_units_returns_results_in_unit_order_whoever_ran_them() -> None:
    def slow_first(unit: range) -> tuple[int, int]:
        if unit.start == 0:
            time.sleep(0.05)  # the other thread takes every later unit meanwhile
        return unit.start, threading.get_ident()

    out = task_threads.map_units(slow_first, task_threads.units_of(6, 1), 2)
    assert [start for start, _ in out] == list(range(6))
    assert all(ident != out[0][1] for _, ident in out[1:])  # taken, not pre-assigned


def test_workers_run_in_the_callers_state_with_one_thread_each() -> None:
    def state(tasks: range) -> tuple[object, ...]:
        return (
            list(tasks),
            torch.is_grad_enabled(),
            torch.is_autocast_enabled("cpu"),
            torch.get_autocast_dtype("cpu"),
            enabled(),
            torch.get_num_threads(),
            threading.get_ident(),
        )

    me = threading.get_ident()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with closed_form_double_backward(True):
            seen = task_threads.map_units(state, task_threads.units_of(4, 2), 2)
    assert [s[0] for s in seen] == [[0, 1], [2, 3]]
    for s in seen:
        assert s[1:6] == (False, True, torch.bfloat16, False, 1)  # enabled() is off: no grad
        assert s[6] != me
    with closed_form_double_backward(True):
        units = task_threads.units_of(2, 1)
        assert all(s[0] for s in task_threads.map_units(lambda t: (enabled(),), units, 2))


def test_a_new_pool_leaves_the_thread_count_of_the_caller_and_of_later_threads() -> None:
    """The GUI starts a thread per run: it must not inherit the workers' one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        task_threads._POOLS.pop(3, None)
        task_threads.map_units(lambda t: None, task_threads.units_of(3, 1), 3)
        assert torch.get_num_threads() == 2
        later: list[int] = []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert later == [2]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("first_order", [False, True])
def test_threaded_meta_gradient_equals_the_sequential_one(
    first_order: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    algo, batch = image_maml(first_order)
    seq_out, seq = step_with(algo, batch, 1, monkeypatch)
    par_out, par = step_with(algo, batch, 2, monkeypatch)
    again_out, again = step_with(algo, batch, 3, monkeypatch)
    for s, p, a in zip(seq, par, again, strict=True):
        torch.testing.assert_close(p, s, rtol=1e-9, atol=1e-11)  # rounding order only
        assert torch.equal(p, a)  # that order is fixed: the same on 2 or 3 threads
    assert par_out == pytest.approx(seq_out, rel=1e-9)
    assert par_out == again_out


def test_second_order_threads_use_the_closed_form(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = bn_module._BatchNormBackward.backward

    def counting(ctx, *grads):  # type: ignore[no-untyped-def]
        calls.append(threading.get_ident())
        return original(ctx, *grads)

    monkeypatch.setattr(bn_module._BatchNormBackward, "backward", staticmethod(counting))
    algo, batch = image_maml(first_order=False)
    step_with(algo, batch, 2, monkeypatch)
    # one double backward per BN layer, inner step and task, all in the workers
    assert len(calls) == 4 * SHAPE.inner_steps * len(batch)
    assert threading.get_ident() not in calls


def test_bf16_autocast_reaches_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    algo, batch = image_maml(first_order=True, dtype=torch.float32)
    _, fp32 = step_with(algo, batch, 2, monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, seq = step_with(algo, batch, 1, monkeypatch)
        _, par = step_with(algo, batch, 2, monkeypatch)
    scale = max(float(g.abs().max()) for g in fp32)
    bf16_error = max(float((a - b).abs().max()) for a, b in zip(seq, fp32, strict=True))
    order_error = max(float((a - b).abs().max()) for a, b in zip(par, seq, strict=True))
    assert bf16_error > 1e-4 * scale  # autocast changes the result visibly...
    assert order_error < bf16_error / 20  # ...and the threads computed in bf16 too


def test_threaded_evaluation_scores_each_task_as_the_sequential_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    algo, batch = image_maml(first_order=False, tasks=7)
    monkeypatch.setattr(MAML, "workers", lambda self, b: 1)
    seq = algo.evaluate(batch, SHAPE)["accuracy"]
    monkeypatch.setattr(MAML, "workers", lambda self, b: 3)
    par = algo.evaluate(batch, SHAPE)["accuracy"]
    assert par.shape == (7,) and torch.equal(par, seq)


@pytest.mark.parametrize("name", ["protonet", "meta-lstm"])
def test_threaded_evaluation_of_protonet_and_meta_lstm(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    algo_cls = ALGORITHMS.get(name)
    out_dim = 0 if name == "protonet" else 3
    model = Conv4(ModelConfig(width=6), (1, 14, 14), out_dim)
    extra = {"support_batch": 2} if name == "meta-lstm" else {}
    algo = algo_cls(algo_cls.Params(**extra), model, "classification")
    _, batch = image_maml(first_order=True, dtype=torch.float32, tasks=6)
    scores = {}
    for workers in (1, 3, 3):
        monkeypatch.setattr(Algorithm, "workers", lambda self, b, w=workers: w)
        torch.manual_seed(7)  # Meta-LSTM's support mini-batches come from the global RNG
        scores.setdefault(workers, []).append(algo.evaluate(batch, SHAPE)["accuracy"])
    assert scores[1][0].shape == (6,)
    assert torch.equal(scores[3][0], scores[1][0]) and torch.equal(scores[3][1], scores[1][0])


def test_evaluation_episodes_do_not_depend_on_the_meta_batch() -> None:
    """Runs that trained with different meta-batches are scored on the same episodes."""
    from workbench.core.evaluate import evaluate
    from workbench.core.tasks.sampler import ClassImages

    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (40 * 6, 1, 14, 14), generator=g, dtype=torch.uint8)
    dist = ClassImages(images, [torch.arange(c * 6, c * 6 + 6) for c in range(40)])
    algo, _ = image_maml(first_order=True, dtype=torch.float32)
    scores = {
        mb: evaluate(
            algo, dist, SHAPE.model_copy(update={"meta_batch": mb}), 40, torch.device("cpu")
        )
        for mb in (1, 4, 32)
    }
    assert scores[1].episodes == 40
    assert scores[1].mean == scores[4].mean == scores[32].mean


def test_tasks_too_small_to_share_stay_on_one_thread() -> None:
    """A sinusoid task (a 40-40 MLP on 20 points) runs its kernels in microseconds: a second
    thread only waits for the GIL (measured 420 -> 300 steps/s). A Conv-4 image task shares."""
    from workbench.core.models import build_model

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        mlp = build_model(ModelConfig(), (1,), 1, "regression")
        sinusoid = MAML(ALGORITHMS.get("maml").Params(), mlp, "regression")
        x = torch.rand(4, 20, 1)
        points = EpisodeBatch(x[:, :10], x[:, :10], x[:, 10:], x[:, 10:], 1)
        shape = TaskShape(ways=1, shots=10, queries=10)
        assert sinusoid.small_tasks(shape) and sinusoid.workers(points) == 1

        conv = Conv4(ModelConfig(width=64), (1, 28, 28), 5)
        glyphs = MAML(ALGORITHMS.get("maml").Params(), conv, "classification")
        x = torch.rand(4, 10, 1, 28, 28)
        y = torch.arange(5).repeat(2).expand(4, 10)
        images = EpisodeBatch(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:], 5)
        assert not glyphs.small_tasks(TaskShape(ways=5, shots=1, queries=1))
        assert glyphs.workers(images) == 2
    finally:
        torch.set_num_threads(before)


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise() -> None:
    """`import workbench` sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP (spinning
    threads stall every op when another process wants the core: bench/omp_wait.py); a user's
    own setting is kept."""
    import os
    import subprocess
    import sys

    code = "import os, workbench, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert got.stdout.strip() == "PASSIVE", got.stderr
    got = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)  # fmt: skip
    assert got.stdout.strip() == "ACTIVE", got.stderr
