"""How the runs table follows the catalog without re-reading it.

One small read-only query (`Catalog.live_rows`) returns the live runs (queued/running/paused),
those that just left that state and any newer ids, with the step of their latest validation:
a run that only made progress has its row's step and duration updated in place; only a new
status, attempt or validation re-reads that run's record, and new or vanished runs ask for a
full reload. While a run trains, that keeps the GUI thread's share of each second well under
a millisecond. It touches no widget: the browser decides when to ask and what to redraw.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from workbench.catalog import Catalog, RunRecord, UnknownRunError
from workbench.gui.browser_model import LIVE, RunTableModel


@dataclass
class Update:
    """What one `TableSync.update` found."""

    changed: set[int] = field(default_factory=set)  # runs whose record was re-read
    reload: bool = False  # runs vanished or could not be read: reload the table
    new_runs: bool = False  # runs appeared: reload the table and the details with it


class TableSync:
    """What the table holds of the catalog, and the cheapest update that brings it up to date."""

    def __init__(self, catalog: Catalog, model: RunTableModel) -> None:
        self.catalog = catalog
        self.model = model
        self.last_full = 0.0  # time.monotonic() of the latest full load
        self.max_id = 0
        self.live_ids: set[int] = set()

    def load(self) -> None:
        """Read every run (runs + summary tables) into the model."""
        records = self.catalog.list_runs()
        self.model.set_runs(records)
        self.max_id = max((r.id for r in records), default=0)
        self.live_ids = {r.id for r in records if r.status in LIVE}
        self.last_full = time.monotonic()

    def update(self) -> Update:
        """Live runs in place; says when a full reload is needed instead."""
        rows = self._live_rows()
        if rows is None:  # no fast path (e.g. an older schema): the catalog API
            return self._update_records()
        if self.live_ids - {r[0] for r in rows}:  # a live run was deleted
            return Update(reload=True)
        m = self.model
        changed: list[int] = []
        progress: list[tuple[int, int, float | None]] = []
        for run_id, status, step, heartbeat, ended, attempt, val_step in rows:
            row = m.row_of.get(run_id)
            if row is None:  # a new run (or one we never saw): reload everything
                return Update(reload=True, new_runs=True)
            r = m.rows[row]
            summary_val = max(
                (v.latest_step or 0 for k, v in r.summary.items() if k.startswith("val_")),
                default=0,
            )
            if (
                status != r.status
                or attempt != r.attempt
                or ended != r.ended_at
                or (val_step or 0) != summary_val
            ):
                changed.append(run_id)
            elif step != r.step or heartbeat != r.heartbeat_at:
                progress.append((run_id, step, heartbeat))
        records = self._records(changed)
        if records is None or m.update_runs(records):
            return Update(reload=True)
        m.update_progress(progress)
        self.live_ids = {r[0] for r in rows if r[1] in LIVE}
        return Update(changed=set(changed))

    def _live_rows(self) -> list[tuple[Any, ...]] | None:
        try:
            return self.catalog.live_rows(self.max_id, self.live_ids)
        except Exception:  # busy or gone: the catalog API's path reports it
            return None

    def _records(self, ids: Iterable[int]) -> list[RunRecord] | None:
        """These runs' records, or None when one of them is gone."""
        records = []
        for run_id in ids:
            try:
                records.append(self.catalog.get_run(run_id))
            except UnknownRunError:
                return None
        return records

    def _update_records(self) -> Update:
        """The same through the catalog's public API: slower, but works on any schema."""
        newest = self.catalog.list_runs(limit=1)
        if newest and newest[0].id > self.max_id:
            return Update(reload=True, new_runs=True)
        live = self.catalog.list_runs(status=list(LIVE))
        now_live = {r.id for r in live}
        left = self._records(self.live_ids - now_live)
        if left is None:
            return Update(reload=True)
        records = live + left
        if self.model.update_runs(records):
            return Update(reload=True)
        self.live_ids = now_live
        return Update(changed={r.id for r in records})
