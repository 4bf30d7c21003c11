"""Learner networks shared by the algorithms, registered by name in MODELS (every module of
this package is imported at the end: a new model is its file)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from workbench.core.params import ModelConfig
from workbench.core.registry import MODELS, import_all

ModelBuilder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int, kind: str
) -> nn.Module:
    """Build the configured learner; `out_dim` 0 means an embedding network without a head."""
    name = cfg.name
    if name == "auto":
        name = "mlp" if kind == "regression" else "conv4"
    return MODELS.get(name)(cfg, input_shape, out_dim)


def call(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`model` evaluated with `params` in place of its own: the model's `functional_forward`
    where it has one (our learners; much cheaper on small episodes), else
    `torch.func.functional_call` (any other nn.Module)."""
    fn = getattr(model, "functional_forward", None)
    return fn(params, x) if fn is not None else functional_call(model, params, (x,))


def stateless(model: nn.Module) -> bool:
    """Whether `call(model, ...)` leaves the module untouched, so that several threads may call
    it at once: a `functional_forward` does; `functional_call` swaps the module's parameters."""
    return getattr(model, "functional_forward", None) is not None


import_all(__name__, __path__, ("conv4", "mlp"))
