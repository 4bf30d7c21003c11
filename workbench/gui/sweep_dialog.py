"""Run setup → New sweep…: the form's configuration as the base, the fields to vary ticked,
each with its values or range; validated inline as `workbench sweep start` validates a spec
file, then started as a driver process of its own (the Sweeps tab follows it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from workbench.core.errors import ConfigError
from workbench.gui.browser import flatten

KINDS = ("values", "loguniform", "uniform", "int")
SKIPPED = ("seed", "name", "notes", "tags", "preset", "device", "threads")
"""Config keys a sweep does not vary from this dialog (seeds have their own field)."""


def leaves(config: dict[str, Any]) -> dict[str, Any]:
    """The numeric and boolean fields of a run config, by dotted key: what a sweep can vary."""
    return {
        k: v
        for k, v in flatten(config).items()
        if isinstance(v, bool | int | float) and k.rsplit(".", 1)[-1] not in SKIPPED
    }


def _numbers(text: str, key: str) -> list[Any]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(key, "give one or more values, separated by commas")
    try:
        return [
            json.loads(t.lower()) if t.lower() in ("true", "false") else json.loads(t)
            for t in items
        ]
    except json.JSONDecodeError:
        raise ConfigError(key, f"{text!r} is not a list of numbers, true or false") from None


class SweepDialog(QDialog):
    """`spec()` is the sweep the dialog describes (ConfigError naming the field); accepting
    checks every configuration it can make, as the CLI does, before anything starts."""

    def __init__(self, base: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New sweep")
        self.base = base
        fields = leaves(base)
        self.keys = list(fields)
        self.table = QTableWidget(len(self.keys), 4)
        self.table.setHorizontalHeaderLabels(
            ["Vary", "Field (current value)", "Kind", "Values or low, high"]
        )
        self.rows: dict[str, tuple[QCheckBox, QComboBox, QLineEdit]] = {}
        for i, key in enumerate(self.keys):
            value = fields[key]
            tick = QCheckBox()
            kind = QComboBox()
            kind.addItems(["values"] if isinstance(value, bool) else list(KINDS))
            text = QLineEdit()
            text.setPlaceholderText("e.g. 0.01, 0.1  or  low, high")
            self.table.setCellWidget(i, 0, tick)
            label = QLabel(f" {key} ({value})")
            label.setToolTip(key)
            self.table.setCellWidget(i, 1, label)
            self.table.setCellWidget(i, 2, kind)
            self.table.setCellWidget(i, 3, text)
            self.rows[key] = (tick, kind, text)
            tick.toggled.connect(lambda _on: self.validate())
            kind.currentIndexChanged.connect(lambda _i: self.validate())
            text.textChanged.connect(lambda _t: self.validate())
        self.table.verticalHeader().hide()
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)

        self.name = QLineEdit("sweep")
        self.method = QComboBox()
        self.method.addItems(["grid", "random", "optuna"])
        self.trials = QSpinBox(minimum=1, maximum=100_000, value=16)
        self.seeds = QLineEdit("0")
        self.concurrent = QSpinBox(minimum=1, maximum=256, value=max(1, (os.cpu_count() or 1)))
        self.executor = QComboBox()
        self.executor.addItems(["local", "ray"])
        self.pruner = QComboBox()
        self.pruner.addItems(["none", "median", "successive-halving"])
        for w in (self.name, self.seeds):
            w.textChanged.connect(lambda _t: self.validate())
        for c in (self.method, self.pruner):
            c.currentIndexChanged.connect(lambda _i: self.validate())
        self.trials.valueChanged.connect(lambda _v: self.validate())
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Method", self.method)
        form.addRow("Trials (random, optuna)", self.trials)
        form.addRow("Seeds", self.seeds)
        form.addRow("At once", self.concurrent)
        form.addRow("Executor", self.executor)
        form.addRow("Pruner (optuna)", self.pruner)

        self.error = QLabel(wordWrap=True)
        self.error.setStyleSheet("color: #c0392b;")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Start sweep")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Tick the fields to vary; the rest come from the run setup."))
        lay.addWidget(self.table, 1)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)
        self.resize(760, 640)
        self.validate()

    def spec_dict(self) -> dict[str, Any]:
        """The spec as `workbench sweep start` reads it; ConfigError naming the field."""
        params = []
        for key, (tick, kind, text) in self.rows.items():
            if not tick.isChecked():
                continue
            values = _numbers(text.text(), key)
            k = kind.currentText()
            if k == "values":
                params.append({"key": key, "values": values})
            else:
                if len(values) != 2:
                    raise ConfigError(key, f"a {k} range is two numbers: low, high")
                params.append({"key": key, k: values})
        if not params:
            raise ConfigError("parameters", "tick at least one field to vary")
        seeds = _numbers(self.seeds.text(), "seeds")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise ConfigError("seeds", "seeds are whole numbers, separated by commas")
        method = self.method.currentText()
        data: dict[str, Any] = {
            "name": self.name.text().strip(),
            "base": self.base,
            "parameters": params,
            "seeds": seeds,
            "method": method,
            "max_concurrent": self.concurrent.value(),
            "pruner": self.pruner.currentText() if method == "optuna" else "none",
        }
        if method != "grid":
            data["trials"] = self.trials.value()
        return data

    def validate(self) -> bool:
        """Check the sweep as the CLI would (every configuration it can make); show the first
        problem under the fields and keep Start disabled until there is none."""
        from workbench.sweeps.spec import base_config, check, parse_spec

        self.trials.setEnabled(self.method.currentText() != "grid")
        self.pruner.setEnabled(self.method.currentText() == "optuna")
        try:
            spec = parse_spec(self.spec_dict())
            check(spec, base_config(spec))
        except ConfigError as exc:
            self.error.setText(str(exc).splitlines()[0])
            ok = False
        else:
            self.error.setText("")
            ok = True
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(ok)
        return ok

    def accept(self) -> None:
        if self.validate():
            super().accept()


def start_sweep(
    spec: dict[str, Any], db: str, executor: str, folder: Path
) -> subprocess.Popen[bytes]:
    """Start `workbench sweep start` for `spec` as a process of its own (it outlives the app,
    like a run started in its own process), its output in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(dir=folder, prefix="sweep-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    log = open(Path(path).with_suffix(".log"), "wb")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "workbench", "--db", db, "sweep", "start", path,
             "--executor", executor],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()
