"""Evaluation on a fixed, seeded set of episodes: mean and 95% confidence interval."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from workbench.core.algorithms.base import Algorithm, score_name
from workbench.core.config import TaskShape
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
) -> Score:
    """Score `episodes` tasks drawn from a generator seeded by the split name."""
    gen = episode_generator(split)
    chunk = max(1, min(episodes_per_draw(shape), episodes))
    parts: dict[str, list[torch.Tensor]] = {}
    done = 0
    was_training = algo.training
    algo.eval()
    try:
        while done < episodes and not should_stop():
            n = min(chunk, episodes - done)
            batch = dist.sample(shape, n, gen).to(device)
            with autocast():
                res = algo.evaluate(batch, shape)
            for k, v in res.items():
                parts.setdefault(k, []).append(v.detach().float().cpu())
            done += n
    finally:
        algo.train(was_training)
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
