"""Evaluation on a fixed, seeded set of episodes: mean and 95% confidence interval."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from workbench.core.algorithms.base import Algorithm, score_name
from workbench.core.distributed import Group, gather_ordered, owns
from workbench.core.params import TaskShape
from workbench.core.tasks.base import TaskDistribution

# Fixed episode seeds, independent of the run's seed, so every run of a dataset is scored on
# the very same validation and test tasks and their numbers compare directly.
EPISODE_SEEDS = {"train": 0x5EED, "val": 0xA11DA7E, "test": 0x7E57}


@dataclass
class Score:
    metric: str
    mean: float
    ci95: float
    episodes: int
    values: dict[str, float] = field(default_factory=dict)


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
) -> Score:
    """Score `episodes` tasks drawn from a generator seeded by the split name.

    Each draw of episodes is scored with the global RNG seeded by the split and the draw's
    index (an algorithm that draws at random while it adapts, as Meta-LSTM's support
    mini-batches, draws the same whoever scores it), and the training run's RNG is left as it
    was. With `group`, the draws are shared round-robin among the ranks and their scores
    gathered in draw order: every rank gets the score one process would."""
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
    return Score(name, mean, ci, int(cat[name].numel()), values)
