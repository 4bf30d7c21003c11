"""ResNet-12: the backbone of MetaOptNet (Lee et al. 2019, after TADAM and SNAIL) and of most
few-shot papers since.

Four residual blocks of widths 64-160-320-640; each is three 3x3 conv-BN-LeakyReLU(0.1) units
(the third's activation after the residual sum) with a 1x1 conv-BN shortcut, then a 2x2
max-pool. As in MetaOptNet's `ResNet12_embedding.py`: convolutions without bias (batch norm
follows each), Kaiming-normal fan-out initialisation, 12,424,320 parameters at full width, and
with `drop_rate` > 0 dropout after blocks 1-2 and DropBlock after blocks 3-4.

Where this differs from MetaOptNet, and why:
- The embedding is the global average of the last map (640-d) by default, as TADAM, RFS and
  FEAT take it: it does not depend on the image size, and a MAML/ANIL head on it is 640 x ways
  rather than 16,000 x ways at 84x84. `resnet_pool="flatten"` keeps MetaOptNet's flattened map.
- Batch norm keeps no running statistics (`BatchStatNorm2d`), as everywhere in this workbench
  and as the MAML family needs: the functional forward normalises with the batch's own
  statistics, in training and at test. MetaOptNet's running statistics (inductive test-time
  BN) are not offered.
- DropBlock runs at its full rate from the first step: MetaOptNet ramps the keep rate over its
  first 40,000 forward calls with a counter in each block, mutable state that a functional
  forward, task threads and a resumed run cannot share. The block side is capped at the map
  size (MetaOptNet's formula divides by zero when the block is larger than the map).

The max-pool runs before the block's last LeakyReLU: max commutes with a monotone function
(same values and gradients), and the activation then runs on a quarter of the map.

Cost (measured on one CPU thread, fp32, full widths, 84x84x3): a ProtoNet 5-way 1-shot
15-query episode (80 images, about 3.5 GMACs each forward) takes 21.9 s of CPU time forward
and backward with channels-last maps (10.3 s forward), 24.0 s NCHW: near one core's peak, so
full-size training needs a GPU; small `resnet_widths` suit CPU experiments and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.models import double_backward
from workbench.core.models.batch_norm import BatchStatNorm2d
from workbench.core.models.conv import _Conv
from workbench.core.models.layout import channels_last_input, memory_format
from workbench.core.params import ModelConfig
from workbench.core.registry import MODELS

NEGATIVE_SLOPE = 0.1  # MetaOptNet's LeakyReLU
POOLS = 4  # one 2x2 max-pool per block: inputs need at least 2**4 pixels a side

# Algorithms that drive the learner through `build_model` + `models.call` (or the module's own
# forward) generically, checked in each one's code: ProtoNet embeds with `model(x)`; MAML,
# first-order MAML, pretrain-finetune and Meta-SGD adapt every parameter through
# `functional_forward` (the grouped Conv-4 passes are looked up with getattr and skipped);
# ANIL adapts the `head` Linear on features from `embed`; Reptile's inner Adam runs on
# `models.call` with a copy of every parameter. Meta-LSTM is left out: its
# coordinate-wise meta-learner keeps an LSTM state of `hidden` (20) units plus gates per
# learner parameter, 12.4M coordinates here (about 1 GB a state in fp32, held for every inner
# step of every task in the meta-graph). Config validation refuses the rest (`config._compatible`).
SUPPORTED_ALGORITHMS = frozenset(
    {"protonet", "matching", "maml", "fomaml", "anil", "meta-sgd", "pretrain-finetune", "reptile"}
)


def drop_block(h: torch.Tensor, rate: float, block_size: int) -> torch.Tensor:
    """DropBlock (Ghiasi et al. 2018) as MetaOptNet applies it: block centres drawn with
    probability gamma on the positions where a whole block fits, each zeroing a block_size^2
    square in every (image, channel), the rest rescaled by (elements / elements kept).
    gamma = rate / block^2 * H W / ((H - block + 1)(W - block + 1)) makes about `rate` of
    the map dropped; the block is capped at the map's smaller side."""
    n, c, height, width = h.shape
    size = min(block_size, height, width)
    rows, cols = height - size + 1, width - size + 1
    gamma = rate / size**2 * height * width / (rows * cols)
    seeds = torch.bernoulli(torch.full((n, c, rows, cols), gamma, dtype=h.dtype, device=h.device))
    # a seed at (i, j) covers rows i..i+size-1 and columns j..j+size-1: a max over the seeds
    # padded by size-1 on every side, in one stride-1 pass
    dropped = F.max_pool2d(F.pad(seeds, (size - 1,) * 4), size, stride=1)
    keep = (1 - dropped).contiguous(memory_format=memory_format(h))
    return h * keep * (keep.numel() / keep.sum().clamp_min(1.0))


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, padding: int) -> torch.Tensor:
    """A stride-1 convolution; inside `closed_form_double_backward()` (second-order MAML) the
    closed-form double backward of `conv.py`, given a constant zero bias where the layer has
    none (its gradient is dropped: nothing requires it)."""
    if double_backward.enabled(x):
        bias = b if b is not None else w.new_zeros(w.shape[0])
        return _Conv.apply(x, w, bias, 1, padding)
    return F.conv2d(x, w, b, 1, padding)


def activation_sizes(cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> list[int]:
    """Per image, the maps a training forward keeps for its backward (`models.ActivationSizes`;
    checked against autograd's saved tensors): the channels-last copy of a multi-channel input;
    per block at its input's size conv1's output, [bn1's], the LeakyReLU's, conv2's, [bn2's],
    the LeakyReLU's, [conv3's and the shortcut conv's, which their batch norms keep] and the
    residual sum (bn3's and the shortcut batch norm's outputs only feed the sum, which keeps
    neither); at the pooled size the max-pool's output, its int64 indices (2 floats) and the
    last LeakyReLU's; with `drop_rate` > 0 one more pooled map (dropout's or DropBlock's);
    the embedding and the head's logits."""
    channels, height, width = input_shape
    bn = 1 if cfg.batch_norm == "batch" else 0
    sizes: list[int] = [channels * height * width] if cfg.channels_last and channels > 1 else []
    for w in cfg.resnet_widths:
        sizes += [w * height * width] * (5 + 4 * bn)
        height, width = height // 2, width // 2
        sizes += [w * height * width] * (5 if cfg.drop_rate > 0 else 4)
    last = cfg.resnet_widths[-1]
    sizes.append(last if cfg.resnet_pool == "avg" else last * height * width)
    sizes.append(out_dim)
    return sizes


# a conv, its (weight, bias or None) keys, its batch norm or None, that one's (weight, bias) keys
Unit = tuple[nn.Conv2d, tuple[str, str | None], BatchStatNorm2d | None, tuple[str, str] | None]


class ResidualBlock(nn.Module):
    """Three 3x3 conv-BN units and a 1x1 conv-BN shortcut; the forward is `ResNet12`'s."""

    def __init__(self, cin: int, cout: int, batch_norm: bool) -> None:
        super().__init__()
        bias = not batch_norm  # a bias before batch norm is removed by its mean
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
        self.bn1 = BatchStatNorm2d(cout) if batch_norm else None
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.bn2 = BatchStatNorm2d(cout) if batch_norm else None
        self.conv3 = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        self.bn3 = BatchStatNorm2d(cout) if batch_norm else None
        self.shortcut = nn.Conv2d(cin, cout, 1, bias=bias)
        self.shortcut_bn = BatchStatNorm2d(cout) if batch_norm else None

    def units(self, prefix: str) -> list[Unit]:
        """conv1, conv2, conv3, shortcut with their batch norms and parameter names."""
        out: list[Unit] = []
        for conv, bn in (
            ("conv1", "bn1"),
            ("conv2", "bn2"),
            ("conv3", "bn3"),
            ("shortcut", "shortcut_bn"),
        ):
            c, norm = getattr(self, conv), getattr(self, bn)
            ckeys = (
                f"{prefix}{conv}.weight",
                f"{prefix}{conv}.bias" if c.bias is not None else None,
            )
            nkeys = (f"{prefix}{bn}.weight", f"{prefix}{bn}.bias") if norm is not None else None
            out.append((c, ckeys, norm, nkeys))
        return out


@MODELS.register("resnet12")
class ResNet12(nn.Module):
    """ResNet-12 (module docstring). Registered as its own builder: (ModelConfig, input_shape,
    out_dim) -> module, out_dim 0 for an embedding network (ProtoNet)."""

    # read by config validation for any registered model that declares them
    supported_algorithms: ClassVar[frozenset[str]] = SUPPORTED_ALGORITHMS
    dataset_kinds: ClassVar[frozenset[str]] = frozenset({"classification"})  # images
    # read by the memory check (`core/footprint.py`)
    activation_sizes = staticmethod(activation_sizes)

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        if len(input_shape) != 3 or min(input_shape[1:]) < 2**POOLS:
            raise ValueError(
                f"ResNet-12 needs images of at least {2**POOLS}x{2**POOLS} (one 2x2 max-pool "
                f"per block); got input shape {tuple(input_shape)}"
            )
        channels, height, width = input_shape
        batch_norm = cfg.batch_norm == "batch"
        self.blocks = nn.ModuleList()
        c = channels
        for w in cfg.resnet_widths:
            self.blocks.append(ResidualBlock(c, w, batch_norm))
            c = w
            height, width = height // 2, width // 2
        self.in_order = [block.units(f"blocks.{i}.") for i, block in enumerate(self.blocks)]
        self.channels_last = cfg.channels_last
        self.drop_rate = cfg.drop_rate
        self.dropblock_size = cfg.dropblock_size
        self.average = cfg.resnet_pool == "avg"
        self.embedding_dim = c if self.average else c * height * width
        self.head = nn.Linear(self.embedding_dim, out_dim) if out_dim > 0 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # MetaOptNet's initialisation
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):  # as Conv-4's head
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _unit(
        unit: Unit, h: torch.Tensor, params: Mapping[str, torch.Tensor] | None
    ) -> torch.Tensor:
        conv, (wkey, bkey), norm, nkeys = unit
        if params is None:
            w, b = conv.weight, conv.bias
        else:
            w, b = params[wkey], (params[bkey] if bkey is not None else None)
        h = _conv(h, w, b, conv.padding[0])  # type: ignore[index]
        if norm is None or nkeys is None:
            return h
        if params is None:
            return norm.apply_with(h, norm.weight, norm.bias)
        return norm.apply_with(h, params[nkeys[0]], params[nkeys[1]])

    def embed(
        self, x: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The embedding (the head's input) of x with `params` in place of the module's own
        (None: its own); ANIL's inner loop runs its head on these features."""
        h = channels_last_input(x) if self.channels_last else x
        for i, (u1, u2, u3, shortcut) in enumerate(self.in_order):
            out = F.leaky_relu(self._unit(u1, h, params), NEGATIVE_SLOPE)
            out = F.leaky_relu(self._unit(u2, out, params), NEGATIVE_SLOPE)
            out = self._unit(u3, out, params) + self._unit(shortcut, h, params)
            h = F.leaky_relu(F.max_pool2d(out, 2), NEGATIVE_SLOPE)
            if self.training and self.drop_rate > 0:
                if i < 2:  # MetaOptNet: plain dropout in the first two blocks
                    h = F.dropout(h, self.drop_rate, training=True)
                else:
                    h = drop_block(h, self.drop_rate, self.dropblock_size)
        if self.average:  # avg_pool2d, not mean(): its gradient keeps h's layout (see Conv-4)
            return F.avg_pool2d(h, h.shape[-2:]).flatten(1)
        return h.flatten(1)  # in NCHW order (MetaOptNet's view), whatever h's memory layout

    def functional_forward(
        self, params: Mapping[str, torch.Tensor] | None, x: torch.Tensor
    ) -> torch.Tensor:
        """The forward pass with `params` (name -> tensor, e.g. MAML's adapted weights) in place
        of the module's own: `models.call` takes it instead of `torch.func.functional_call`,
        which swaps every parameter in and out of the module (and would forbid task threads)."""
        h = self.embed(x, params)
        if self.head is None:
            return h
        if params is None:
            return self.head(h)
        return F.linear(h, params["head.weight"], params["head.bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.functional_forward(None, x)
