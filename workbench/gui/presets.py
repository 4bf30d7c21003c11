"""Paper presets for the form: `workbench.core.presets` (workbench/resources/presets/*.json), loaded so
that a broken file is reported instead of taking the app down."""

from __future__ import annotations

from pathlib import Path

from workbench.core.presets import PRESET_DIR, Preset
from workbench.core.presets import load_presets as _load_presets

__all__ = ["Preset", "load_presets", "reference_value"]


def load_presets(folder: Path | None = None) -> tuple[list[Preset], list[str]]:
    """Presets sorted by title, and error messages (empty when all files loaded)."""
    try:
        presets = list(_load_presets(folder or PRESET_DIR).values())
    except Exception as exc:
        return [], [f"presets in {folder or PRESET_DIR} could not be read: {exc}"]
    presets.sort(key=lambda p: p.title.lower())
    return presets, []


def reference_value(preset: Preset | None, metric: str) -> float | None:
    """The published number on the scale the run reports (accuracy as a fraction)."""
    if preset is None or preset.published_value is None:
        return None
    published_metric = getattr(preset, "published_metric", "") or ""
    if published_metric and not published_metric.endswith(metric):
        return None
    v = float(preset.published_value)
    return v / 100.0 if metric == "accuracy" and v > 1.0 else v
