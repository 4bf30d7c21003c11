"""Evaluation on a fixed, seeded set of episodes: mean and 95% confidence interval.

`evaluate_protocol` is the test protocol, the one function both the Trainer's automatic test
and a manual evaluation (`api.evaluate_checkpoint`: the CLI's `eval` and the app's Evaluate
dialog) call, so the two store the same value names and, on the same checkpoint and
protocol, the same numbers; `protocol_of` is the protocol they record beside the score.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from workbench.core.algorithms.base import Algorithm, score_name
from workbench.core.distributed import Group, gather_ordered, owns
from workbench.core.params import TaskShape
from workbench.core.tasks.base import TaskDistribution

if TYPE_CHECKING:
    from workbench.core.config import RunConfig

# Fixed episode seeds, independent of the run's seed, so every run of a dataset is scored on
# the very same validation and test tasks and their numbers compare directly.
EPISODE_SEEDS = {"train": 0x5EED, "val": 0xA11DA7E, "test": 0x7E57}

REGRESSION_SHOTS = (5, 10)
"""The MAML paper's regression test protocol also scores K = 5 and K = 10 support points
(stored as `k5_mse_after_*`, `k10_mse_after_*`)."""


@dataclass
class Score:
    """A split's score: the metric's mean and 95% CI over `episodes` tasks, further values
    (their own means, `_ci95`, regression `_median`), and the metric's per-episode scores in
    episode order, kept so the spread can be shown (a histogram) and the CI recomputed."""

    metric: str
    mean: float
    ci95: float
    episodes: int
    values: dict[str, float] = field(default_factory=dict)
    episode_scores: torch.Tensor = field(default_factory=lambda: torch.empty(0))


def mean_ci(x: torch.Tensor) -> tuple[float, float]:
    """Mean and 1.96 * std / sqrt(n) (0 for a single episode)."""
    x = x.double()
    n = x.numel()
    std = float(x.std(unbiased=True)) if n > 1 else 0.0
    return float(x.mean()), 1.96 * std / math.sqrt(max(n, 1))


def episode_generator(split: str, offset: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(EPISODE_SEEDS.get(split, 0) + offset)


def episodes_per_draw(shape: TaskShape) -> int:
    """Episodes sampled (and scored, across the task threads) at a time: fixed by the task shape
    alone, since the draw size decides which episodes a seed gives, and every run of a dataset
    and shape must be scored on the same ones; at most about 2,048 images per draw."""
    images = shape.ways * (shape.shots + shape.queries)
    return max(1, min(16, 2048 // max(images, 1)))


def evaluate(
    algo: Algorithm,
    dist: TaskDistribution,
    shape: TaskShape,
    episodes: int,
    device: torch.device,
    split: str = "test",
    autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    should_stop: Callable[[], bool] = lambda: False,
    group: Group | None = None,
    progress: Callable[[int], None] | None = None,
) -> Score:
    """Score `episodes` tasks drawn from a generator seeded by the split name.

    Each draw of episodes is scored with the global RNG seeded by the split and the draw's
    index (an algorithm that draws at random while it adapts, as Meta-LSTM's support
    mini-batches, draws the same whoever scores it), and the training run's RNG is left as it
    was. With `group`, the draws are shared round-robin among the ranks and their scores
    gathered in draw order: every rank gets the score one process would. `progress(done)`
    hears the episodes drawn so far after each draw (a progress bar; called on this thread)."""
    gen = episode_generator(split)
    chunk = max(1, min(episodes_per_draw(shape), episodes))
    mine: dict[int, dict[str, torch.Tensor]] = {}
    done = index = 0
    was_training = algo.training
    algo.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            while done < episodes and not should_stop():
                n = min(chunk, episodes - done)
                batch = dist.sample(shape, n, gen)  # every rank draws: the generator moves on
                if owns(group, index):
                    torch.default_generator.manual_seed(EPISODE_SEEDS.get(split, 0) * 7919 + index)
                    with autocast():
                        res = algo.evaluate(batch.to(device), shape)
                    mine[index] = {k: v.detach().float().cpu() for k, v in res.items()}
                done += n
                index += 1
                if progress is not None:
                    progress(done)
    finally:
        algo.train(was_training)
    parts: dict[str, list[torch.Tensor]] = {}
    for res in gather_ordered(group, mine):
        for k, v in res.items():
            parts.setdefault(k, []).append(v)
    name = score_name(dist.kind)
    if not parts:
        return Score(name, float("nan"), float("nan"), 0)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    mean, ci = mean_ci(cat[name])
    values = {}
    for k, v in cat.items():
        if k != name:
            values[k], values[f"{k}_ci95"] = mean_ci(v)
            if dist.kind == "regression":  # a few diverging tasks can make the mean infinite
                values[f"{k}_median"] = float(v.median())
    return Score(name, mean, ci, int(cat[name].numel()), values, cat[name])


def evaluate_protocol(
    algo: Algorithm,
    dist: TaskDistribution,
    shape: TaskShape,
    episodes: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    should_stop: Callable[[], bool] = lambda: False,
    group: Group | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Score:
    """The test protocol on the test split: `shape` scored on `episodes` fixed episodes; for
    regression also the adaptation curves at K = 5 and K = 10 (`REGRESSION_SHOTS`) under
    `k5_` / `k10_` names. The Trainer's automatic test and every manual evaluation call this
    one function, so a run's test row and a later evaluation of the same protocol carry the
    same keys. `progress(done, total)` counts episodes over all passes. A pass cut short by
    `should_stop` leaves `episodes` below the number asked (the caller then stores nothing)."""
    passes = [shape]
    if dist.kind == "regression":
        passes += [shape.model_copy(update={"shots": k}) for k in REGRESSION_SHOTS]
    total = episodes * len(passes)

    def pass_progress(offset: int) -> Callable[[int], None] | None:
        if progress is None:
            return None
        return lambda done: progress(offset + done, total)

    score = evaluate(
        algo, dist, shape, episodes, device, "test", autocast, should_stop, group,
        pass_progress(0),
    )  # fmt: skip
    values = dict(score.values)
    scored = score.episodes
    for i, k in enumerate(REGRESSION_SHOTS if dist.kind == "regression" else (), start=1):
        if scored < episodes:
            break
        sk = evaluate(
            algo, dist, passes[i], episodes, device, "test", autocast, should_stop, group,
            pass_progress(i * episodes),
        )  # fmt: skip
        values.update({f"k{k}_{n}": v for n, v in sk.values.items() if n.startswith("mse_after")})
        scored = min(scored, sk.episodes)
    return Score(score.metric, score.mean, score.ci95, scored, values, score.episode_scores)


def protocol_of(config: RunConfig) -> dict[str, Any]:
    """What a test score was measured under, stored beside it: the evaluation task shape,
    episodes, split, and the test-time inner step size when the config sets one (a manual
    evaluation may override it). Two scores compare only under equal protocols."""
    e = config.eval
    protocol: dict[str, Any] = {
        "ways": e.ways,
        "shots": e.shots,
        "queries": e.queries,
        "inner_steps": e.inner_steps,
        "episodes": config.test_episodes,
        "split": "test",
    }
    inner_lr = getattr(config.algorithm, "eval_inner_lr", None)
    if inner_lr is not None:
        protocol["inner_lr"] = inner_lr
    transductive = getattr(config.algorithm, "transductive", None)
    if transductive is not None:  # Reptile's two evaluations differ by about 2 points
        protocol["transductive"] = transductive
    return protocol


def autocast_for(
    precision: str, device: torch.device
) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """The autocast a run's `precision` trains and tests under (bf16: torch.autocast), so a
    manual evaluation computes what the run's automatic test computed."""
    if precision != "bf16":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
