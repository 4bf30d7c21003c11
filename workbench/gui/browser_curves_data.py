"""The Curves tab's data: which metric each panel shows, each selected run's curves read from
the catalog once, and what a panel draws from them.

A run's points go into the live view's `Series` (the same EMA smoothing, raw values kept), so
smoothing, log scale, grouping and the x axis redraw without reading the catalog again.

Wall time is training time on the path to each point: seconds since the run's first point,
with the gaps between attempts (a crash, a wait in a queue, a resume days later) left out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.catalog import Catalog, RunRecord
from workbench.exports import seed_group_key as group_key
from workbench.gui.buffers import Series
from workbench.gui.live_plots import LOG_KEYS  # the live view's log-scale plots (and its look)

RAW_MAX = 10  # up to this many curves on a panel: faint raw curves, CI bands, val markers

XY = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class PanelSpec:
    """One panel: the metric it reads for a run of a kind ("accuracy" or "mse"), its title,
    and whether smoothing and the log toggle apply (a learning rate is a schedule, not noise,
    and stays linear from 0, as in the live view)."""

    key: str
    title: str  # "{kind}" is replaced by "accuracy", "MSE" or "accuracy / MSE"
    metric: Callable[[str], str]
    smooth: bool = True
    log: bool = True  # False: linear even when "Log scale" is on


def _spec(key: str, title: str, metric: Callable[[str], str], smooth: bool = True) -> PanelSpec:
    return PanelSpec(key, title, metric, smooth, log=key in LOG_KEYS)  # as the live view


PANELS: dict[str, PanelSpec] = {
    "loss": _spec("loss", "Meta-train loss", lambda k: "loss"),
    "score": _spec("score", "Query {kind}", lambda k: k),
    "val": _spec("val", "Validation {kind} ± 95% CI", lambda k: f"val_{k}", smooth=False),
    "lr": _spec("lr", "Meta learning rate", lambda k: "meta_lr", smooth=False),
}
PANEL_NAMES = {"loss": "Loss", "score": "Query score", "val": "Validation", "lr": "Learning rate"}
# every metric a fixed panel can show: the "Also plot" choice offers the others
PANEL_METRICS = {"loss", "accuracy", "mse", "val_accuracy", "val_mse", "meta_lr"}


def extra_spec(name: str) -> PanelSpec:
    """A panel for any other recorded metric (steps/s, a tracked script's own names)."""
    return PanelSpec("extra", name, lambda k: name, smooth=not name.startswith("val_"))


def run_kind(rec: RunRecord) -> str:
    """ "accuracy" for classification runs, "mse" for regression (by what the run recorded)."""
    names = rec.summary.keys()
    return "accuracy" if {"accuracy", "val_accuracy", "test_accuracy"} & names else "mse"


def kind_label(kinds: set[str]) -> str:
    names = [{"accuracy": "accuracy", "mse": "MSE"}[k] for k in sorted(kinds)] or ["score"]
    return " / ".join(names)


def attempt_clock(
    points: Sequence[XY], attempts: Sequence[tuple[int, float | None]]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(steps, wall times) -> seconds of training, from the run's points and its attempts
    [(start step, started at)]. A point at step s belongs to the last attempt that started
    before s (a resume supersedes the later points of earlier attempts); each attempt's time
    counts from its start (or its first point, when the clocks disagree) and continues where
    the previous attempt's last point left off."""

    def owner(steps: np.ndarray) -> np.ndarray:
        o = np.zeros(len(steps), np.int64)
        for k, (start, _) in enumerate(attempts[1:], 1):
            o[steps > start] = k
        return o

    st = np.concatenate([p[0] for p in points]) if points else np.zeros(0)
    wt = np.concatenate([p[1] for p in points]) if points else np.zeros(0)
    offsets = np.zeros(max(len(attempts), 1))
    if len(wt):
        o = owner(st)
        carry, prev_last = 0.0, -math.inf
        for k in np.unique(o):
            w = wt[o == k]
            first, last = float(w.min()), float(w.max())
            begun = attempts[k][1] if k and k < len(attempts) else None
            base = begun if begun is not None and prev_last <= begun <= first else first
            offsets[k] = carry - base
            carry, prev_last = carry + (last - base), last
    return lambda steps, walls: walls + offsets[owner(steps)]


@dataclass
class RunCurves:
    """One run's points per panel (`Series`: step, seconds of training, value, EMA)."""

    run_id: int
    label: str
    kind: str
    config: dict
    series: dict[str, Series] = field(default_factory=dict)
    ci: dict[str, np.ndarray] = field(default_factory=dict)  # val: 95% CI half-widths


def load_run(
    catalog: Catalog, rec: RunRecord, specs: Sequence[PanelSpec], alpha: float
) -> RunCurves:
    """Read the run's points for these panels (only the metrics it recorded)."""
    kind = run_kind(rec)
    run = RunCurves(rec.id, f"#{rec.id} {rec.name}", kind, rec.config)
    raw: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for spec in specs:
        name = spec.metric(kind)
        if name in rec.summary:
            raw[spec.key] = catalog.metrics(rec.id, name)
    attempts: list[tuple[int, float | None]] = []
    if rec.attempt > 1:
        attempts = [(a["start_step"], a["started_at"]) for a in catalog.attempts(rec.id)]
    clock = attempt_clock([(s, w) for s, _, w in raw.values()], attempts)
    for spec in specs:
        if spec.key not in raw:
            continue
        steps, values, walls = raw[spec.key]
        s = Series(max(len(steps), 16))
        s.set_alpha(alpha if spec.smooth else 0.0)
        s.extend(steps.astype(np.float64), clock(steps, walls), values)
        run.series[spec.key] = s
        ci_name = f"{spec.metric(kind)}_ci95"
        if spec.key == "val" and ci_name in rec.summary:
            cs, cv, _ = catalog.metrics(rec.id, ci_name)
            ci = np.interp(steps, cs, np.nan_to_num(cv)) if len(cs) else np.zeros(len(steps))
            run.ci[spec.key] = ci
    return run


def mean_band(
    curves: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over runs, interpolated on the x of the longest run."""
    grid = max((s for s, _ in curves), key=len).astype(np.float64)
    ys = []
    for s, v in curves:
        ok = np.isfinite(v)
        if ok.sum() == 0:
            continue
        y = np.interp(grid, s[ok], v[ok], left=np.nan, right=np.nan)
        ys.append(y)
    arr = np.vstack(ys) if ys else np.full((1, len(grid)), np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no mean there
        return grid, np.nanmean(arr, axis=0), np.nanstd(arr, axis=0)


@dataclass
class Entry:
    """One legend line: a run, or the runs of a seed group drawn as their mean."""

    label: str
    runs: list[RunCurves]


def entries(runs: list[RunCurves], grouped: bool) -> list[Entry]:
    if not grouped:
        return [Entry(r.label, [r]) for r in runs]
    groups: dict[str, list[RunCurves]] = {}
    for r in runs:
        groups.setdefault(group_key(r.config), []).append(r)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(Entry(members[0].label, members))
            continue
        cfg = members[0].config
        what = (
            f"{cfg.get('algorithm', {}).get('name', '?')}/{cfg.get('dataset', {}).get('name', '?')}"
        )
        out.append(Entry(f"{what} mean of {len(members)} seeds", members))
    return out


@dataclass
class PanelData:
    """What one panel draws, one item per entry (empty arrays keep the colours aligned)."""

    lines: list[XY]
    raw: list[XY] | None  # faint unsmoothed curves behind (few curves, smoothing on)
    bands: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]  # entry, x, low, high
    markers: bool  # validation points as dots (few curves)
    hint: str  # shown when nothing is drawn


def _log(y: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), np.nan)


def panel_data(
    spec: PanelSpec, ents: list[Entry], x_mode: str, smoothing: bool, log: bool
) -> PanelData:
    """Each entry's curve on this panel in the chosen x (step or seconds) and y (smoothed,
    log10 on a log axis: pyqtgraph's axis expects it; values <= 0 are left out)."""
    log = log and spec.log
    smooth = smoothing and spec.smooth
    few = len(ents) <= RAW_MAX
    ty = _log if log else (lambda y: y)
    lines: list[XY] = []
    raw: list[XY] = []
    bands: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    empty = np.zeros(0)
    for i, e in enumerate(ents):
        have = [r for r in e.runs if spec.key in r.series and len(r.series[spec.key])]
        if not have:
            lines.append((empty, empty))
            raw.append((empty, empty))
            continue
        if len(e.runs) == 1:
            s = have[0].series[spec.key]
            x = s.x(x_mode)
            lines.append((x, ty(s.y(smooth))))
            raw.append((x, ty(s.y(False))))
            ci = have[0].ci.get(spec.key)
            if few and ci is not None and len(ci) == len(x):
                bands.append((i, x, ty(s.y(False) - ci), ty(s.y(False) + ci)))
            continue
        curves = [(r.series[spec.key].x(x_mode), r.series[spec.key].y(smooth)) for r in have]
        grid, mean, std = mean_band(curves)
        lines.append((grid, ty(mean)))
        raw.append((empty, empty))
        bands.append((i, grid, ty(mean - std), ty(mean + std)))
    names = sorted({spec.metric(k) for k in {r.kind for e in ents for r in e.runs}})
    whose = "this run" if sum(len(e.runs) for e in ents) == 1 else "the selected runs"
    hint = f"No {' / '.join(names)} recorded for {whose}" if ents else ""
    return PanelData(
        lines=lines,
        raw=raw if smooth and few and not any(len(e.runs) > 1 for e in ents) else None,
        bands=bands,
        markers=few and spec.key == "val",
        hint=hint,
    )
