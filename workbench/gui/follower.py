"""Following runs that train in other processes, through the catalog.

A run started in its own process (`workbench run`, the launcher, another app) sends the app no
signals: its `CatalogListener` commits its points every 0.5 s, and this object reads what is
new (`Catalog.points_after`, by point id) every POLL_S on the GUI thread and turns it into the
same `StepMetrics` / `EvalResult` events the in-process runs emit, so one set of plots serves
both. The reads are small (only new rows, WAL readers never wait for the writer); every
DISCOVER_S it also looks for live runs it does not follow yet (`Catalog.live_runs`), and ends
the leases of runs whose process died (`mark_stale_interrupted`), so a killed run shows up as
interrupted.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, QTimer, Signal

from workbench.catalog import Catalog, RunRecord, UnknownRunError
from workbench.catalog.store import owner_dead
from workbench.core.events import EvalResult, StepMetrics

POLL_S = 0.5  # new points and status of each followed run (the writer commits every 0.5 s)
DISCOVER_S = 3.0  # live runs not followed yet, and dead owners' leases
LIVE = ("queued", "running", "paused")
Point = tuple[int, int, str, float | None, float]


def owner_pid(owner: str | None) -> int | None:
    """The pid in a lease token "host:pid:random" (None without one)."""
    pid = (owner or "").partition(":")[2].partition(":")[0]
    return int(pid) if pid.isdigit() else None


def is_own(rec: RunRecord) -> bool:
    """Whether the app's own process holds the run (its queue or training thread)."""
    return owner_pid(rec.owner) == os.getpid()


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


def to_events(points: list[Point]) -> tuple[list[StepMetrics], list[EvalResult]]:
    """Catalog points (id, step, name, value, wall_time) -> the events the plots take: per
    step, the step metrics (loss, mse|accuracy, meta_lr, steps_per_s, ...) and the validation
    (val_<metric>, val_<metric>_ci95 and its extras). A step's points are committed in one
    transaction, so a batch never holds half a step."""
    steps: dict[int, tuple[dict[str, float], float]] = {}
    evals: dict[int, dict[str, float]] = {}
    for _id, step, name, value, wall in points:
        if name.startswith("val_"):
            evals.setdefault(step, {})[name[4:]] = _num(value)
        elif not name.startswith("test_"):
            values, w = steps.setdefault(step, ({}, wall))
            values[name] = _num(value)
    out_steps = [StepMetrics(step, values, wall) for step, (values, wall) in steps.items()]
    out_evals = []
    for step, vals in evals.items():
        metric = "accuracy" if "accuracy" in vals else "mse" if "mse" in vals else None
        if metric is None:
            continue
        extra = {k: v for k, v in vals.items() if k not in (metric, f"{metric}_ci95")}
        ci = vals.get(f"{metric}_ci95", 0.0)
        out_evals.append(EvalResult(step, "val", vals[metric], ci, 0, metric, extra))
    return out_steps, out_evals


@dataclass
class Followed:
    run_id: int
    after_id: int = 0  # the newest point id read
    status: str = ""
    attempt: int = 0
    points: int = 0  # points read so far
    last_read: float = field(default_factory=time.time)


class RunFollower(QObject):
    """Reads followed runs' new points and status from the catalog on a QTimer."""

    steps = Signal(int, object)  # run id, list[StepMetrics]
    evaluated = Signal(int, object)  # run id, EvalResult
    status = Signal(int, object)  # run id, RunRecord: its status changed (running, paused...)
    ended = Signal(int, object)  # run id, RunRecord | None (deleted): no longer followed
    restarted = Signal(int)  # run id: a new attempt (resumed): its curves are read again
    discovered = Signal(object)  # RunRecord: a live run of another process, not followed yet
    error = Signal(str)  # a read failed (the catalog busy or gone): said once per kind

    def __init__(
        self, catalog: Catalog, parent: QObject | None = None, poll_s: float = POLL_S
    ) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.followed: dict[int, Followed] = {}
        self.poll_ms: list[float] = []  # how long each poll took (bench, tests)
        self._discover_at = 0.0
        self._errors: set[str] = set()
        self.timer = QTimer(self)
        self.timer.setInterval(int(poll_s * 1000))
        self.timer.timeout.connect(self.poll)

    def start(self) -> None:
        self.discover()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def follow(self, run_id: int) -> bool:
        """Follow a run: its history so far comes with the next poll. False if followed."""
        if run_id in self.followed:
            return False
        self.followed[run_id] = Followed(run_id)
        return True

    def unfollow(self, run_id: int) -> None:
        self.followed.pop(run_id, None)

    def live_count(self) -> int:
        return sum(1 for f in self.followed.values() if f.status in LIVE or not f.status)

    # ---- polling ---------------------------------------------------------------------
    def poll(self) -> None:
        """One round: each followed run's status and new points; discovery when due."""
        t0 = time.perf_counter()
        now = time.monotonic()
        if now >= self._discover_at:
            self.discover()
        for f in list(self.followed.values()):
            try:
                self._poll_one(f)
            except Exception as exc:  # busy or gone: the next round tries again
                self._say(f"cannot read run #{f.run_id} from the catalog: {exc}")
        self.poll_ms.append((time.perf_counter() - t0) * 1000)
        del self.poll_ms[:-1000]

    def _poll_one(self, f: Followed) -> None:
        try:
            rec = self.catalog.get_run(f.run_id)
        except UnknownRunError:
            self.unfollow(f.run_id)
            self.ended.emit(f.run_id, None)
            return
        if rec.status in LIVE and owner_dead(rec.owner):  # killed: its lease ends now
            self.catalog.mark_stale_interrupted()
            rec = self.catalog.get_run(f.run_id)
        if f.attempt and rec.attempt != f.attempt:  # resumed: earlier points may be superseded
            f.after_id, f.points = 0, 0
            self.restarted.emit(f.run_id)
        f.attempt = rec.attempt
        # status first, points second: a run read as ended has all its points committed
        points = self.catalog.points_after(f.run_id, f.after_id)
        if points:
            f.after_id = points[-1][0]
            f.points += len(points)
            f.last_read = time.time()
            steps, evals = to_events(points)
            if steps:
                self.steps.emit(f.run_id, steps)
            for ev in evals:
                self.evaluated.emit(f.run_id, ev)
        if rec.status != f.status:
            f.status = rec.status
            self.status.emit(f.run_id, rec)
        if rec.status not in LIVE:
            self.unfollow(f.run_id)
            self.ended.emit(f.run_id, rec)

    def discover(self) -> list[RunRecord]:
        """Live runs of other processes not followed yet (announced through `discovered`);
        also ends the leases of owners that stopped (a killed run turns interrupted)."""
        self._discover_at = time.monotonic() + DISCOVER_S
        try:
            self.catalog.mark_stale_interrupted()
            live = self.catalog.live_runs()
        except Exception as exc:
            self._say(f"cannot list the live runs: {exc}")
            return []
        new = [r for r in live if r.id not in self.followed and not is_own(r)]
        for rec in new:
            self.discovered.emit(rec)
        return new

    def _say(self, text: str) -> None:
        kind = text.split(":")[0]
        if kind not in self._errors:
            self._errors.add(kind)
            self.error.emit(text)
