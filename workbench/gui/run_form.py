"""The run-setup panel: every field of a RunConfig, generated from the pydantic schemas.

Each edit rebuilds a `RunConfig` with `RunConfig.from_dict`; a `ConfigError` marks the field it
names and `validityChanged(False, reason)` keeps Start disabled. Presets fill the whole form.
"""

from __future__ import annotations

import copy
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.core.algorithms import ALGORITHMS
from workbench.core.config import DatasetConfig, ModelConfig, RunConfig, TaskShape, default_config
from workbench.core.devices import available_devices
from workbench.core.errors import ConfigError
from workbench.core.tasks import DATASETS
from workbench.gui import settings as qs
from workbench.gui.fields import ChoiceEditor, TextEditor, editor_for, label_for
from workbench.gui.presets import Preset, load_presets

# MAML on sinusoid (Finn et al. 2017, section 5.1), shortened so that it runs in seconds on a CPU.
# The launch default: the core's starting point for MAML on sinusoid (runs in seconds on a CPU)
# with a budget sized for watching it train.
DEMO_BUDGET = {
    "steps": 1000,
    "val_every": 100,
    "val_episodes": 50,
    "ckpt_every": 250,
    "test_episodes": 200,
}


def demo_config(algorithm: str = "maml", dataset: str = "sinusoid") -> dict[str, Any]:
    return {**default_config(algorithm, dataset).to_dict(), **DEMO_BUDGET}


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


def parse_seeds(text: str) -> list[int]:
    """'3' or '1,2,3' or '1-4' -> list of seeds (ValueError with a readable message)."""
    seeds: list[int] = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
            lo, hi = int(a), int(b)
            if hi < lo or hi - lo > 999:
                raise ValueError(f"range {part!r} must go upwards and hold at most 1000 seeds")
            seeds.extend(range(lo, hi + 1))
        else:
            seeds.append(int(part))
    if not seeds:
        raise ValueError("give at least one seed, e.g. 0 or 1,2,3")
    return list(dict.fromkeys(seeds))


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


class RunForm(QWidget):
    """Emits `validityChanged(ok, reason)` and `configChanged()` on every edit."""

    validityChanged = Signal(bool, str)
    configChanged = Signal()
    presetChanged = Signal(object)  # Preset | None

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

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea(widgetResizable=True)
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

        self.set_config(demo_config())

    # ---- construction ------------------------------------------------------------------
    def _add(self, key: str, editor: Any) -> Any:
        self.editors[key] = editor
        editor.changed.connect(self._edited)
        return editor

    def _build_preset(self) -> None:
        box = QGroupBox("Preset")
        lay = QVBoxLayout(box)
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("(none: edit freely)", None)
        for p in self.presets:
            self.preset_combo.addItem(p.title, p.name)
        self.preset_combo.setToolTip("Paper settings: choosing one fills the whole form")
        self.preset_combo.activated.connect(self._preset_chosen)
        self.published_label = QLabel(wordWrap=True)
        self.published_label.setStyleSheet("color: #555;")
        lay.addWidget(self.preset_combo)
        lay.addWidget(self.published_label)
        self.published_label.hide()
        self.body.addWidget(box)

    def _build_data(self) -> None:
        box = QGroupBox("Data")
        form = QFormLayout(box)
        ds = self._add(
            "dataset.name",
            ChoiceEditor(
                "dataset.name",
                DATASETS.names(),
                DatasetConfig.model_fields["name"].description or "",
            ),
        )
        form.addRow("Dataset", ds)
        ds.changed.connect(self._dataset_changed)
        self._kind = DATASETS.get(ds.value()).kind
        row = QHBoxLayout()
        self.data_dir = QComboBox(editable=True)
        self.data_dir.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.data_dir.addItems(qs.recent_data_dirs())
        self.data_dir.setCurrentText("")
        self.data_dir.lineEdit().setPlaceholderText("default: $WORKBENCH_DATA")
        self.data_dir.setToolTip(DatasetConfig.model_fields["data_dir"].description or "")
        self.data_dir.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.data_dir.currentTextChanged.connect(lambda _: self._edited())
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse_data_dir)
        row.addWidget(self.data_dir, 1)
        row.addWidget(browse)
        form.addRow("Data folder", row)
        self.data_desc = QLabel(wordWrap=True)
        self.data_desc.setObjectName("dataDescription")
        self.data_desc.setStyleSheet("color: #2b5d2b;")
        form.addRow(self.data_desc)
        opts = QWidget()
        oform = QFormLayout(opts)
        oform.setContentsMargins(12, 0, 0, 0)
        for name in DATASET_OPTION_FIELDS:
            key = f"dataset.{name}"
            oform.addRow(
                label_for(name), self._add(key, editor_for(key, DatasetConfig.model_fields[name]))
            )
        form.addRow(Collapsible("Dataset options", opts))
        self.body.addWidget(box)

    def _build_algorithm(self) -> None:
        box = QGroupBox("Algorithm")
        lay = QVBoxLayout(box)
        algo = ChoiceEditor("algorithm.name", ALGORITHMS.names(), "Meta-learning algorithm")
        algo.changed.connect(self._algorithm_changed)  # rebuild the fields before validating
        self._add("algorithm.name", algo)
        lay.addWidget(algo)
        self.algo_form_host = QWidget()
        self.algo_form = QFormLayout(self.algo_form_host)
        self.algo_form.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.algo_form_host)
        self.body.addWidget(box)

    def _build_shapes(self) -> None:
        box = QGroupBox("Task shape")
        grid = QGridLayout(box)
        grid.addWidget(QLabel("<b>Train</b>"), 0, 1)
        grid.addWidget(QLabel("<b>Eval</b>"), 0, 2)
        for r, (name, field) in enumerate(TaskShape.model_fields.items(), start=1):
            lab = QLabel(label_for(name))
            lab.setToolTip(field.description or "")
            grid.addWidget(lab, r, 0)
            for c, phase in enumerate(("train", "eval"), start=1):
                key = f"{phase}.{name}"
                editor = self._add(key, editor_for(key, field))
                if key in UNUSED_FIELDS:  # kept so stored configs load, but it changes nothing
                    editor.setEnabled(False)
                    editor.base_tooltip = UNUSED_FIELDS[key]  # what validation shows again
                    editor.setToolTip(editor.base_tooltip)
                grid.addWidget(editor, r, c)
        self.body.addWidget(box)

    def _build_schedule(self) -> None:
        box = QGroupBox("Schedule")
        form = QFormLayout(box)
        for name in SCHEDULE_FIELDS:
            form.addRow(
                label_for(name).replace("Val ", "Validate ").replace("Ckpt", "Checkpoint"),
                self._add(name, editor_for(name, RunConfig.model_fields[name])),
            )
        self.body.addWidget(box)

    def _build_run(self) -> None:
        box = QGroupBox("Run")
        form = QFormLayout(box)
        form.addRow("Name", self._add("name", editor_for("name", RunConfig.model_fields["name"])))
        self.editors["name"].setPlaceholderText("empty: generated")
        seeds = self._add(
            "seed",
            TextEditor("seed", "Seed, or a list such as 1,2,3 (or 1-5) to queue one run per seed"),
        )
        form.addRow("Seed(s)", seeds)
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto (cuda, mps, cpu)", "auto")
        ids = []
        for d in available_devices():
            self.device_combo.addItem(d.label, d.id)
            ids.append(d.id)
        self.device_combo.setCurrentIndex(self.device_combo.findData(preferred_device(ids)))
        self.device_combo.currentIndexChanged.connect(lambda _: self._edited())
        self.device_combo.setToolTip(RunConfig.model_fields["device"].description or "")
        form.addRow("Device", self.device_combo)
        form.addRow(
            "Precision",
            self._add("precision", editor_for("precision", RunConfig.model_fields["precision"])),
        )
        form.addRow(
            "CPU threads",
            self._add("threads", editor_for("threads", RunConfig.model_fields["threads"])),
        )
        form.addRow("Tags", self._add("tags", TextEditor("tags", "Comma-separated tags")))
        self.notes = QPlainTextEdit()
        self.notes.setPlaceholderText("Notes")
        self.notes.setFixedHeight(54)
        self.notes.textChanged.connect(self._edited)
        form.addRow("Notes", self.notes)
        self.body.addWidget(box)

    def _build_model(self) -> None:
        content = QWidget()
        form = QFormLayout(content)
        form.setContentsMargins(12, 0, 0, 0)
        for name, field in ModelConfig.model_fields.items():
            key = f"model.{name}"
            form.addRow(label_for(name), self._add(key, editor_for(key, field)))
        self.body.addWidget(Collapsible("Model", content))

    def _dataset_changed(self) -> None:
        """Moving between regression and classification resets the task shapes and the inner
        step size to the core's starting points for that kind (1-way sinusoid shapes make no
        sense for images, and vice versa)."""
        name = self.editors["dataset.name"].value()
        kind = DATASETS.get(name).kind
        if self._loading or kind == self._kind:
            self._kind = kind
            return
        self._kind = kind
        algo = self.editors["algorithm.name"].value()
        try:
            start = default_config(algo, name).to_dict()
        except ConfigError:  # e.g. ProtoNet on sinusoid: validation will say so
            return
        self._loading += 1
        try:
            for key, ed in self.editors.items():
                section, _, field = key.partition(".")
                if section in ("train", "eval") or key == "algorithm.inner_lr":
                    if field in start.get(section, {}):
                        ed.set_value(start[section][field])
        finally:
            self._loading -= 1
        self._edited()

    # ---- algorithm parameters ----------------------------------------------------------
    def _algorithm_changed(self) -> None:
        name = self.editors["algorithm.name"].value()
        params = ALGORITHMS.get(name).Params
        keep = {}
        for key, ed in self.algo_editors.items():  # carry over what the user changed
            if getattr(ed, "_default", None) != ed.value():
                keep[key] = ed.value()
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
            ed._default = ed.value()
            if key in keep and ed.isEnabled():
                ed.set_value(keep[key])
            self.algo_editors[key] = ed
            self._add(key, ed)
            self.algo_form.addRow(label_for(fname), ed)

    # ---- reading and writing -----------------------------------------------------------
    def seeds(self) -> list[int]:
        return parse_seeds(self.editors["seed"].text())

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
        out["device"] = self.device_combo.currentData() or "auto"
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
        finally:
            self._loading -= 1
        self._edited()

    # ---- presets -----------------------------------------------------------------------
    def _preset_chosen(self, index: int) -> None:
        name = self.preset_combo.itemData(index)
        preset = next((p for p in self.presets if p.name == name), None)
        if preset is None:
            self._set_preset(None)
            self._edited()
        else:
            self.apply_preset(preset)

    def apply_preset(self, preset: Preset | str) -> None:
        if isinstance(preset, str):
            found = next((p for p in self.presets if p.name == preset), None)
            if found is None:
                raise KeyError(preset)
            preset = found
        cfg = dict(preset.config)
        cfg.setdefault("preset", preset.name)
        self.set_config(cfg, preset)

    def _set_preset(self, preset: Preset | None) -> None:
        self.preset = preset
        i = self.preset_combo.findData(preset.name) if preset else 0
        self.preset_combo.blockSignals(True)
        self.preset_combo.setCurrentIndex(max(i, 0))
        self.preset_combo.blockSignals(False)
        if preset and preset.published:
            self.published_label.setText(f"Published: {preset.published}")
            self.published_label.show()
        else:
            self.published_label.hide()
        self.presetChanged.emit(preset)

    # ---- data folder -------------------------------------------------------------------
    def browse_data_dir(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self, "Data folder", self.data_dir.currentText() or ""
        )
        if path:
            self.data_dir.setCurrentText(path)

    def describe_data(self) -> str:
        try:
            cfg = DatasetConfig(
                name=self.editors["dataset.name"].value(),
                data_dir=self.data_dir.currentText().strip() or None,
            )
            return DATASETS.get(cfg.name)().describe(cfg)
        except Exception as exc:  # describe() should never raise; be safe anyway
            return f"cannot check: {exc}"

    # ---- validation --------------------------------------------------------------------
    def _edited(self) -> None:
        if self._loading:
            return
        self.data_desc.setText(self.describe_data())
        self.validate()
        self.configChanged.emit()

    def validate(self) -> RunConfig | None:
        for ed in self.editors.values():
            ed.set_error(None)
        self.config, self.error = None, None
        try:
            self.seeds()
            self.config = RunConfig.from_dict(self.to_dict())
        except ValueError as exc:
            self.error = ConfigError("seed", str(exc))
        except ConfigError as exc:
            self.error = exc
        if self.error is not None:
            ed = self.editor_for_key(self.error.key)
            if ed is not None:
                ed.set_error(self.error.message)
            reason = (
                f"{self.error.key}: {self.error.message}" if self.error.key else self.error.message
            )
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


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
