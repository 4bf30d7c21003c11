"""MLP: the sinusoid regressor of MAML (1 -> 40 -> 40 -> 1, ReLU)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from workbench.core.params import ModelConfig
from workbench.core.registry import MODELS


class MLP(nn.Sequential):
    """An nn.Sequential (same state dict) with a direct functional forward for MAML."""

    def functional_forward(
        self, params: Mapping[str, torch.Tensor] | None, x: torch.Tensor
    ) -> torch.Tensor:
        if params is None:
            return self(x)
        for name, layer in self._modules.items():
            if isinstance(layer, nn.Linear):
                x = F.linear(x, params[f"{name}.weight"], params[f"{name}.bias"])
            else:
                x = layer(x)
        return x


@MODELS.register("mlp")
def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> nn.Module:
    dims = [int(input_shape[-1] if len(input_shape) == 1 else _prod(input_shape)), *cfg.hidden]
    layers: list[nn.Module] = [] if len(input_shape) == 1 else [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    if out_dim > 0:
        layers.append(nn.Linear(dims[-1], out_dim))
    return MLP(*layers)


def activation_sizes(cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> list[int]:
    """Per example, the maps of one forward (`models.ActivationSizes`): each hidden layer's
    linear and ReLU outputs, then the output."""
    sizes: list[int] = []
    for h in cfg.hidden:
        sizes += [h, h]
    return [*sizes, max(out_dim, 1)]


build_mlp.activation_sizes = activation_sizes  # type: ignore[attr-defined]


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
