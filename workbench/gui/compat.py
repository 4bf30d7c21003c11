"""Work around a reference-count bug of PySide6 6.12 on CPython < 3.12.

Every `SignalInstance.emit()` there returns `True` without taking a reference (and some calls
do the same with `None`), so each emit drops one reference the interpreter does not own. After
a few thousand signals (pyqtgraph emits several per redraw) the count of `True` reaches zero
and the process aborts with "Fatal Python error: bool_dealloc" or "none_dealloc".

CPython 3.12 made these singletons immortal, which hides the bug. On older interpreters we do
the same by hand: their reference counts are raised so far that no run can exhaust them.
`tests/test_gui_compat.py` checks both the bug's signature and the fix.
"""

from __future__ import annotations

import ctypes
import sys

_BIG = 1 << 60


def immortalize_singletons() -> bool:
    """Raise the reference counts of None, True and False (CPython < 3.12 only)."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    for obj in (None, True, False):
        cnt = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is the first field of PyObject
        if cnt.value < _BIG:
            cnt.value += _BIG
    return True
