"""What the Trainer tells its listeners. The catalog, the Qt bridge and the CLI progress bar
are listeners; that is what keeps GUI, CLI and tests running the very same engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["queued", "running", "paused", "finished", "failed", "cancelled", "interrupted"]
STATUSES: tuple[str, ...] = (
    "queued",
    "running",
    "paused",
    "finished",
    "failed",
    "cancelled",
    "interrupted",
)


@dataclass(frozen=True)
class RunStarted:
    config_json: str
    start_step: int  # 0 for a fresh run, k when resumed from a checkpoint at step k
    total_steps: int
    device: str  # resolved, e.g. "cpu" or "cuda:0"
    device_name: str  # e.g. "NVIDIA H200" or the CPU model
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepMetrics:
    step: int  # 1-based count of meta-updates done
    values: dict[str, float]  # e.g. loss, accuracy or mse, meta_lr, steps_per_s
    wall_time: float  # time.time()


@dataclass(frozen=True)
class EvalResult:
    step: int
    split: str  # "val" or "test"
    mean: float  # accuracy (classification) or post-adaptation MSE (regression)
    ci95: float  # 1.96 * std / sqrt(n)
    episodes: int
    metric: str  # "accuracy" or "mse"
    values: dict[str, float] = field(default_factory=dict)  # e.g. mse_after_1, mse_after_5
    checkpoint_step: int | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    # the metric of each test episode, in episode order (stored with the test evaluation)
    episode_scores: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    kind: Literal["periodic", "best", "final", "stop"]
    path: str
    bytes: int
    sha256: str
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointRemoved:
    path: str


@dataclass(frozen=True)
class RunFinished:
    status: Literal["finished", "failed", "cancelled"]
    step: int
    error: str | None = None
    test: EvalResult | None = None  # a copy of the test result already sent through on_eval


class Listener:
    """Base listener: override what you need. Called on the training thread, so keep it fast."""

    def on_start(self, event: RunStarted) -> None: ...
    def on_step(self, event: StepMetrics) -> None: ...
    def on_eval(self, event: EvalResult) -> None: ...
    def on_checkpoint(self, event: CheckpointSaved) -> None: ...
    def on_checkpoint_removed(self, event: CheckpointRemoved) -> None: ...
    def on_status(self, status: Status, reason: str | None = None) -> None:
        """ "paused" (with why: the user, a full disk...) or "running" again."""

    def attach(self, control: Any) -> None:
        """Called by the Trainer before the run with itself: a listener that must pause,
        resume or stop the run (the catalog writer on a full disk or a lost lease) keeps it."""

    def on_finish(self, event: RunFinished) -> None: ...
