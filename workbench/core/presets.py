"""The papers' configurations with the numbers they should reach (workbench/resources/presets/*.json,
package data: a wheel install has them too)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.core.config import RunConfig
from workbench.core.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parents[1] / "resources" / "presets"


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    published: str  # the paper's number, as text with its protocol
    published_metric: str  # the curve it compares with, e.g. "val_accuracy"
    published_value: float | None
    config: dict[str, Any]

    def run_config(self) -> RunConfig:
        return RunConfig.from_dict({**self.config, "preset": self.name})


def load_presets(directory: Path = PRESET_DIR) -> dict[str, Preset]:
    out = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out[data["name"]] = Preset(
            data["name"], data["title"], data["published"], data.get("published_metric", ""),
            data.get("published_value"), data["config"],
        )  # fmt: skip
    return out


def get_preset(name: str) -> Preset:
    presets = load_presets()
    if name not in presets:
        raise ConfigError("--preset", f"unknown preset {name!r}; available: {', '.join(presets)}")
    return presets[name]
