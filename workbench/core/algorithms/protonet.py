"""Prototypical Networks (Snell, Swersky & Zemel 2017).

A class's prototype is the mean embedding of its support examples; a query's logits are the
negative squared Euclidean distances to the prototypes. Training may use more ways than
testing (60-way for Omniglot): the train and eval task shapes are separate in the config.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from workbench.core.algorithms.base import Algorithm, step_values
from workbench.core.params import AlgorithmParams, TaskShape
from workbench.core.registry import ALGORITHMS
from workbench.core.tasks.base import EpisodeBatch


class ProtoNetParams(AlgorithmParams):
    name: Literal["protonet"] = "protonet"


def prototype_logits(
    support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int
) -> torch.Tensor:
    """Logits [Q, ways] = -||q - c_k||^2 with c_k the mean support embedding of class k."""
    onehot = nn.functional.one_hot(support_y, ways).to(support.dtype)  # [S, ways]
    protos = onehot.t() @ support / onehot.sum(0)[:, None]  # [ways, D]
    # ||q||^2 - 2 q.c + ||c||^2, one matmul instead of a [Q, ways, D] difference tensor
    d2 = (
        (query * query).sum(1, keepdim=True)
        - 2 * query @ protos.t()
        + (protos * protos).sum(1)[None]
    )
    return -d2


@ALGORITHMS.register("protonet")
class ProtoNet(Algorithm):
    Params = ProtoNetParams
    supports = frozenset({"classification"})
    uses_head = False
    same_ways = False
    inner_step_phases = ()  # metric-based: no adaptation steps at all

    def logits(self, batch: EpisodeBatch, i: int) -> torch.Tensor:
        """Support and query go through the network in one pass (batch statistics span both)."""
        ns = batch.support_x.shape[1]
        z = self.model(torch.cat([batch.support_x[i], batch.query_x[i]]))
        return prototype_logits(z[:ns], batch.support_y[i], z[ns:], batch.ways)

    def query_scores(self, batch: EpisodeBatch, i: int) -> torch.Tensor:
        return self.logits(batch, i)

    def meta_train_step(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, float]:
        n = len(batch)
        losses, accs = [], []
        for i in range(n):
            logits = self.logits(batch, i)
            loss = nn.functional.cross_entropy(logits, batch.query_y[i])
            (loss / n).backward()
            losses.append(loss.detach())
            accs.append((logits.argmax(1) == batch.query_y[i]).float().mean())
        # one read of the device per step (`step_values`), not two per task
        loss_sum, acc_sum = torch.stack(losses).double().sum(), torch.stack(accs).double().sum()
        return step_values(loss=loss_sum / n, accuracy=acc_sum / n)

    @torch.no_grad()
    def evaluate(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, torch.Tensor]:
        acc = self.per_task(
            batch, lambda i: (self.logits(batch, i).argmax(1) == batch.query_y[i]).float().mean()
        )
        return {"accuracy": torch.stack(acc).cpu()}
