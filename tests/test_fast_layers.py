"""The conv and batch-norm layers with a closed-form double backward (second-order MAML's speed).

They must be the same mathematics as autograd's generic double backward, and the MAML
meta-gradient computed through them must match finite differences.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from workbench.core.algorithms import ALGORITHMS
from workbench.core.algorithms.maml import MAML
from workbench.core.config import ModelConfig, TaskShape
from workbench.core.models import batch_norm as bn_module
from workbench.core.models import task_gradients
from workbench.core.models.batch_norm import batch_norm
from workbench.core.models.conv import _Conv
from workbench.core.models.conv4 import Conv4
from workbench.core.models.double_backward import closed_form_double_backward, enabled
from workbench.core.models.layout import channels_last_input, memory_format
from workbench.core.tasks.base import EpisodeBatch

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def second_derivatives(fn, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """d/d(inputs) of <grad of a non-linear loss of fn(inputs), a fixed direction>: every
    term of the double backward is exercised (the loss is quadratic, so gy depends on y)."""
    y = fn(*inputs)
    w = torch.sin(torch.arange(y.numel(), dtype=y.dtype)).view_as(y)
    grads = torch.autograd.grad((y * w).sum() + (y**2).sum(), inputs, create_graph=True)
    s = sum((g * torch.cos(torch.arange(g.numel(), dtype=g.dtype)).view_as(g)).sum() for g in grads)
    return torch.autograd.grad(s, inputs)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_norm_double_backward_is_autograds(layout: torch.memory_format) -> None:
    torch.manual_seed(0)
    x = (
        torch.randn(5, 3, 4, 4, dtype=torch.float64)
        .contiguous(memory_format=layout)
        .requires_grad_()
    )
    w = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(batch_norm, (x, w, b))
    ours = second_derivatives(batch_norm, (x, w, b))
    native = second_derivatives(
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), (x, w, b)
    )
    for a, e in zip(ours, native, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_small_channels_last_fp32_batch_norm_takes_float64_accurate_statistics() -> None:
    """A 5-image support set's first batch norm (980 elements a channel, channels-last, fp32)
    takes the exact-statistics path (issue 12), and its output and second derivatives agree
    with float64 autograd to fp32 rounding."""
    torch.manual_seed(0)
    x64 = torch.randn(5, 8, 14, 14, dtype=torch.float64) * 3 + 5  # a large mean: cancellation
    w64, b64 = torch.rand(8, dtype=torch.float64) + 0.5, torch.randn(8, dtype=torch.float64)
    x = x64.float().contiguous(memory_format=torch.channels_last)
    assert bn_module._channels_last_sums(x)
    y = batch_norm(x, w64.float(), b64.float())
    assert memory_format(y) == torch.channels_last
    expected = F.batch_norm(x.double(), None, None, w64, b64, training=True)
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=2e-6)
    inputs = [t.detach().requires_grad_() for t in (x, w64.float(), b64.float())]
    ours = second_derivatives(batch_norm, tuple(inputs))
    ref_in = [t.detach().double().requires_grad_() for t in inputs]
    ref = second_derivatives(
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), tuple(ref_in)
    )
    for a, e in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4 * float(e.abs().max()))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("input_grad", [True, False])
def test_conv_double_backward_is_autograds(layout: torch.memory_format, input_grad: bool) -> None:
    torch.manual_seed(0)
    x = (
        torch.randn(3, 2, 7, 7, dtype=torch.float64)
        .contiguous(memory_format=layout)
        .requires_grad_(input_grad)
    )
    w = (
        torch.randn(4, 2, 3, 3, dtype=torch.float64)
        .contiguous(memory_format=layout)
        .requires_grad_()
    )
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    inputs = (x, w, b) if input_grad else (w, b)

    def ours(*t: torch.Tensor) -> torch.Tensor:
        return _Conv.apply(*(t if input_grad else (x, *t)), 2, 1)

    def native(*t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(*(t if input_grad else (x, *t)), stride=2, padding=1)

    assert torch.autograd.gradgradcheck(ours, inputs)
    for a, e in zip(
        second_derivatives(ours, inputs), second_derivatives(native, inputs), strict=True
    ):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def conv_maml(steps: int, layout: torch.memory_format, tasks: int = 2) -> tuple[MAML, EpisodeBatch]:
    torch.manual_seed(0)
    model = Conv4(
        ModelConfig(width=4, channels_last=layout == torch.channels_last), (1, 12, 12), 3
    ).double()
    model.to(memory_format=layout)
    algo = MAML(ALGORITHMS.get("maml").Params(inner_lr=0.4), model, "classification")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(tasks, 6, 1, 12, 12, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat(2).view(1, 6).expand(tasks, 6)
    return algo, EpisodeBatch(x[:, :3], y[:, :3], x[:, 3:], y[:, 3:], 3)


def objective(algo: MAML, batch: EpisodeBatch, steps: int) -> float:
    """The MAML objective computed directly (native layers: the switch is off here)."""
    total = 0.0
    for i in range(len(batch)):
        adapted = algo.adapt(
            algo.initial_params(), batch.support_x[i], batch.support_y[i], steps, 0.4, False
        )
        out = torch.func.functional_call(algo.model, adapted, (batch.query_x[i],))
        total += float(F.cross_entropy(out, batch.query_y[i]).detach())
    return total / len(batch)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("steps", [1, 2])
def test_conv4_maml_meta_gradient_matches_finite_differences(
    steps: int, layout: torch.memory_format
) -> None:
    """Directional derivative of the objective along a random direction vs <meta-gradient, v>."""
    algo, batch = conv_maml(steps, layout)
    algo.zero_grad()
    algo.meta_train_step(batch, TaskShape(ways=3, shots=1, queries=1, inner_steps=steps))
    params = list(algo.model.parameters())
    v = [torch.randn_like(p) for p in params]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params, v, strict=True))
    eps = 1e-7  # batch norm over 3 images makes the objective strongly curved: a small step
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.add_(d, alpha=eps)
    plus = objective(algo, batch, steps)
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.add_(d, alpha=-2 * eps)
    minus = objective(algo, batch, steps)
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)


def test_second_order_maml_uses_the_closed_form_and_first_order_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {"n": 0}
    original = bn_module._BatchNormBackward.backward

    def counting(ctx, *grads):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return original(ctx, *grads)

    monkeypatch.setattr(bn_module._BatchNormBackward, "backward", staticmethod(counting))
    monkeypatch.setattr(MAML, "batched", lambda *args: 0)  # the per-task path
    algo, batch = conv_maml(1, torch.contiguous_format)
    algo.meta_train_step(batch, TaskShape(ways=3, shots=1, queries=1, inner_steps=1))
    assert calls["n"] == 4 * len(batch)  # one double backward per BN layer and task
    assert not enabled()  # the switch is reset after the step
    calls["n"] = 0
    algo.params = algo.params.model_copy(update={"first_order": True})
    algo.meta_train_step(batch, TaskShape(ways=3, shots=1, queries=1, inner_steps=1))
    assert calls["n"] == 0


class LayoutMixes(TorchDispatchMode):
    """Records ops that meet an NCHW and a channels-last 4-d tensor (each such op runs a strided
    loop, threshold_backward 40x slower than on one layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kinds = set()
        for a in args:
            if (
                isinstance(a, torch.Tensor)
                and a.dim() == 4
                and a.shape[1] > 1
                and a.shape[2] * a.shape[3] > 1
            ):
                kinds.add(
                    "cl"
                    if not a.is_contiguous() and a.is_contiguous(memory_format=torch.channels_last)
                    else "other"
                )
        if len(kinds) > 1:
            self.mixed.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("first_order", [False, True])
def test_channels_last_step_never_mixes_layouts(first_order: bool) -> None:
    algo, batch = conv_maml(1, torch.channels_last)
    algo.params = algo.params.model_copy(update={"first_order": first_order})
    with LayoutMixes() as probe, closed_form_double_backward(False):
        algo.meta_train_step(batch, TaskShape(ways=3, shots=1, queries=1, inner_steps=1))
    assert probe.mixed == []


@pytest.mark.parametrize("small", [True, False], ids=["matmul-convs", "onednn-convs"])
@pytest.mark.parametrize("mode", ["shared", "per-task", "per-task summed", "shared summed"])
@pytest.mark.parametrize("batch_norm", ["batch", "none"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_batched_task_gradients_equal_per_task_autograd(
    batch_norm: str,
    layout: torch.memory_format,
    mode: str,
    small: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gradients (per task or summed) and logits of the batched passes equal one autograd
    pass per task, with shared weights (MAML's first step) or each task's own (later steps,
    the query pass), by matmul for small layers or by oneDNN per task; 12 tasks go through
    in two groups, so the groups' seam is covered."""
    monkeypatch.setattr(task_gradients, "SMALL_COLS", task_gradients.SMALL_COLS if small else 0)
    torch.manual_seed(0)
    cfg = ModelConfig(width=4, batch_norm=batch_norm, channels_last=layout == torch.channels_last)
    model = Conv4(cfg, (1, 12, 12), 3).double().to(memory_format=layout)
    params = dict(model.named_parameters())
    tasks, per_task, summed = 12, mode.startswith("per-task"), mode.endswith("summed")
    own = [
        {k: p.detach() + 0.1 * torch.randn_like(p) if per_task else p for k, p in params.items()}
        for _ in range(tasks)
    ]
    passed = {k: torch.stack([o[k] for o in own]) for k in params} if per_task else params
    x = torch.rand(tasks, 6, 1, 12, 12, dtype=torch.float64)
    y = torch.randint(0, 3, (tasks, 6))
    out = model.task_gradients(passed, x, y, per_task_params=per_task, summed=summed, scale=0.5)
    assert out is not None and out[0].keys() == params.keys()
    batched, logits = out
    expected = {k: torch.zeros_like(p) for k, p in params.items()}
    for t in range(tasks):
        weights = {k: p.detach().requires_grad_() for k, p in own[t].items()}
        pred = torch.func.functional_call(model, weights, (x[t],))
        torch.testing.assert_close(logits[t], pred.detach(), rtol=1e-9, atol=1e-12)
        grads = torch.autograd.grad(0.5 * F.cross_entropy(pred, y[t]), tuple(weights.values()))
        for name, g in zip(params, grads, strict=True):
            if summed:
                expected[name] += g
            else:
                torch.testing.assert_close(batched[name][t], g, rtol=1e-9, atol=1e-12, msg=name)
    for name, g in expected.items() if summed else ():
        torch.testing.assert_close(batched[name], g, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("steps", [1, 2])
def test_first_order_step_is_the_same_with_the_batched_passes(
    steps: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batched first-order step (inner steps and query pass) gives the meta-gradient,
    loss and accuracy of per-task autograd."""
    algo, batch = conv_maml(steps, torch.channels_last)
    algo.params = algo.params.model_copy(update={"first_order": True})
    shape = TaskShape(ways=3, shots=1, queries=1, inner_steps=steps)

    def meta_step() -> tuple[list[torch.Tensor], dict[str, float]]:
        algo.zero_grad()
        metrics = algo.meta_train_step(batch, shape)
        return [p.grad.clone() for p in algo.model.parameters()], metrics

    assert algo.first_order_adapted(batch, algo.initial_params(), slice(None), steps) is not None
    batched, batched_metrics = meta_step()
    monkeypatch.setattr(MAML, "first_order_adapted", lambda *args: None)
    plain, plain_metrics = meta_step()
    for a, e in zip(batched, plain, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)
    assert batched_metrics == pytest.approx(plain_metrics, rel=1e-6)  # accuracy: fp32 there


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("small", [True, False], ids=["matmul-convs", "onednn-convs"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_second_order_step_is_the_same_with_the_batched_passes(
    layout: torch.memory_format, small: bool, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One inner step: the batched second-order step (support gradients differentiated
    through the group's closed-form convolution backward) gives the meta-gradient, loss and
    accuracy of the per-task step; 10 tasks in groups of 4, on one thread or two."""
    monkeypatch.setattr(task_gradients, "IMAGES_PER_PASS", 12)  # 3-image episodes: 4 a group
    monkeypatch.setattr(task_gradients, "SMALL_COLS", task_gradients.SMALL_COLS if small else 0)
    monkeypatch.setattr(MAML, "workers", lambda self, b: workers)
    algo, batch = conv_maml(1, layout, tasks=10)
    shape = TaskShape(ways=3, shots=1, queries=1, inner_steps=1)

    def meta_step() -> tuple[list[torch.Tensor], dict[str, float]]:
        algo.zero_grad()
        metrics = algo.meta_train_step(batch, shape)
        return [p.grad.clone() for p in algo.model.parameters()], metrics

    assert algo.batched(batch, shape) == 4
    batched, batched_metrics = meta_step()
    monkeypatch.setattr(MAML, "batched", lambda *args: 0)
    plain, plain_metrics = meta_step()
    for a, e in zip(batched, plain, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)
    assert batched_metrics == pytest.approx(plain_metrics, rel=1e-6)  # accuracy: fp32 there


@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
def test_conv4_runs_the_same_function_as_its_layers_in_order(downsample: str) -> None:
    """Max-pool before ReLU, the direct functional forward and the channels-last copy change
    nothing: same outputs and gradients as running `features` in declaration order."""
    torch.manual_seed(0)
    model = Conv4(ModelConfig(width=4, downsample=downsample), (1, 28, 28), 3).double()
    model.to(memory_format=torch.channels_last)
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)

    def stock(x: torch.Tensor) -> torch.Tensor:
        h = model.features(x)
        h = h.mean((2, 3)) if downsample == "stride" else h.flatten(1)
        return model.head(h)

    ours = model.functional_forward(dict(model.named_parameters()), x)
    torch.testing.assert_close(ours, stock(x), rtol=1e-12, atol=1e-12)
    params = tuple(model.parameters())
    g_ours = torch.autograd.grad(ours.square().sum(), params)
    g_stock = torch.autograd.grad(stock(x).square().sum(), params)
    for a, e in zip(g_ours, g_stock, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_freed_memory_setting_applies_once_on_glibc() -> None:
    import sys

    from workbench.core.memory import reuse_freed_memory

    expected = sys.platform.startswith("linux")
    assert reuse_freed_memory() is expected
    assert reuse_freed_memory() is expected  # idempotent


def _huge_pages_possible() -> bool:
    try:
        return "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _huge_pages_possible(), reason="needs Linux transparent huge pages")
def test_large_tensors_on_a_worker_thread_are_not_faulted_in_page_by_page() -> None:
    """The app trains on a worker thread, whose large blocks glibc maps afresh every time:
    importing workbench puts them on huge pages (a 120 MB tensor: 30,720 faults without)."""
    code = """
import resource, threading
import workbench
import torch
faults = []
def work():
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = torch.ones(30 << 20)  # 120 MB, a 600-image activation of the first layer
        del t
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(max(faults[1:]))
"""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout) < (120 << 20) // 4096 // 8


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_step_runs_under_bf16_autocast(first_order: bool) -> None:
    """precision=bf16: the closed forms and the batched first step step aside (they compute in
    the input's dtype); the step must run and give finite gradients close to fp32's."""
    algo, batch = conv_maml(1, torch.channels_last)
    algo.float()
    batch = EpisodeBatch(
        batch.support_x.float(), batch.support_y, batch.query_x.float(), batch.query_y, 3
    )
    algo.params = algo.params.model_copy(update={"first_order": first_order})
    shape = TaskShape(ways=3, shots=1, queries=1, inner_steps=1)
    algo.zero_grad()
    algo.meta_train_step(batch, shape)
    fp32 = [p.grad.clone() for p in algo.model.parameters()]
    algo.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        algo.meta_train_step(batch, shape)
    grads = [p.grad for p in algo.model.parameters()]
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    flat, ref = torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in fp32])
    assert F.cosine_similarity(flat, ref, dim=0) > 0.95  # bf16 keeps 8 bits of mantissa


def test_one_channel_images_enter_channels_last_without_a_copy() -> None:
    """A 1-channel batch viewed with channels-last strides (same memory) makes the first
    convolution return a channels-last map, so no activation-sized copy follows it."""
    x = torch.rand(5, 1, 12, 12)
    view = channels_last_input(x)
    assert view.data_ptr() == x.data_ptr() and torch.equal(view, x)
    w = torch.rand(4, 1, 3, 3).contiguous(memory_format=torch.channels_last)
    assert memory_format(F.conv2d(view, w, None, 2, 1)) == torch.channels_last
    assert memory_format(F.conv2d(x, w, None, 2, 1)) != torch.channels_last  # why it is needed
