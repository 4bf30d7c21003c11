"""Which configuration a sweep tries next: grid, random or Optuna's TPE (ask and tell).

One interface for the three, so the driver and its executors never look at the method:
`ask()` gives the next point (None when the budget is spent or, for a grid, every point was
given), `tell(number, value)` reports a finished trial's objective (None: failed or
interrupted), `prune(number, step, value)` asks whether a trial should stop early.
Random and TPE are seeded by the spec's `sampler_seed`. TPE is reproducible only with one
trial at a time: with several in flight, which results it has seen when it asks depends on
which trial finished first.

Optuna's study lives in memory and is rebuilt from the trials already recorded (`adopt`),
so the catalog stays the one record of a sweep (no second schema in the same database).
"""

from __future__ import annotations

import math
import random
from typing import Any

from workbench.sweeps.spec import Param, Point, SweepSpec, complete, grid


class Search:
    """Base: budget bookkeeping shared by the methods."""

    def __init__(self, spec: SweepSpec, base: dict[str, Any]) -> None:
        self.spec = spec
        self.base = base
        self.asked = 0

    def ask(self) -> tuple[int, Point] | None:
        """(trial number, point) for the next configuration, or None when none is left."""
        raise NotImplementedError

    def tell(self, number: int, value: float | None) -> None:
        """A trial's objective (None: it failed, was pruned or interrupted)."""

    def prune(self, number: int, step: int, value: float) -> bool:
        """Whether trial `number`, at `step` with intermediate objective `value`, should stop."""
        return False

    def adopt(self, number: int, point: Point, value: float | None) -> None:
        """A trial recorded before this search existed (a resumed sweep): counted, and for
        TPE learned from, without being asked again."""
        self.asked = max(self.asked, number + 1)


class GridSearch(Search):
    def __init__(self, spec: SweepSpec, base: dict[str, Any]) -> None:
        super().__init__(spec, base)
        self.points = grid(spec, base)
        if spec.trials:
            self.points = self.points[: spec.trials]

    def ask(self) -> tuple[int, Point] | None:
        if self.asked >= len(self.points):
            return None
        self.asked += 1
        return self.asked - 1, self.points[self.asked - 1]


def _draw(p: Param, rng: random.Random) -> Any:
    if p.values is not None:
        return rng.choice(p.values)
    if p.int_range is not None:
        return rng.randint(*p.int_range)
    if p.loguniform is not None:
        low, high = p.loguniform
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    assert p.uniform is not None
    return rng.uniform(*p.uniform)


def _sample(spec: SweepSpec, base: dict[str, Any], draw: Any) -> Point:
    """A point drawn parameter by parameter in the spec's order: unconditional ones first,
    then those whose `when` the point so far satisfies."""
    point: Point = {}
    for p in sorted(spec.parameters, key=lambda p: bool(p.when)):
        if p.key not in point and p.applies(point, base):
            point[p.key] = draw(p)
    return complete(spec, point, base)


class RandomSearch(Search):
    def __init__(self, spec: SweepSpec, base: dict[str, Any]) -> None:
        super().__init__(spec, base)
        self.rng = random.Random(spec.sampler_seed)

    def ask(self) -> tuple[int, Point] | None:
        if self.asked >= (self.spec.trials or 0):
            return None
        point = _sample(self.spec, self.base, lambda p: _draw(p, self.rng))
        self.asked += 1
        return self.asked - 1, point


class OptunaSearch(Search):
    """TPE through Optuna's ask-and-tell interface; pruning by its median or successive-
    halving pruner on the trials' validation points."""

    def __init__(self, spec: SweepSpec, base: dict[str, Any], direction: str) -> None:
        super().__init__(spec, base)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        pruner: Any = {
            "none": optuna.pruners.NopPruner(),
            "median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
            "successive-halving": optuna.pruners.SuccessiveHalvingPruner(),
        }[spec.pruner]
        self.study = optuna.create_study(
            direction=direction,
            sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed),
            pruner=pruner,
        )
        self.trials: dict[int, Any] = {}

    def _suggest(self, trial: Any, p: Param) -> Any:
        if p.values is not None:
            return trial.suggest_categorical(p.key, p.values)
        if p.int_range is not None:
            return trial.suggest_int(p.key, *p.int_range)
        if p.loguniform is not None:
            return trial.suggest_float(p.key, *p.loguniform, log=True)
        assert p.uniform is not None
        return trial.suggest_float(p.key, *p.uniform)

    def ask(self) -> tuple[int, Point] | None:
        if self.asked >= (self.spec.trials or 0):
            return None
        trial = self.study.ask()
        point = _sample(self.spec, self.base, lambda p: self._suggest(trial, p))
        number = self.asked
        self.trials[number] = trial
        self.asked += 1
        return number, point

    def tell(self, number: int, value: float | None) -> None:
        trial = self.trials.pop(number, None)
        if trial is None:
            return
        state = self.optuna.trial.TrialState
        if value is None or not math.isfinite(value):
            self.study.tell(trial, state=state.FAIL)
        else:
            self.study.tell(trial, value)

    def prune(self, number: int, step: int, value: float) -> bool:
        trial = self.trials.get(number)
        if trial is None or not math.isfinite(value):
            return False
        trial.report(value, step)
        if trial.should_prune():
            self.trials.pop(number)
            self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
            return True
        return False

    def adopt(self, number: int, point: Point, value: float | None) -> None:
        super().adopt(number, point, value)
        if value is None or not math.isfinite(value):
            return
        dists = {p.key: self._distribution(p) for p in self.spec.parameters if p.key in point}
        self.study.add_trial(
            self.optuna.trial.create_trial(params=point, distributions=dists, value=value)
        )

    def _distribution(self, p: Param) -> Any:
        d = self.optuna.distributions
        if p.values is not None:
            return d.CategoricalDistribution(p.values)
        if p.int_range is not None:
            return d.IntDistribution(*p.int_range)
        if p.loguniform is not None:
            return d.FloatDistribution(*p.loguniform, log=True)
        assert p.uniform is not None
        return d.FloatDistribution(*p.uniform)


def make_search(spec: SweepSpec, base: dict[str, Any], direction: str = "maximize") -> Search:
    if spec.method == "grid":
        return GridSearch(spec, base)
    if spec.method == "random":
        return RandomSearch(spec, base)
    return OptunaSearch(spec, base, direction)
