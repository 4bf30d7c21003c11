"""MAML (Finn, Abbeel & Levine 2017) and its first-order approximation.

Parameters stay functional: a dict of tensors passed to the model (`workbench.core.models.call`), so the
adapted weights theta' = theta - alpha * grad are differentiable functions of the
initialisation theta and the meta-gradient reaches it (second order: `create_graph=True`).
Reloading a state_dict inside the inner loop would silently cut that path; the tests check
the meta-gradient against finite differences to catch exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.autograd.function import once_differentiable

from workbench.core.algorithms.base import Algorithm, loss_and_score, score_name, step_values
from workbench.core.models import call
from workbench.core.models.double_backward import closed_form_double_backward
from workbench.core.models.layout import memory_format
from workbench.core.params import AlgorithmParams, EvalStepSize, StepSize, TaskShape
from workbench.core.registry import ALGORITHMS
from workbench.core.task_threads import map_units, sum_in_order, units_of
from workbench.core.tasks.base import EpisodeBatch

Params = dict[str, torch.Tensor]
Sum = torch.Tensor | float  # a metric's sum over tasks, kept on the device until the step ends
REGRESSION_CURVE = (0, 1, 5, 10)  # MSE reported after these many steps (MAML paper, Fig. 2)


def sgd_step(params: Params, grads: Sequence[torch.Tensor], lr: float) -> Params:
    """theta - lr * grad for each parameter (in `params` order), one fused op each."""
    return {k: torch.add(p, g, alpha=-lr) for (k, p), g in zip(params.items(), grads, strict=True)}


def accumulate(theta: Params, grads: Iterable[torch.Tensor | None]) -> None:
    """Add a meta-gradient (in `theta` order; None: not reached) into theta's .grad."""
    for p, g in zip(theta.values(), grads, strict=True):
        if g is not None:
            p.grad = g if p.grad is None else p.grad.add_(g)


def _sum(values: list[torch.Tensor]) -> Sum:
    """Sum of per-task scalars in float64 (the order Python's float sum took), on their device."""
    return torch.stack(values).double().sum() if values else 0.0


def add_into(total: list[torch.Tensor], grads: Iterable[torch.Tensor | None]) -> None:
    """Add a unit's gradients (None: a parameter the loss does not reach) into its sums."""
    for acc, g in zip(total, grads, strict=True):
        if g is not None:
            acc.add_(g)


def task_sums(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed per-task mean cross-entropy and accuracy of logits (tasks, n, classes), as float64
    tensors on the logits' device: read once per step (`step_values`), not once per group."""
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    correct = (logits.argmax(-1) == y).to(logits.dtype)
    return loss.sum().double() / y.shape[1], correct.sum().double() / y.shape[1]


class _Adapted(torch.autograd.Function):
    """theta - lr * g for a stack of tasks' gradients g (tasks, *theta.shape), with theta's
    gradient (summed over the tasks) in theta's memory layout: autograd's own sum for the
    broadcast comes back NCHW, and adding it to the channels-last gradients from the other
    paths would run strided loops."""

    @staticmethod
    def forward(ctx: Any, theta: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
        ctx.lr, ctx.layout = lr, memory_format(theta)
        return g.mul(-lr).add_(theta)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        d_theta = grad.sum(0)
        if d_theta.dim() == 4:
            d_theta = d_theta.contiguous(memory_format=ctx.layout)
        return d_theta, grad * -ctx.lr, None


class MAMLParams(AlgorithmParams):
    name: Literal["maml"] = "maml"
    inner_lr: StepSize = Field(
        0.4,
        description="Inner-loop step size alpha during meta-training (0.4 Omniglot 5-way, 0.01 sinusoid)",
    )
    eval_inner_lr: EvalStepSize = Field(
        None, description="Inner-loop step size at validation/test (empty: same as inner_lr)"
    )
    first_order: bool = Field(
        False,
        description="Drop second-order terms (first-order MAML): inner gradients are detached",
    )


@ALGORITHMS.register("maml")
class MAML(Algorithm):
    Params = MAMLParams

    # ---- the inner loop -------------------------------------------------------------
    def initial_params(self) -> Params:
        return dict(self.model.named_parameters())

    def adapt(
        self,
        params: Params,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int,
        lr: float,
        create_graph: bool,
    ) -> Params:
        """`steps` gradient steps on (x, y) from `params`; differentiable when create_graph."""
        for _ in range(steps):
            loss, _ = loss_and_score(self.kind, call(self.model, params, x), y)
            grads = torch.autograd.grad(loss, tuple(params.values()), create_graph=create_graph)
            params = sgd_step(params, grads, lr)
        return params

    @property
    def inner_lr(self) -> float:
        """The meta-training inner step size (a hook: Meta-SGD's step is its learned alpha)."""
        return self.params.inner_lr

    def stacked_step(self, theta: Params, grads: Params) -> Params:
        """theta - alpha * g for a group's stacked support gradients (tasks, *shape) (a hook:
        Meta-SGD overrides it with its per-parameter alpha)."""
        return {k: _Adapted.apply(theta[k], g, self.inner_lr) for k, g in grads.items()}

    def train_inner_steps(self, shape: TaskShape) -> int:
        return shape.inner_steps

    def meta_train_step(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, float]:
        """Mean query loss over the meta-batch, its meta-gradient accumulated into .grad. With
        several CPU threads the tasks run in units (`task_threads`), summed in unit order."""
        n = len(batch)
        theta = self.initial_params()
        workers = self.workers(batch)
        if workers == 1:
            _, loss_sum, score_sum = self.task_unit(batch, shape, theta, range(n), False)
        else:
            # units a thread takes at a time: first order batches its first inner step over 8
            # tasks (`task_gradients`; 2 tasks a unit made the step 14% slower), second order
            # balances best in pairs (measured, 2 threads: 5w1s FO 57 ms, SO 130 ms)
            units = units_of(n, 8 if self.params.first_order or self.batched(batch, shape) else 2)
            parts = map_units(
                lambda tasks: self.task_unit(batch, shape, theta, tasks, True), units, workers
            )
            accumulate(theta, sum_in_order([grads for grads, _, _ in parts if grads is not None]))
            loss_sum = sum(loss for _, loss, _ in parts)
            score_sum = sum(score for _, _, score in parts)
        return step_values(**{"loss": loss_sum / n, score_name(self.kind): score_sum / n})

    def task_unit(
        self, batch: EpisodeBatch, shape: TaskShape, theta: Params, tasks: range, apart: bool
    ) -> tuple[list[torch.Tensor] | None, Sum, Sum]:
        """Meta-gradient of `tasks` (each task's query loss / meta-batch size): summed and
        returned when `apart` (a thread's unit), else accumulated into theta's .grad (one
        thread: no extra sums); and their summed query loss and score."""
        second_order = not self.params.first_order
        steps = self.train_inner_steps(shape)
        n, lr = len(batch), self.inner_lr
        rows = slice(tasks.start, tasks.stop)
        policy = self.policy(batch)
        group = self.batched(batch, shape) if second_order else 0
        if group:
            return self.second_order_groups(batch, theta, tasks, group, apart)
        stacked = None if second_order else self.first_order_adapted(batch, theta, rows, steps)
        if stacked is not None:
            query = self.model.task_gradients(
                stacked, batch.query_x[rows], batch.query_y[rows],
                per_task_params=True, summed=True, scale=1 / n,
            )  # fmt: skip
            if query is not None:  # first order, all of it batched
                grads, logits = query
                loss_sum, score_sum = task_sums(logits, batch.query_y[rows])
                if apart:
                    return list(grads.values()), loss_sum, score_sum
                accumulate(theta, grads.values())
                return None, loss_sum, score_sum
        total = [torch.zeros_like(p) for p in theta.values()] if apart else None
        losses: list[torch.Tensor] = []
        scores: list[torch.Tensor] = []
        for j, i in enumerate(tasks):
            if stacked is not None:  # first order: the inner steps came batched, the query not
                adapted = {k: p[j].detach().requires_grad_() for k, p in stacked.items()}
                wrt = tuple(adapted.values())  # first order: d theta' / d theta is taken as I
            else:
                # the inner loop's graph is differentiated twice: conv/BN second derivatives in
                # closed form there; the query pass is differentiated once (native layers)
                closed_form = second_order and policy.closed_form_double_backward
                with closed_form_double_backward(closed_form):
                    adapted = self.adapt(
                        theta, batch.support_x[i], batch.support_y[i], steps, lr, second_order
                    )
                wrt = tuple(theta.values())
            out = call(self.model, adapted, batch.query_x[i])
            loss, score = loss_and_score(self.kind, out, batch.query_y[i])
            # one task's graph at a time keeps memory flat in the meta-batch
            if total is None and stacked is None:
                (loss / n).backward()  # one thread: straight into theta's .grad
            else:
                grads = torch.autograd.grad(loss / n, wrt, allow_unused=True)
                if total is None:
                    accumulate(theta, grads)
                else:
                    add_into(total, grads)
            losses.append(loss.detach())
            scores.append(score.detach())
        return total, _sum(losses), _sum(scores)

    def batched(self, batch: EpisodeBatch, shape: TaskShape) -> int:
        """Tasks per batched pass of the model for this batch (0: none): second order has
        them for one inner step and small query sets (`second_order_tasks`), first order for
        any number of steps."""
        group = getattr(self.model, "task_group", None)
        if group is None or self.kind != "classification" or not self.policy(batch).batched_tasks:
            return 0
        if self.params.first_order:
            return group(batch.support_x)
        if self.train_inner_steps(shape) != 1:
            return 0
        # second order batches the query pass too: with 15 queries a class (75-image tasks)
        # the group's query pass is slower than per task (measured: 712 against 558 ms)
        return min(group(batch.support_x), group(batch.query_x))

    def second_order_groups(
        self, batch: EpisodeBatch, theta: Params, tasks: range, group: int, apart: bool
    ) -> tuple[list[torch.Tensor] | None, Sum, Sum]:
        """`task_unit` for second order with one inner step, through the model's batched
        passes: per `group` tasks, the support gradients as a differentiable function of
        theta, the adapted weights, the query logits, and one backward."""
        n = len(batch)
        total = [torch.zeros_like(p) for p in theta.values()] if apart else None
        loss_sum: Sum = 0.0
        score_sum: Sum = 0.0
        for start in range(tasks.start, tasks.stop, group):
            rows = slice(start, min(start + group, tasks.stop))
            grads = self.model.support_gradients(
                theta, batch.support_x[rows], batch.support_y[rows]
            )
            adapted = self.stacked_step(theta, grads)
            logits = self.model.tasks_forward(adapted, batch.query_x[rows])
            y = batch.query_y[rows]
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum")
            loss = loss / (y.shape[1] * n)  # each task's mean over the meta-batch
            if total is None:
                loss.backward()
            else:
                add_into(total, torch.autograd.grad(loss, tuple(theta.values()), allow_unused=True))
            losses, scores = task_sums(logits.detach(), y)
            loss_sum += losses
            score_sum += scores
        return total, loss_sum, score_sum

    @torch.no_grad()
    def first_order_adapted(
        self, batch: EpisodeBatch, theta: Params, tasks: slice, steps: int
    ) -> Params | None:
        """First order: the adapted weights of each task in `tasks` after `steps` inner steps,
        (tasks, ...) per parameter, from the model's batched `task_gradients` (the first step
        at the shared theta, the later ones at each task's own weights); None where the model
        has no batched passes for this batch."""
        fn = getattr(self.model, "task_gradients", None)
        if (
            fn is None
            or self.kind != "classification"
            or steps < 1
            or not self.policy(batch).batched_tasks
        ):
            return None
        x, y = batch.support_x[tasks], batch.support_y[tasks]
        lr = self.params.inner_lr
        first = fn(theta, x, y)
        if first is None or first[0].keys() != theta.keys():
            return None
        adapted = {k: g.mul_(-lr).add_(theta[k]) for k, g in first[0].items()}
        for _ in range(steps - 1):
            grads, _ = fn(adapted, x, y, per_task_params=True)
            adapted = {k: grads[k].mul_(-lr).add_(p) for k, p in adapted.items()}
        return adapted

    # ---- evaluation -----------------------------------------------------------------
    @property
    def eval_lr(self) -> float:
        return self.params.eval_inner_lr or self.params.inner_lr

    def trace(self, batch: EpisodeBatch, i: int, steps: list[int]) -> Iterator[tuple[int, Params]]:
        """Task i's adapted parameters after each count in `steps` (ascending), without a meta-graph."""
        params = {k: p.detach().requires_grad_() for k, p in self.initial_params().items()}
        done = 0
        for s in steps:
            params = self.adapt(
                params, batch.support_x[i], batch.support_y[i], s - done, self.eval_lr, False
            )
            params = {k: p.detach().requires_grad_() for k, p in params.items()}
            done = s
            yield s, params

    def evaluate(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, torch.Tensor]:
        record = sorted(
            {shape.inner_steps, *(REGRESSION_CURVE if self.kind == "regression" else ())}
        )

        def scores(i: int) -> dict[int, torch.Tensor]:
            out = {}
            for s, params in self.trace(batch, i, record):
                with torch.no_grad():
                    pred = call(self.model, params, batch.query_x[i])
                    # a tensor: evaluate() reads a draw's scores in one transfer, not per task
                    out[s] = loss_and_score(self.kind, pred, batch.query_y[i])[1].float()
            return out

        per_task = self.per_task(batch, scores)
        per_step = {s: torch.stack([task[s] for task in per_task]) for s in record}
        result = {score_name(self.kind): per_step[shape.inner_steps]}
        if self.kind == "regression":
            result.update({f"mse_after_{s}": per_step[s] for s in REGRESSION_CURVE})
        return result

    def predict_after(
        self, batch: EpisodeBatch, x: torch.Tensor, steps: list[int], shape: TaskShape
    ) -> dict[int, torch.Tensor]:
        out: dict[int, list[torch.Tensor]] = {s: [] for s in steps}
        for i in range(len(batch)):
            for s, params in self.trace(batch, i, sorted(steps)):
                with torch.no_grad():
                    out[s].append(call(self.model, params, x[i]))
        return {s: torch.stack(v) for s, v in out.items()}


class FOMAMLParams(MAMLParams):
    name: Literal["fomaml"] = "fomaml"  # type: ignore[assignment]
    first_order: Literal[True] = Field(
        True, description="First-order MAML: inner gradients are detached"
    )  # type: ignore[assignment]


@ALGORITHMS.register("fomaml")
class FOMAML(MAML):
    """First-order MAML: the query gradient at theta' is applied to theta."""

    Params = FOMAMLParams
