"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales 2018, "Learning to Compare").

An embedding module f turns images into feature maps; a class's feature map is the sum of its
K support maps (Sec. 3.3); a relation module g scores every (class, query) pair from the two
maps concatenated along the channels, r = sigmoid(...) in [0, 1] (Eq. 1), and training regresses
the scores onto the one-hot match, MSE (Eq. 2). The query's class is the highest score.

Both modules are those of the official Omniglot code (github.com/floodsung/LearningToCompare_FSL,
omniglot_train_*_shot.py):
- embedding: the Conv-4 blocks (3x3 conv, batch norm, ReLU) with 2x2 max-pools after the first
  two only, and the first two convolutions unpadded: 28x28 images give 64x5x5 feature maps
  (28 -> 26 -> 13 -> 11 -> 5 -> 5 -> 5). The model section's flattened Conv-4 embedding has lost
  the spatial layout the relation module convolves over, so this encoder is built here, with the
  configured learner's input channels, width (`model.width`) and batch norm (`model.batch_norm`);
- relation module: two blocks (3x3 conv padded, batch norm, ReLU, 2x2 max-pool: 5 -> 2 -> 1 on
  Omniglot) then FC width -> `hidden` (8) with ReLU, FC hidden -> 1 with sigmoid. Larger images
  leave maps over 1x1 after its two pools: they are max-pooled to 1x1 first (the paper's
  miniImageNet module instead has unpadded convolutions and a 3x3 FC input); a pool meeting a
  1-pixel map is skipped;
- initialisation as `weights_init` there: convolutions N(0, 2 / (9 * out_channels)) with zero
  bias, batch norm weight 1 and bias 0, linear N(0, 0.01) with bias 1.

Batch norm (`batch_norm`). The official modules are `nn.BatchNorm2d(64, momentum=1)` and never
put in eval mode (no `.eval()` anywhere in the repository, training or testing), so every pass
is normalised by its own batch statistics, at training and at test: the support images (one
pass), the query images (another pass) and all the (class, query) pairs (the relation module's
pass). PyTorch's running statistics are an exponential average, running <- (1 - momentum) *
running + momentum * batch (mean, and the unbiased variance), so momentum 1 makes them exactly
the statistics of the last batch seen (not the cumulative average: that is momentum=None);
since the official code never reads them, they do not matter there. "batch" (the default) is
that behaviour; "running" keeps running statistics with `bn_momentum` and normalises with them
in evaluation (at momentum 1: the last training pass's statistics, those of one task's queries
for the encoder and of its pairs for the relation module).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from workbench.core.algorithms.base import Algorithm, step_values
from workbench.core.errors import ConfigError
from workbench.core.params import AlgorithmParams, Count, Real, TaskShape
from workbench.core.registry import ALGORITHMS
from workbench.core.task_threads import task_workers
from workbench.core.tasks.base import EpisodeBatch, TaskKind

BatchNormMode = Literal["batch", "running"]


class RelationParams(AlgorithmParams):
    name: Literal["relation"] = "relation"
    hidden: Count = Field(
        8,
        ge=1,
        le=4096,
        description="Units of the relation module's hidden FC layer (8 in the paper)",
    )
    batch_norm: BatchNormMode = Field(
        "batch",
        description="batch: every pass normalised by its own statistics in training and test (the"
        " official code: BatchNorm momentum 1, never in eval mode); running: running statistics"
        " (bn_momentum) used in evaluation",
    )
    bn_momentum: Real = Field(
        1.0,
        gt=0,
        le=1,
        description="running mode: running <- (1 - m) running + m batch; 1 keeps the last batch's statistics",
    )


def _norm(width: int, enabled: bool, mode: BatchNormMode, momentum: float) -> nn.Module:
    """A block's batch norm: no running statistics in "batch" mode (PyTorch then normalises with
    the batch's statistics in train and eval mode alike), running ones in "running" mode."""
    if not enabled:
        return nn.Identity()
    return nn.BatchNorm2d(width, momentum=momentum, track_running_stats=mode == "running")


def _pool(h: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool (floor, as nn.MaxPool2d(2)); a map under 2x2 passes unchanged (small images)."""
    return F.max_pool2d(h, 2) if min(h.shape[-2:]) >= 2 else h


def _blocks(
    c_in: int,
    width: int,
    paddings: tuple[int, ...],
    batch_norm: bool,
    mode: BatchNormMode,
    momentum: float,
) -> nn.ModuleList:
    """Blocks of 3x3 conv, batch norm and ReLU, one for each padding: the first from `c_in`
    channels, the rest from `width`."""
    return nn.ModuleList(
        nn.Sequential(
            nn.Conv2d(c_in if i == 0 else width, width, 3, padding=padding),
            _norm(width, batch_norm, mode, momentum),
            nn.ReLU(),
        )
        for i, padding in enumerate(paddings)
    )


def init_as_official(module: nn.Module) -> None:
    """`weights_init` of the official code: He-normal convolutions, unit batch norm, and linear
    layers N(0, 0.01) with bias 1 (the scores start near sigmoid(1) for every pair)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.ones_(m.bias)


class RelationEncoder(nn.Module):
    """The embedding module f: Conv-4 blocks, pools after the first two only, the first two
    convolutions unpadded (64x5x5 maps on 28x28 images)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        batch_norm: bool = True,
        mode: BatchNormMode = "batch",
        momentum: float = 1.0,
    ) -> None:
        super().__init__()
        self.blocks = _blocks(in_channels, width, (0, 0, 1, 1), batch_norm, mode, momentum)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature maps [N, width, H', W'] (not flattened: the relation module convolves them)."""
        if min(x.shape[-2:]) < 8:
            raise ValueError(
                f"Relation Networks need images of at least 8x8, not {tuple(x.shape[-2:])}"
            )
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < 2:
                x = _pool(x)
        return x


class RelationModule(nn.Module):
    """The relation module g: two conv blocks with pools on the concatenated pair of maps
    [2 * width channels], then FC -> ReLU -> FC -> sigmoid: one score in [0, 1] per pair."""

    def __init__(
        self,
        width: int,
        hidden: int,
        batch_norm: bool = True,
        mode: BatchNormMode = "batch",
        momentum: float = 1.0,
    ) -> None:
        super().__init__()
        self.blocks = _blocks(2 * width, width, (1, 1), batch_norm, mode, momentum)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Scores [P] of P concatenated pairs [P, 2 * width, H, W] (the paper's form)."""
        h = pairs
        for block in self.blocks:
            h = _pool(block(h))
        return self._head(h)

    def scores(self, classes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Scores [Q, ways] of every (query, class) pair: `forward` on `relation_pairs(classes,
        queries)`, without forming the pairs for the first convolution. A convolution is linear
        in its input channels (zero padding included), so conv(cat(c_k, q_j)) = conv_c(c_k) +
        conv_q(q_j) + bias, with the weight split in its class and query halves: ways + Q
        convolutions of `width` channels instead of ways x Q of 2 * width (20-way, 10 queries a
        class: 220 against 4,000). Batch norm and what follows run on the pairs' sums."""
        conv, norm, relu = self.blocks[0]
        c = classes.shape[1]
        a = F.conv2d(classes, conv.weight[:, :c], conv.bias, padding=conv.padding)
        b = F.conv2d(queries, conv.weight[:, c:], None, padding=conv.padding)
        h = (b[:, None] + a[None]).flatten(0, 1)  # query-major pairs, as `relation_pairs`
        h = _pool(relu(norm(h)))
        for block in self.blocks[1:]:
            h = _pool(block(h))
        return self._head(h).view(queries.shape[0], classes.shape[0])

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_max_pool2d(h, 1).flatten(1)  # 1x1 on Omniglot already: the identity
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(h)))).squeeze(1)


def class_feature_sums(features: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """Each class's support feature maps summed over its K shots (Sec. 3.3: element-wise sum):
    [ways, C, H, W] from features [S, C, H, W] with labels [S]."""
    onehot = F.one_hot(labels, ways).to(features.dtype)  # [S, ways]
    return (onehot.t() @ features.flatten(1)).view(ways, *features.shape[1:])


def relation_pairs(classes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Every (query j, class k) pair as cat(class map k, query map j) on the channels, query-major
    as in the official code: [Q * ways, 2C, H, W]."""
    q, ways = queries.shape[0], classes.shape[0]
    pairs = torch.cat(
        [
            classes[None].expand(q, *classes.shape),
            queries[:, None].expand(q, ways, *queries.shape[1:]),
        ],
        dim=2,
    )
    return pairs.reshape(q * ways, *pairs.shape[2:])


def _has_batch_norm(model: nn.Module) -> bool:
    return any("Norm" in type(m).__name__ for m in model.modules())


@ALGORITHMS.register("relation")
class RelationNetworks(Algorithm):
    """Embedding module + relation module, trained end to end with MSE on the relation scores."""

    Params = RelationParams
    supports = frozenset({"classification"})
    uses_head = False
    same_ways = False
    inner_step_phases = ()  # metric-based: no adaptation steps

    def __init__(self, params: RelationParams, model: nn.Module, kind: TaskKind) -> None:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is None:
            raise ConfigError(
                "model.name", "relation needs a convolutional learner (conv4) on image datasets"
            )
        bn = _has_batch_norm(model)
        mode, momentum = params.batch_norm, params.bn_momentum
        encoder = RelationEncoder(conv.in_channels, conv.out_channels, bn, mode, momentum)
        super().__init__(params, encoder, kind)
        self.relation = RelationModule(conv.out_channels, params.hidden, bn, mode, momentum)
        init_as_official(self)

    def scores(self, batch: EpisodeBatch, i: int) -> torch.Tensor:
        """Relation scores [Q, ways] of task i. The support and the query images go through the
        encoder in separate passes, each normalised by its own statistics (the official code)."""
        support = self.model(batch.support_x[i])
        queries = self.model(batch.query_x[i])
        classes = class_feature_sums(support, batch.support_y[i], batch.ways)
        return self.relation.scores(classes, queries)

    def query_scores(self, batch: EpisodeBatch, i: int) -> torch.Tensor:
        return self.scores(batch, i)

    def meta_train_step(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, float]:
        n = len(batch)
        losses, accs = [], []
        for i in range(n):
            scores = self.scores(batch, i)
            target = F.one_hot(batch.query_y[i], batch.ways).to(scores.dtype)
            loss = F.mse_loss(scores, target)  # Eq. 2: regress the scores onto the match
            (loss / n).backward()
            losses.append(loss.detach())
            accs.append((scores.argmax(1) == batch.query_y[i]).float().mean())
        loss_sum, acc_sum = torch.stack(losses).double().sum(), torch.stack(accs).double().sum()
        return step_values(loss=loss_sum / n, accuracy=acc_sum / n)

    def workers(self, batch: EpisodeBatch) -> int:
        """Evaluation may share tasks among threads: no parameters are swapped, and in eval mode
        batch norm only reads its running statistics (or keeps none)."""
        examples = batch.support_x.shape[1] + batch.query_x.shape[1]
        return 1 if self._small(examples) else task_workers(batch.query_x.device, len(batch))

    @torch.no_grad()
    def evaluate(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, torch.Tensor]:
        acc = self.per_task(
            batch, lambda i: (self.scores(batch, i).argmax(1) == batch.query_y[i]).float().mean()
        )
        return {"accuracy": torch.stack(acc).cpu()}
