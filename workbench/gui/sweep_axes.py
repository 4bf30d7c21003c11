"""The parallel-coordinates axes of a sweep: how each parameter (and the objective) maps to
[0, 1], and its tick labels.

Pure Python (no Qt), so that the normalisation is tested without a display: log10 for
`loguniform` parameters, categorical and grid values spread evenly, and an objective axis
that turns log10 when the objectives span over two decades (a diverged trial among good ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from workbench.catalog.sweep_store import TrialRecord


def fmt_num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def short_key(key: str) -> str:
    """`algorithm.inner_lr` -> `inner_lr` (the last part names it well enough on an axis)."""
    return key.rsplit(".", 1)[-1]


@dataclass
class Axis:
    """How one parameter (or the objective) maps to [0, 1], and its tick labels."""

    key: str
    kind: str  # "linear", "log" or "category"
    low: float = 0.0
    high: float = 1.0
    categories: tuple[Any, ...] = ()

    def norm(self, v: Any) -> float:
        if v is None:
            return math.nan
        if self.kind == "category":
            try:
                i = self.categories.index(v)
            except ValueError:
                return math.nan
            n = len(self.categories)
            return 0.5 if n == 1 else i / (n - 1)
        try:
            x = float(v)
        except (TypeError, ValueError):
            return math.nan
        if self.kind == "log":
            if x <= 0:
                return math.nan
            x = math.log10(x)
        if not math.isfinite(x):
            return math.nan
        if self.high == self.low:
            return 0.5
        return (x - self.low) / (self.high - self.low)

    def ticks(self) -> list[tuple[float, str]]:
        if self.kind == "category":
            n = len(self.categories)
            return [
                (0.5 if n == 1 else i / (n - 1), fmt_num(c)) for i, c in enumerate(self.categories)
            ]
        if self.high == self.low:
            value = 10**self.low if self.kind == "log" else self.low
            return [(0.5, f"{value:.3g}")]
        out = []
        for f in (0.0, 0.5, 1.0):
            x = self.low + f * (self.high - self.low)
            out.append((f, f"{10**x if self.kind == 'log' else x:.3g}"))
        return out


def numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def param_axes(spec: dict[str, Any], trials: list[TrialRecord]) -> list[Axis]:
    """One axis per sweep parameter, in the spec's order (keys seen only in trials after)."""
    params = spec.get("spec", {}).get("parameters", []) if isinstance(spec, dict) else []
    keys: list[str] = []
    domain: dict[str, dict[str, Any]] = {}
    for p in params:
        key = p.get("key")
        if not key:
            continue
        if key not in keys:
            keys.append(key)
        d = domain.setdefault(key, {})
        for name in ("values", "uniform", "loguniform", "int"):
            if p.get(name) is not None:
                d.setdefault(name, []).extend(p[name])
    for t in trials:
        for k in t.params:
            if k not in keys:
                keys.append(k)
    axes = []
    for key in keys:
        d = domain.get(key, {})
        seen = [t.params[key] for t in trials if key in t.params and t.params[key] is not None]
        if "loguniform" in d:
            xs = [math.log10(x) for x in d["loguniform"] + seen if numeric(x) and x > 0]
            axes.append(Axis(key, "log", min(xs), max(xs)))
        elif "uniform" in d or "int" in d:
            xs = [float(x) for x in d.get("uniform", []) + d.get("int", []) + seen if numeric(x)]
            axes.append(Axis(key, "linear", min(xs), max(xs)))
        else:  # a list of values (a grid or a choice): discrete, spread evenly
            cats: list[Any] = []
            for v in d.get("values", []) + seen:
                if v not in cats:
                    cats.append(v)
            if cats and all(numeric(c) for c in cats):
                cats.sort()
            axes.append(Axis(key, "category", categories=tuple(cats)))
    return axes


def wide(values: list[float]) -> bool:
    """Positive values spanning over two decades (a diverged trial among good ones): log."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100


def objective_axis(metric: str, trials: list[TrialRecord]) -> Axis:
    """Linear, or log10 when the objectives span over two decades."""
    xs = [t.objective for t in trials if t.objective is not None and math.isfinite(t.objective)]
    if not xs:
        return Axis(metric, "linear", 0.0, 1.0)
    if wide(xs):
        return Axis(metric, "log", math.log10(min(xs)), math.log10(max(xs)))
    return Axis(metric, "linear", min(xs), max(xs))


def decade_ticks(low: float, high: float) -> list[tuple[float, str]]:
    """Ticks at powers of ten for an axis drawn in log10 units."""
    ks = range(math.floor(low), math.ceil(high) + 1)
    return [(float(k), f"{10.0**k:g}") for k in ks]
