"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016).

A query x̂ is labelled by attention over the support set: a(x̂, x_i) = softmax_i c(f(x̂), g(x_i))
with c the cosine similarity (Eq. 1-2), and the prediction is the attention-weighted sum of the
support one-hot labels, P(y = k | x̂, S) = sum_{i: y_i = k} a(x̂, x_i). Training minimises the
cross-entropy -log P(y | x̂, S) on the query set of episodes shaped like the test ones (Eq. 6).

The embeddings f and g are the learner network (the Conv-4 of the config, as ProtoNet's: no
head). With full context embeddings (`fce`, Appendix A) they also read the whole support set:
g(x_i, S) = h_i(forward) + h_i(backward) + g'(x_i), a bidirectional LSTM over the support
embeddings g' with a skip connection (A.2); f(x̂, S) = attLSTM(f'(x̂), g(S), K), K "processing
steps" of an LSTM whose state is read against g(S) (A.1):

    h^_k, c_k = LSTM(f'(x̂), [h_{k-1}, r_{k-1}], c_{k-1}),   h_k = h^_k + f'(x̂),
    r_{k-1} = sum_i softmax_i(h_{k-1}^T g(x_i)) g(x_i),     f(x̂, S) = h_K.

The concatenation [h_{k-1}, r_{k-1}] is the recurrent input; an LSTM cell whose input is
[f'(x̂), r_{k-1}] and whose hidden state is h_{k-1} computes exactly the same gates (they are
linear in the concatenation), so that is how it is built. The paper leaves the start unstated:
here h^_0 = 0 and c_0 = 0, so h_0 = f'(x̂) and the first read attends with the query itself.
The paper's Omniglot numbers (Table 1) are without FCE; it reports FCE on miniImageNet.

`cosine_scale` multiplies the cosines before the softmax; 1 is the paper's Eq. 1-2, 10 the
default and the presets'. Cosines in [-1, 1] make a soft attention (5-way 1-shot: at most 0.65 on
one example) that trains slowly. The widely used reproduction that reaches the paper's numbers
(github.com/AntreasAntoniou/MatchingNetworks, DistanceNetwork) divides the dot product by the
support embedding's norm only, so the query's norm acts as a learned temperature; a stated fixed
scale is the explicit form of that. Measured here (Omniglot, the 20-way preset, 20-way
validation): at 1, 58.8 / 58.8 / 63.4 % after 1,000 / 2,000 / 3,000 steps (2,500 steps: 78.4 %
5-way and 58.2 % 20-way test); at 10, 87.8 / 90.2 % after 1,000 / 2,000 (96.3 / 89.0 % test).
RESULTS.md has the longer run. glyphs, 60 steps 5-way 1-shot: 72.6 % at 1, 82.1 % at 10.
Like every setting it is recorded in the run's config.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from workbench.core.algorithms.base import Algorithm, step_values
from workbench.core.errors import ConfigError
from workbench.core.params import AlgorithmParams, Count, Real, TaskShape
from workbench.core.registry import ALGORITHMS
from workbench.core.tasks.base import EpisodeBatch, TaskKind


class MatchingParams(AlgorithmParams):
    name: Literal["matching"] = "matching"
    fce: bool = Field(
        False,
        description="Full context embeddings (Appendix A): a bidirectional LSTM over the support"
        " embeddings and an attention LSTM over each query; the paper's Omniglot results are without",
    )
    fce_steps: Count = Field(
        5,
        ge=1,
        le=100,
        description="Processing steps K of the FCE attention LSTM (the paper does not give its K)",
    )
    cosine_scale: Real = Field(
        10.0,
        gt=0,
        le=1000,
        description="Multiplies the cosines before the attention softmax: 1 is the paper's Eq. 1-2"
        " (cosines in [-1, 1], a soft attention that trains slowly); 10 sharpens it enough to"
        " train in a CPU budget",
    )


def cosine_similarities(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """c(f(x̂), g(x_i)) for every query and support embedding: [Q, S], each in [-1, 1]."""
    return F.normalize(query, dim=1, eps=1e-8) @ F.normalize(support, dim=1, eps=1e-8).t()


def matching_log_probs(
    similarities: torch.Tensor, support_y: torch.Tensor, ways: int
) -> torch.Tensor:
    """log P(y = k | x̂, S) [Q, ways] for attention a = softmax over the support set of
    `similarities` [Q, S] and P(k) = sum_{i: y_i = k} a_i (the attention-weighted one-hot labels).

    Computed as log_softmax over the classes of logsumexp_{i: y_i = k} s_i, which equals
    log(sum_{i in k} e^{s_i} / sum_i e^{s_i}) without forming the probabilities: the
    cross-entropy stays finite however small a class's attention gets."""
    member = F.one_hot(support_y, ways).t().bool()  # [ways, S]
    masked = similarities[:, None, :].masked_fill(~member[None], float("-inf"))  # [Q, ways, S]
    return torch.log_softmax(torch.logsumexp(masked, dim=2), dim=1)


class FullContextEmbedding(nn.Module):
    """The two LSTMs of FCE over embeddings of width `dim` (Appendix A): `support` is g(., S),
    `query` is f(., S). Their parameters are meta-learned with the embedding network."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.support_lstm = nn.LSTM(dim, dim, bidirectional=True)
        # input [f'(x̂), r_{k-1}], hidden h_{k-1}: the paper's LSTM(f'(x̂), [h, r], c) (see module doc)
        self.query_cell = nn.LSTMCell(2 * dim, dim)

    def support(self, g0: torch.Tensor) -> torch.Tensor:
        """g(x_i, S) = h_i(fwd) + h_i(bwd) + g'(x_i) for the support embeddings g0 [S, D] read as
        one sequence (in the episode's order)."""
        out, _ = self.support_lstm(g0[:, None])  # [S, 1, 2D]: one sequence of length S
        out = out[:, 0]
        return out[:, : self.dim] + out[:, self.dim :] + g0

    def query(self, f0: torch.Tensor, g: torch.Tensor, steps: int) -> torch.Tensor:
        """f(x̂, S) = h_K after `steps` reads of g [S, D] by every query embedding f0 [Q, D]."""
        h, c = f0, torch.zeros_like(f0)  # h^_0 = 0: h_0 = f'(x̂)
        for _ in range(steps):
            read = torch.softmax(h @ g.t(), dim=1) @ g  # r_{k-1}, attending with h_{k-1}
            h_hat, c = self.query_cell(torch.cat([f0, read], dim=1), (h, c))
            h = h_hat + f0
        return h


@ALGORITHMS.register("matching")
class MatchingNetworks(Algorithm):
    """Cosine attention over the support set, trained with the cross-entropy of its class
    probabilities; the embedding network is the learner without a head (as ProtoNet's)."""

    Params = MatchingParams
    supports = frozenset({"classification"})
    uses_head = False
    same_ways = False  # nothing fixes the ways: training may use more than testing
    inner_step_phases = ()  # metric-based: no adaptation steps

    def __init__(self, params: MatchingParams, model: nn.Module, kind: TaskKind) -> None:
        super().__init__(params, model, kind)
        self.fce_steps = params.fce_steps
        self.cosine_scale = params.cosine_scale
        self.fce: FullContextEmbedding | None = None
        if params.fce:
            dim = getattr(model, "embedding_dim", None)
            if not isinstance(dim, int):
                raise ConfigError(
                    "algorithm.fce",
                    "FCE needs an embedding network that states its width (`embedding_dim`,"
                    " as conv4 does)",
                )
            self.fce = FullContextEmbedding(dim)

    def log_probs(self, batch: EpisodeBatch, i: int) -> torch.Tensor:
        """log P(y | x̂, S) [Q, ways] of task i's queries. Support and query go through the
        embedding network in one pass (batch statistics span both, as in ProtoNet here)."""
        ns = batch.support_x.shape[1]
        z = self.model(torch.cat([batch.support_x[i], batch.query_x[i]]))
        g, f = z[:ns], z[ns:]
        if self.fce is not None:
            g = self.fce.support(g)
            f = self.fce.query(f, g, self.fce_steps)
        sims = cosine_similarities(f, g)
        if self.cosine_scale != 1.0:
            sims = sims * self.cosine_scale
        return matching_log_probs(sims, batch.support_y[i], batch.ways)

    def query_scores(self, batch: EpisodeBatch, i: int) -> torch.Tensor:
        return self.log_probs(batch, i)

    def meta_train_step(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, float]:
        n = len(batch)
        losses, accs = [], []
        for i in range(n):
            log_p = self.log_probs(batch, i)
            loss = F.nll_loss(log_p, batch.query_y[i])  # -log P(y | x̂, S), Eq. 6
            (loss / n).backward()
            losses.append(loss.detach())
            accs.append((log_p.argmax(1) == batch.query_y[i]).float().mean())
        loss_sum, acc_sum = torch.stack(losses).double().sum(), torch.stack(accs).double().sum()
        return step_values(loss=loss_sum / n, accuracy=acc_sum / n)

    @torch.no_grad()
    def evaluate(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, torch.Tensor]:
        acc = self.per_task(
            batch,
            lambda i: (self.log_probs(batch, i).argmax(1) == batch.query_y[i]).float().mean(),
        )
        return {"accuracy": torch.stack(acc).cpu()}
