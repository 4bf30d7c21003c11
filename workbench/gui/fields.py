"""Form editors generated from pydantic field metadata: type, default, range, description.

`editor_for(key, field)` picks a widget for a `FieldInfo`: a check box for bool, a combo box
for Literal choices, a spin box for int (clamped to the schema's ge/gt/le/lt), and a line
edit for everything else (floats, optional values, lists, tuples) so that what the user types
is validated by the schema itself and errors name the field.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QSpinBox, QWidget

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def bounds(field: Any) -> tuple[float | None, float | None, str]:
    """(lowest allowed, highest allowed, human text) from annotated_types metadata."""
    lo = hi = None
    parts = []
    for m in getattr(field, "metadata", []):
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{sym} {v:g}" if isinstance(v, float) else f"{sym} {v}")
                if attr in ("ge", "gt"):
                    lo = v + (1 if attr == "gt" and isinstance(v, int) else 0)
                else:
                    hi = v - (1 if attr == "lt" and isinstance(v, int) else 0)
    return lo, hi, ", ".join(parts)


def default_of(field: Any) -> Any:
    if field.default_factory is not None:
        return field.default_factory()
    from pydantic_core import PydanticUndefined

    return None if field.default is PydanticUndefined else field.default


def _args(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional) with `X | None` unwrapped."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else annotation), optional
    return annotation, False


def _mark(widget: QWidget, tooltip: str, message: str | None) -> None:
    widget.setProperty("invalid", bool(message))
    widget.setStyleSheet("border: 1px solid #d03030; background: #fff0f0;" if message else "")
    widget.setToolTip(f"{message}\n\n{tooltip}" if message else tooltip)


class CheckEditor(QCheckBox):
    changed = Signal()

    def __init__(self, key: str, tooltip: str = "") -> None:
        super().__init__()
        self.key, self.base_tooltip = key, tooltip
        self.setToolTip(tooltip)
        self.toggled.connect(lambda _=None: self.changed.emit())

    def value(self) -> bool:
        return self.isChecked()

    def set_value(self, v: Any) -> None:
        self.setChecked(bool(v))

    def set_error(self, message: str | None) -> None:
        _mark(self, self.base_tooltip, message)


class ChoiceEditor(QComboBox):
    changed = Signal()

    def __init__(self, key: str, choices: list[Any], tooltip: str = "") -> None:
        super().__init__()
        self.key, self.base_tooltip, self.choices = key, tooltip, list(choices)
        for c in self.choices:
            self.addItem(str(c))
        self.setEnabled(len(self.choices) > 1)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(6)
        self.setToolTip(tooltip)
        self.currentIndexChanged.connect(lambda _=None: self.changed.emit())

    def value(self) -> Any:
        i = self.currentIndex()
        return self.choices[i] if 0 <= i < len(self.choices) else None

    def set_value(self, v: Any) -> None:
        for i, c in enumerate(self.choices):
            if c == v or str(c) == str(v):
                self.setCurrentIndex(i)
                return

    def set_error(self, message: str | None) -> None:
        _mark(self, self.base_tooltip, message)


class IntEditor(QSpinBox):
    changed = Signal()

    def __init__(self, key: str, lo: float | None, hi: float | None, tooltip: str = "") -> None:
        super().__init__()
        self.key, self.base_tooltip = key, tooltip
        self.setRange(
            int(lo) if lo is not None else INT_MIN, int(hi) if hi is not None else INT_MAX
        )
        self.setKeyboardTracking(True)
        self.setToolTip(tooltip)
        self.setMinimumWidth(70)
        self.valueChanged.connect(lambda _=None: self.changed.emit())

    def set_value(self, v: Any) -> None:
        self.setValue(int(v))

    def set_error(self, message: str | None) -> None:
        _mark(self, self.base_tooltip, message)


class TextEditor(QLineEdit):
    """Free text; with `parse` the text is read as JSON (empty -> None), "a, b" as a list."""

    changed = Signal()

    def __init__(
        self, key: str, tooltip: str = "", parse: bool = False, sequence: bool = False
    ) -> None:
        super().__init__()
        self.key, self.base_tooltip, self.parse, self.sequence = key, tooltip, parse, sequence
        self.setToolTip(tooltip)
        self.textChanged.connect(lambda _=None: self.changed.emit())

    def value(self) -> Any:
        text = self.text().strip()
        if not self.parse:
            return self.text()
        if not text:
            return [] if self.sequence else None
        if self.sequence and not text.startswith("["):
            text = f"[{text}]"
        try:
            return json.loads(text)
        except ValueError:
            return text  # the schema reports it as not a number

    def set_value(self, v: Any) -> None:
        if not self.parse:
            self.setText("" if v is None else str(v))
        elif v is None:
            self.setText("")
        elif isinstance(v, (list, tuple)):
            self.setText(", ".join(json.dumps(x) for x in v))
        else:
            self.setText(json.dumps(v))

    def set_error(self, message: str | None) -> None:
        _mark(self, self.base_tooltip, message)


def editor_for(key: str, field: Any) -> QWidget:
    """An editor for one pydantic field, preset to its default."""
    inner, optional = _args(field.annotation)
    lo, hi, range_text = bounds(field)
    default = default_of(field)
    desc = field.description or ""
    tip = (
        desc
        + (f"\nAllowed: {range_text}" if range_text else "")
        + f"\nDefault: {json.dumps(default)}"
    )
    origin = typing.get_origin(inner)
    w: Any
    if inner is bool:
        w = CheckEditor(key, tip)
    elif origin is typing.Literal:
        w = ChoiceEditor(key, list(typing.get_args(inner)), tip)
    elif inner is int and not optional:
        w = IntEditor(key, lo, hi, tip)
    elif inner is str:
        w = TextEditor(key, tip)
    else:
        seq = origin in (list, tuple)
        w = TextEditor(key, tip, parse=True, sequence=seq)
        if optional:
            w.setPlaceholderText("empty = default")
        elif range_text:
            w.setPlaceholderText(range_text)
    if default is not None or optional:
        w.set_value(default)
    return w


_WORDS = {"lr": "LR", "ci95": "CI95", "p": "p", "ckpt": "checkpoint"}


def label_for(name: str) -> str:
    words = [_WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]
