"""Form editors generated from pydantic field metadata: type, default, range, description.

`editor_for(key, field)` picks a widget for a `FieldInfo`: a check box for bool, a combo box
for Literal choices, and a line edit for everything else (ints, floats, optional values, lists,
tuples), so that what the user types is validated rather than clamped: a spin box would turn
10^12 ways into its maximum without a word. Each editor's `value_error()` says in words why
its text is not a value ('abc' is not a whole number, 'nan' is not a number, 10^12 is above
the schema's maximum) before the schema sees it; the schema checks the rest and names the field.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QWidget

INTEGER = re.compile(r"[+-]?\d+")


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


class IntEditor(QLineEdit):
    """A whole number, typed freely (Up/Down step it): out-of-range or non-integer text is
    reported by `value_error`, never clamped or dropped as a spin box would."""

    changed = Signal()

    def __init__(self, key: str, lo: float | None, hi: float | None, tooltip: str = "") -> None:
        super().__init__()
        self.key, self.base_tooltip = key, tooltip
        self.lo = int(lo) if lo is not None else None
        self.hi = int(hi) if hi is not None else None
        self.setToolTip(tooltip)
        self.setMinimumWidth(70)
        self.textChanged.connect(lambda _=None: self.changed.emit())

    def value(self) -> Any:
        """The int typed, or the text itself when it is not one (the schema then rejects it)."""
        text = self.text().strip()
        return int(text) if INTEGER.fullmatch(text) else text

    def set_value(self, v: Any) -> None:
        self.setText(
            str(int(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
        )

    def value_error(self) -> str | None:
        text = self.text().strip()
        if not INTEGER.fullmatch(text):
            return f"{text!r} is not a whole number" if text else "is empty: give a whole number"
        n = int(text)
        if self.hi is not None and n > self.hi:
            return f"{n:,} is too large: at most {self.hi:,}"
        if self.lo is not None and n < self.lo:
            return f"{n:,} is too small: at least {self.lo:,}"
        return None

    def keyPressEvent(self, event: QKeyEvent) -> None:
        step = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1}.get(Qt.Key(event.key()))
        v = self.value()
        if step is None or not isinstance(v, int):
            super().keyPressEvent(event)
            return
        v += step
        if self.lo is not None:
            v = max(v, self.lo)
        if self.hi is not None:
            v = min(v, self.hi)
        self.set_value(v)

    def set_error(self, message: str | None) -> None:
        _mark(self, self.base_tooltip, message)


class TextEditor(QLineEdit):
    """Free text; with `parse` the text is read as JSON (empty -> None), "a, b" as a list."""

    changed = Signal()

    def __init__(
        self,
        key: str,
        tooltip: str = "",
        parse: bool = False,
        sequence: bool = False,
        number: bool = False,
    ) -> None:
        super().__init__()
        self.key, self.base_tooltip, self.parse, self.sequence = key, tooltip, parse, sequence
        self.number = number  # a float (or a list of floats): 'nan' is then named, not ranged
        self.setToolTip(tooltip)
        self.textChanged.connect(lambda _=None: self.changed.emit())

    def value_error(self) -> str | None:
        """Why a number field's text is not a number (the schema would call 'nan' too large)."""
        if not (self.number and self.parse) or not self.text().strip():
            return None
        v = self.value()
        items = v if self.sequence and isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                if isinstance(item, str):
                    return f"{item!r} is not a number"
                continue  # a list where a number belongs: the schema says what it wants
            if not math.isfinite(item):
                shown = self.text().strip() if len(items) == 1 else str(item)
                return f"{shown!r} is not a number (it must be finite)"
        return None

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
            return text  # not JSON: value_error (numbers) or the schema reports it

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
    elif isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("registry"):
        w = ChoiceEditor(key, _registered(str(field.json_schema_extra["registry"])), tip)
    elif inner is int and not optional:
        w = IntEditor(key, lo, hi, tip)
    elif inner is str:
        w = TextEditor(key, tip)
    else:
        seq = origin in (list, tuple)
        elems = typing.get_args(inner) if seq else (inner,)
        number = bool(elems) and all(e in (int, float) for e in elems if e is not Ellipsis)
        w = TextEditor(key, tip, parse=True, sequence=seq, number=number)
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


def _registered(kind: str) -> list[str]:
    """A registry-backed field's choices: "auto" and every name registered (plugins included)."""
    from workbench.core.registry import MODELS

    return ["auto", *MODELS.names()] if kind == "model" else []
