"""`workbench.track`: a user's own training loop recorded in the catalog, as MLflow or W&B do it.

    import workbench
    with workbench.track(name="my-method", config={"lr": 1e-3, "ways": 5}) as run:
        for step in range(1, 1001):
            loss, acc = train_step()
            run.log(step, loss=loss, accuracy=acc)
            if step % 200 == 0:
                run.checkpoint(model.state_dict(), step)
        run.evaluation("test", mean=0.97, ci=0.004, episodes=600)

A tracked run has the built-in trainer's guarantees because it goes through the same writer
(`catalog.CatalogListener`): points batched off the caller's thread, the run leased and its
heartbeat kept, checkpoints written in two phases with their sha256
(`core.checkpoint.save_two_phase`). Its status is honest: finished when the block ends,
failed with the exception's first line, cancelled on Ctrl-C (or a stop from the app or
`workbench stop`, delivered as KeyboardInterrupt in the main thread), interrupted when the
process is killed. A Ctrl-C that arrives while a checkpoint is saved (which first writes the
queued points on the caller's thread) or while the run ends is held until that is done, so the
points already logged are never dropped half-written. Pause from the app holds the next `log`
until resumed.

The config is any JSON-able dict; it is never validated as a built-in run's configuration.
Importing this module imports neither Qt nor torch (torch only when a checkpoint is saved).
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from workbench.catalog import Catalog, CatalogListener
from workbench.catalog.store import new_owner
from workbench.core.events import EvalResult, RunFinished, RunStarted, StepMetrics

TRACKED = "tracked"
"""The algorithm name of a tracked run: its code is the user's, not a workbench algorithm, so
the app neither resumes nor evaluates it."""


class TrackedRun:
    """One run of the user's script, used as a context manager (`track`, `workbench.track`)."""

    def __init__(
        self,
        name: str = "",
        config: dict[str, Any] | None = None,
        tags: list[str] | tuple[str, ...] = (),
        db: str | os.PathLike[str] | None = None,
        notes: str = "",
        total_steps: int | None = None,
    ) -> None:
        self.config = dict(config or {})
        try:
            config_json = json.dumps(self.config, sort_keys=True)
        except (TypeError, ValueError) as exc:  # said here, before a run exists
            raise TypeError(f"track: config must be JSON-able: {exc}") from None
        self.catalog = Catalog.open(db)
        self.owner = new_owner()
        self.run_id = self.catalog.create_run(
            config_json, name=name, algorithm=TRACKED, dataset=str(self.config.get("dataset", "")),
            seed=_int_or_none(self.config.get("seed")), tags=list(tags), notes=notes,
            total_steps=total_steps, owner=self.owner,
            default_name=Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else TRACKED,
        )  # fmt: skip
        self.name = self.catalog.get_run(self.run_id).name
        self.step = 0
        self.aborted: str | None = None
        self.stop_requested = False
        self._running = threading.Event()
        self._running.set()
        self._holds: set[str] = set()
        # a stop from the app reaches the script as KeyboardInterrupt (`cancel`); a process
        # started in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python then
        # raises nothing for it: the run takes Python's handler while it lasts, one that holds
        # the interrupt while the queued points are written on this thread (`_uninterrupted`)
        self._sigint: Any = None
        self._ctrl_c_held = 0  # nesting of sections that hold Ctrl-C
        self._ctrl_c_waiting = False  # a Ctrl-C came while held
        if threading.current_thread() is threading.main_thread():
            current = signal.getsignal(signal.SIGINT)
            if current in (signal.SIG_IGN, signal.SIG_DFL, None, signal.default_int_handler):
                self._sigint = signal.signal(signal.SIGINT, self._on_sigint)
        self.writer = CatalogListener(self.catalog, self.run_id, owner=self.owner)
        self.writer.attach(self)
        self.writer.on_start(
            RunStarted(config_json, 0, total_steps or 0, "", "", script_environment())
        )

    # ---- what the script calls ---------------------------------------------------------
    def log(self, step: int, **values: float) -> None:
        """Record metrics at `step` (floats; a tensor's `.item()` is taken). Waits while the
        run is paused (from the app or `workbench pause`)."""
        if not self._running.is_set():
            self._running.wait()
        self.step = max(self.step, int(step))
        clean = {k: float(v.item() if hasattr(v, "item") else v) for k, v in values.items()}
        self.writer.on_step(StepMetrics(int(step), clean, time.time()))

    def checkpoint(
        self, state_dict: dict[str, Any], step: int, kind: str = "periodic", keep: int = 2,
        metrics: dict[str, float] | None = None,
    ) -> Path:  # fmt: skip
        """Save `state_dict` (tensors, numbers, strings) as the run's checkpoint at `step`, in
        two phases with its sha256; `keep` of its kind are kept (one `best`, one `final`)."""
        from workbench.core.checkpoint import save_two_phase

        if kind not in ("periodic", "best", "final", "stop"):
            raise ValueError(f"kind must be periodic, best, final or stop, not {kind!r}")
        state = {"state_dict": state_dict, "step": int(step),
                 "config_json": json.dumps(self.config, default=str)}  # fmt: skip
        folder = self.catalog.checkpoint_dir(self.run_id, create=True)
        with self._uninterrupted():  # it first writes the queued points on this thread
            saved = save_two_phase(
                folder, self.writer, kind, int(step), state, metrics or {},
                keep if kind == "periodic" else 1,
            )  # fmt: skip
        return saved.path

    def evaluation(
        self, name: str, mean: float, ci: float = 0.0, episodes: int = 0,
        metric: str = "accuracy", values: dict[str, float] | None = None,
        protocol: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Record a score: `name` "test" is stored as the run's test evaluation (with its
        protocol), any other name as curve points `<name>_<metric>` at the current step."""
        self.writer.on_eval(
            EvalResult(
                self.step,
                name,
                float(mean),
                float(ci),
                int(episodes),
                metric,
                dict(values or {}),
                self.step if name == "test" else None,
                dict(protocol or {}),
            )  # fmt: skip
        )

    # ---- what the writer calls (control through the catalog) ---------------------------
    def pause(self) -> None:
        self.hold("user", "paused by the user")

    def resume(self) -> None:
        self.release("user")

    def hold(self, key: str, reason: str) -> None:
        self._holds.add(key)
        self._running.clear()
        self.writer.on_status("paused", None if key == "user" else reason)

    def release(self, key: str) -> None:
        self._holds.discard(key)
        if not self._holds:
            self._running.set()
            self.writer.on_status("running")

    def cancel(self) -> None:
        """A stop from the app or `workbench stop`: the script gets KeyboardInterrupt, as from
        Ctrl-C, and the run ends cancelled."""
        self.stop_requested = True
        self._running.set()
        _thread.interrupt_main()

    def abort(self, reason: str) -> None:
        """The run's records can no longer be written (lease lost): stop the script."""
        self.aborted = reason
        self.cancel()

    # ---- Ctrl-C ------------------------------------------------------------------------
    def _on_sigint(self, _signum: int, _frame: object) -> None:
        if self._ctrl_c_held:
            self._ctrl_c_waiting = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def _uninterrupted(self) -> Iterator[None]:
        """Hold Ctrl-C (and a stop, delivered the same way) until the block is done: the
        writer pops queued points before it writes them, and an exception between the two
        would drop them. The interrupt is raised as soon as the block ends."""
        self._ctrl_c_held += 1
        try:
            yield
        finally:
            self._ctrl_c_held -= 1
            if not self._ctrl_c_held and self._ctrl_c_waiting:
                self._ctrl_c_waiting = False
                raise KeyboardInterrupt

    # ---- the block ---------------------------------------------------------------------
    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
    ) -> bool:
        if self.aborted is not None:
            end = RunFinished("failed", self.step, self.aborted)
        elif exc is None:
            end = RunFinished("finished", self.step)
        elif isinstance(exc, KeyboardInterrupt):
            end = RunFinished("cancelled", self.step, "stopped by the user")
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            end = RunFinished("failed", self.step, f"{type(exc).__name__}: {first}".rstrip(": "))
        self._ctrl_c_held += 1  # a second Ctrl-C must not cut the last writes short
        try:
            self.writer.on_finish(end)
        finally:
            self.writer.close()
            self.catalog.close()
            if self._sigint is not None:
                signal.signal(signal.SIGINT, self._sigint)
        if self._ctrl_c_waiting and exc is None:  # pressed while the run's end was written
            raise KeyboardInterrupt
        return False  # the script's exception goes on


track = TrackedRun
"""`with workbench.track(name=..., config={...}, tags=[...], db=..., total_steps=...) as run:` a
run of your own training loop in the catalog the CLI uses (`db`, else $WORKBENCH_DB, else
./experiments.db; a path or a SQLAlchemy URL)."""


def script_environment() -> dict[str, Any]:
    """What made a tracked run: the script's path, its git commit and dirty flag, the command
    line, this machine (the same provenance record as a built-in run's, torch-free)."""
    import getpass
    import platform
    import socket

    from workbench import __version__

    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    env: dict[str, Any] = {
        "workbench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "user": _user(getpass),
        "command": list(sys.argv),
        "script": str(script) if script else "",
    }
    if script is not None and script.is_file():
        env.update(_git(script.parent))
    return env


def _git(folder: Path) -> dict[str, Any]:
    """The commit and dirty flag of the git work tree holding `folder` (nothing if none)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        if not commit:
            return {}
        return {"script_commit": commit, "script_dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {}


def _user(getpass: Any) -> str:
    try:
        return str(getpass.getuser())
    except Exception:
        return ""


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
