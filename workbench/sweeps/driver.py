"""The sweep driver: asks the search for configurations, starts each as an ordinary run
through an executor, follows the runs in the catalog, and tells the search their objectives.

Every trial is a run in the catalog, started by the same launcher as any detached run
(`LocalExecutor`: at most `max_concurrent` processes, the cores divided between them). The
driver never trains and never writes a run: it reads runs' status and validation points,
and for pruning or a cancelled sweep it asks a run's owner to stop through the catalog, as
the app and `workbench stop` do.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from workbench.core.cores import available_cores
from workbench.sweeps.search import Search, make_search
from workbench.sweeps.spec import Point, SweepSpec, base_config, check, config_for

TERMINAL = ("finished", "failed", "cancelled", "interrupted")
POLL_S = 1.0


class Executor(Protocol):
    """Starts a trial's run; `poll` gives its run id once the run exists (None before)."""

    def start(self, config: Any) -> Any: ...

    def poll(self, handle: Any) -> int | None: ...


class LocalExecutor:
    """Trials as detached local processes (`workbench.launcher`)."""

    def __init__(self, db: str | os.PathLike[str] | None) -> None:
        self.db = db

    def start(self, config: Any) -> Any:
        from workbench import launcher

        return launcher.spawn_config(config, self.db)

    def poll(self, handle: Any) -> int | None:
        got = handle.poll()
        return None if got is None else got.run_id


@dataclass
class Trial:
    number: int
    seed: int
    point: Point
    handle: Any = None
    run_id: int | None = None
    status: str = "starting"
    objective: float | None = None
    error: str | None = None
    seen_point_id: int = 0  # validation points read so far (pruning)


@dataclass
class SweepResult:
    trials: list[Trial] = field(default_factory=list)
    cancelled: bool = False

    def best(self, maximize: bool) -> Trial | None:
        done = [t for t in self.trials if t.objective is not None and math.isfinite(t.objective)]
        if not done:
            return None
        key: Callable[[Trial], float] = lambda t: t.objective  # type: ignore[assignment,return-value]  # noqa: E731
        return max(done, key=key) if maximize else min(done, key=key)


def objective_metric(spec: SweepSpec, config: Any) -> str:
    """The metric the objective reads: `val_score` is the run's validation score
    (`val_accuracy` for classification, `val_mse` for regression)."""
    if spec.objective.metric != "val_score":
        return spec.objective.metric
    return "val_mse" if config.task_kind == "regression" else "val_accuracy"


def maximize(spec: SweepSpec, metric: str) -> bool:
    if spec.objective.direction is not None:
        return spec.objective.direction == "maximize"
    low = metric.lower()
    return not ("loss" in low or "mse" in low or "error" in low)


class SweepDriver:
    """Runs one sweep to its budget. `cancel()` (from a signal handler or another thread)
    stops starting trials and asks the running ones to stop."""

    def __init__(
        self,
        catalog: Any,
        spec: SweepSpec,
        executor: Executor,
        *,
        on_change: Callable[[Trial], None] | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        self.catalog = catalog
        self.spec = spec
        self.executor = executor
        self.base = base_config(spec, catalog)
        check(spec, self.base)  # every configuration it can make, before the first trial
        probe = config_for(self.base, {}, spec.seeds[0])
        self.metric = objective_metric(spec, probe)
        self.maximize = maximize(spec, self.metric)
        self.search: Search = make_search(
            spec, self.base, "maximize" if self.maximize else "minimize"
        )
        self.on_change = on_change or (lambda t: None)
        self.poll_s = poll_s
        self.result = SweepResult()
        self._cancel = False
        # threads per trial: the spec's, else the cores divided between the concurrent trials
        self.threads = spec.threads_per_trial or max(1, available_cores() // spec.max_concurrent)

    def cancel(self) -> None:
        self._cancel = True

    # ---- the loop ----
    def run(self) -> SweepResult:
        queue: list[Trial] = []  # configurations asked, waiting for a slot (one per seed)
        active: list[Trial] = []
        exhausted = False
        while True:
            if self._cancel:
                self._stop_all(active)
                self.result.cancelled = True
                break
            while len(active) < self.spec.max_concurrent:
                if not queue and not exhausted:
                    got = self.search.ask()
                    if got is None:
                        exhausted = True
                    else:
                        number, point = got
                        queue += [Trial(number, seed, point) for seed in self.spec.seeds]
                if not queue:
                    break
                trial = queue.pop(0)
                self._start(trial)
                active.append(trial)
            if not active and exhausted and not queue:
                break
            time.sleep(self.poll_s)
            for trial in list(active):
                if self._follow(trial):
                    active.remove(trial)
        return self.result

    def _start(self, trial: Trial) -> None:
        config = config_for(self.base, trial.point, trial.seed)
        data = config.to_dict()
        data["threads"] = data.get("threads") or self.threads
        tag = f"sweep:{self.spec.name}" if self.spec.name else "sweep"
        data["tags"] = [*data.get("tags", []), tag]
        data["name"] = (
            data.get("name") or f"{self.spec.name or 'sweep'} #{trial.number} s{trial.seed}"
        )
        try:
            trial.handle = self.executor.start(data)
        except Exception as exc:  # the launch itself failed: the trial failed, the sweep goes on
            trial.status, trial.error = "failed", str(exc)
        self.result.trials.append(trial)
        self.on_change(trial)

    def _follow(self, trial: Trial) -> bool:
        """Advance one trial; True once it is over."""
        if trial.status == "failed" and trial.run_id is None:
            self._told(trial, None)
            return True
        if trial.run_id is None:
            try:
                trial.run_id = self.executor.poll(trial.handle)
            except Exception as exc:  # the trial's process ended before creating its run
                trial.status, trial.error = "failed", str(exc)
                self._told(trial, None)
                return True
            if trial.run_id is None:
                return False
            trial.status = "running"
            self.on_change(trial)
        record = self.catalog.get_run(trial.run_id)
        if self.spec.pruner != "none" and record.status == "running" and self._pruned(trial):
            return False  # asked to stop: ends cancelled, recorded pruned below
        if record.status not in TERMINAL:
            return False
        summary = record.summary.get(self.metric)
        value = None if summary is None else summary.best
        if trial.status == "pruned":
            self._told(trial, None, keep="pruned")
            return True
        trial.status = record.status
        trial.error = record.error
        self._told(trial, value if record.status == "finished" else None)
        return True

    def _pruned(self, trial: Trial) -> bool:
        if trial.status == "pruned":
            return True
        assert trial.run_id is not None
        points = self.catalog.points_after(trial.run_id, trial.seen_point_id)
        for point_id, step, name, value, _wall in points:
            trial.seen_point_id = point_id
            if name != self.metric or value is None:
                continue
            if self.search.prune(trial.number, step, value):
                trial.status = "pruned"
                self._ask_stop(trial)
                self.on_change(trial)
                return True
        return False

    def _told(self, trial: Trial, value: float | None, keep: str | None = None) -> None:
        if keep:
            trial.status = keep
        trial.objective = value
        if keep != "pruned":
            self.search.tell(trial.number, value)
        self.on_change(trial)

    def _ask_stop(self, trial: Trial) -> None:
        from workbench.catalog.errors import NotRunningError

        if trial.run_id is None:
            return
        try:
            self.catalog.request(trial.run_id, "stop")
        except NotRunningError:
            pass

    def _stop_all(self, active: list[Trial]) -> None:
        """Cancel: every running trial is asked to stop (stop checkpoint, cancelled); the
        driver waits for them so that the sweep ends with nothing running behind it."""
        for trial in active:
            deadline = time.monotonic() + 600
            while trial.run_id is None and time.monotonic() < deadline:
                try:
                    trial.run_id = self.executor.poll(trial.handle)
                except Exception:
                    break
                time.sleep(0.2)
            self._ask_stop(trial)
        for trial in active:
            while trial.run_id is not None and not self._follow(trial):
                time.sleep(self.poll_s)
