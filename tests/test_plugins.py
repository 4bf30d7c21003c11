"""The user's own algorithms as plugins: the shipped example from a plugins folder, trained from
the CLI and from the app; an entry point of an installed package; broken plugins said in one
line naming the file while everything else starts. Each in its own process, so the registries
of this test process stay as they are."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_detached import run_of  # noqa: E402  (tests/ is on the path)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "workbench" / "resources" / "examples" / "plugin_plain_fomaml.py"
GLYPHS_50 = ["--dataset", "glyphs", "--steps", "50", "--ways", "5", "--shots", "1", "--queries",
             "2", "--meta-batch", "4", "--set", "val_every=25", "--set", "val_episodes=10",
             "--set", "test_episodes=20", "--quiet"]  # fmt: skip


def env(plugins: Path, **more: str) -> dict[str, str]:
    out = {**os.environ, "WORKBENCH_PLUGINS": str(plugins), "WORKBENCH_THREADS": "1", **more}
    out.pop("WORKBENCH_FAULT", None)
    return out


def cli(db: Path, plugins: Path, *args: str, **more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench", "--db", str(db), *args],
        capture_output=True, text=True, cwd=ROOT, env=env(plugins, **more), timeout=1800,
    )  # fmt: skip


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / EXAMPLE.name)
    return folder


def test_the_example_plugin_trains_50_steps_from_the_cli_and_records_itself(
    tmp_path: Path, plugins: Path
) -> None:
    db = tmp_path / "c.db"
    got = cli(db, plugins, "run", "--algorithm", "plain-fomaml", *GLYPHS_50)
    assert got.returncode == 0, got.stderr
    run = run_of(db, 1)
    assert run.status == "finished" and run.step == 50 and run.algorithm == "plain-fomaml"
    plugin = run.environment["plugin"]
    assert plugin["source"] == str(plugins / EXAMPLE.name)
    assert len(plugin["sha256"]) == 64
    # later without the plugin: the run still lists, and resuming it says why it cannot
    got = cli(db, tmp_path / "none", "runs")
    assert got.returncode == 0 and "plain-fomaml" in got.stdout
    got = cli(db, tmp_path / "none", "resume", "1", "--steps", "60")
    assert got.returncode == 2 and "unknown algorithm 'plain-fomaml'" in got.stderr


APP = r"""
import sys, time
from PySide6.QtWidgets import QApplication
from PySide6.QtCore import QSettings
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, sys.argv[2])
app = QApplication([])
from workbench.catalog import Catalog
from workbench.gui.main_window import MainWindow
catalog = Catalog.open(sys.argv[1])
win = MainWindow(catalog, restore=False)
win.show()
form = win.form
form.set_field("dataset.name", "glyphs")
form.set_field("algorithm.name", "plain-fomaml")
assert "algorithm.inner_lr" in form.algo_editors, sorted(form.algo_editors)  # generated field
for key, value in {"steps": 50, "train.ways": 5, "train.shots": 1, "train.queries": 2,
                   "train.meta_batch": 4, "eval.ways": 5, "eval.shots": 1, "eval.queries": 2,
                   "val_every": 25, "val_episodes": 10, "test_episodes": 20}.items():
    form.set_field(key, value)
assert form.valid, form.error_label.text()
(run_id,) = win.start()
end = time.monotonic() + 1500
while (win.queue.running or win.queue.pending) and time.monotonic() < end:
    app.processEvents()
    time.sleep(0.01)
rec = catalog.get_run(run_id)
print("RESULT", rec.status, rec.step, rec.algorithm)
win.shutdown()
"""


def test_the_example_plugin_trains_from_the_app_with_its_generated_form(
    tmp_path: Path, plugins: Path
) -> None:
    got = subprocess.run(
        [sys.executable, "-c", APP, str(tmp_path / "c.db"), str(tmp_path / "settings")],
        capture_output=True, text=True, cwd=ROOT, timeout=1800,
        env=env(plugins, QT_QPA_PLATFORM="offscreen"),
    )  # fmt: skip
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-3000:]
    assert "RESULT finished 50 plain-fomaml" in got.stdout


def test_broken_plugins_are_said_in_one_line_each_and_the_rest_works(
    tmp_path: Path, plugins: Path
) -> None:
    (plugins / "bad_syntax.py").write_text("def broken(:\n")
    (plugins / "bad_interface.py").write_text(
        "from workbench.plugin_api import register_algorithm\n"
        "@register_algorithm('half')\nclass Half:\n    pass\n"
    )
    db = tmp_path / "c.db"
    got = cli(db, plugins, "run", "--steps", "3", "--quiet")  # built-in MAML on sinusoid
    assert got.returncode == 0, got.stderr
    said = [ln for ln in got.stderr.splitlines() if "left out" in ln]
    assert len(said) == 2
    assert any(str(plugins / "bad_syntax.py") in ln and "SyntaxError" in ln for ln in said)
    assert any(str(plugins / "bad_interface.py") in ln and "not a subclass" in ln for ln in said)
    got = cli(db, plugins, "run", "--algorithm", "plain-fomaml", *GLYPHS_50[:4], "--steps", "2",
              "--quiet")  # fmt: skip
    assert got.returncode == 0, got.stderr  # the good plugin beside the broken ones
    got = cli(db, plugins, "run", "--algorithm", "half", "--steps", "2")
    assert got.returncode == 2 and "unknown algorithm 'half'" in got.stderr


def test_an_installed_package_registers_through_its_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    pkg = site / "my_algos"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(EXAMPLE.read_text().replace('"plain-fomaml"', '"ep-fomaml"'))
    info = site / "my_algos-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-algos\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[workbench.algorithms]\nep-fomaml = my_algos\n")
    db = tmp_path / "c.db"
    got = cli(db, tmp_path / "none", "run", "--algorithm", "ep-fomaml", *GLYPHS_50[:4],
              "--steps", "2", "--quiet", PYTHONPATH=str(site))  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert run_of(db, 1).environment["plugin"]["source"] == "my-algos 1.2"


OWN_UPDATE = '''
from typing import Literal

import torch

from workbench.plugin_api import (Algorithm, AlgorithmParams, loss_and_score,
                                  register_algorithm, score_name, step_values)


class JointParams(AlgorithmParams):
    name: Literal["joint-momentum"] = "joint-momentum"


@register_algorithm("joint-momentum")
class JointMomentum(Algorithm):
    """Joint training (the query loss at theta, no inner loop) with its own outer update: SGD
    with momentum, at a step of its own."""

    Params = JointParams

    def outer_optimizer(self, params):
        return torch.optim.SGD(params, lr=1.0, momentum=0.9)

    def outer_lr(self, step, steps):
        return 0.05 / (1 + step)

    def meta_train_step(self, batch, shape):
        n, losses, scores = len(batch), [], []
        for i in range(n):
            loss, score = loss_and_score(self.kind, self.model(batch.query_x[i]), batch.query_y[i])
            (loss / n).backward()
            losses.append(loss.detach())
            scores.append(score.detach())
        return step_values(**{"loss": torch.stack(losses).mean(),
                              score_name(self.kind): torch.stack(scores).mean()})

    def evaluate(self, batch, shape):
        with torch.no_grad():
            out = [loss_and_score(self.kind, self.model(batch.query_x[i]), batch.query_y[i])[1]
                   for i in range(len(batch))]
        return {score_name(self.kind): torch.stack(out).cpu()}
'''


def test_a_plugin_owns_its_outer_update_and_the_engine_steps_and_saves_it(tmp_path: Path) -> None:
    """`outer_optimizer` and `outer_lr` are the plugin's: the run's checkpoint holds SGD's
    momentum buffers and the last step's learning rate from the plugin's schedule."""
    from workbench.catalog import Catalog
    from workbench.core.checkpoint import load_checkpoint

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "joint_momentum.py").write_text(OWN_UPDATE)
    db = tmp_path / "c.db"
    got = cli(db, folder, "run", "--algorithm", "joint-momentum", "--steps", "4", "--set",
              "val_every=0", "--set", "test_episodes=4", "--quiet")  # fmt: skip
    assert got.returncode == 0, got.stderr
    with Catalog.open(db) as cat:
        final = cat.checkpoint(1, "final")
    assert final is not None and final.step == 4
    opt = load_checkpoint(final.path)["optimizer"]
    (group,) = opt["param_groups"]
    assert group["momentum"] == 0.9 and group["lr"] == pytest.approx(0.05 / 4)  # step index 3
    assert opt["state"] and all("momentum_buffer" in s for s in opt["state"].values())
