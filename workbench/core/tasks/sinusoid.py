"""Sinusoid regression as in MAML (Finn et al. 2017, section 5.1)."""

from __future__ import annotations

import math

import torch

from workbench.core.params import DatasetConfig, TaskShape
from workbench.core.registry import DATASETS
from workbench.core.tasks.base import DatasetSpec, EpisodeBatch, Split, TaskDistribution

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


class SinusoidTasks(TaskDistribution):
    """y = A sin(x - phi): amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5].

    The task family has no class split, so train/val/test differ only by their sampling seeds.
    """

    kind = "regression"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1,)

    def sample(self, shape: TaskShape, batch: int, generator: torch.Generator) -> EpisodeBatch:
        amp = torch.empty(batch).uniform_(*AMPLITUDE, generator=generator)
        phase = torch.empty(batch).uniform_(*PHASE, generator=generator)
        n = shape.shots + shape.queries
        x = torch.empty(batch, n, 1).uniform_(*X_RANGE, generator=generator)
        y = amp[:, None, None] * torch.sin(x - phase[:, None, None])
        k = shape.shots
        return EpisodeBatch(
            x[:, :k], y[:, :k], x[:, k:], y[:, k:], ways=1, info={"amplitude": amp, "phase": phase}
        )


@DATASETS.register("sinusoid")
class SinusoidSpec(DatasetSpec):
    kind = "regression"

    def build(self, cfg: DatasetConfig, split: Split) -> TaskDistribution:
        return SinusoidTasks()

    def describe(self, cfg: DatasetConfig) -> str:
        return "sinusoid regression: generated, no files needed"


def sinusoid(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """The true curve of a task, for plots."""
    return amplitude * torch.sin(x - phase)
