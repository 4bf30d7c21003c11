"""Start a run in its own process: the one way the app, sweeps and multi-rank runs do it.

The child is the CLI's own `workbench run` / `workbench resume` in a new session (`setsid`:
closing the app, its terminal or a remote desktop does not end it), with its output in a
log file. It reports its run id through a pipe as soon as the run exists in the catalog;
`Pending.wait` returns then, long before training ends. The child creates the run itself,
so a launcher killed while it waits leaves either a run that starts anyway or none at all,
never a half-made one. Pause, resume and stop then go through the catalog
(`Catalog.request`), which the run's writer polls between steps; that works the same from
another process or, with a shared catalog, another machine.

Qt-free, torch-free: the app calls it from its GUI thread (`spawn_*` returns at once; poll
the `Pending`), the CLI from `--detach`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.faults import fault_point
from workbench.ranks import RANK_REPORT, write_report

REPORT_FD = "WORKBENCH_REPORT_FD"
"""The child writes "<run id>\\t<log path>\\n" to this inherited descriptor once its run exists."""
LAUNCH_LOG = "WORKBENCH_LAUNCH_LOG"
"""The child's output file until its run exists; the child then moves it beside the run's
checkpoints (`report_run`)."""


class LaunchError(RuntimeError):
    """The child ended before it created its run; str(): one line saying why (its error)."""


@dataclass(frozen=True)
class Launched:
    run_id: int
    pid: int
    log_path: Path


class Pending:
    """A launch in flight: `poll()` (non-blocking) or `wait()` for the run id."""

    def __init__(self, proc: subprocess.Popen[bytes], report: int, log: Path) -> None:
        self.proc = proc
        self._report = report
        self._log = log
        self._buffer = b""
        self._result: Launched | None = None
        self._error: str | None = None
        # reap the child when it ends (the app lives on): a zombie would look alive to the
        # catalog's dead-owner check for the whole stale window
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> Launched | None:
        """The launched run once the child reported it; None while it is still starting;
        LaunchError when the child ended without creating its run."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise LaunchError(self._error)
        while select.select([self._report], [], [], 0)[0]:
            chunk = os.read(self._report, 4096)
            if not chunk:  # the child closed its end: ended (or reported, handled below)
                return self._finish()
            self._buffer += chunk
            if b"\n" in self._buffer:
                return self._finish()
        return None

    def wait(self, timeout_s: float | None = None) -> Launched:
        """Block until the child reported its run (or failed); TimeoutError after timeout_s."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            got = self.poll()
            if got is not None:
                return got
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"process {self.pid} has not created its run yet")
            select.select([self._report], [], [], 1.0 if left is None else min(left, 1.0))

    def _finish(self) -> Launched:
        os.close(self._report)
        line = self._buffer.split(b"\n", 1)[0].decode("utf-8", "replace")
        run_id, _, log = line.partition("\t")
        if run_id.isdigit():
            self._result = Launched(int(run_id), self.proc.pid, Path(log))
            fault_point("launch.reported")
            return self._result
        self.proc.wait()
        self._error = _failure(self._log, self.proc.returncode)
        raise LaunchError(self._error)


def _failure(log: Path, code: int | None) -> str:
    """The child's own one-line error (its last line on stderr), else its exit status."""
    try:
        lines = [ln.strip() for ln in log.read_text("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    with contextlib.suppress(OSError):
        log.unlink()
    if lines:
        return lines[-1]
    return f"the run's process ended (exit status {code}) before it created its run"


def log_folder(db: str | os.PathLike[str] | None) -> Path:
    """Where a child's output goes until its run exists: the catalog's checkpoint root
    (same file system as the run's folder, so the log moves there with a rename)."""
    from workbench.catalog.store import default_checkpoint_root

    return default_checkpoint_root(db)


def spawn(
    args: Sequence[str],
    db: str | os.PathLike[str] | None = None,
    mark: tuple[str, str] | None = None,
) -> Pending:
    """Start `workbench [--db DB] <args>` (a `run` or `resume` command line) detached. `mark`
    (name, value) is set in the child's environment, where `marked` finds it again: a sweep
    driver killed right after a launch, before it could record which process it started, must
    not start the trial twice."""
    folder = log_folder(db)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"launch-{uuid.uuid4().hex[:12]}.log"
    read_end, write_end = os.pipe()
    env = {**os.environ, REPORT_FD: str(write_end), LAUNCH_LOG: str(log)}
    if mark is not None:
        env[mark[0]] = mark[1]
    argv = [sys.executable, "-m", "workbench", *(["--db", str(db)] if db else []), *args]
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(write_end,),
                env=env,
            )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    pending = Pending(proc, read_end, log)
    fault_point("launch.spawned")
    return pending


def spawn_config(
    config: Any,
    db: str | os.PathLike[str] | None = None,
    extra: Sequence[str] = (),
    mark: tuple[str, str] | None = None,
) -> Pending:
    """A new run of `config` (a RunConfig, its dict or its JSON) in its own process."""
    text = (
        config
        if isinstance(config, str)
        else json.dumps(config if isinstance(config, dict) else config.to_dict())
    )
    folder = log_folder(db)
    folder.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=folder, prefix="launch-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    # the child reads the file before it creates its run, and removes it (`report_run`)
    return spawn(["run", "--config", path, "--quiet", *extra], db, mark)


def spawn_resume(
    run_id: int,
    db: str | os.PathLike[str] | None = None,
    checkpoint: str = "latest",
    steps: int | None = None,
    nproc: int = 1,
) -> Pending:
    """Resume run `run_id` (from `checkpoint`, optionally to a new step budget) in its own
    process (`nproc` > 1: on that many ranks)."""
    more = ["--steps", str(int(steps))] if steps is not None else []
    if nproc > 1:
        more += ["--nproc", str(int(nproc))]
    return spawn(
        ["resume", str(int(run_id)), "--checkpoint", str(checkpoint), "--quiet", *more], db
    )


def marked(name: str, value: str) -> list[int]:
    """Pids of this machine's live processes (of this user) whose environment has `name=value`
    (Linux /proc; elsewhere none are found)."""
    want = f"{name}={value}".encode()
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            env = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and want in env.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def launch_config(config: Any, db: str | os.PathLike[str] | None = None) -> Launched:
    return spawn_config(config, db).wait()


def report_run(catalog: Any, run_id: int, config_file: str | None = None) -> None:
    """In a launched child, once its run exists: move the log beside the run's checkpoints,
    record it, and tell the launcher the run id. A no-op in a process nobody launched. A
    launcher that is gone (killed while waiting) is not an error: the run trains on."""
    fd_text = os.environ.pop(REPORT_FD, None)
    log_text = os.environ.pop(LAUNCH_LOG, None)
    rank_report = os.environ.pop(RANK_REPORT, None)  # rank 0 of `run --nproc`: its agent's file
    if config_file and Path(config_file).name.startswith("launch-"):
        with contextlib.suppress(OSError):
            os.unlink(config_file)
    if rank_report:
        log = _move_log(catalog, run_id, log_text)
        with contextlib.suppress(OSError):
            write_report(rank_report, f"{run_id}\t{log or ''}\n")
        return
    if fd_text is None or not fd_text.isdigit():
        return
    log = _move_log(catalog, run_id, log_text)
    try:
        os.write(int(fd_text), f"{run_id}\t{log or ''}\n".encode())
    except OSError:  # the launcher is gone: nobody to tell
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(int(fd_text))


def _move_log(catalog: Any, run_id: int, log_text: str | None) -> Path | None:
    """The launch log moved beside the run's checkpoints (the open descriptors follow it) and
    recorded as the run's log."""
    log = Path(log_text) if log_text else None
    if log is not None:
        final = catalog.checkpoint_dir(run_id, create=True) / "run.log"
        try:
            os.replace(log, final)
            log = final
        except OSError:
            pass
        catalog.set_log_path(run_id, log)
    return log
