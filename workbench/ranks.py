"""`workbench run --nproc N`: one run on N processes of this machine, through torch's own
launcher (`torch.distributed.launcher`, the API behind torchrun: c10d rendezvous, one agent
watching its workers). This process is the agent; its workers are the CLI's own
`workbench run` / `resume` in torchrun's environment (`core.distributed`).

What the agent adds to torchrun:
- the run id: rank 0 writes it to a file named in the workers' environment (torchrun does not
  pass descriptors on), and the agent hands it to whoever launched it (`launcher.REPORT_FD`);
- Ctrl-C: a stop request through the catalog, as `workbench stop` (rank 0 decides, every rank
  stops at the same step, a stop checkpoint is written), instead of torchrun's SIGTERM to all;
- a rank that dies: torchrun stops the others with SIGTERM; rank 0 ends the run `failed`, and
  the agent then names in the run's record which rank died and by which signal.

Torch-free until it launches: the app and the launcher import it cheaply.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RANK_REPORT = "WORKBENCH_RANK_REPORT"
"""File rank 0 writes "<run id>\\t<log path>\\n" to once its run exists (`launcher.report_run`)."""


class _RunWatch(threading.Thread):
    """Waits for rank 0's report, passes it to the launcher's pipe, and sends the stop request
    a Ctrl-C asked for once the run id is known."""

    def __init__(self, report: Path, fd: int | None, db: str | None) -> None:
        super().__init__(name="rank-report", daemon=True)
        self.report, self.fd, self.db = report, fd, db
        self.run_id: int | None = None
        self.stop_asked = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        sent = False
        while not self.done.wait(0.1):
            if self.run_id is None:
                self.read()
                if self.run_id is not None and self.fd is not None:
                    with contextlib.suppress(OSError):
                        os.write(self.fd, self.report.read_bytes())
                        os.close(self.fd)
            if self.run_id is not None and self.stop_asked.is_set() and not sent:
                sent = True
                with contextlib.suppress(Exception):
                    from workbench.catalog import Catalog

                    with Catalog.open(self.db) as cat:
                        cat.request(self.run_id, "stop")

    def read(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            text = self.report.read_text("utf-8")
            if text.endswith("\n"):
                self.run_id = int(text.split("\t", 1)[0])
        return self.run_id


def write_report(path: str, line: str) -> None:
    """Rank 0's side of the report (atomic: the agent never reads half a line)."""
    temp = f"{path}.tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(line)
    os.replace(temp, path)


def launch(argv: Sequence[str], nproc: int, db: str | None) -> int:
    """Run `workbench <argv>` on `nproc` local ranks; the exit status of the run (0 finished,
    130 stopped, 1 failed, 2 refused before it started)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from workbench.catalog.store import default_checkpoint_root
    from workbench.launcher import REPORT_FD

    folder = default_checkpoint_root(db)
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / f"ranks-{uuid.uuid4().hex[:12]}.report"
    fd_text = os.environ.pop(REPORT_FD, None)  # ours, not the workers' (they cannot use it)
    os.environ[RANK_REPORT] = str(report)
    watch = _RunWatch(report, int(fd_text) if fd_text and fd_text.isdigit() else None, db)
    watch.start()

    def stop(_signum: int, _frame: Any) -> None:
        print("\nworkbench: SIGINT: stopping every rank after this step", file=sys.stderr)
        watch.stop_asked.set()

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
        monitor_interval=0.1, start_method="spawn",
        signals_to_handle="SIGTERM,SIGHUP,SIGQUIT",  # Ctrl-C is ours: a clean stop
    )  # fmt: skip
    old = signal.signal(signal.SIGINT, stop)
    try:
        elastic_launch(config, sys.executable)("-m", "workbench", *argv)
        return _ended(watch.read(), db)
    except ChildFailedError as exc:
        return _failed(exc, nproc, watch, db)
    except SignalException as exc:  # SIGTERM/SIGHUP to this agent: torchrun ended the ranks
        name = signal.Signals(exc.sigval).name
        run_id = watch.read()
        if run_id is not None:
            amend(
                db, run_id, f"the run's launcher (pid {os.getpid()}) got {name} and ended its ranks"
            )
        print(f"workbench: {name}: the ranks were ended", file=sys.stderr)
        return 128 + int(exc.sigval)
    finally:
        signal.signal(signal.SIGINT, old)
        watch.done.set()
        watch.join(timeout=5)
        with contextlib.suppress(OSError):
            report.unlink()


def _ended(run_id: int | None, db: str | None) -> int:
    """Every rank ended cleanly: 130 when the run was stopped, else 0 (ranks exit 0 for a
    stop, which torchrun would otherwise take for a failure)."""
    if run_id is None:
        return 0
    from workbench.catalog import Catalog

    with Catalog.open(db) as cat:
        return 130 if cat.get_run(run_id).status == "cancelled" else 0


def _failed(exc: Any, nproc: int, watch: _RunWatch, db: str | None) -> int:
    """Some rank ended non-zero; name the culprit in the run's record. torchrun then sends
    SIGTERM to the survivors, so the culprit is, in this order: a rank killed by another
    signal, a rank other than 0 that failed (rank 0 fails after it, having lost contact), a
    rank ended by SIGTERM. Rank 0 failing alone (1: its run's record says why; 2: refused
    before the run started) needs no word from here."""
    failures = sorted(exc.failures.items())
    run_id = watch.read()
    killed = [(r, f) for r, f in failures if f.exitcode < 0 and f.signal_name() != "SIGTERM"]
    others = [(r, f) for r, f in failures if r != 0 and f.exitcode > 0]
    ended = [(r, f) for r, f in failures if f.exitcode < 0]
    if killed or others or ended:
        rank, f = (killed or others or ended)[0]
        how = (
            f"was killed by {f.signal_name()}"
            if f.exitcode < 0
            else f"exited with status {f.exitcode} (its error is in the run's log)"
        )
        reason = f"rank {rank} of {nproc} (pid {f.pid}) {how}; torchrun stopped the other ranks"
        if run_id is not None:
            amend(db, run_id, reason)
        print(f"workbench: {reason}", file=sys.stderr)
        return 1
    zero = dict(failures).get(0)
    return 2 if zero is not None and zero.exitcode == 2 else 1


def amend(db: str | None, run_id: int, reason: str) -> None:
    """End the run `failed` with `reason`, naming the step it reached and what rank 0 said
    (rank 0 may have ended it already, without knowing which rank was lost)."""
    from workbench.catalog import Catalog

    deadline = time.monotonic() + 30
    while True:
        try:
            with Catalog.open(db) as cat:
                run = cat.get_run(run_id)
                if run.status in ("finished", "cancelled"):
                    return  # finished or stopped before the rank was lost: that stands
                said = (run.error or "").strip().splitlines()
                full = f"{reason} at step {run.step}" + (f" (rank 0: {said[0]})" if said else "")
                cat.finish_run(run_id, "failed", error=full)
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
