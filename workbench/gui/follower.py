"""Following runs that train in other processes, through the catalog.

A run started in its own process (`workbench run`, the launcher, another app) sends the app no
signals: its `CatalogListener` commits its points every 0.5 s, and this object reads what is
new (`Catalog.points_after`, by point id) every POLL_S and turns it into the same
`StepMetrics` / `EvalResult` events the in-process runs emit, so one set of plots serves both.
The reads run on a reader thread (a run followed late brings its whole history: 500k points of
a 100k-step run take seconds to read and convert, which must not freeze the window); the GUI
thread only applies their results. Every DISCOVER_S the reader also looks for live runs not
followed yet (`Catalog.live_runs`) and ends the leases of runs whose process died
(`mark_stale_interrupted`), so a killed run shows up as interrupted.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class _Read:
    """What the reader thread found for one followed run in one round."""

    followed: Followed
    rec: RunRecord | None  # None: deleted
    restarted: bool = False
    last_id: int = 0
    count: int = 0
    steps: list[StepMetrics] = field(default_factory=list)
    evals: list[EvalResult] = field(default_factory=list)


class RunFollower(QObject):
    """Reads followed runs' new points and status from the catalog every POLL_S (a QTimer
    asks, a reader thread reads, the GUI thread applies and emits)."""

    steps = Signal(int, object)  # run id, list[StepMetrics]
    evaluated = Signal(int, object)  # run id, EvalResult
    status = Signal(int, object)  # run id, RunRecord: its status changed (running, paused...)
    ended = Signal(int, object)  # run id, RunRecord | None (deleted): no longer followed
    restarted = Signal(int)  # run id: a new attempt (resumed): its curves are read again
    discovered = Signal(object)  # RunRecord: a live run of another process, not followed yet
    error = Signal(str)  # a read failed (the catalog busy or gone): said once per kind
    _results = Signal(object)  # internal: one round's reads, from the reader thread

    def __init__(
        self, catalog: Catalog, parent: QObject | None = None, poll_s: float = POLL_S
    ) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.followed: dict[int, Followed] = {}
        self.poll_ms: list[float] = []  # how long each round's reads took (bench, tests)
        self.rounds = 0  # rounds applied
        self._discover_at = 0.0
        self._errors: set[str] = set()
        self._busy = False  # a round is being read
        self._again = False  # asked for a round while one was read
        self._jobs: queue.Queue[tuple[list[tuple[Followed, int, int]], bool] | None] = queue.Queue()
        self._results.connect(self._apply)  # queued: emitted on the reader thread
        self._reader = threading.Thread(target=self._read_loop, name="run-follower", daemon=True)
        self._reader.start()
        self.timer = QTimer(self)
        self.timer.setInterval(int(poll_s * 1000))
        self.timer.timeout.connect(self.poll)

    def start(self) -> None:
        """Announce the live runs of other processes at once (a cheap read: the window opens
        showing them; their histories come with the first round), then poll."""
        self._discover_at = time.monotonic() + DISCOVER_S
        try:
            self.catalog.mark_stale_interrupted()
            live = self.catalog.live_runs()
        except Exception as exc:
            self._say(f"cannot list the live runs: {exc}")
            live = []
        for rec in live:
            if rec.id not in self.followed and not is_own(rec):
                self.discovered.emit(rec)
        self.poll()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def close(self) -> None:
        """Stop polling and end the reader thread (after its current read)."""
        self.timer.stop()
        self._jobs.put(None)
        self._reader.join(timeout=10)

    def follow(self, run_id: int) -> bool:
        """Follow a run: its history so far comes with the next round. False if followed."""
        if run_id in self.followed:
            return False
        self.followed[run_id] = Followed(run_id)
        return True

    def unfollow(self, run_id: int) -> None:
        self.followed.pop(run_id, None)

    # ---- GUI thread ------------------------------------------------------------------
    def poll(self) -> None:
        """Ask for one round: each followed run's status and new points; discovery when due.
        A round still being read (a long history) is not doubled: the next one follows it."""
        if self._busy:
            self._again = True
            return
        now = time.monotonic()
        discover = now >= self._discover_at
        if not discover and not self.followed:
            return  # nothing to read: the reader stays asleep (a wake-up costs training the GIL)
        if discover:
            self._discover_at = now + DISCOVER_S
        snapshot = [(f, f.after_id, f.attempt) for f in self.followed.values()]
        self._busy = True
        self._jobs.put((snapshot, discover))

    def _apply(self, result: dict[str, Any]) -> None:
        self._busy = False
        self.rounds += 1
        for text in result["errors"]:
            self._say(text)
        for r in result["runs"]:
            f = r.followed
            if self.followed.get(f.run_id) is not f:
                continue  # unfollowed (or followed anew) while this round was read
            if r.rec is None:
                self.unfollow(f.run_id)
                self.ended.emit(f.run_id, None)
                continue
            if r.restarted:  # resumed: earlier points may be superseded: read again
                f.after_id, f.points = 0, 0
                self.restarted.emit(f.run_id)
            f.attempt = r.rec.attempt
            if r.count:
                f.after_id = r.last_id
                f.points += r.count
                f.last_read = time.time()
                if r.steps:
                    self.steps.emit(f.run_id, r.steps)
                for ev in r.evals:
                    self.evaluated.emit(f.run_id, ev)
            if r.rec.status != f.status:
                f.status = r.rec.status
                self.status.emit(f.run_id, r.rec)
            if r.rec.status not in LIVE:
                self.unfollow(f.run_id)
                self.ended.emit(f.run_id, r.rec)
        for rec in result["discovered"]:
            if rec.id not in self.followed and not is_own(rec):
                self.discovered.emit(rec)
        if self._again:
            self._again = False
            self.poll()

    def _say(self, text: str) -> None:
        kind = text.split(":")[0]
        if kind not in self._errors:
            self._errors.add(kind)
            self.error.emit(text)

    # ---- reader thread: catalog reads only, no Qt object touched ----------------------
    def _read_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            t0 = time.perf_counter()
            try:
                result = self._read(*job)
            except Exception as exc:  # never let the thread die: the next round tries again
                result = {"runs": [], "discovered": [], "errors": [f"follower: {exc}"]}
            self.poll_ms.append((time.perf_counter() - t0) * 1000)
            del self.poll_ms[:-1000]
            try:
                self._results.emit(result)
            except RuntimeError:  # the follower is gone (the app closed)
                return

    def _read(self, snapshot: list[tuple[Followed, int, int]], discover: bool) -> dict[str, Any]:
        cat = self.catalog
        out: dict[str, Any] = {"runs": [], "discovered": [], "errors": []}
        if discover:
            try:
                cat.mark_stale_interrupted()
                out["discovered"] = cat.live_runs()
            except Exception as exc:
                out["errors"].append(f"cannot list the live runs: {exc}")
        for f, after_id, attempt in snapshot:
            try:
                out["runs"].append(self._read_one(f, after_id, attempt))
            except Exception as exc:  # busy or gone: the next round tries again
                out["errors"].append(f"cannot read run #{f.run_id} from the catalog: {exc}")
        return out

    def _read_one(self, f: Followed, after_id: int, attempt: int) -> _Read:
        cat = self.catalog
        try:
            rec = cat.get_run(f.run_id)
        except UnknownRunError:
            return _Read(f, None)
        if rec.status in LIVE and owner_dead(rec.owner):  # killed: its lease ends now
            cat.mark_stale_interrupted()
            rec = cat.get_run(f.run_id)
        restarted = bool(attempt) and rec.attempt != attempt
        # status first, points second: a run read as ended has all its points committed
        points = cat.points_after(f.run_id, 0 if restarted else after_id)
        steps, evals = to_events(points)
        last = points[-1][0] if points else after_id
        return _Read(f, rec, restarted, last, len(points), steps, evals)
