"""The run setup form's sections, built from the schema: preset, data, algorithm (its fields
generated from its `Params`), task shapes, schedule, run, model. A part of the run setup form (`gui/run_form.py`), which mixes it in:
the attributes it uses are the form's."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from workbench.core.algorithms import ALGORITHMS
from workbench.core.config import DatasetConfig, ModelConfig, RunConfig, TaskShape
from workbench.core.devices import available_devices
from workbench.core.tasks import DATASETS
from workbench.gui import settings as qs
from workbench.gui.fields import ChoiceEditor, TextEditor, editor_for, label_for
from workbench.gui.presets import Preset
from workbench.gui.run_form_values import (
    DATASET_OPTION_FIELDS,
    PARALLEL,
    SCHEDULE_FIELDS,
    UNUSED_FIELDS,
    Collapsible,
    parallel_choices,
    preferred_device,
)


class SectionsMixin:
    def _add(self, key: str, editor: Any) -> Any:
        self.editors[key] = editor
        editor.changed.connect(self._edited)
        return editor

    def _add_choice(self, key: str, editor: ChoiceEditor) -> ChoiceEditor:
        """The algorithm and dataset combos: a change resets the form to the pair's defaults."""
        self.editors[key] = editor
        editor.changed.connect(self._choice_changed)
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
        ds = self._add_choice(
            "dataset.name",
            ChoiceEditor(
                "dataset.name",
                DATASETS.names(),
                DatasetConfig.model_fields["name"].description or "",
            ),
        )
        form.addRow("Dataset", ds)
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
        self._add_choice("algorithm.name", algo)
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
            self.shape_cells[name] = lab
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
        # one run on several processes (torch.distributed): started in its own processes
        for device, n, label in parallel_choices(ids):
            self.device_combo.addItem(label, f"{device}{PARALLEL}{n}")
        self.device_combo.setCurrentIndex(self.device_combo.findData(preferred_device(ids)))
        self.device_combo.currentIndexChanged.connect(lambda _: self._edited())
        self.device_combo.setToolTip(RunConfig.model_fields["device"].description or "")
        form.addRow("Device", self.device_combo)
        form.addRow(
            "Precision",
            self._add("precision", editor_for("precision", RunConfig.model_fields["precision"])),
        )
        form.addRow(
            "Deterministic",
            self._add(
                "deterministic",
                editor_for("deterministic", RunConfig.model_fields["deterministic"]),
            ),
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
