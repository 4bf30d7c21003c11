"""MLP: the sinusoid regressor of MAML (1 -> 40 -> 40 -> 1, ReLU)."""

from __future__ import annotations

from torch import nn

from workbench.core.config import ModelConfig
from workbench.core.models import MODELS


@MODELS.register("mlp")
def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int) -> nn.Module:
    dims = [int(input_shape[-1] if len(input_shape) == 1 else _prod(input_shape)), *cfg.hidden]
    layers: list[nn.Module] = [] if len(input_shape) == 1 else [nn.Flatten()]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    if out_dim > 0:
        layers.append(nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
