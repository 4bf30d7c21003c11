"""Sweeps in the catalog: the sweep, its driver's lease, and its trials (revision 0005).

Kept apart from `store.py` (runs, metrics, checkpoints): a sweep only points at runs. The
driver holds a sweep as a run's owner holds a run: `claim` takes it (refused while another
driver's heartbeat is fresh), `beat` renews it and returns a pending request ("cancel"),
`release` ends it. A sweep whose driver stopped beating reads as "interrupted".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, func, select

from workbench.catalog.errors import CatalogError, LeaseLost, RunBusyError
from workbench.catalog.schema import Sweep, SweepTrial
from workbench.catalog.store import owner_dead

if TYPE_CHECKING:
    from workbench.catalog.store import Catalog


class UnknownSweepError(CatalogError):
    def __init__(self, sweep_id: int) -> None:
        super().__init__(f"no sweep {sweep_id} in the catalog")
        self.sweep_id = sweep_id


@dataclass(frozen=True)
class TrialRecord:
    id: int
    sweep_id: int
    number: int
    seed: int
    params: dict[str, Any]
    run_id: int | None
    status: str
    objective: float | None
    error: str | None
    process: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class SweepRecord:
    id: int
    name: str
    spec_json: str
    method: str
    metric: str
    maximize: bool
    executor: str
    status: str  # "interrupted" when its driver stopped beating while it was running
    created_at: float
    ended_at: float | None
    owner: str | None
    request: str | None
    trials: int = 0
    done: int = 0
    best: float | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.spec_json)


def _trial(t: SweepTrial) -> TrialRecord:
    return TrialRecord(
        t.id, t.sweep_id, t.number, int(t.seed), json.loads(t.params_json), t.run_id,
        t.status, t.objective, t.error, t.process, t.created_at, t.updated_at,
    )  # fmt: skip


class SweepStore:
    """The sweep tables of one open catalog (`Catalog.sweeps`)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # ---- the sweep and its driver's lease ----
    def _live(self, sw: Sweep, now: float) -> bool:
        return (
            sw.status == "running"
            and sw.owner is not None
            and (sw.heartbeat_at or 0.0) > now - self.catalog.stale_s
            and not owner_dead(sw.owner)
        )

    def _get(self, s: Any, sweep_id: int, lock: bool = False) -> Sweep:
        sw = s.get(Sweep, sweep_id, with_for_update=lock or None, populate_existing=lock)
        if sw is None:
            raise UnknownSweepError(sweep_id)
        return sw

    def create(
        self, *, name: str, spec_json: str, method: str, metric: str, maximize: bool,
        executor: str, owner: str,
    ) -> int:  # fmt: skip
        with self.catalog._write() as s:
            now = self.catalog._now(s)
            sw = Sweep(
                name=name, spec_json=spec_json, method=method, metric=metric,
                maximize=maximize, executor=executor, status="running", created_at=now,
                owner=owner, heartbeat_at=now,
            )  # fmt: skip
            s.add(sw)
            s.flush()
            return int(sw.id)

    def claim(self, sweep_id: int, owner: str) -> SweepRecord:
        """Take the sweep for a resuming driver; RunBusyError while its driver is alive."""
        with self.catalog._write() as s:
            sw = self._get(s, sweep_id, lock=True)
            now = self.catalog._now(s)
            if sw.owner != owner and self._live(sw, now):
                raise RunBusyError(
                    f"sweep {sweep_id} is driven by a live process ({sw.owner}): stop it first"
                )
            sw.owner, sw.heartbeat_at, sw.status, sw.ended_at = owner, now, "running", None
            sw.request = None
        return self.get(sweep_id)

    def beat(self, sweep_id: int, owner: str) -> str | None:
        """Renew the driver's lease; the pending request ("cancel") or None. LeaseLost when
        another driver took the sweep."""
        with self.catalog._write() as s:
            sw = self._get(s, sweep_id, lock=True)
            if sw.owner != owner:
                raise LeaseLost(f"sweep {sweep_id} was taken by {sw.owner}")
            sw.heartbeat_at = self.catalog._now(s)
            return sw.request

    def release(self, sweep_id: int, owner: str, status: str) -> None:
        with self.catalog._write() as s:
            sw = self._get(s, sweep_id, lock=True)
            if sw.owner != owner:
                return  # another driver has it now: its status is that driver's to set
            sw.status, sw.ended_at, sw.owner, sw.request = status, self.catalog._now(s), None, None

    def request_cancel(self, sweep_id: int) -> bool:
        """Ask the sweep's driver to cancel (it stops its trials and ends the sweep cancelled).
        False when no live driver holds it: the sweep is then marked cancelled here, and the
        caller stops the trials that still run."""
        with self.catalog._write() as s:
            sw = self._get(s, sweep_id, lock=True)
            now = self.catalog._now(s)
            if self._live(sw, now):
                sw.request = "cancel"
                return True
            if sw.status in ("running", "interrupted"):
                sw.status, sw.ended_at, sw.owner = "cancelled", now, None
            return False

    def get(self, sweep_id: int) -> SweepRecord:
        with self.catalog._read() as s:
            sw = self._get(s, sweep_id)
            return self._records(s, [sw])[0]

    def list(self) -> list[SweepRecord]:
        """Every sweep, newest first, with its trial counts and best objective."""
        with self.catalog._read() as s:
            return self._records(s, list(s.scalars(select(Sweep).order_by(Sweep.id.desc()))))

    def _records(self, s: Any, sweeps: list[Sweep]) -> list[SweepRecord]:
        now = self.catalog._now(s)
        ids = [sw.id for sw in sweeps]
        counts: dict[int, tuple[int, int, float | None, float | None]] = {}
        if ids:
            t = SweepTrial
            finished = func.sum((t.status == "finished").cast(Integer))
            rows = s.execute(
                select(
                    t.sweep_id, func.count(), finished, func.max(t.objective), func.min(t.objective)
                )
                .where(t.sweep_id.in_(ids))
                .group_by(t.sweep_id)
            )
            counts = {r[0]: (r[1], int(r[2] or 0), r[3], r[4]) for r in rows}
        out = []
        for sw in sweeps:
            n, done, high, low = counts.get(sw.id, (0, 0, None, None))
            status = sw.status
            if status == "running" and not self._live(sw, now):
                status = "interrupted"
            out.append(
                SweepRecord(
                    sw.id,
                    sw.name,
                    sw.spec_json,
                    sw.method,
                    sw.metric,
                    bool(sw.maximize),
                    sw.executor,
                    status,
                    sw.created_at,
                    sw.ended_at,
                    sw.owner,
                    sw.request,
                    n,
                    done,
                    high if sw.maximize else low,
                )  # fmt: skip
            )
        return out

    # ---- trials ----
    def add_trial(self, sweep_id: int, number: int, seed: int, params: dict[str, Any]) -> int:
        """Record a trial before its process starts (status "starting")."""
        with self.catalog._write() as s:
            self._get(s, sweep_id)
            now = self.catalog._now(s)
            t = SweepTrial(
                sweep_id=sweep_id, number=number, seed=seed, status="starting",
                params_json=json.dumps(params, sort_keys=True), created_at=now, updated_at=now,
            )  # fmt: skip
            s.add(t)
            s.flush()
            return int(t.id)

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        """Set a trial's run_id, status, objective, error or process."""
        unknown = set(fields) - {"run_id", "status", "objective", "error", "process"}
        if unknown:
            raise ValueError(f"update_trial: unknown fields {sorted(unknown)}")
        with self.catalog._write() as s:
            t = s.get(SweepTrial, trial_id, with_for_update=True)
            if t is None:
                raise CatalogError(f"no sweep trial {trial_id} in the catalog")
            for k, v in fields.items():
                setattr(t, k, v)
            t.updated_at = self.catalog._now(s)

    def trials(self, sweep_id: int) -> list[TrialRecord]:
        """The sweep's trials by number, then seed."""
        with self.catalog._read() as s:
            self._get(s, sweep_id)
            rows = s.scalars(
                select(SweepTrial)
                .where(SweepTrial.sweep_id == sweep_id)
                .order_by(SweepTrial.number, SweepTrial.seed, SweepTrial.id)
            )
            return [_trial(t) for t in rows]
