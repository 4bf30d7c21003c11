"""ResNet-12 (MetaOptNet's backbone): the module against a transcription of MetaOptNet's, the
functional forward against the module (values and gradients, float64, batch statistics as the
MAML family uses them), its second derivatives, shapes, DropBlock, the parameter count, the
refused algorithm combinations and a few training steps on glyphs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from workbench.core.config import ModelConfig, default_config
from workbench.core.engine import Trainer
from workbench.core.errors import ConfigError
from workbench.core.events import Listener, StepMetrics
from workbench.core.models import build_model, call, resnet12
from workbench.core.models.double_backward import closed_form_double_backward
from workbench.core.models.resnet12 import SUPPORTED_ALGORITHMS, ResNet12, drop_block
from workbench.core.registry import ALGORITHMS

SMALL = [4, 6, 8, 10]  # widths that keep float64 checks fast
SHAPE = (3, 21, 21)  # odd sizes: the max-pools floor as MetaOptNet's (21 -> 10 -> 5 -> 2 -> 1)


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """One torch thread per test: these maps are small, and on a loaded machine intra-op
    threads waiting at each op's barrier made the second-order check 7x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(out_dim: int = 0, **cfg: object) -> ResNet12:
    torch.manual_seed(0)
    model = ResNet12(ModelConfig(resnet_widths=SMALL, **cfg), SHAPE, out_dim).double()  # type: ignore[arg-type]
    with torch.no_grad():  # batch-norm affine parameters away from (1, 0): every term counts
        for name, p in model.named_parameters():
            if "bn" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def inputs(n: int = 6) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, *SHAPE, dtype=torch.float64)


# ---- MetaOptNet's module, transcribed (models/ResNet12_embedding.py, drop_rate 0) ----------
class MetaOptNetBlock(nn.Module):
    """BasicBlock of MetaOptNet with batch norm on batch statistics (no running statistics)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()

        def bn() -> nn.BatchNorm2d:
            return nn.BatchNorm2d(cout, track_running_stats=False)

        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False), bn()
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), bn()
        self.conv3, self.bn3 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), bn()
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), bn())
        self.relu, self.maxpool = nn.LeakyReLU(0.1), nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.downsample(x)
        return self.maxpool(self.relu(out))


def metaoptnet_copy(model: ResNet12) -> nn.Module:
    """MetaOptNet's network (flattened output) holding `model`'s weights."""
    widths = [block.conv1.out_channels for block in model.blocks]
    ref = nn.Sequential(
        *[MetaOptNetBlock(c, w) for c, w in zip([SHAPE[0], *widths], widths, strict=False)],
        nn.Flatten(),
    ).double()
    names = {"shortcut.": "downsample.0.", "shortcut_bn.": "downsample.1."}
    state = {}
    for key, value in model.state_dict().items():
        for ours, theirs in names.items():
            key = key.replace(ours, theirs)
        state[key.removeprefix("blocks.")] = value
    ref.load_state_dict(state)
    return ref


@pytest.mark.parametrize("channels_last", [False, True])
def test_module_is_metaoptnets_network_values_and_gradients(channels_last: bool) -> None:
    """Same weights, same input: MetaOptNet's output and every gradient (weights and input)."""
    model = small(resnet_pool="flatten", channels_last=channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ref = metaoptnet_copy(model)
    x = inputs().requires_grad_()
    out, expected = model(x), ref(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(out)
    ours = torch.autograd.grad((out * w).sum() + (out**2).sum(), [x, *model.parameters()])
    theirs = torch.autograd.grad((expected * w).sum() + (expected**2).sum(), [x, *ref.parameters()])
    for a, e in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", ["avg", "flatten"])
@pytest.mark.parametrize("training", [True, False])
def test_functional_forward_matches_the_module(pool: str, training: bool) -> None:
    """`functional_forward` with other weights (MAML's adapted ones) equals the module run with
    those weights swapped in (`functional_call`), values and gradients; batch norm uses the
    batch's statistics in training and in eval mode alike (the MAML family's setting)."""
    model = small(out_dim=3, resnet_pool=pool).train(training)
    torch.manual_seed(2)
    params = {
        k: (p + 0.1 * torch.randn_like(p)).detach().requires_grad_()
        for k, p in model.named_parameters()
    }
    x = inputs()
    fn = model.functional_forward(params, x)
    module = functional_call(model, params, (x,))
    torch.testing.assert_close(fn, module, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(call(model, params, x), fn, rtol=0, atol=0)
    # ANIL's body/head split: the head on `embed` is the whole forward
    head = F.linear(model.embed(x, params), params["head.weight"], params["head.bias"])
    torch.testing.assert_close(head, fn, rtol=0, atol=0)
    g_fn = torch.autograd.grad(F.cross_entropy(fn, torch.arange(6) % 3), list(params.values()))
    g_mod = torch.autograd.grad(F.cross_entropy(module, torch.arange(6) % 3), list(params.values()))
    for a, e in zip(g_fn, g_mod, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    # batch statistics in either mode: train and eval forwards agree
    other = model.train(not training).functional_forward(params, x)
    torch.testing.assert_close(other, fn, rtol=0, atol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_second_order_maml_step_closed_form_matches_autograd(
    channels_last: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The meta-gradient of one differentiable inner step (second-order MAML) is the same with
    conv/BN's closed-form double backward (conv weights without bias given a zero one) as with
    autograd's own."""
    calls: list[int] = []
    conv = resnet12._Conv

    class Counted(conv):  # type: ignore[misc,valid-type]
        @classmethod
        def apply(cls, *args: object) -> torch.Tensor:  # type: ignore[override]
            calls.append(1)
            return conv.apply(*args)

    monkeypatch.setattr(resnet12, "_Conv", Counted)
    model = small(out_dim=3, channels_last=channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x, y = inputs(), torch.arange(6) % 3

    def meta_gradient(closed_form: bool) -> tuple[torch.Tensor, ...]:
        theta = dict(model.named_parameters())
        with closed_form_double_backward(closed_form):
            loss = F.cross_entropy(model.functional_forward(theta, x), y)
            grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
        adapted = {k: p - 0.4 * g for (k, p), g in zip(theta.items(), grads, strict=True)}
        query = F.cross_entropy(model.functional_forward(adapted, x.flip(0)), y)
        return torch.autograd.grad(query, list(theta.values()))

    closed = meta_gradient(True)
    assert len(calls) == 16  # every conv of the inner step took the closed form
    for a, e in zip(closed, meta_gradient(False), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


# ---- shapes and size -------------------------------------------------------------------
@pytest.mark.parametrize(("size", "side"), [(32, 2), (84, 5)])
def test_embedding_shapes_at_full_width(size: int, side: int) -> None:
    """32x32x3 (CIFAR-FS) and 84x84x3 (mini-ImageNet): 640-d after global average pooling,
    640 x side^2 flattened (MetaOptNet's 16,000 at 84), ways logits with a head."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    avg = ResNet12(ModelConfig(), (3, size, size), 0)
    flat = ResNet12(ModelConfig(resnet_pool="flatten"), (3, size, size), 5)
    with torch.no_grad():
        assert avg(x).shape == (2, 640) and avg.embedding_dim == 640
        assert flat.embed(x).shape == (2, 640 * side * side) == (2, flat.embedding_dim)
        assert flat(x).shape == (2, 5)
        # the average embedding is the flattened map's per-channel mean (same weights)
        flat.load_state_dict({**avg.state_dict(), **flat.head.state_dict(prefix="head.")})  # type: ignore[union-attr]
        means = flat.embed(x).view(2, 640, side * side).mean(-1)
        torch.testing.assert_close(means, avg(x), rtol=1e-5, atol=1e-6)


def test_parameter_count_is_metaoptnets() -> None:
    """12,424,320 parameters at 64-160-320-640, as MetaOptNet's module counts (measured on its
    models/ResNet12_embedding.py); per block 9 c_in c + 18 c^2 + c_in c + 8 c."""
    with torch.device("meta"):
        model = build_model(ModelConfig(name="resnet12"), (3, 84, 84), 0, "classification")
        headed = ResNet12(ModelConfig(), (3, 84, 84), 5)
    assert isinstance(model, ResNet12)
    count = sum(p.numel() for p in model.parameters())
    cins, widths = [3, 64, 160, 320], [64, 160, 320, 640]
    formula = sum(10 * ci * c + 18 * c * c + 8 * c for ci, c in zip(cins, widths, strict=True))
    assert count == formula == 12_424_320
    assert sum(p.numel() for p in headed.parameters()) == count + 640 * 5 + 5


def test_too_small_images_are_refused_when_built() -> None:
    with pytest.raises(ValueError, match="at least 16x16"):
        ResNet12(ModelConfig(resnet_widths=SMALL), (1, 14, 14), 5)


# ---- DropBlock -------------------------------------------------------------------------
def test_dropout_and_drop_block_only_in_training_and_off_at_rate_zero() -> None:
    on = small(drop_rate=0.3)
    off = small()  # same seed: same weights
    x = inputs()
    with torch.no_grad():
        torch.manual_seed(3)
        a = on(x)
        b = on(x)
        assert not torch.equal(a, b)  # fresh masks each pass
        plain = off(x)
        torch.testing.assert_close(off(x), plain, rtol=0, atol=0)  # rate 0: deterministic
        assert not torch.allclose(a, plain)
        on.eval()
        torch.testing.assert_close(on(x), plain, rtol=0, atol=0)  # eval: no dropping at all


def test_drop_block_drops_whole_blocks_at_about_the_rate() -> None:
    """Every dropped entry lies in a dropped block_size^2 square (the zeros are their own
    morphological opening), about `rate` of the map is dropped, and the rest is rescaled so
    that the sum is kept; a block larger than the map is capped at its size."""
    torch.manual_seed(0)
    size, rate = 5, 0.1
    out = drop_block(torch.ones(16, 32, 20, 20, dtype=torch.float64), rate, size)
    zero = (out == 0).double()
    fits = 1 - F.max_pool2d(1 - zero, size, stride=1)  # top-left corners of all-zero squares
    opened = F.max_pool2d(F.pad(fits, (size - 1,) * 4), size, stride=1)
    assert torch.equal(opened, zero)
    assert 0.07 < float(zero.mean()) < 0.11
    kept = out[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - float(zero.mean()))))
    assert float(out.sum()) == pytest.approx(out.numel())
    tiny = drop_block(torch.ones(64, 8, 2, 2), 0.5, 5)  # capped at 2: whole maps dropped
    per_map = (tiny == 0).flatten(2).float().mean(-1)
    assert set(per_map.unique().tolist()) <= {0.0, 1.0} and 0 < float(per_map.mean()) < 1


# ---- which algorithms ------------------------------------------------------------------
def test_unsupported_algorithms_and_datasets_are_refused_in_one_line() -> None:
    for name in ALGORITHMS.names():
        if name in SUPPORTED_ALGORITHMS:
            default_config(name, "glyphs").with_overrides(["model.name=resnet12"])
            continue
        with pytest.raises(ConfigError) as info:
            default_config(name, "glyphs").with_overrides(["model.name=resnet12"])
        err = info.value
        assert err.key == "model.name" and "\n" not in str(err)
        assert err.message.startswith(f"resnet12 does not work with {name}; its algorithms: ")
        assert set(err.message.split(": ", 1)[1].split(", ")) == set(SUPPORTED_ALGORITHMS)
    with pytest.raises(ConfigError, match="model.name: resnet12 does not work on regression"):
        default_config("maml", "sinusoid").with_overrides(["model.name=resnet12"])
    assert "meta-lstm" in ALGORITHMS.names() and "meta-lstm" not in SUPPORTED_ALGORITHMS


# ---- training on glyphs ------------------------------------------------------------------
class Steps(Listener):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.trainer: Trainer | None = None

    def attach(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_step(self, event: StepMetrics) -> None:
        self.losses.append(event.values["loss"])


@pytest.mark.parametrize("algorithm", sorted(SUPPORTED_ALGORITHMS))
def test_a_few_training_steps_on_glyphs(algorithm: str) -> None:
    """Every supported algorithm runs a few steps and a test on glyphs with small widths
    (dropout and DropBlock on), and the learner it trained is the ResNet-12."""
    cfg = default_config(algorithm, "glyphs").with_overrides(
        [
            "model.name=resnet12",
            "model.resnet_widths=[8, 16, 32, 64]",
            "model.drop_rate=0.1",
            "steps=3",
            "train.meta_batch=2",
            "train.queries=2",
            "eval.queries=2",
            "val_every=0",
            "ckpt_every=0",
            "test_episodes=4",
            "test_on_finish=true",
            "threads=1",
        ]
    )
    steps = Steps()
    result = Trainer(cfg, [steps]).run()
    assert result.status == "finished", result.error
    assert result.test is not None and 0 <= result.test.mean <= 1
    assert len(steps.losses) == 3 and all(torch.isfinite(torch.tensor(steps.losses)))
    assert steps.trainer is not None and isinstance(steps.trainer.algo.model, ResNet12)  # type: ignore[union-attr]
