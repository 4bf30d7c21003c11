"""What a plugin may rely on: the one public interface for your own algorithm, dataset or model.

An algorithm is a subclass of `Algorithm` with a `Params` schema (a subclass of
`AlgorithmParams` whose `name` defaults to the registered name), registered with
`@register_algorithm("my-algo")`. It holds everything that is meta-learned (its parameters are
what the outer update changes: the engine's Adam with a halving schedule, unless the algorithm
overrides `outer_optimizer(params)` and `outer_lr(step, steps)` to own it, as Reptile does)
and implements two methods:

- `meta_train_step(batch, shape) -> dict[str, float]`: accumulate the meta-gradient of the mean
  query loss over the batch's tasks into `.grad` (call `.backward()`; the engine zeroes the
  gradients, clips and steps), and return the step's metrics: "loss" and "accuracy"
  (classification) or "mse" (regression), means over the tasks (`step_values` reads them
  from the device in one transfer).
- `evaluate(batch, shape) -> dict[str, Tensor]`: per-task scores [B] after adapting with
  `shape.inner_steps` steps: "accuracy" or "mse".

`batch` is an `EpisodeBatch`: support_x [B, N*K, ...], support_y [B, N*K], query_x, query_y
(labels 0..N-1 per task). `self.model` is the learner the config's `model` section built (its
head has `train.ways` outputs unless the class sets `uses_head = False`); `call(model, params,
x)` evaluates it with other parameters (the inner loop's adapted ones), differentiably.

Class attributes an algorithm may set: `supports` (task kinds), `uses_head`, `same_ways`,
`inner_step_phases` (which phases' `inner_steps` it reads; the form hides the others).

A plugin file goes in the plugins folder ($WORKBENCH_PLUGINS, else `plugins/` in the user
config folder), or a package declares it as an entry point:
`[project.entry-points."workbench.algorithms"] my-algo = "my_package.my_algo"`. A worked
example: `workbench/resources/examples/plugin_plain_fomaml.py`.

Datasets (`register_dataset`, a `DatasetSpec` whose `build(cfg, split)` returns a
`TaskDistribution`) and models (`register_model`, a builder `(model_cfg, input_shape, out_dim)
-> nn.Module`) register the same way. A model builder may also carry
`build.activation_sizes = fn`, `fn(model_cfg, input_shape, out_dim) -> list[int]`: per example,
the elements of each tensor a training forward keeps for backward (see `ActivationSizes` in
workbench/core/models/__init__.py). The memory check before a run uses it; without it the
estimate guesses as for an MLP and says so once, and a run too big to fit is not refused.
"""

from __future__ import annotations

from workbench.core.algorithms import ALGORITHMS, Algorithm
from workbench.core.algorithms.base import loss_and_score, score_name, step_values
from workbench.core.models import MODELS, call
from workbench.core.params import AlgorithmParams, TaskShape
from workbench.core.tasks import DATASETS, DatasetSpec, EpisodeBatch, TaskDistribution

register_algorithm = ALGORITHMS.register
register_dataset = DATASETS.register
register_model = MODELS.register

__all__ = [
    "Algorithm", "AlgorithmParams", "DatasetSpec", "EpisodeBatch", "TaskDistribution",
    "TaskShape", "call", "loss_and_score", "register_algorithm", "register_dataset",
    "register_model", "score_name", "step_values",
]  # fmt: skip
