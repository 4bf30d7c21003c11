"""Learner networks shared by the algorithms, registered by name in MODELS."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from workbench.core.config import ModelConfig
from workbench.core.registry import Registry

ModelBuilder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model", "model.name")

from workbench.core.models import conv4, mlp  # noqa: E402,F401


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int, kind: str
) -> nn.Module:
    """Build the configured learner; `out_dim` 0 means an embedding network without a head."""
    name = cfg.name
    if name == "auto":
        name = "mlp" if kind == "regression" else "conv4"
    return MODELS.get(name)(cfg, input_shape, out_dim)
