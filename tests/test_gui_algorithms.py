"""The newer algorithms (Matching, Relation, Reptile) trained from the app as a user does: picked
in the form's algorithm list, their generated fields set, Start clicked; the run finishes in the
catalog with the algorithm's own settings recorded, and its curves stream into the live view.
Glyphs (built in) always; Omniglot when its archives are beside the project, from the app and
from the CLI's paper presets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from omniglot_fixture import OMNIGLOT_DIR  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402

from workbench.catalog import Catalog  # noqa: E402
from workbench.core.tasks import cache  # noqa: E402
from workbench.gui.main_window import MainWindow  # noqa: E402

HANG_MS = 600_000  # only stops a hung test; a busy machine never reaches it

# the algorithm's own fields as the user sets them in its generated part of the form
OWN = {
    "matching": {"algorithm.fce": True, "algorithm.fce_steps": 2},
    "relation": {"algorithm.batch_norm": "running", "algorithm.bn_momentum": 0.5},
    "reptile": {"algorithm.inner_optimizer": "sgd", "algorithm.transductive": False},
}
SMALL = {"steps": 6, "val_every": 3, "val_episodes": 4, "test_episodes": 6, "ckpt_every": 3,
         "train.meta_batch": 2, "model.width": 16}  # fmt: skip


def pick(win: MainWindow, key: str, text: str) -> None:
    """Choose an entry of a drop-down list by its text, as a click on it does."""
    combo = win.form.editors[key]
    index = combo.findText(text)
    assert index >= 0, f"{text!r} not offered in {key}"
    combo.setCurrentIndex(index)


def train_from_form(qtbot, win: MainWindow, catalog: Catalog, algorithm: str, dataset: str):
    pick(win, "dataset.name", dataset)
    pick(win, "algorithm.name", algorithm)
    for key, value in {**OWN[algorithm], **SMALL}.items():
        assert key in win.form.editors, f"{key} not in the form of {algorithm}"
        win.form.set_field(key, value)
    assert win.form.valid, win.form.error_label.text()
    with qtbot.waitSignal(win.queue.jobStarted, timeout=HANG_MS):
        qtbot.mouseClick(win.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.queue.running and not win.queue.pending, timeout=HANG_MS)
    (run,) = catalog.list_runs()
    assert run.status == "finished", run.error
    assert run.algorithm == algorithm and run.step == SMALL["steps"]
    recorded = run.config["algorithm"]
    for key, value in OWN[algorithm].items():
        assert recorded[key.split(".", 1)[1]] == value, key  # e.g. FCE on, in the run itself
    assert run.summary["val_accuracy"].count == 2
    test = run.summary["test_accuracy"].latest
    assert test is not None and 0 <= test <= 1
    qtbot.waitUntil(lambda: win.live.point_count("loss") == SMALL["steps"], timeout=HANG_MS)
    assert win.live.point_count("val") == 2
    assert any(f"finished at step {SMALL['steps']}" in m for _, m in win.log.entries)
    shown = win.adapt.last  # the episode view: every query with the label the run predicts
    assert shown is not None and shown["kind"] == "classification"
    assert shown["pred"] is not None and len(shown["pred"]) == len(shown["query_y"])
    return run


@pytest.mark.parametrize("algorithm", sorted(OWN))
def test_the_app_trains_it_on_glyphs(
    qtbot, window: MainWindow, catalog: Catalog, algorithm: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    train_from_form(qtbot, window, catalog, algorithm, "glyphs")


@pytest.mark.parametrize("algorithm", sorted(OWN))
def test_the_app_trains_it_on_omniglot(
    qtbot, window: MainWindow, catalog: Catalog, algorithm: str, omniglot_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(cache.CACHE_ENV, str(omniglot_cache))
    window.form.data_dir.setCurrentText(str(OMNIGLOT_DIR.parent))
    run = train_from_form(qtbot, window, catalog, algorithm, "omniglot")
    assert run.config["dataset"]["data_dir"] == str(OMNIGLOT_DIR.parent)


@pytest.mark.parametrize("preset", ["matching-omniglot-5w1s", "relation-omniglot-5w1s",
                                    "reptile-omniglot-5w1s"])  # fmt: skip
def test_the_cli_starts_its_paper_preset_on_omniglot(
    preset: str, omniglot_cache: Path, tmp_path: Path
) -> None:
    """The same algorithms from the command line, on real Omniglot with the paper's settings
    (a few steps: learning is what bench/accuracy.py measures)."""
    db = tmp_path / "r.db"
    got = subprocess.run(
        [sys.executable, "-m", "workbench", "run", "--preset", preset, "--data-dir",
         str(OMNIGLOT_DIR.parent), "--steps", "2", "--db", str(db), "--set", "val_every=0",
         "--set", "test_episodes=4", "--set", "threads=1", "--quiet"],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, cache.CACHE_ENV: str(omniglot_cache)},
    )  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    assert "finished at step 2" in got.stdout, got.stdout
    cat = Catalog.open(db)
    try:
        (run,) = cat.list_runs()
        assert run.config["dataset"]["name"] == "omniglot" and run.status == "finished"
    finally:
        cat.close()
