"""The MAML paper's baseline: one network pretrained on all tasks, fine-tuned at test.

Training minimises the loss of the un-adapted network over tasks (no inner loop); at
test it takes `eval.inner_steps` plain gradient steps of size `inner_lr` on the support set
(0.01 at K = 5, 0.02 at K = 10 in the paper), so its curve sits beside MAML's in the app.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from workbench.core.algorithms.maml import MAML
from workbench.core.params import AlgorithmParams, TaskShape
from workbench.core.registry import ALGORITHMS


class PretrainParams(AlgorithmParams):
    name: Literal["pretrain-finetune"] = "pretrain-finetune"
    inner_lr: float = Field(
        0.01, gt=0, le=100, description="Fine-tuning step size at test (0.01 at K=5, 0.02 at K=10)"
    )
    eval_inner_lr: float | None = Field(
        None, gt=0, le=100, description="Overrides inner_lr at validation/test"
    )
    first_order: Literal[True] = True  # nothing to differentiate through


@ALGORITHMS.register("pretrain-finetune")
class PretrainFinetune(MAML):
    Params = PretrainParams  # type: ignore[assignment]
    inner_step_phases = ("eval",)  # trains without an inner loop, fine-tunes at test

    def train_inner_steps(self, shape: TaskShape) -> int:
        return 0
