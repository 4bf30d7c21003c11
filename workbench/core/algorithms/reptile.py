"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms",
arXiv:1803.02999): train on a task for k steps, then move the initialisation towards the
weights the task reached.

Batched Reptile (the paper's Algorithm 2): for each of the meta-batch's n tasks, phi_i = k
inner steps from theta on minibatches of the task's support set; then theta += epsilon *
(mean_i phi_i - theta), with epsilon annealed linearly to 0 over training. There is no
meta-gradient and no query loss in the update: the update is plain SGD at rate epsilon on the
"gradient" theta - mean_i phi_i, which `meta_train_step` leaves in `.grad` and the engine
steps with this algorithm's own outer optimiser (`outer_optimizer`: SGD; `outer_lr`: the
linear annealing). The query set is scored only for the step's metrics.

What follows the official code (github.com/openai/supervised-reptile) rather than the text:
- the inner optimiser is Adam with beta1 = 0 (TensorFlow's defaults otherwise: beta2 0.999,
  epsilon 1e-8, TF's update lr * sqrt(1 - beta2^t) * g / (sqrt(v) + epsilon)), and its state
  is never reset in training: the second moments and the step count run on from task to task
  and from one meta-step to the next (Reptile restores only the trainable variables after a
  task; Adam's slots are global variables). Evaluation starts every episode from training's
  Adam state and throws its own changes away (the code backs up and restores all variables
  around an evaluation). `carry_adam_state=false` gives each task a fresh Adam instead. Here
  that state is buffers of this module, so checkpoints save it and a resumed run continues it;
- inner minibatches are drawn without replacement from the support set, reshuffled at each
  pass, a minibatch running on into the next pass (`_mini_batches`);
- batch norm always normalises with the statistics of the batch it is given. At test,
  `transductive` scores all queries in one batch ("Reptile + Transduction" in the paper's
  tables); otherwise each query is classified in a batch of the support set plus that query
  alone, so no query sees another (the paper's plain "Reptile" rows). Training's query metric
  is always transductive: one batch, and it does not enter the update.

Tasks run one after another (the carried Adam state makes the order part of the algorithm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from workbench.core.algorithms.base import Algorithm, loss_and_score, score_name, step_values
from workbench.core.models import call
from workbench.core.params import AlgorithmParams, Count, EvalStepSize, Real, StepSize, TaskShape
from workbench.core.registry import ALGORITHMS
from workbench.core.tasks.base import EpisodeBatch, TaskKind

# the official code's inner optimiser: tf.train.AdamOptimizer(beta1=0) with TF's defaults
ADAM_BETA2 = 0.999
ADAM_EPSILON = 1e-8


class ReptileParams(AlgorithmParams):
    name: Literal["reptile"] = "reptile"
    meta_lr: Real = Field(
        1.0,
        gt=0,
        le=10,
        description="Outer step size epsilon at the start: theta += epsilon (mean phi - theta),"
        " plain SGD on theta - mean phi (official Omniglot runs: --meta-step 1)",
    )
    meta_lr_final: Real = Field(
        0.0,
        ge=0,
        le=10,
        description="epsilon at the end of training, reached linearly from meta_lr (the paper"
        " anneals to 0: --meta-step-final 0)",
    )
    inner_optimizer: Literal["adam", "sgd"] = Field(
        "adam",
        description="Inner-loop optimiser: Adam with beta1 = 0 (the paper's) or plain SGD",
    )
    inner_lr: StepSize = Field(
        0.001,
        description="Inner step size: Adam's (official 0.001 Omniglot 5-way, 0.0005 20-way) or SGD's alpha",
    )
    eval_inner_lr: EvalStepSize = Field(
        None, description="Inner step size at validation/test (empty: same as inner_lr)"
    )
    inner_batch: Count = Field(
        10,
        ge=0,
        le=100_000,
        description="Support examples per inner step during meta-training, drawn without replacement"
        " and reshuffled each pass (official 10 Omniglot 5-way, 20 20-way); 0: the whole support set",
    )
    eval_inner_batch: Count = Field(
        0,
        ge=0,
        le=100_000,
        description="Support examples per inner step at validation/test (official 5 for 5-way"
        " 1-shot, 10 for 20-way); 0: the whole support set",
    )
    carry_adam_state: bool = Field(
        True,
        description="Inner Adam's second moments and step count run on from task to task and"
        " step to step, as in the official code (evaluation starts from them and discards its"
        " changes); false: a fresh Adam for every task",
    )
    transductive: bool = Field(
        True,
        description="Test queries share one batch-norm batch (the paper's 'Reptile +"
        " Transduction'); false: each query is classified in a batch of the support set plus"
        " that query alone (the paper's plain 'Reptile')",
    )


Params = dict[str, torch.Tensor]


class AdamState:
    """The inner Adam's state with beta1 = 0 (no first moment): the second moments `v` (in the
    order of the learner's parameters) and the number of steps taken `t`."""

    def __init__(self, v: list[torch.Tensor], t: int) -> None:
        self.v, self.t = v, t

    def step(self, params: list[torch.Tensor], grads: Sequence[torch.Tensor], lr: float) -> None:
        """One in-place Adam step, TensorFlow's form (as the official code ran it)."""
        self.t += 1
        torch._foreach_mul_(self.v, ADAM_BETA2)
        torch._foreach_addcmul_(self.v, grads, grads, value=1 - ADAM_BETA2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_add_(denom, ADAM_EPSILON)
        lr_t = lr * math.sqrt(1 - ADAM_BETA2**self.t)
        torch._foreach_addcdiv_(params, list(grads), denom, value=-lr_t)


def minibatches(
    n: int, size: int, count: int, generator: torch.Generator | None
) -> list[torch.Tensor | None]:
    """Indices of `count` inner minibatches of `size` out of n examples, as the official
    `_mini_batches` draws them (no replacement; the examples are reshuffled at each pass and a
    minibatch may run on into the next pass). None: the whole set (size 0, or a multiple of n:
    each example equally often, so the same mean loss and batch-norm statistics)."""
    if size == 0 or size % n == 0 or generator is None:
        return [None] * count
    passes = -(-size * count // n)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
    return list(order[: size * count].view(count, size))


def task_loss(kind: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The inner loop's loss: cross-entropy or MSE (no score: nothing reads it)."""
    return F.cross_entropy(out, y) if kind == "classification" else F.mse_loss(out, y)


def _key(name: str) -> str:
    """A parameter name as a buffer name (no dots): features.0.weight -> features__0__weight."""
    return name.replace(".", "__")


@ALGORITHMS.register("reptile")
class Reptile(Algorithm):
    """Reptile: k inner steps per task (Adam with beta1 = 0, or SGD), then theta moves towards
    the mean of the tasks' final weights by epsilon, annealed linearly (`outer_lr`)."""

    Params = ReptileParams

    def __init__(self, params: ReptileParams, model: nn.Module, kind: TaskKind) -> None:
        super().__init__(params, model, kind)
        self.names = [name for name, _ in model.named_parameters()]
        # batch norm makes a prediction depend on the rest of its batch: the only case where
        # the non-transductive protocol needs a forward pass per query
        self.batch_norm = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        )
        if params.inner_optimizer == "adam":
            # the inner Adam's carried state: saved in checkpoints with the weights
            self.adam_v = nn.Module()
            for name, p in model.named_parameters():
                self.adam_v.register_buffer(_key(name), torch.zeros_like(p))
            self.register_buffer("adam_steps", torch.zeros((), dtype=torch.int64))

    # ---- the outer update -------------------------------------------------------------
    def outer_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """Plain SGD on .grad = theta - mean phi: theta - epsilon (theta - mean phi) is exactly
        Reptile's theta + epsilon (mean phi - theta)."""
        return torch.optim.SGD(params, lr=self.params.meta_lr)

    def outer_lr(self, step: int, steps: int) -> float:
        """epsilon for step `step` (0-based) of `steps`: linear from meta_lr to meta_lr_final
        as the official code anneals it (frac = step / steps), times the halving schedule
        where `lr_halve_every` asks for one."""
        a = self.params
        frac = step / steps
        eps = frac * a.meta_lr_final + (1 - frac) * a.meta_lr
        return eps * (0.5 ** (step // a.lr_halve_every) if a.lr_halve_every else 1.0)

    # ---- the inner loop ---------------------------------------------------------------
    def adam_state(self, carried: bool) -> AdamState | None:
        """The inner Adam's state to start from: the carried buffers themselves (training),
        a copy of them (evaluation: its changes are discarded), fresh zeros, or None (SGD)."""
        if self.params.inner_optimizer != "adam":
            return None
        if not self.params.carry_adam_state:
            return AdamState([torch.zeros_like(v) for v in self.adam_v.buffers()], 0)
        v = list(self.adam_v.buffers())
        return AdamState(v if carried else [t.clone() for t in v], int(self.adam_steps))

    def adapt(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batches: list[torch.Tensor | None],
        lr: float,
        state: AdamState | None,
    ) -> Params:
        """phi after one inner step per minibatch of (x, y) (indices; None: all of it) from
        the current theta, with Adam (state) or SGD (None); no graph is kept."""
        phi = [p.detach().clone().requires_grad_() for p in self.model.parameters()]
        named = dict(zip(self.names, phi, strict=True))  # the same tensors, stepped in place
        for idx in batches:
            xb, yb = (x, y) if idx is None else (x[idx], y[idx])
            with torch.enable_grad():
                loss = task_loss(self.kind, call(self.model, named, xb), yb)
                grads = torch.autograd.grad(loss, phi)
            with torch.no_grad():
                if state is None:
                    torch._foreach_add_(phi, grads, alpha=-lr)
                else:
                    state.step(phi, grads, lr)
        return {k: p.detach() for k, p in named.items()}

    def batch_seeds(self, batch: EpisodeBatch, size: int) -> list[torch.Generator | None]:
        """A generator of inner minibatches per task (None where every minibatch is the whole
        support set): one seed from the global RNG per meta-batch, offset by the task's index
        in the whole meta-batch (`batch.first`), so a task draws the same on any rank and with
        any number of threads, and the global RNG moves only where minibatches are drawn."""
        n_support = batch.support_x.shape[1]
        if size == 0 or size % n_support == 0:
            return [None] * len(batch)
        seed = int(torch.randint(2**62, (1,)))
        return [torch.Generator().manual_seed(seed + batch.first + i) for i in range(len(batch))]

    def task_batches(
        self, batch: EpisodeBatch, size: int, steps: int, gen: torch.Generator | None
    ) -> list[torch.Tensor | None]:
        """A task's minibatch indices for `steps` inner steps, on the batch's device (one copy)."""
        idx = minibatches(batch.support_x.shape[1], size, steps, gen)
        if not idx or idx[0] is None:
            return idx
        return list(torch.stack(idx).to(batch.support_x.device))  # type: ignore[arg-type]

    def meta_train_step(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, float]:
        """.grad = theta - mean_i phi_i over the batch's tasks (what SGD at rate epsilon turns
        into Reptile's update); metrics: query loss and score at each phi_i."""
        n, steps = len(batch), shape.inner_steps
        size, lr = self.params.inner_batch, self.params.inner_lr
        theta = list(self.model.parameters())
        state = self.adam_state(carried=True)
        seeds = self.batch_seeds(batch, size)
        total = [torch.zeros_like(p) for p in theta]  # sum of the tasks' phi
        losses: list[torch.Tensor] = []
        scores: list[torch.Tensor] = []
        for i in range(n):
            if state is not None and not self.params.carry_adam_state:
                state = self.adam_state(carried=True)  # fresh zeros for each task
            phi = self.adapt(
                batch.support_x[i], batch.support_y[i],
                self.task_batches(batch, size, steps, seeds[i]), lr, state,
            )  # fmt: skip
            torch._foreach_add_(total, list(phi.values()))
            with torch.no_grad():
                out = call(self.model, phi, batch.query_x[i])
                loss, score = loss_and_score(self.kind, out, batch.query_y[i])
            losses.append(loss)
            scores.append(score)
        if state is not None and self.params.carry_adam_state:
            self.adam_steps.fill_(state.t)  # the moments were updated in place
        for p, s in zip(theta, total, strict=True):
            g = p.detach() - s / n
            p.grad = g if p.grad is None else p.grad.add_(g)
        return step_values(
            **{
                "loss": torch.stack(losses).double().sum() / n,
                score_name(self.kind): torch.stack(scores).double().sum() / n,
            }
        )

    # ---- evaluation -------------------------------------------------------------------
    @property
    def eval_lr(self) -> float:
        return self.params.eval_inner_lr or self.params.inner_lr

    def predict(self, phi: Params, support_x: torch.Tensor, query_x: torch.Tensor) -> torch.Tensor:
        """Outputs for the queries under phi: in one batch (transductive, or a learner without
        batch norm, whose outputs do not depend on the batch), else one batch per query of the
        support set and that query, the query's output taken from the end."""
        if self.params.transductive or not self.batch_norm:
            return call(self.model, phi, query_x)
        return torch.cat(
            [call(self.model, phi, torch.cat([support_x, q[None]]))[-1:] for q in query_x]
        )

    def evaluate(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, torch.Tensor]:
        """Per-task score after `shape.inner_steps` inner steps from theta (each task from
        training's Adam state, its changes discarded), queries as `transductive` says."""
        size, steps = self.params.eval_inner_batch, shape.inner_steps
        seeds = self.batch_seeds(batch, size)

        def score(i: int) -> torch.Tensor:
            phi = self.adapt(
                batch.support_x[i], batch.support_y[i],
                self.task_batches(batch, size, steps, seeds[i]), self.eval_lr,
                self.adam_state(carried=False),
            )  # fmt: skip
            with torch.no_grad():
                out = self.predict(phi, batch.support_x[i], batch.query_x[i])
                return loss_and_score(self.kind, out, batch.query_y[i])[1].float()

        return {score_name(self.kind): torch.stack(self.per_task(batch, score))}

    def predict_after(
        self, batch: EpisodeBatch, x: torch.Tensor, steps: list[int], shape: TaskShape
    ) -> dict[int, torch.Tensor]:
        """Outputs on x [B, M, ...] after each number of inner steps (the adaptation plot)."""
        size = self.params.eval_inner_batch
        seeds = self.batch_seeds(batch, size)
        out: dict[int, list[torch.Tensor]] = {s: [] for s in steps}
        for i in range(len(batch)):
            idx = self.task_batches(batch, size, max(steps, default=0), seeds[i])
            for s in steps:
                phi = self.adapt(
                    batch.support_x[i], batch.support_y[i], idx[:s], self.eval_lr,
                    self.adam_state(carried=False),
                )  # fmt: skip
                with torch.no_grad():
                    out[s].append(self.predict(phi, batch.support_x[i], x[i]))
        return {s: torch.stack(v) for s, v in out.items()}
