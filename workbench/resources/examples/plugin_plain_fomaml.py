"""A plugin algorithm, written plainly: first-order MAML with one loop over the tasks.

Copy this file into your plugins folder ($WORKBENCH_PLUGINS, or `plugins/` in the user config
folder) and "plain-fomaml" appears in `workbench run --algorithm` and in the app's form, its
fields generated from `PlainParams`. (The built-in `fomaml` is the same algorithm with fast
paths; this one is what a plugin author should start from.)
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from workbench.plugin_api import (
    Algorithm,
    AlgorithmParams,
    EpisodeBatch,
    TaskShape,
    call,
    loss_and_score,
    register_algorithm,
    score_name,
    step_values,
)


class PlainParams(AlgorithmParams):
    name: Literal["plain-fomaml"] = "plain-fomaml"
    inner_lr: float = Field(0.4, gt=0, le=100, description="Step size of the inner SGD steps")


@register_algorithm("plain-fomaml")
class PlainFOMAML(Algorithm):
    Params = PlainParams

    def adapt(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict[str, torch.Tensor]:
        """`steps` SGD steps on the support set from the learned initialisation; first order:
        the adapted weights are cut from the graph, so the outer gradient is the query
        gradient at them (d adapted / d init taken as the identity)."""
        params = {k: p.detach().requires_grad_() for k, p in self.model.named_parameters()}
        for _ in range(steps):
            loss, _ = loss_and_score(self.kind, call(self.model, params, x), y)
            grads = torch.autograd.grad(loss, list(params.values()))
            params = {
                k: (p - self.params.inner_lr * g).detach().requires_grad_()
                for (k, p), g in zip(params.items(), grads, strict=True)
            }
        return params

    def meta_train_step(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, float]:
        n = len(batch)
        losses, scores = [], []
        for i in range(n):
            adapted = self.adapt(batch.support_x[i], batch.support_y[i], shape.inner_steps)
            loss, score = loss_and_score(
                self.kind, call(self.model, adapted, batch.query_x[i]), batch.query_y[i]
            )
            grads = torch.autograd.grad(loss, list(adapted.values()))
            for p, g in zip(self.model.parameters(), grads, strict=True):
                p.grad = g / n if p.grad is None else p.grad + g / n  # the mean over the tasks
            losses.append(loss.detach())
            scores.append(score.detach())
        return step_values(
            **{
                "loss": torch.stack(losses).sum() / n,
                score_name(self.kind): torch.stack(scores).sum() / n,
            }
        )

    def evaluate(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, torch.Tensor]:
        scores = []
        for i in range(len(batch)):
            with torch.enable_grad():
                adapted = self.adapt(batch.support_x[i], batch.support_y[i], shape.inner_steps)
            with torch.no_grad():
                _, score = loss_and_score(
                    self.kind, call(self.model, adapted, batch.query_x[i]), batch.query_y[i]
                )
            scores.append(score)
        return {score_name(self.kind): torch.stack(scores).cpu()}
