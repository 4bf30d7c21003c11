"""The run setup form's values: parsing seeds, the device picker's choices, which fields an
algorithm reads, merging configs, and the collapsible section widget. A part of the run setup form (`gui/run_form.py`), Qt-light."""

from __future__ import annotations

import os
import re
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.core.algorithms import ALGORITHMS
from workbench.core.config import default_config
from workbench.gui.fields import ChoiceEditor


def demo_config(algorithm: str = "maml", dataset: str = "sinusoid") -> dict[str, Any]:
    """The launch default: exactly what `workbench run` uses with no flags (MAML on sinusoid
    trains in seconds on a CPU), so the same settings give the same numbers in both."""
    return default_config(algorithm, dataset).to_dict()


def inner_step_phases(algorithm: str) -> tuple[str, ...]:
    """Phases whose inner steps the algorithm uses (the class declares it; the MAML family:
    ("train", "eval"))."""
    return tuple(ALGORITHMS.get(algorithm).inner_step_phases)


# fields that describe this run rather than the algorithm/dataset pair: never reset on a switch
OWN_FIELDS = {
    "algorithm.name", "dataset.name", "name", "seed", "tags", "precision", "deterministic", "threads",
}  # fmt: skip


# fields whose meaning depends on the task kind (a 5-way shape means nothing for regression)
KIND_FIELDS = ("train.", "eval.", "algorithm.inner_lr", "algorithm.eval_inner_lr")


_MISSING = object()


SCHEDULE_FIELDS = [
    "steps",
    "val_every",
    "val_episodes",
    "ckpt_every",
    "keep_last",
    "test_episodes",
    "test_on_finish",
]


# task-shape cells the engine does not read, with why (shown greyed out, with this tooltip)
UNUSED_FIELDS = {
    "eval.meta_batch": "Evaluation draws its episodes in groups set by the task shape, so every "
    "run of a dataset is scored on the same episodes; this value is not used",
}


DATASET_OPTION_FIELDS = ["split", "split_seed", "rotations", "image_size", "channels", "download"]


def preferred_device(ids: list[str]) -> str:
    """cuda first, then mps, then cpu."""
    for prefix in ("cuda", "mps"):
        for i in ids:
            if i.startswith(prefix):
                return i
    return "cpu"


SEED_HELP = "use e.g. 0 or 0,1,2 or 0-4"


_SEED_RANGE = re.compile(r"([+-]?\d+)\s*-\s*([+-]?\d+)")


PARALLEL = "*"


"""In the device picker's data: "cpu*2" is the CPU on 2 processes, "cuda*4" 4 GPUs."""


def parallel_choices(ids: list[str], cores: int | None = None) -> list[tuple[str, int, str]]:
    """The picker's data-parallel entries: all GPUs (one process each) where there are
    several, and N processes on the CPU where it has N > 1 cores."""
    out = []
    gpus = [i for i in ids if i.startswith("cuda:")]
    if len(gpus) > 1:
        out.append(("cuda", len(gpus), f"all {len(gpus)} GPUs, data-parallel"))
    cores = (os.cpu_count() or 1) if cores is None else cores
    if cores > 1:
        out.append(("cpu", cores, f"cpu, {cores} processes, data-parallel"))
    return out


def parse_seeds(text: str) -> list[int]:
    """'3' or '1,2,3' or '1-4' -> list of seeds (ValueError with a message for the user)."""
    seeds: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        span = _SEED_RANGE.fullmatch(part)
        if span:
            lo, hi = int(span[1]), int(span[2])
            if hi < lo or hi - lo > 999:
                raise ValueError(f"range {part!r} must go upwards and hold at most 1000 seeds")
            seeds.extend(range(lo, hi + 1))
        elif re.fullmatch(r"[+-]?\d+", part):
            seeds.append(int(part))
        else:
            raise ValueError(f"{part!r} is not a whole number; {SEED_HELP}")
    if not seeds:
        raise ValueError(f"give at least one seed; {SEED_HELP}")
    return list(dict.fromkeys(seeds))


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """{"train": {"ways": 5}} -> {"train.ways": 5} (one level: the form's dotted keys)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def _show(v: Any) -> str:
    return "empty" if v is None or v == "" else str(v)


class Collapsible(QWidget):
    """A header button that shows or hides its content."""

    def __init__(self, title: str, content: QWidget, expanded: bool = False) -> None:
        super().__init__()
        self.button = QToolButton(text=title, checkable=True, checked=expanded)
        self.button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.button.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.content = content
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.button)
        lay.addWidget(content)
        self.button.toggled.connect(self._toggle)
        self._toggle(expanded)

    def _toggle(self, on: bool) -> None:
        self.button.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.content.setVisible(on)


def _fixed_choice(editor: Any) -> bool:
    """A combo box with a single option (fomaml's first_order: True): nothing to choose."""
    return isinstance(editor, ChoiceEditor) and len(editor.choices) <= 1


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
