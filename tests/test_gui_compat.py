"""PySide6 6.12 on CPython < 3.12 drops a reference to True on every Signal.emit();
workbench.gui makes the singletons effectively immortal so long sessions cannot abort."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

import workbench.gui  # noqa: F401  (applies the workaround)


class _Emitter(QObject):
    sig = Signal(int, object)


def test_many_emits_do_not_exhaust_the_singletons(qapp) -> None:
    e = _Emitter()
    got = []
    e.sig.connect(lambda a, b: got.append(a))
    for i in range(20_000):  # far more than True's natural reference count on 3.11 (~150)
        e.sig.emit(i, None)
    assert len(got) == 20_000
    assert sys.getrefcount(True) > 1000 and sys.getrefcount(None) > 1000
