"""The run-setup panel: every field of a RunConfig, generated from the pydantic schemas.

Each edit rebuilds a `RunConfig` with `RunConfig.from_dict` and checks the task shapes against
the chosen dataset as a run would (`shape_check`); a `ConfigError` marks the field it names and
`validityChanged(False, reason)` keeps Start disabled, so a run that would fail at step 0, or
train something other than what the form shows, is never started. Defaults come from
`default_config`, the CLI's source; choosing another algorithm or dataset restores that pair's
defaults except for what the user set on purpose and what still fits, and says what it reset.
Presets fill the whole form.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QLabel,
    QLineEdit,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from workbench.core.algorithms import ALGORITHMS
from workbench.core.config import RunConfig, default_config
from workbench.core.distributed import check_world
from workbench.core.errors import ConfigError
from workbench.core.tasks import DATASETS
from workbench.gui.fields import editor_for, label_for
from workbench.gui.presets import Preset, load_presets
from workbench.gui.run_form_sections import SectionsMixin
from workbench.gui.run_form_values import (
    _MISSING,
    KIND_FIELDS,
    OWN_FIELDS,
    PARALLEL,
    _fixed_choice,
    _merge,
    _show,
    demo_config,
    flatten,
    inner_step_phases,
    parse_seeds,
    preferred_device,
)
from workbench.gui.shape_check import ShapeChecker

log = logging.getLogger(__name__)


class RunForm(SectionsMixin, QWidget):
    """Emits `validityChanged(ok, reason)` and `configChanged()` on every edit, and `notice(text)`
    when choosing another algorithm or dataset reset fields to that choice's defaults."""

    validityChanged = Signal(bool, str)
    configChanged = Signal()
    presetChanged = Signal(object)  # Preset | None
    notice = Signal(str)

    def __init__(self, parent: QWidget | None = None, presets: list[Preset] | None = None) -> None:
        super().__init__(parent)
        if presets is None:
            presets, self.preset_errors = load_presets()
        else:
            self.preset_errors = []
        self.presets = presets
        self.preset: Preset | None = None
        self.editors: dict[str, Any] = {}
        self.algo_editors: dict[str, Any] = {}
        self.config: RunConfig | None = None
        self.error: ConfigError | None = None
        self._loading = 0
        self.shape_check = ShapeChecker()
        self.shape_cells: dict[str, QLabel] = {}  # task-shape row labels, by field name
        # the last algorithm/dataset pair with defaults: what "set on purpose" is measured against
        self._pair = ("maml", "sinusoid")
        self._algo_shown = ""

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = scroll = QScrollArea(widgetResizable=True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        self.body = QVBoxLayout(body)
        self.body.setSpacing(8)

        self._build_preset()
        self._build_data()
        self._build_algorithm()
        self._build_shapes()
        self._build_schedule()
        self._build_run()
        self._build_model()
        self.body.addStretch(1)
        for combo in body.findChildren(QComboBox):  # long items must not widen the panel
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(8)

        self.error_label = QLabel(wordWrap=True)
        self.error_label.setObjectName("formError")
        self.error_label.setStyleSheet("color: #b00020; padding: 4px;")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.error_label)
        self.notice_label = QLabel(wordWrap=True)
        self.notice_label.setObjectName("formNotice")
        self.notice_label.setStyleSheet("color: #555; padding: 0 4px 4px 4px;")
        self.notice_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.notice_label)
        self.notice_label.hide()

        self.set_config(demo_config())

    # ---- construction ------------------------------------------------------------------

    # ---- choosing the algorithm and dataset ---------------------------------------------
    def _choice_changed(self) -> None:
        """Another algorithm or dataset: its fields, its defaults, and a word on what changed."""
        if self._loading:
            return
        before = self._values()  # read before the algorithm's editors are rebuilt
        algo = self.editors["algorithm.name"].value()
        if algo != self._algo_shown:
            self._algorithm_changed()
        self._loading += 1
        try:
            text = self._apply_defaults(before)
            if self.preset is not None:  # the form no longer holds the preset's settings
                self._set_preset(None)
        finally:
            self._loading -= 1
        self._show_notice(text)
        self._edited()

    def _values(self) -> dict[str, Any]:
        return {k: ed.value() for k, ed in self.editors.items() if k not in OWN_FIELDS}

    def _apply_defaults(self, before: dict[str, Any]) -> str:
        """Set every field to the new pair's default unless the user set it on purpose (it
        differs from the old pair's default) and it still fits (the new algorithm uses it, the
        task kind is the same, and the new pair accepts it). Returns what was reset, in words."""
        algo = self.editors["algorithm.name"].value()
        dataset = self.editors["dataset.name"].value()
        try:
            new = flatten(default_config(algo, dataset).to_dict())
        except ConfigError:  # an impossible pair (ProtoNet on sinusoid): validation says so
            for key, v in before.items():  # shared algorithm fields keep their values
                if key.startswith("algorithm.") and key in self.editors:
                    self.editors[key].set_value(v)
            self._update_visibility()
            return ""
        old_algo, old_dataset = self._pair
        old = flatten(default_config(old_algo, old_dataset).to_dict())
        kind_changed = DATASETS.get(dataset).kind != DATASETS.get(old_dataset).kind
        self._pair = (algo, dataset)
        self._update_visibility()
        hidden = self._hidden_keys()
        kept: dict[str, Any] = {}
        reset: dict[str, tuple[Any, Any]] = {}
        for key, ed in self.editors.items():
            if key in OWN_FIELDS or key not in new:
                continue
            prev = before.get(key, _MISSING)
            chosen = prev is not _MISSING and prev != old.get(key, _MISSING)
            fits = key not in hidden and not (kind_changed and key.startswith(KIND_FIELDS))
            if chosen and fits:
                kept[key] = prev
                ed.set_value(prev)
            else:
                ed.set_value(new[key])
                if prev is not _MISSING and prev != new[key]:
                    reset[key] = (prev, new[key])
        # a kept value the new pair rejects (20 ways on a dataset of 5 classes) goes too
        for _ in range(len(kept)):
            _, error = self._check()
            if error is None:
                break
            field = error.key.rpartition(".")[2]
            culprits = (
                [error.key] if error.key in kept else [k for k in kept if k.endswith(f".{field}")]
            )
            if not culprits:
                break
            for key in culprits:
                self.editors[key].set_value(new[key])
                reset[key] = (kept.pop(key), new[key])
        title = f"{algo} on {dataset}"
        if not reset:
            return f"{title}: its defaults" + (
                f" (kept what you set: {', '.join(kept)})" if kept else ""
            )
        changes = ", ".join(f"{k} {_show(a)} → {_show(b)}" for k, (a, b) in reset.items())
        text = f"{title}: reset to its defaults: {changes}"
        if kept:
            text += f"; kept what you set: {', '.join(f'{k} {_show(v)}' for k, v in kept.items())}"
        return text

    def _show_notice(self, text: str) -> None:
        self.notice_label.setText(text)
        self.notice_label.setVisible(bool(text))
        if text:
            log.info("%s", text)
            self.notice.emit(text)

    def _hidden_keys(self) -> set[str]:
        """Fields the chosen algorithm does not read (shown neither in the form nor compared)."""
        algo = self.editors["algorithm.name"].value()
        phases = inner_step_phases(algo)
        hidden = {f"{p}.inner_steps" for p in ("train", "eval") if p not in phases}
        hidden |= {k for k, ed in self.algo_editors.items() if _fixed_choice(ed)}
        return hidden

    def _update_visibility(self) -> None:
        """Hide what the algorithm ignores: ProtoNet's inner steps, the fine-tuning baseline's
        training inner steps, a choice with only one option."""
        hidden = self._hidden_keys()
        for key in ("train.inner_steps", "eval.inner_steps"):
            ed = self.editors[key]
            ed.setVisible(key not in hidden)
            if key in hidden:
                ed.set_error(None)
        self.shape_cells["inner_steps"].setVisible(
            not {"train.inner_steps", "eval.inner_steps"} <= hidden
        )
        for key, ed in self.algo_editors.items():
            self.algo_form.setRowVisible(ed, key not in hidden)

    # ---- algorithm parameters ----------------------------------------------------------
    def _algorithm_changed(self) -> None:
        """Rebuild the algorithm's fields from its schema (values: the schema's defaults)."""
        name = self.editors["algorithm.name"].value()
        params = ALGORITHMS.get(name).Params
        while self.algo_form.rowCount():
            self.algo_form.removeRow(0)
        for key in self.algo_editors:
            self.editors.pop(key, None)
        self.algo_editors = {}
        for fname, field in params.model_fields.items():
            if fname == "name":
                continue
            key = f"algorithm.{fname}"
            ed = editor_for(key, field)
            self.algo_editors[key] = ed
            self._add(key, ed)
            self.algo_form.addRow(label_for(fname), ed)
        self._algo_shown = name
        self._update_visibility()

    # ---- reading and writing -----------------------------------------------------------
    def seeds(self) -> list[int]:
        return parse_seeds(self.editors["seed"].text())

    def nproc(self) -> int:
        """Processes the run trains on (the device picker's data-parallel choices), else 1."""
        _, sep, n = (self.device_combo.currentData() or "").partition(PARALLEL)
        return int(n) if sep else 1

    def to_dict(self) -> dict[str, Any]:
        """The form as a RunConfig dict (not validated; the seed is the first of the list)."""
        out: dict[str, Any] = {}
        for key, ed in self.editors.items():
            if key in ("seed", "tags"):
                continue
            node = out
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = ed.value()
        out["dataset"]["data_dir"] = self.data_dir.currentText().strip() or None
        out["device"] = (self.device_combo.currentData() or "auto").partition(PARALLEL)[0]
        try:
            out["seed"] = self.seeds()[0]
        except ValueError:
            out["seed"] = 0
        out["tags"] = [t.strip() for t in self.editors["tags"].text().split(",") if t.strip()]
        out["notes"] = self.notes.toPlainText()
        out["preset"] = self.preset.name if self.preset else None
        return out

    def set_config(self, data: dict[str, Any], preset: Preset | None = None) -> None:
        """Fill the form from a RunConfig dict (a preset, a clone, the last session)."""
        data = copy.deepcopy(data)
        self._loading += 1
        try:
            algo = (data.get("algorithm") or {}).get("name", "maml")
            self.editors["algorithm.name"].set_value(algo)
            self._algorithm_changed()
            dataset = (data.get("dataset") or {}).get("name", "sinusoid")
            try:
                base = RunConfig.from_dict(
                    {"algorithm": {"name": algo}, "dataset": {"name": dataset}}
                ).to_dict()
            except (
                ConfigError
            ):  # an incompatible pair: fill what we can, validation marks the field
                base = RunConfig.from_dict(
                    {"algorithm": {"name": algo}, "dataset": {"name": "glyphs"}}
                ).to_dict()
            merged = _merge(base, data)
            for key, ed in self.editors.items():
                if key in ("seed", "tags"):
                    continue
                node: Any = merged
                for p in key.split("."):
                    node = node.get(p) if isinstance(node, dict) else None
                if node is not None or key.startswith("algorithm.") or key == "threads":
                    ed.set_value(node)
            self.editors["seed"].setText(str(merged.get("seed", 0)))
            self.editors["tags"].setText(", ".join(merged.get("tags") or []))
            self.notes.setPlainText(merged.get("notes") or "")
            self.data_dir.setCurrentText((merged.get("dataset") or {}).get("data_dir") or "")
            dev = merged.get("device", "auto")
            i = self.device_combo.findData(dev if dev != "cuda" else "cuda:0")
            if i < 0 and dev != "auto":
                i = self.device_combo.findData(
                    preferred_device(
                        [self.device_combo.itemData(j) for j in range(self.device_combo.count())]
                    )
                )
            if i >= 0:
                self.device_combo.setCurrentIndex(i)
            if preset is None and merged.get("preset"):
                preset = next((p for p in self.presets if p.name == merged["preset"]), None)
            self._set_preset(preset)
            try:  # what later switches measure "set on purpose" against
                default_config(algo, dataset)
                self._pair = (algo, dataset)
            except ConfigError:
                pass
            self._update_visibility()
        finally:
            self._loading -= 1
        self._show_notice("")
        self._edited()

    # ---- presets -----------------------------------------------------------------------

    # ---- data folder -------------------------------------------------------------------

    # ---- validation --------------------------------------------------------------------
    def _edited(self) -> None:
        if self._loading:
            return
        self.data_desc.setText(self.describe_data())
        self.validate()
        self.configChanged.emit()

    def _check(self) -> tuple[RunConfig | None, ConfigError | None]:
        """The form's config, or the first reason it cannot run, as a run would find it:
        unreadable text, the schema, an inner loop the algorithm needs, the dataset's sizes."""
        hidden = self._hidden_keys()
        for key, ed in self.editors.items():
            problem = getattr(ed, "value_error", None)
            message = problem() if problem is not None and key not in hidden else None
            if message:
                return None, ConfigError(key, message)
        try:
            self.seeds()
        except ValueError as exc:
            return None, ConfigError("seed", str(exc))
        try:
            config = RunConfig.from_dict(self.to_dict())
            algo = config.algorithm.name
            if "train" in inner_step_phases(algo) and config.train.inner_steps == 0:
                raise ConfigError(
                    "train.inner_steps",
                    f"{algo} adapts to every task in an inner loop: 0 inner steps would "
                    "meta-train without one; use 1 or more (pretrain-finetune is the baseline "
                    "without an inner loop)",
                )
            self.shape_check.check(config)
            try:  # the CLI's check and words, shown at the form's meta-batch field
                check_world(config.train.meta_batch, self.nproc())
            except ConfigError as exc:
                raise ConfigError("train.meta_batch", exc.message) from None
        except ConfigError as exc:
            return None, exc
        return config, None

    def validate(self) -> RunConfig | None:
        for ed in self.editors.values():
            ed.set_error(None)
        self.config, self.error = self._check()
        if self.error is not None:
            ed = self.editor_for_key(self.error.key)
            if ed is not None:
                ed.set_error(self.error.message)
            name = "seeds" if self.error.key == "seed" else self.error.key
            reason = f"{name}: {self.error.message}" if name else self.error.message
            self.error_label.setText(reason)
            self.validityChanged.emit(False, reason)
            return None
        self.error_label.setText("")
        self.validityChanged.emit(True, "")
        return self.config

    def editor_for_key(self, key: str) -> Any:
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            ed = self.editors.get(".".join(parts[:n]))
            if ed is not None:
                return ed
        return None

    def set_field(self, key: str, value: Any) -> None:
        """Set one field by its dotted key (used by tests and by clone)."""
        ed = self.editors[key]
        if isinstance(ed, QLineEdit):
            ed.setText(str(value)) if key in ("seed", "tags", "name") else ed.set_value(value)
        else:
            ed.set_value(value)

    @property
    def valid(self) -> bool:
        return self.config is not None
