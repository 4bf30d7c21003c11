"""Sweep trials as Ray tasks (`workbench sweep start --executor ray [--address ...]`).

Each trial is one Ray task that runs the ordinary `workbench run` (or `workbench resume`) as a
subprocess on the worker, through the same launcher as a local detached run: the config is
written to a file on the worker's side, the child gets explicit torch threads (`--threads`;
Ray's `num_cpus` only schedules), its output goes beside the run's checkpoints, and it carries
the trial's environment mark (`TRIAL_ENV`). The task waits for its child, so a trial holds its
CPUs in Ray's accounting until it is over.

Tasks have `max_retries=0`: a trial whose process is killed must end `interrupted` in the
catalog and be continued by `workbench sweep resume` from its checkpoint, never be re-run from
scratch by Ray behind the catalog's back. The driver cannot get a run id back through a pipe
from another machine, so `poll` finds the run in the catalog by the trial's tag
(`driver.trial_tag`).

Ray is imported only when this executor is used (`pip install '.[ray]'`). Without an address a
local Ray is started on this machine and shut down with the sweep; `address="auto"` or
`"HOST:PORT"` joins a running cluster, whose machines all need the catalog: a SQLite file is
refused there (use a PostgreSQL catalog).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from workbench.core.errors import ConfigError
from workbench.sweeps.driver import TRIAL_ENV, trial_tag

LOCAL = (None, "", "local")
OBJECT_STORE_BYTES = 100 * 1024 * 1024
"""The tasks pass a few hundred bytes each way; Ray's default store is 30% of the memory."""
CHECKPOINT_ENV = "WORKBENCH_CHECKPOINT_ROOT"

REMOTE_SQLITE = (
    "a Ray cluster needs a catalog every machine reaches: use a PostgreSQL catalog "
    "(--db postgresql+psycopg://...)"
)


def ray_missing() -> bool:
    return importlib.util.find_spec("ray") is None


@dataclass
class RayTrial:
    """A trial's task: its trial row (start) or the run it resumes (resume)."""

    ref: Any
    trial_id: int | None = None
    run_id: int | None = None
    result: dict[str, Any] | None = None


class RayExecutor:
    """Trials as Ray tasks, each running `workbench run` as a subprocess (see the module)."""

    name = "ray"

    def __init__(
        self,
        catalog: Any,
        address: str | None = None,
        threads: int | None = None,
        db: str | os.PathLike[str] | None = None,
    ) -> None:
        if ray_missing():
            raise ConfigError("--executor", "ray is not installed: pip install '.[ray]'")
        self.catalog = catalog
        self.address = None if address in LOCAL else str(address)
        if self.address is not None and not catalog.server:
            raise ConfigError("--address", REMOTE_SQLITE)
        self.db = str(db) if db is not None else catalog.location
        if not catalog.server and "://" not in self.db:
            self.db = os.path.abspath(self.db)  # a worker's working folder is not ours
        self.threads = threads
        self._ray: Any = None
        self._task: Any = None  # the remote function, exported once
        self._started = False  # we started the local Ray (and shut it down)
        self._max_cpus = 1.0
        self._error: str | None = None
        if self.remote:  # joining is cheap, and a wrong address is one line before any trial
            try:
                self.connect()
            except RuntimeError as exc:
                raise ConfigError("--address", str(exc)) from None

    @property
    def remote(self) -> bool:
        return self.address is not None

    # ---- Ray itself ----
    def connect(self) -> Any:
        """Ray, initialised on first use: a local instance, or the cluster at `address`. A
        failure is kept and raised again for every later trial (one line)."""
        if self._ray is not None:
            return self._ray
        if self._error is not None:
            raise RuntimeError(self._error)
        import ray

        try:
            if self.address is None:
                from workbench.core.cores import available_cores

                ray.init(
                    address="local",  # never an instance that happens to be running here
                    num_cpus=available_cores(),
                    include_dashboard=False,
                    log_to_driver=False,
                    object_store_memory=OBJECT_STORE_BYTES,
                    logging_level=logging.WARNING,
                )
                self._started = True
                atexit.register(self.close)
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as exc:
            where = "start a local Ray" if self.address is None else f"join Ray at {self.address}"
            self._error = f"cannot {where}: {_init_error(exc)}"
            raise RuntimeError(self._error) from None
        cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        self._max_cpus = max([c for c in cpus if c > 0], default=1.0)
        self._task = ray.remote(_trial_task)
        self._ray = ray
        return ray

    def close(self) -> None:
        """Shut down the Ray this executor started (a joined cluster is left running)."""
        if self._ray is not None and self._started:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
        self._ray, self._task, self._started = None, None, False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(
        self, kind: str, what: str, extra: list[str], env: dict[str, str], cpus: int
    ) -> Any:
        self.connect()
        # num_cpus only schedules (capped at the largest machine's, or the task never runs);
        # the child's torch threads are its own --threads
        task = self._task.options(
            num_cpus=min(float(cpus), self._max_cpus), max_retries=0, retry_exceptions=False
        )
        return task.remote(kind, what, extra, self.db, env)

    def _env(self, trial_id: int | None) -> dict[str, str]:
        env = {} if trial_id is None else {TRIAL_ENV: str(trial_id)}
        if self.catalog.server:  # where this catalog's checkpoints are (a shared folder)
            env[CHECKPOINT_ENV] = str(self.catalog.checkpoint_root)
        return env

    # ---- the Executor protocol ----
    def start(self, config: Any, trial_id: int | None = None) -> RayTrial:
        import json

        data = config if isinstance(config, dict) else config.to_dict()
        threads = int(self.threads or data.get("threads") or 1)
        text = json.dumps(data)  # written to a file on the worker: ours may not be reachable
        ref = self._submit("run", text, ["--threads", str(threads)], self._env(trial_id), threads)
        return RayTrial(ref, trial_id=trial_id)

    def resume(self, run_id: int) -> RayTrial:
        threads = int(self.threads or self.catalog.get_run(run_id).config.get("threads") or 1)
        ref = self._submit("resume", str(int(run_id)), [], self._env(None), threads)
        return RayTrial(ref, run_id=int(run_id))

    def poll(self, handle: RayTrial) -> int | None:
        """The trial's run id once its run exists (resumed: once a process holds it again);
        None before; RuntimeError (one line) when its task ended without that."""
        done = self._done(handle)  # looked at first: a run made before the task ended is seen
        if handle.run_id is not None:  # a resume
            if done or _owned(self.catalog, handle.run_id):
                if done and handle.result and handle.result.get("error"):
                    raise RuntimeError(handle.result["error"])
                return handle.run_id
            return None
        if handle.trial_id is not None:
            runs = self.catalog.list_runs(tag=trial_tag(handle.trial_id))
            if runs:
                return int(runs[0].id)
        if not done:
            return None
        assert handle.result is not None
        if handle.result.get("run_id") is not None:
            return int(handle.result["run_id"])
        raise RuntimeError(handle.result.get("error") or "the trial's task ended without a run")

    def process(self, handle: RayTrial) -> str | None:
        return None  # the task may not have started yet, or runs on another machine

    def launched(self, trial_id: int) -> str | None:
        """The process a killed driver launched for the trial, when Ray ran on this machine
        (on a cluster the driver cannot look: None)."""
        if self.remote:
            return None
        from workbench import launcher

        pids = launcher.marked(TRIAL_ENV, str(trial_id))
        return f"{socket.gethostname()}:{pids[0]}" if pids else None

    def _done(self, handle: RayTrial) -> bool:
        if handle.result is not None:
            return True
        ray = self.connect()
        ready, _ = ray.wait([handle.ref], timeout=0)
        if not ready:
            return False
        try:
            handle.result = dict(ray.get(handle.ref))
        except Exception as exc:  # the task itself failed (worker died, Ray gone...)
            handle.result = {"run_id": None, "code": None, "error": _task_error(exc)}
        return True


def _trial_task(
    kind: str, what: str, extra: list[str], db: str, env: dict[str, str]
) -> dict[str, Any]:
    """On the worker: `workbench --db DB run --config FILE --quiet EXTRA` (`what`: the config
    JSON, written to FILE here) or `workbench --db DB resume RUN_ID --checkpoint latest --quiet`
    (`what`: the run id), started by the launcher and waited for. Returns the run id the child
    reported, its exit status, and its one-line error when it made no run."""
    from workbench import launcher

    with _environ(env):  # read by the launcher (log folder) and copied into the child
        if kind == "run":
            pending = launcher.spawn_config(what, db, extra=extra)
        else:
            pending = launcher.spawn_resume(int(what), db)
    try:
        got = pending.wait()
    except launcher.LaunchError as exc:
        return {"run_id": None, "code": pending.proc.wait(), "error": str(exc)}
    return {"run_id": got.run_id, "code": pending.proc.wait(), "error": None}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _owned(catalog: Any, run_id: int) -> bool:
    from workbench.sweeps.driver import _owned as owned

    return owned(catalog, run_id)


def _task_error(exc: BaseException) -> str:
    """One line for a task that failed in Ray: the cause's last line, not Ray's traceback."""
    cause = getattr(exc, "cause", None) or exc
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(cause).__name__
    return _one_line(f"its Ray task failed: {text}")


def _init_error(exc: BaseException) -> str:
    """ray.init's failure in one line; a cluster that wants a token says how to give it."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 8:
        chain.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    if any("InvalidAuthToken" in text for text in chain):
        return (
            "the cluster uses token authentication: set RAY_AUTH_MODE=token and give its "
            "token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
        )
    return _one_line(chain[0]) or type(exc).__name__


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return " ".join(lines[:1]) if lines else ""
