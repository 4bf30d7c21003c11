"""What a task distribution hands the algorithms: stacked meta-batches of episodes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from workbench.core.errors import ConfigError
from workbench.core.params import DatasetConfig, TaskShape

Split = Literal["train", "val", "test"]
TaskKind = Literal["classification", "regression"]


@dataclass
class EpisodeBatch:
    """B tasks stacked on dim 0 so that work the tasks share can be batched.

    classification: support_x [B, N*K, C, H, W] float in [0, 1], support_y [B, N*K] long in
    0..N-1 (labels remapped per task), query_x [B, N*Q, C, H, W], query_y [B, N*Q].
    regression: support_x [B, K, 1], support_y [B, K, 1] float; query likewise.
    `info` carries per-task extras (sinusoid: "amplitude", "phase" tensors [B]). `first`: the
    index of task 0 in the meta-batch it was cut from (`tasks`): a rank of a multi-process run
    trains on a slice, and what a task draws (its support mini-batches) follows its index in
    the whole meta-batch, so it draws the same on any rank.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    ways: int
    info: dict[str, Any] = field(default_factory=dict)
    first: int = 0

    def __len__(self) -> int:
        return int(self.support_x.shape[0])

    def to(self, device: torch.device | str) -> EpisodeBatch:
        """The batch on `device` in one transfer: on CUDA from page-locked memory (pinned here
        unless `pin_memory()` did it on the drawing thread), copies queued without blocking."""
        from workbench.core.device_policy import to_device

        tensors = to_device([self.support_x, self.support_y, self.query_x, self.query_y],
                            torch.device(device))  # fmt: skip
        return EpisodeBatch(*tensors, self.ways, self.info, self.first)

    def pin_memory(self) -> EpisodeBatch:
        """The batch in page-locked host memory (needs a CUDA runtime: `pin_enabled` asks)."""
        return EpisodeBatch(self.support_x.pin_memory(), self.support_y.pin_memory(),
                            self.query_x.pin_memory(), self.query_y.pin_memory(), self.ways,
                            self.info, self.first)  # fmt: skip

    def task(self, i: int) -> EpisodeBatch:
        """Task i as a batch of one."""
        return self.tasks(range(i, i + 1))

    def tasks(self, which: range) -> EpisodeBatch:
        """Tasks which.start .. which.stop - 1 as a batch (views, no copy)."""
        s = slice(which.start, which.stop)
        info = {k: (v[s] if isinstance(v, torch.Tensor) else v) for k, v in self.info.items()}
        return EpisodeBatch(
            self.support_x[s], self.support_y[s], self.query_x[s], self.query_y[s], self.ways,
            info, self.first + which.start,
        )  # fmt: skip


class TaskDistribution(ABC):
    """One split (train / val / test) of a dataset; sampling is pure tensor indexing."""

    kind: ClassVar[TaskKind]

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) for images, (1,) for sinusoid."""

    @property
    def num_classes(self) -> int | None:
        """Classes in this split (None for regression)."""
        return None

    @property
    def examples_per_class(self) -> int | None:
        """Examples of the smallest class, the most shots + queries a task can draw (None: no
        limit, as for regression, which draws fresh points)."""
        return None

    def check(self, shape: TaskShape, phase: str | None = None) -> None:
        """Raise ConfigError naming `phase`'s key when `shape` cannot be drawn from this split,
        so that the CLI and the app refuse it before a run is recorded."""
        phase = phase or "train"
        if self.num_classes is not None and shape.ways > self.num_classes:
            raise ConfigError(
                f"{phase}.ways",
                f"{shape.ways} ways requested but this split has only {self.num_classes:,} classes",
            )
        most = self.examples_per_class
        if most is not None and shape.shots + shape.queries > most:
            raise ConfigError(
                f"{phase}.queries",
                f"{shape.shots} shots + {shape.queries} queries = {shape.shots + shape.queries} "
                f"examples per class requested but a class of this split has only {most}",
            )

    @abstractmethod
    def sample(self, shape: TaskShape, batch: int, generator: torch.Generator) -> EpisodeBatch:
        """Draw `batch` tasks of `shape`; the same generator state gives the same tasks."""


class DatasetSpec(ABC):
    """A registered dataset: its kind is static so configs validate without loading files."""

    kind: ClassVar[TaskKind]
    needs_data_dir: ClassVar[bool] = False

    @abstractmethod
    def build(self, cfg: DatasetConfig, split: Split) -> TaskDistribution:
        """Load (from the cache when possible) one split; raises DataError/ConfigError with a clear message."""

    def describe(self, cfg: DatasetConfig) -> str:
        """One line on what was found (classes, images) or what is missing; never raises."""
        return self.kind
