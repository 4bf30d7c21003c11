"""PySide6 6.12.0 on CPython 3.11 drops a reference to True on every Signal.emit(), which
aborts a long session ("Fatal Python error: bool_dealloc"); pyproject.toml excludes it.
This test fails (or crashes) on a Qt binding with that bug."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    sig = Signal(int, object)


def test_signal_emit_keeps_reference_counts(qapp) -> None:
    e = _Emitter()
    got = []
    e.sig.connect(lambda a, b: got.append(a))
    before = sys.getrefcount(True), sys.getrefcount(None)
    for i in range(2_000):  # more than True's natural reference count on 3.11 (~150)
        e.sig.emit(i, None)
    assert len(got) == 2_000
    after = sys.getrefcount(True), sys.getrefcount(None)
    assert abs(after[0] - before[0]) < 50 and abs(after[1] - before[1]) < 50, (before, after)
