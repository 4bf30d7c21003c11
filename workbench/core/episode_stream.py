"""The training loop's meta-batches, each drawn on a background thread while the step before
it trains.

Why: drawing a 32-task Omniglot meta-batch takes about 0.4 ms (more with cold caches), up to
1% of a first-order MAML step; drawn ahead, it costs the loop only the hand-over. Cheap draws
(sinusoid) stay inline, where the hand-over would cost more.

Episodes are exactly those of drawing inline: the task generator is used by one thread at a
time, in the same order. A checkpoint must reproduce the next batch the loop has not received
yet, so `get_state()` is the generator's state before that batch was drawn.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

import torch

from workbench.core.params import TaskShape
from workbench.core.task_threads import background
from workbench.core.tasks.base import EpisodeBatch, TaskDistribution

# a draw is moved to the background thread when it takes longer than this: below, the hand-over
# costs more than it saves (sinusoid: ~0.05 ms a draw, ~0.25 ms a step lost to the hand-over)
AHEAD_ABOVE_S = 0.3e-3
# the fastest of the first draws decides: the very first also pays each operator's first call
TIMED_DRAWS = 2
LET_THE_STEP_START_S = 2e-3


class EpisodeStream:
    """`next()` gives the meta-batch `dist.sample(shape, size, generator)` would give now."""

    def __init__(
        self,
        dist: TaskDistribution,
        shape: TaskShape,
        size: int,
        generator: torch.Generator,
        ahead: bool | None = None,
        pin: bool = False,
    ) -> None:
        """ahead: draw on the background thread (True), inline (False), or decide by the time
        of the first draws (None). pin: page-lock each batch where it is drawn (CUDA: the copy
        to the device is then asynchronous, and the pinning is off the training thread)."""
        self.dist, self.shape, self.size, self.generator = dist, shape, size, generator
        self.pin = pin
        # the batch being drawn ahead, with the generator state from before it
        self._pending: tuple[Future[EpisodeBatch], torch.Tensor] | None = None
        self.ahead = ahead
        self._timed: list[float] = []

    def next(self) -> EpisodeBatch:
        """The next meta-batch (a sampling error is raised here); the one after is started
        where drawing takes long enough to be worth a thread's hand-over."""
        if self._pending is None:
            t0 = time.perf_counter()
            batch = self._sample()
            if self.ahead is None:  # decided once, on the first draws (episodes are the same)
                self._timed.append(time.perf_counter() - t0)
                if len(self._timed) == TIMED_DRAWS:
                    self.ahead = min(self._timed) > AHEAD_ABOVE_S
        else:
            batch = self._pending[0].result()
            self._pending = None
        if self.ahead:
            self._start()
        return batch

    def get_state(self) -> torch.Tensor:
        """Generator state from which the next `next()` batch is drawn."""
        if self._pending is not None:
            return self._pending[1].clone()
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.close()
        self.generator.set_state(state)

    def close(self) -> None:
        """Drop a batch drawn ahead and rewind the generator to before it."""
        if self._pending is None:
            return
        (future, before), self._pending = self._pending, None
        future.exception()  # wait: the generator is ours again; its error is not ours to raise
        self.generator.set_state(before)

    def _start(self) -> None:
        before = self.generator.get_state()
        self._pending = (background().submit(self._draw_later), before)

    def _draw_later(self) -> EpisodeBatch:
        # let the training thread get into the step first: a draw begun at once takes the GIL
        # from it and holds it, in short spells between torch ops, until the draw is done
        time.sleep(LET_THE_STEP_START_S)
        return self._sample()

    def _sample(self) -> EpisodeBatch:
        batch = self.dist.sample(self.shape, self.size, self.generator)
        return batch.pin_memory() if self.pin else batch
