"""The Help menu (user guide, keyboard shortcuts, where files live, About) and the package data
it and the presets need: an installed wheel carries the presets, examples and guide."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QDialog, QTableWidget, QTextBrowser  # noqa: E402

from workbench.catalog import Catalog  # noqa: E402
from workbench.core.config import RunConfig  # noqa: E402
from workbench.gui.main_window import MainWindow  # noqa: E402
from workbench.sweeps.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cells(table: QTableWidget) -> list[tuple[str, str]]:
    return [(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())]


def test_the_help_menu_opens_the_guide_the_shortcuts_and_where_files_live(
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    shown: list[QDialog] = []
    monkeypatch.setattr(QDialog, "exec", lambda self: shown.append(self) or 0)
    with Catalog.open(tmp_path / "c.db") as catalog:
        win = MainWindow(catalog, restore=False)
        qtbot.addWidget(win)
        menu = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Help")
        items = {a.text().replace("&", ""): a for a in menu.actions() if a.text()}
        assert {"User guide", "Keyboard shortcuts", "Where files live", "About"} <= set(items)

        items["User guide"].trigger()
        guide = shown[-1].findChild(QTextBrowser, "guide")
        assert "Train a run" in guide.toPlainText() and "Sweeps" in guide.toPlainText()

        items["Keyboard shortcuts"].trigger()
        keys = dict(cells(shown[-1].findChild(QTableWidget, "shortcuts")))
        assert "Ctrl+Return" in keys["Start / queue"]
        assert keys["User guide"] == "F1" and "Ctrl+O" in keys["Open catalog…"]

        items["Where files live"].trigger()
        places = dict(cells(shown[-1].findChild(QTableWidget, "files")))
        assert places["catalog"] == catalog.display
        assert places["checkpoints and run logs"].startswith(str(catalog.checkpoint_root))
        assert Path(places["presets, examples, this guide"], "guide.md").is_file()
        win.shutdown()


def test_the_shipped_examples_are_valid() -> None:
    examples = ROOT / "workbench" / "resources" / "examples"
    assert load_spec(str(examples / "sweep-inner-lr.json")).method == "grid"
    run = RunConfig.from_json((examples / "run-protonet-omniglot.json").read_text())
    assert run.algorithm.name == "protonet"


def test_a_wheel_carries_the_presets_examples_and_guide(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "workbench", src / "workbench",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    got = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = [n for n in names if n.startswith("workbench/resources/presets/")]
    assert len(presets) == len(list((ROOT / "workbench/resources/presets").glob("*.json")))
    assert "workbench/resources/guide.md" in names
    assert "workbench/resources/examples/sweep-inner-lr.json" in names
