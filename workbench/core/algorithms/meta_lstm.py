"""Meta-LSTM (Ravi & Larochelle 2017, "Optimization as a Model for Few-Shot Learning").

The learner's parameters are the cell state of an LSTM. Two layers, shared over all
coordinates of the learner's parameter vector:

1. an ordinary LSTM (20 units) reads each coordinate's preprocessed gradient and the
   preprocessed loss (Andrychowicz et al. 2016, p = 10) and gives h_t;
2. the meta-learner cell:
   f_t = sigmoid(W_f [h_t, theta_{t-1}, f_{t-1}] + b_f)
   i_t = sigmoid(W_i [h_t, theta_{t-1}, i_{t-1}] + b_i)
   theta_t = f_t * theta_{t-1} + i_t * (-grad_t)      (raw gradient as the candidate)

theta_0 is learned. The forget bias starts high, U(4, 6), and the input bias low,
U(-5, -4), so the first updates are close to plain SGD with a small step. As in the paper the
gradient and loss fed to the meta-learner are treated as constants (no second-order terms),
but the meta-gradient flows through theta_{t-1} in both the gates and the cell update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from workbench.core.algorithms.base import Algorithm, loss_and_score, score_name, step_values
from workbench.core.models import call
from workbench.core.params import AlgorithmParams, TaskShape
from workbench.core.registry import ALGORITHMS
from workbench.core.tasks.base import EpisodeBatch, TaskKind


class MetaLSTMParams(AlgorithmParams):
    name: Literal["meta-lstm"] = "meta-lstm"
    hidden: int = Field(
        20, ge=1, le=512, description="Units of the first (ordinary) LSTM over gradient and loss"
    )
    preprocess_p: float = Field(
        10.0, gt=0, le=100, description="p of the gradient/loss preprocessing (Andrychowicz et al.)"
    )
    support_batch: int = Field(
        0, ge=0, description="Support examples per update step (0 = the whole support set)"
    )
    forget_bias: tuple[float, float] = Field(
        (4.0, 6.0), description="Forget-gate bias initialised U(lo, hi): high keeps theta"
    )
    input_bias: tuple[float, float] = Field(
        (-5.0, -4.0), description="Input-gate bias initialised U(lo, hi): low = small steps"
    )
    grad_clip: float = Field(
        0.25, ge=0, description="Clip the meta-gradient norm (0.25 in the PyTorch port)"
    )


def preprocess(x: torch.Tensor, p: float) -> torch.Tensor:
    """Andrychowicz et al. (2016): (log|x|/p, sign x) if |x| >= e^-p else (-1, e^p x); [..., 2]."""
    big = x.abs() >= math.exp(-p)
    first = torch.where(big, x.abs().clamp_min(1e-38).log() / p, torch.full_like(x, -1.0))
    second = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([first, second], dim=-1)


class MetaLSTMCell(nn.Module):
    """The coordinate-wise cell whose state is the parameter vector."""

    def __init__(
        self,
        hidden: int,
        n_params: int,
        forget_bias: tuple[float, float],
        input_bias: tuple[float, float],
    ) -> None:
        super().__init__()
        self.W_f = nn.Parameter(torch.empty(hidden + 2, 1).uniform_(-0.01, 0.01))
        self.W_i = nn.Parameter(torch.empty(hidden + 2, 1).uniform_(-0.01, 0.01))
        self.b_f = nn.Parameter(torch.empty(1).uniform_(*forget_bias))
        self.b_i = nn.Parameter(torch.empty(1).uniform_(*input_bias))
        self.theta0 = nn.Parameter(torch.zeros(n_params))  # set from the learner's initialisation

    def forward(
        self,
        h: torch.Tensor,
        grad: torch.Tensor,
        theta: torch.Tensor,
        f: torch.Tensor,
        i: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = theta[:, None]
        f_next = torch.sigmoid(torch.cat([h, c, f], 1) @ self.W_f + self.b_f)
        i_next = torch.sigmoid(torch.cat([h, c, i], 1) @ self.W_i + self.b_i)
        theta_next = f_next[:, 0] * theta - i_next[:, 0] * grad
        return theta_next, f_next, i_next


@ALGORITHMS.register("meta-lstm")
class MetaLSTM(Algorithm):
    Params = MetaLSTMParams

    def __init__(self, params: MetaLSTMParams, model: nn.Module, kind: TaskKind) -> None:
        super().__init__(params, model, kind)
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        for p in model.parameters():  # the learner's own tensors are only a template now
            p.requires_grad_(False)
        self.lstm = nn.LSTMCell(4, params.hidden)
        self.cell = MetaLSTMCell(params.hidden, flat.numel(), params.forget_bias, params.input_bias)
        with torch.no_grad():
            self.cell.theta0.copy_(flat)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, at = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            n = shape.numel()
            out[name] = theta[at : at + n].view(shape)
            at += n
        return out

    def learner_loss(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return loss_and_score(self.kind, call(self.model, self.unflatten(theta), x), y)

    def run_episode(
        self, x: torch.Tensor, y: torch.Tensor, steps: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Unroll the meta-learner for `steps` updates on (x, y); returns theta_T (differentiable
        w.r.t. the meta-learner when grad mode is on)."""
        theta = self.cell.theta0
        n = theta.numel()
        hx = theta.new_zeros(n, self.params.hidden)
        cx = theta.new_zeros(n, self.params.hidden)
        f = theta.new_zeros(n, 1)
        i = theta.new_zeros(n, 1)
        bs = self.params.support_batch or x.shape[0]
        order = (
            torch.randperm(x.shape[0], generator=generator)
            if bs < x.shape[0]
            else torch.arange(x.shape[0])
        )
        for t in range(steps):
            idx = order[(torch.arange(bs) + t * bs) % x.shape[0]].to(x.device)
            probe = theta.detach().requires_grad_()
            with torch.enable_grad():
                loss, _ = self.learner_loss(probe, x[idx], y[idx])
                (grad,) = torch.autograd.grad(loss, probe)
            grad = grad.detach()
            p = self.params.preprocess_p
            inp = torch.cat([preprocess(grad, p), preprocess(loss.detach().expand(n), p)], dim=1)
            hx, cx = self.lstm(inp, (hx, cx))
            theta, f, i = self.cell(hx, grad, theta, f, i)
        return theta

    def support_seeds(self, batch: EpisodeBatch) -> Callable[[int], torch.Generator | None]:
        """Task k's generator of support mini-batches (None: whole support sets). One seed per
        batch from the global RNG, then one generator per task, indexed by the task's place in
        the whole meta-batch (`batch.first`): the draws depend neither on which thread reaches
        the RNG first nor on which rank of a multi-process run trains the task."""
        if not self.params.support_batch:
            return lambda _k: None
        seed = int(torch.randint(2**62, (1,)))
        return lambda k: torch.Generator().manual_seed(seed + batch.first + k)

    def meta_train_step(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, float]:
        n = len(batch)
        losses, scores = [], []
        seeds = self.support_seeds(batch)
        for k in range(n):
            theta = self.run_episode(
                batch.support_x[k], batch.support_y[k], shape.inner_steps, seeds(k)
            )
            loss, score = self.learner_loss(theta, batch.query_x[k], batch.query_y[k])
            (loss / n).backward()
            losses.append(loss.detach())
            scores.append(score.detach())
        loss_sum, score_sum = torch.stack(losses).double().sum(), torch.stack(scores).double().sum()
        return step_values(**{"loss": loss_sum / n, score_name(self.kind): score_sum / n})

    @torch.no_grad()
    def evaluate(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, torch.Tensor]:
        seeds = self.support_seeds(batch)

        def score(k: int) -> float:
            theta = self.run_episode(
                batch.support_x[k], batch.support_y[k], shape.inner_steps, seeds(k)
            )
            return float(self.learner_loss(theta, batch.query_x[k], batch.query_y[k])[1])

        return {score_name(self.kind): torch.tensor(self.per_task(batch, score))}

    @torch.no_grad()
    def predict_after(
        self, batch: EpisodeBatch, x: torch.Tensor, steps: list[int], shape: TaskShape
    ) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for s in steps:
            preds = []
            for k in range(len(batch)):
                theta = self.run_episode(batch.support_x[k], batch.support_y[k], s)
                preds.append(call(self.model, self.unflatten(theta), x[k]))
            out[s] = torch.stack(preds)
        return out
