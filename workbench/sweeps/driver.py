"""The sweep driver: asks the search for configurations, starts each as an ordinary run
through an executor, follows the runs in the catalog, and tells the search their objectives.

Every trial is a run in the catalog, started by the same launcher as any detached run
(`LocalExecutor`: at most `max_concurrent` processes, the cores divided between them). The
driver never trains and never writes a run: it reads runs' status and validation points,
and for pruning or a cancelled sweep it asks a run's owner to stop through the catalog, as
the app and `workbench stop` do.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from workbench.core.cores import available_cores
from workbench.core.faults import fault_point
from workbench.sweeps.search import Search, make_search
from workbench.sweeps.spec import Point, SweepSpec, base_config, check, config_for

TERMINAL = ("finished", "failed", "cancelled", "interrupted")
TRIAL_ENV = "WORKBENCH_SWEEP_TRIAL"
"""Set in a trial's process to its trial row id (`LocalExecutor.launched`)."""
POLL_S = 1.0


class Executor(Protocol):
    """Starts a trial's run (or resumes an interrupted one); `poll` gives its run id once the
    run exists (None before); `process` names the launched process ("host:pid") while its run
    does not exist yet (None where the executor cannot say)."""

    name: str

    def start(self, config: Any, trial_id: int | None = None) -> Any: ...

    def resume(self, run_id: int) -> Any: ...

    def poll(self, handle: Any) -> int | None: ...

    def process(self, handle: Any) -> str | None: ...

    def launched(self, trial_id: int) -> str | None: ...


class LocalExecutor:
    """Trials as detached local processes (`workbench.launcher`)."""

    name = "local"

    def __init__(self, db: str | os.PathLike[str] | None) -> None:
        self.db = db

    def start(self, config: Any, trial_id: int | None = None) -> Any:
        from workbench import launcher

        mark = None if trial_id is None else (TRIAL_ENV, str(trial_id))
        return launcher.spawn_config(config, self.db, mark=mark)

    def resume(self, run_id: int) -> Any:
        from workbench import launcher

        return launcher.spawn_resume(run_id, self.db)

    def poll(self, handle: Any) -> int | None:
        got = handle.poll()
        return None if got is None else got.run_id

    def process(self, handle: Any) -> str | None:
        return f"{socket.gethostname()}:{handle.pid}"

    def launched(self, trial_id: int) -> str | None:
        """The process a killed driver launched for the trial, if it is still alive here."""
        from workbench import launcher

        pids = launcher.marked(TRIAL_ENV, str(trial_id))
        return f"{socket.gethostname()}:{pids[0]}" if pids else None


@dataclass
class Trial:
    number: int
    seed: int
    point: Point
    id: int | None = None  # its row in the catalog's sweep_trials
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


def trial_tag(trial_id: int) -> str:
    """The tag that ties a run to its trial row: a resumed driver finds a run whose id it
    never learnt (killed between the launch and the run's creation) by it."""
    return f"sweep-trial:{trial_id}"


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
    """Runs one sweep to its budget, recording it in the catalog as it goes. `cancel()` (from
    a signal handler or another thread) stops starting trials and asks the running ones to
    stop; `workbench sweep cancel` does the same through the catalog. `resume` continues a
    sweep whose driver was killed: it adopts the trials still running, resumes the
    interrupted ones, and spends the rest of the budget without re-running a finished trial.
    """

    def __init__(
        self,
        catalog: Any,
        spec: SweepSpec,
        executor: Executor,
        *,
        on_change: Callable[[Trial], None] | None = None,
        poll_s: float = POLL_S,
        sweep_id: int | None = None,
    ) -> None:
        from workbench.catalog.store import new_owner

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
        self._lost = False
        # threads per trial: the spec's, else the cores divided between the concurrent trials
        self.threads = spec.threads_per_trial or max(1, available_cores() // spec.max_concurrent)
        self.owner = new_owner()
        self._queue: list[Trial] = []  # configurations asked, waiting for a slot
        self._active: list[Trial] = []
        self._seeds_left: dict[int, int] = {}  # trial number -> its seeds not over yet
        if sweep_id is None:
            stored = {
                "spec": spec.model_dump(
                    mode="json", by_alias=True, exclude={"base", "preset", "base_run"}
                ),
                "base": self.base,
            }
            self.sweep_id = catalog.sweeps.create(
                name=spec.name, spec_json=json.dumps(stored), method=spec.method,
                metric=self.metric, maximize=self.maximize, executor=executor.name,
                owner=self.owner,
            )  # fmt: skip
        else:
            self.sweep_id = sweep_id
            catalog.sweeps.claim(sweep_id, self.owner)
            self._adopt_recorded()

    @classmethod
    def resume(cls, catalog: Any, sweep_id: int, executor: Executor, **kwargs: Any) -> SweepDriver:
        """The driver of a recorded sweep, its trials adopted (RunBusyError while the sweep's
        own driver is still alive)."""
        stored = json.loads(catalog.sweeps.get(sweep_id).spec_json)
        spec = SweepSpec.model_validate({**stored["spec"], "base": stored["base"]})
        return cls(catalog, spec, executor, sweep_id=sweep_id, **kwargs)

    def cancel(self) -> None:
        self._cancel = True

    # ---- the loop ----
    def run(self) -> SweepResult:
        exhausted = False
        status = "finished"
        while True:
            self._beat()
            if self._lost:  # another driver took the sweep: its trials are that driver's now
                status = "interrupted"
                break
            if self._cancel:
                self._stop_all(self._active)
                self.result.cancelled = True
                status = "cancelled"
                break
            while len(self._active) < self.spec.max_concurrent:
                if not self._queue and not exhausted:
                    got = self.search.ask()
                    if got is None:
                        exhausted = True
                    else:
                        number, point = got
                        self._seeds_left[number] = len(self.spec.seeds)
                        self._queue += [Trial(number, seed, point) for seed in self.spec.seeds]
                if not self._queue:
                    break
                trial = self._queue.pop(0)
                self._start(trial)
                self._active.append(trial)
            if not self._active and exhausted and not self._queue:
                break
            time.sleep(self.poll_s)
            for trial in list(self._active):
                if self._follow(trial):
                    self._active.remove(trial)
        self.catalog.sweeps.release(self.sweep_id, self.owner, status)
        return self.result

    def _beat(self) -> None:
        from workbench.catalog.errors import LeaseLost

        try:
            if self.catalog.sweeps.beat(self.sweep_id, self.owner) == "cancel":
                self._cancel = True
        except LeaseLost:
            self._lost = True
        except Exception:  # a busy catalog: the next poll renews it
            pass

    def _record(self, trial: Trial, **fields: Any) -> None:
        if trial.id is not None:
            self.catalog.sweeps.update_trial(trial.id, **fields)

    def _start(self, trial: Trial) -> None:
        if trial.id is None:
            trial.id = self.catalog.sweeps.add_trial(
                self.sweep_id, trial.number, trial.seed, trial.point
            )
            fault_point("sweep.recorded")
        config = config_for(self.base, trial.point, trial.seed)
        data = config.to_dict()
        data["threads"] = data.get("threads") or self.threads
        tag = f"sweep:{self.spec.name}" if self.spec.name else f"sweep:{self.sweep_id}"
        data["tags"] = [*data.get("tags", []), tag, trial_tag(trial.id)]
        data["name"] = (
            data.get("name") or f"{self.spec.name or 'sweep'} #{trial.number} s{trial.seed}"
        )
        try:
            trial.handle = self.executor.start(data, trial.id)
        except Exception as exc:  # the launch itself failed: the trial failed, the sweep goes on
            trial.status, trial.error = "failed", str(exc)
        else:
            fault_point("sweep.launched")
            self._record(trial, process=self.executor.process(trial.handle))
        if trial not in self.result.trials:
            self.result.trials.append(trial)
        self.on_change(trial)

    def _follow(self, trial: Trial) -> bool:
        """Advance one trial; True once it is over."""
        if trial.status == "failed" and trial.run_id is None:
            self._told(trial, None)
            return True
        if trial.run_id is None:
            try:
                trial.run_id = self._poll(trial)
            except Exception as exc:  # the trial's process ended before creating its run
                trial.status, trial.error = "failed", str(exc)
                self._told(trial, None)
                return True
            if trial.run_id is None:
                return False
            trial.status = "running"
            self._record(trial, run_id=trial.run_id, status="running", process=None)
            fault_point("sweep.started")
            self.on_change(trial)
        record = self.catalog.get_run(trial.run_id)
        if self.spec.pruner != "none" and record.status == "running" and self._pruned(trial):
            return False  # asked to stop: ends cancelled, recorded pruned below
        if record.status not in TERMINAL:
            if _owned(self.catalog, trial.run_id):
                return False
            # its process died (killed, out of memory, machine gone): the run is interrupted
            # and `sweep resume` continues it from its latest checkpoint
            self.catalog.mark_stale_interrupted()
            record = self.catalog.get_run(trial.run_id)
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

    def _poll(self, trial: Trial) -> int | None:
        if isinstance(trial.handle, _Waiting):
            return trial.handle.poll()
        return self.executor.poll(trial.handle)

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
                self._record(trial, status="pruned")
                self._ask_stop(trial)
                self.on_change(trial)
                return True
        return False

    def _told(self, trial: Trial, value: float | None, keep: str | None = None) -> None:
        """A trial is over: recorded, and once every seed of its configuration is over, the
        search is told the configuration's objective (the mean over seeds; None if any seed
        failed, was pruned or interrupted)."""
        if keep:
            trial.status = keep
        trial.objective = value
        self._record(trial, status=trial.status, objective=value, error=trial.error)
        fault_point("sweep.told")
        self._configuration_over(trial.number)
        self.on_change(trial)

    def _configuration_over(self, number: int) -> None:
        left = self._seeds_left.get(number, 1) - 1
        self._seeds_left[number] = left
        if left > 0:
            return
        seeds = [t for t in self.result.trials if t.number == number]
        if any(t.status == "pruned" for t in seeds):
            return  # the search pruned it itself
        values = [t.objective for t in seeds]
        ok = all(v is not None and math.isfinite(v) for v in values)
        self.search.tell(number, sum(values) / len(values) if ok else None)  # type: ignore[arg-type]

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
            while trial.run_id is None and trial.handle is not None and time.monotonic() < deadline:
                try:
                    trial.run_id = self._poll(trial)
                except Exception:
                    break
                time.sleep(0.2)
            self._ask_stop(trial)
        for trial in active:
            while trial.run_id is not None and not self._follow(trial):
                time.sleep(self.poll_s)

    # ---- resume ----
    def _adopt_recorded(self) -> None:
        """Rebuild the search from the recorded trials and put each unfinished one back in
        play: a live run is followed, an interrupted one resumed, one whose process is still
        starting waited for, one that never started launched (once)."""
        recorded = self.catalog.sweeps.trials(self.sweep_id)
        by_number: dict[int, list[Any]] = {}
        for rec in recorded:
            by_number.setdefault(rec.number, []).append(rec)
        for number in sorted(by_number):
            rows = by_number[number]
            point = rows[0].params
            self._replay(number, point, rows)
            seen = {r.seed for r in rows}
            self._seeds_left[number] = len(self.spec.seeds)
            for rec in rows:
                trial = Trial(number, rec.seed, point, id=rec.id, run_id=rec.run_id)
                trial.status, trial.objective, trial.error = rec.status, rec.objective, rec.error
                self.result.trials.append(trial)
                if trial.status in (*TERMINAL, "pruned") and trial.status != "interrupted":
                    self._seeds_left[number] -= 1
                    continue
                self._put_back(trial, rec.process)
            # seeds of this configuration the killed driver never recorded
            self._queue += [Trial(number, s, point) for s in self.spec.seeds if s not in seen]

    def _replay(self, number: int, point: Point, rows: list[Any]) -> None:
        """Bring the search to where it was after asking `number`: grid and random ask again
        (they are deterministic: the same point comes back), TPE learns the finished result."""
        if self.spec.method == "optuna":
            values = [r.objective for r in rows]
            done = len(rows) == len(self.spec.seeds) and all(
                r.status == "finished" and v is not None for r, v in zip(rows, values, strict=True)
            )
            self.search.adopt(number, point, sum(values) / len(values) if done else None)  # type: ignore[arg-type]
            return
        while self.search.asked <= number:
            if self.search.ask() is None:
                break

    def _put_back(self, trial: Trial, process: str | None) -> None:
        from workbench.catalog.store import owner_dead

        assert trial.id is not None
        if trial.run_id is None:  # its run may exist without the driver having learnt it
            runs = self.catalog.list_runs(tag=trial_tag(trial.id))
            if runs:
                trial.run_id = runs[0].id
            elif (
                process := self.executor.launched(trial.id) or process
            ) is not None and not owner_dead(process):
                trial.handle = _Waiting(self.catalog, trial.id, process)
                self._active.append(trial)
                return
            else:  # never started, or its process died before creating the run
                self._queue.insert(0, trial)
                return
        record = self.catalog.get_run(trial.run_id)
        self._record(trial, run_id=trial.run_id, status="running", process=None)
        trial.status = "running"
        if record.status == "interrupted" or (
            record.status in ("queued", "running", "paused")
            and not _owned(self.catalog, trial.run_id)
        ):
            trial.handle = self.executor.resume(trial.run_id)
            trial.run_id = None  # known again when the resumed process has taken the run
        self._active.append(trial)


def _owned(catalog: Any, run_id: int) -> bool:
    """Whether a live process holds the run (its lease is fresh and its process exists)."""
    from workbench.catalog.errors import RunBusyError

    try:
        catalog.ensure_free(run_id)
    except RunBusyError:
        return True
    return False


class _Waiting:
    """A handle for a trial whose process a killed driver launched: its run appears under the
    trial's tag, or the process dies without one."""

    def __init__(self, catalog: Any, trial_id: int, process: str) -> None:
        self.catalog, self.tag, self.process = catalog, trial_tag(trial_id), process

    def poll(self) -> int | None:
        from workbench.catalog.store import owner_dead

        dead = owner_dead(self.process)  # looked at first: a run made before it died is seen
        runs = self.catalog.list_runs(tag=self.tag)
        if runs:
            return int(runs[0].id)
        if dead:
            raise RuntimeError(f"its process {self.process} ended before it created its run")
        return None
