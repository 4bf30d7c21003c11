"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals 2020, Sec. 4): MAML whose inner
loop adapts only the head, the learner's final linear layer.

The paper finds that MAML's inner loop barely changes the body's features (feature reuse), so
ANIL removes the body from it: for a task, theta' = (body, head - alpha * grad_head L_support),
and the body is meta-learned by the outer loop alone. Second order differentiates through the
head's inner steps into the body (the support features set the head's gradient); first order
(`first_order`) treats the head's inner gradients as constants, so the body's meta-gradient
comes from the query loss alone. The support features are computed once per task and the inner
steps run on the head only: the body is neither re-run nor differentiated twice. MAML's grouped
Conv-4 passes adapt every parameter, so ANIL takes MAML's per-task path (measured, glyphs 5-way
1-shot, meta-batch 8, one thread, median step: 1 query a class 51 ms against MAML's grouped 63 ms,
first order 26 against FOMAML's batched 29; 15 queries 189 against 240 ms).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from workbench.core.algorithms.base import loss_and_score
from workbench.core.algorithms.maml import MAML, MAMLParams, Params, sgd_step
from workbench.core.models import call
from workbench.core.params import TaskShape
from workbench.core.registry import ALGORITHMS
from workbench.core.tasks.base import EpisodeBatch, TaskKind


class ANILParams(MAMLParams):
    name: Literal["anil"] = "anil"  # type: ignore[assignment]
    inner_lr: float = Field(
        0.4,
        gt=0,
        le=100,
        description="Head-only inner step size during meta-training (the paper keeps MAML's: 0.4 Omniglot 5-way, 0.1 20-way)",
    )
    first_order: bool = Field(
        False,
        description="First-order ANIL: the head's inner gradients are constants (no second-order terms)",
    )


def head_of(model: nn.Module) -> tuple[str, nn.Linear]:
    """The learner's head: its last nn.Linear module, by name (Conv-4: `head`)."""
    linear = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("ANIL needs a learner whose final layer is an nn.Linear (the head)")
    return linear[-1]


@ALGORITHMS.register("anil")
class ANIL(MAML):
    """MAML with a head-only inner loop (`adapt`); the outer loop updates body and head."""

    Params = ANILParams

    def __init__(self, params: ANILParams, model: nn.Module, kind: TaskKind) -> None:
        super().__init__(params, model, kind)
        name, _ = head_of(model)
        prefix = f"{name}." if name else ""
        self.head_keys = tuple(
            f"{prefix}{k}" for k, _ in model.get_submodule(name).named_parameters()
        )

    def features(self, params: Params, x: torch.Tensor) -> torch.Tensor | None:
        """The body's output on x (the head's input), where the learner splits into body and head
        (Conv-4's `embed`, an MLP's layers before its last); None otherwise (the inner loop then
        re-runs the whole model at each step)."""
        model = self.model
        if self.head_keys == ("head.weight", "head.bias") and hasattr(model, "embed"):
            return model.embed(x, params)
        layers = list(model._modules.items()) if isinstance(model, nn.Sequential) else []
        if not layers or self.head_keys[0] != f"{layers[-1][0]}.weight":
            return None
        for name, layer in layers[:-1]:
            if isinstance(layer, nn.Linear):
                x = F.linear(x, params[f"{name}.weight"], params[f"{name}.bias"])
            elif next(layer.parameters(), None) is None:
                x = layer(x)
            else:
                return None
        return x

    def adapt(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int,
        lr: float,
        create_graph: bool,
    ) -> Params:
        """`steps` gradient steps on the head alone (Sec. 4: the body is left out of the inner
        loop); the body's tensors pass through unchanged. Differentiable when create_graph."""
        if steps == 0:
            return params
        # without create_graph the features are constants of the inner loop: no body graph
        with torch.set_grad_enabled(create_graph):
            feats = self.features(params, x)
        for _ in range(steps):
            head = {k: params[k] for k in self.head_keys}
            out = call(self.model, params, x) if feats is None else F.linear(feats, *head.values())
            loss, _ = loss_and_score(self.kind, out, y)
            grads = torch.autograd.grad(loss, tuple(head.values()), create_graph=create_graph)
            params = {**params, **sgd_step(head, grads, lr)}
        return params

    def batched(self, batch: EpisodeBatch, shape: TaskShape) -> int:
        """None of MAML's grouped passes: they adapt (and differentiate twice) every parameter."""
        return 0

    def first_order_adapted(
        self, batch: EpisodeBatch, theta: Params, tasks: slice, steps: int
    ) -> Params | None:
        return None  # MAML's batched first-order steps move the body too
