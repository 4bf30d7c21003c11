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
# What a builder may declare for the memory check (`core/footprint.py`) as its attribute
# `activation_sizes` (a function, or a staticmethod of a builder class), (ModelConfig,
# input_shape, out_dim) -> list[int]: per example, the elements of each map one training
# forward keeps for its backward (what autograd saves: conv, norm and activation outputs, a
# max-pool's int64 indices as 2 floats each; not the input, which the estimate adds itself, nor
# the weights, counted from the built model). A builder without it is estimated as an MLP over
# the flattened input, with a logged note. A plugin sets `build.activation_sizes = fn`.
ActivationSizes = Callable[[ModelConfig, tuple[int, ...], int], list[int]]


def model_name(cfg: ModelConfig, kind: str) -> str:
    """The registered name of the configured learner ("auto": Conv-4 for images, else MLP)."""
    if cfg.name == "auto":
        return "mlp" if kind == "regression" else "conv4"
    return cfg.name


def build_model(
    cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int, kind: str
) -> nn.Module:
    """Build the configured learner; `out_dim` 0 means an embedding network without a head."""
    return MODELS.get(model_name(cfg, kind))(cfg, input_shape, out_dim)


def activation_sizes(
    cfg: ModelConfig, input_shape: tuple[int, ...], out_dim: int, kind: str
) -> list[int] | None:
    """The configured learner's own `activation_sizes` (see `ActivationSizes`), or None where
    its builder declares none."""
    fn: ActivationSizes | None = getattr(
        MODELS.get(model_name(cfg, kind)), "activation_sizes", None
    )
    return None if fn is None else [int(n) for n in fn(cfg, input_shape, out_dim)]


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
