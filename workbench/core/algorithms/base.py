"""The contract between the engine and an algorithm."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import nn

from workbench.core.device_policy import DevicePolicy, policy_for
from workbench.core.models import stateless
from workbench.core.params import AlgorithmParams, TaskShape
from workbench.core.task_threads import map_units, task_workers, units_of
from workbench.core.tasks.base import EpisodeBatch, TaskKind

T = TypeVar("T")

# weights x examples of a task (a lower bound on the multiply-adds of one pass over it) below
# which a task is too small for a second CPU thread: its kernels take microseconds, so another
# task thread mostly waits for the GIL and takes it from the first, and intra-op threads only
# add their hand-over (sinusoid MAML, 1.8k weights x 20 points: 420 steps/s on one thread,
# 300-335 on two; a Conv-4 5-way 1-shot task: 113k weights x 10 images)
THREAD_WORK_MIN = 1 << 18


class Algorithm(nn.Module, ABC):
    """An nn.Module holding everything that is meta-learned (its parameters are what the outer
    update changes).

    The engine owns the loop, clipping and checkpoints; an algorithm turns a meta-batch into
    meta-gradients and an episode into per-task scores, and may own its outer update
    (`outer_optimizer`, `outer_lr`; Adam with a halving schedule unless it does).
    """

    Params: ClassVar[type[AlgorithmParams]]
    supports: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})
    uses_head: ClassVar[bool] = True  # False: the model is an embedding network (ProtoNet)
    same_ways: ClassVar[bool] = (
        True  # the output layer fixes the ways: eval.ways must equal train.ways
    )
    # phases whose `inner_steps` the algorithm adapts with: a MAML-family run with 0 training
    # inner steps would meta-train without an inner loop, so config validation refuses it
    inner_step_phases: ClassVar[tuple[str, ...]] = ("train", "eval")

    def __init__(self, params: AlgorithmParams, model: nn.Module, kind: TaskKind) -> None:
        super().__init__()
        self.params = params
        self.model = model
        # the learner's size, for THREAD_WORK_MIN: counted once, not at every step
        self._weights = sum(p.numel() for p in model.parameters())
        self.kind = kind

    @abstractmethod
    def meta_train_step(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, float]:
        """Accumulate the meta-gradient of the mean query loss into `.grad`; return metrics.

        Metrics: "loss" and "accuracy" (classification) or "mse" (regression), query set,
        after adaptation, averaged over the batch's tasks.
        """

    @abstractmethod
    def evaluate(self, batch: EpisodeBatch, shape: TaskShape) -> dict[str, torch.Tensor]:
        """Per-task scores [B] after adapting with `shape.inner_steps` steps.

        Must return "accuracy" (classification) or "mse" (regression); may add more keys
        (for example "mse_after_1" for an adaptation-curve protocol).
        """

    def outer_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The outer (meta) update of what `meta_train_step` left in `.grad`: Adam by default.

        An algorithm whose meta-update is not Adam on a meta-gradient owns it here (Reptile:
        plain SGD on theta - phi, that is theta += epsilon (phi - theta)). The engine clips,
        steps, checkpoints and resumes whatever this returns like Adam.
        """
        return torch.optim.Adam(params, lr=self.params.meta_lr)

    def outer_lr(self, step: int, steps: int) -> float:
        """The outer learning rate for step `step` (0-based) of `steps`: by default `meta_lr`
        halved every `lr_halve_every` steps (ProtoNet's schedule); Reptile anneals it to 0."""
        a = self.params
        return a.meta_lr * (0.5 ** (step // a.lr_halve_every) if a.lr_halve_every else 1.0)

    def policy(self, batch: EpisodeBatch) -> DevicePolicy:
        """The fast paths on the batch's device (`device_policy`)."""
        return policy_for(batch.query_x.device)

    def workers(self, batch: EpisodeBatch) -> int:
        """Threads sharing the batch's tasks (`task_threads`); one where `call` must swap the
        module's own parameters (a model without a functional forward), and one for tasks too
        small to gain from threads (THREAD_WORK_MIN)."""
        examples = batch.support_x.shape[1] + batch.query_x.shape[1]
        if not stateless(self.model) or self._small(examples):
            return 1
        return task_workers(batch.query_x.device, len(batch))

    def small_tasks(self, shape: TaskShape) -> bool:
        """Whether tasks of this shape are too small for a second CPU thread (THREAD_WORK_MIN)."""
        return self._small(shape.ways * (shape.shots + shape.queries))

    def _small(self, examples: int) -> bool:
        return self._weights * examples < THREAD_WORK_MIN

    def per_task(self, batch: EpisodeBatch, fn: Callable[[int], T]) -> list[T]:
        """fn(i) for every task i of the batch, in task order, the tasks split among the CPU
        threads (evaluation: 600-1,000 small episodes)."""
        return map_units(
            lambda tasks: fn(tasks.start), units_of(len(batch), 1), self.workers(batch)
        )

    def predict_after(
        self, batch: EpisodeBatch, x: torch.Tensor, steps: list[int], shape: TaskShape
    ) -> dict[int, torch.Tensor]:
        """Outputs of the model on x [B, M, ...] after each number of adaptation steps (for plots)."""
        raise NotImplementedError

    def query_scores(self, batch: EpisodeBatch, i: int) -> torch.Tensor:
        """Task i's query scores [Q, ways], whose argmax is the prediction, for an algorithm
        without adaptation steps (the app's view of one episode shows its predictions)."""
        raise NotImplementedError


def loss_and_score(
    kind: str, out: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and per-batch score: cross-entropy + accuracy, or MSE + MSE."""
    if kind == "classification":
        loss = nn.functional.cross_entropy(out, y)
        return loss, (out.argmax(-1) == y).float().mean()
    loss = nn.functional.mse_loss(out, y)
    return loss, loss.detach()


def step_values(**sums: torch.Tensor | float) -> dict[str, float]:
    """A step's metrics as Python floats, read from the device in ONE transfer: on CUDA each
    `float(t)` waits for the stream, and a step that read its loss per task waited once per task.
    This is the step's single synchronisation (logging and the non-finite check need the values)."""
    tensors = [v for v in sums.values() if isinstance(v, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    column = torch.stack(
        [
            v.detach().reshape(()).double()
            if isinstance(v, torch.Tensor)
            else torch.tensor(float(v), dtype=torch.float64, device=device)
            for v in sums.values()
        ]
    )
    return dict(zip(sums, column.tolist(), strict=True))


def score_name(kind: str) -> str:
    return "accuracy" if kind == "classification" else "mse"
