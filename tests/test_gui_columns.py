"""The browser's columns: best validation per metric kind, the task shape, any config key as a
column (the column picker), and the columns, sort and filters remembered per catalog."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from test_gui_detached import make_window  # noqa: E402

from workbench.catalog import Catalog  # noqa: E402
from workbench.core.config import default_config  # noqa: E402
from workbench.gui.browser_model import COL, COLUMNS  # noqa: E402


def add_run(
    cat: Catalog, name: str, algo: str, dataset: str, lr: float, val: tuple[str, float]
) -> int:
    cfg = default_config(algo, dataset).to_dict()
    cfg["algorithm"]["meta_lr"] = lr
    rid = cat.create_run(json.dumps(cfg), name=name, algorithm=algo, dataset=dataset,
                         status="finished")  # fmt: skip
    cat.add_metrics(rid, [(10, f"val_{val[0]}", val[1], time.time())])
    return rid


def column(b, header: str) -> list[str]:  # type: ignore[no-untyped-def]
    names = [b.model.headerData(c, Qt.Orientation.Horizontal) for c in range(b.model.columnCount())]
    c = names.index(header)
    return [b.proxy.index(r, c).data() for r in range(b.proxy.rowCount())]


def test_columns_picker_and_memory_per_catalog(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db, other = tmp_path / "a.db", tmp_path / "b.db"
    with Catalog.open(db) as cat:
        a = add_run(cat, "acc-run", "protonet", "glyphs", 0.001, ("accuracy", 0.9))
        m = add_run(cat, "mse-run", "maml", "sinusoid", 0.01, ("mse", 0.5))
        w = make_window(qtbot, cat)
        b = w.browser
        b.reload()
        b.table.sortByColumn(COL["ID"], Qt.SortOrder.AscendingOrder)
        # one column per metric kind: accuracy and MSE never share one sortable column
        assert column(b, "Best val acc") == ["90.00 %", ""]
        assert column(b, "Best val MSE") == ["", "0.5"]
        assert column(b, "Shape")[1] == "K=10" and column(b, "Shape")[0].endswith("s")
        # the picker: any config key as a column, sortable by its value; a column hidden
        menu = b.table.header_menu()
        params = next(x.menu() for x in menu.actions() if x.text() == "Parameter columns")
        keys = [x.text() for x in params.actions()]
        assert "algorithm.meta_lr" in keys and "name" not in keys
        next(x for x in params.actions() if x.text() == "algorithm.meta_lr").trigger()
        assert column(b, "algorithm.meta_lr") == ["0.001", "0.01"]
        b.table.sortByColumn(len(COLUMNS), Qt.SortOrder.DescendingOrder)
        assert column(b, "Name") == ["mse-run", "acc-run"]
        next(x for x in menu.actions() if x.text() == "Device").trigger()  # hide it
        assert b.table.isColumnHidden(COL["Device"])
        b.text_filter.setText("run")
        w.shutdown()
        # the same catalog again: as the user left it
        w2 = make_window(qtbot, cat)
        b2 = w2.browser
        assert b2.model.params == ["algorithm.meta_lr"] and b2.table.isColumnHidden(COL["Device"])
        assert column(b2, "Name") == ["mse-run", "acc-run"] and b2.text_filter.text() == "run"
        w2.shutdown()
    assert {a, m} == {1, 2}
    with Catalog.open(other) as cat:  # another catalog keeps its own (here: the defaults)
        w3 = make_window(qtbot, cat)
        assert w3.browser.model.params == [] and not w3.browser.table.isColumnHidden(COL["Device"])
        w3.shutdown()


def test_the_environment_tab_leads_with_what_reproduces_the_run() -> None:
    from workbench.gui.browser_config import summary

    env = {
        "git": {"commit": "df91efb1b4db353e", "dirty": True, "diff": "code.diff"},
        "command": {"argv": ["/x/workbench/__main__.py", "run", "--name", "a b"], "cwd": "/w"},
        "workbench": "0.1.0", "torch": "2.13.0", "data": {"dataset": "omniglot", "verified": True},
        "plugin": {"source": "/p/plain.py", "sha256": "ab" * 32},
    }  # fmt: skip
    lines = summary(env)
    assert lines[0] == "code      df91efb1b4db, uncommitted changes in code.diff"
    assert lines[1] == "command   workbench run --name 'a b'   (in /w)"
    assert "torch 2.13.0" in lines[2] and "dataset omniglot" in lines[3]
    assert lines[4].startswith("plugin    /p/plain.py (sha256 abab")
    assert summary({}) == []
