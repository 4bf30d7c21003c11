"""Conv-4: the backbone of MAML, ProtoNet and Meta-LSTM (4 x [conv3x3, BN, ReLU, (pool)])."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.models import second_order_tasks
from workbench.core.models.batch_norm import BatchStatNorm2d
from workbench.core.models.conv import Conv2d
from workbench.core.models.layout import channels_last_input
from workbench.core.models.task_gradients import batched_gradients, task_group
from workbench.core.params import ModelConfig
from workbench.core.registry import MODELS


class Conv4(nn.Module):
    """With `downsample="stride"` (MAML Omniglot) each conv has stride 2 and the final feature
    map is averaged, as in Finn et al.'s code; with "maxpool" (ProtoNet, mini-ImageNet) each
    block ends in a 2x2 max-pool and the map is flattened.

    Batch norm keeps no running statistics: it always normalises with the statistics of the
    batch it sees (the MAML paper's transductive setting), so train and test behave alike and
    nothing leaks between episodes.
    """

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> None:
        super().__init__()
        channels, height, _ = input_shape
        stride = cfg.downsample == "stride"
        layers: list[nn.Module] = []
        c, size = channels, height
        for _ in range(4):
            layers.append(Conv2d(c, cfg.width, 3, stride=2 if stride else 1, padding=1))
            if cfg.batch_norm == "batch":
                layers.append(BatchStatNorm2d(cfg.width))
            layers.append(nn.ReLU())
            if stride:
                size = (size + 1) // 2
            else:
                layers.append(nn.MaxPool2d(2))
                size = size // 2
            c = cfg.width
        self.features = nn.Sequential(*layers)
        # max-pool before ReLU: max commutes with the monotone ReLU (same values, same
        # gradient), and the ReLU then runs on a quarter of the map (ProtoNet: 2 fewer full
        # passes over a 600-image activation)
        order = list(range(len(layers)))
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
                order[i], order[i + 1] = i + 1, i
        # each feature layer in the order the forward runs it, with its parameter names (None:
        # no parameters), for the functional forward and the batched passes
        self.in_order: list[tuple[nn.Module, tuple[str, str] | None]] = [
            (
                layers[i],
                (f"features.{i}.weight", f"features.{i}.bias")
                if isinstance(layers[i], Conv2d | BatchStatNorm2d)
                else None,
            )
            for i in order
        ]
        self.channels_last = cfg.channels_last
        self.average = stride
        self.embedding_dim = cfg.width if stride else cfg.width * max(size, 1) ** 2
        self.head = nn.Linear(self.embedding_dim, out_dim) if out_dim > 0 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(
        self, x: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        h = channels_last_input(x) if self.channels_last else x
        for layer, keys in self.in_order:
            if keys is None:
                h = torch.relu(h) if isinstance(layer, nn.ReLU) else layer(h)
                continue
            w, b = (
                (layer.weight, layer.bias) if params is None else (params[keys[0]], params[keys[1]])
            )
            h = layer.apply_with(h, w, b)
        if self.average:  # avg_pool2d, not mean(): its gradient keeps h's (channels-last) layout,
            # and one NCHW gradient meeting channels-last activations makes every later
            # backward op run a strided loop (threshold_backward 40x slower)
            return F.avg_pool2d(h, h.shape[-2:]).flatten(1)
        return h.flatten(1)

    def functional_forward(
        self, params: Mapping[str, torch.Tensor] | None, x: torch.Tensor
    ) -> torch.Tensor:
        """The forward pass with `params` (name -> tensor, e.g. MAML's adapted weights) in place
        of the module's own. Direct calls: `torch.func.functional_call` swaps every parameter
        in and out of the module, which on a 5-image episode costs as much as the convolutions."""
        h = self.embed(x, params)
        if self.head is None:
            return h
        if params is None:
            return self.head(h)
        return F.linear(h, params["head.weight"], params["head.bias"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.functional_forward(None, x)

    # per-task (or task-summed) cross-entropy gradients and logits of a batch of tasks from
    # batched passes, the model bound as their first argument; None where not covered
    task_gradients = batched_gradients
    # second-order MAML's batched passes (`second_order_tasks.py`), tasks per group
    support_gradients = second_order_tasks.support_gradients
    tasks_forward = second_order_tasks.tasks_forward
    task_group = task_group


def activation_sizes(cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> list[int]:
    """Per image, the maps of one training forward (`models.ActivationSizes`): per layer the
    conv, its batch norm and ReLU outputs; with max-pools the pooled map, its int64 indices
    (2 floats) and the ReLU after it; the head's logits."""
    if len(input_shape) != 3:
        return [max(out_dim, 1)]
    w, s = cfg.width, input_shape[1]
    bn = 1 if cfg.batch_norm == "batch" else 0
    sizes: list[int] = []
    for _ in range(4):
        if cfg.downsample == "stride":
            s = (s + 1) // 2
            sizes += [w * s * s] * (2 + bn)  # conv, batch norm, ReLU
        else:
            sizes += [w * s * s] * (1 + bn)  # conv, batch norm (same size)
            s //= 2
            sizes += [w * s * s] * 4  # max-pool, its int64 indices (2x), ReLU
    sizes.append(out_dim)
    return sizes


@MODELS.register("conv4")
def build_conv4(cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> nn.Module:
    return Conv4(cfg, input_shape, out_dim)


build_conv4.activation_sizes = activation_sizes  # type: ignore[attr-defined]
