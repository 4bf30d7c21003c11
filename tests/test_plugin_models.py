"""A model from the plugins folder: selectable by name in the CLI and the form, trained, and
recorded in the run; an unknown model name is refused where it was typed. Each in its own
process, so the registries of this test process stay as they are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_detached import run_of  # noqa: E402  (tests/ is on the path)
from test_plugins import ROOT, cli, env

MODEL = '''
"""A linear learner on flattened images: the smallest model plugin."""
from torch import nn
from workbench.plugin_api import register_model


@register_model("flat-linear")
def build(cfg, input_shape, out_dim):
    size = 1
    for d in input_shape:
        size *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(size, out_dim))
'''

GLYPHS = ["--dataset", "glyphs", "--ways", "5", "--shots", "1", "--queries", "2",
          "--meta-batch", "2", "--set", "val_every=10", "--set", "val_episodes=4",
          "--set", "test_episodes=4", "--quiet"]  # fmt: skip


def test_a_model_plugin_trains_from_the_cli_and_is_recorded(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flat_linear.py").write_text(MODEL)
    db = tmp_path / "c.db"
    got = cli(db, plugins, "run", "--algorithm", "maml", *GLYPHS, "--steps", "10",
              "--set", "model.name=flat-linear")  # fmt: skip
    assert got.returncode == 0, got.stderr
    run = run_of(db, 1)
    assert run.status == "finished" and run.config["model"]["name"] == "flat-linear"
    assert run.environment["model_plugin"]["source"] == str(plugins / "flat_linear.py")
    assert "plugin" not in run.environment  # the algorithm is built in
    # without the plugin, the name is refused at the flag that set it, listing what exists
    got = cli(db, tmp_path / "none", "run", *GLYPHS, "--steps", "2",
              "--set", "model.name=flat-linear")  # fmt: skip
    assert got.returncode == 2
    assert "model.name" in got.stderr and "unknown model 'flat-linear'" in got.stderr
    assert "allowed: auto, conv4, mlp" in got.stderr and "Traceback" not in got.stderr


FORM = r"""
import sys
from PySide6.QtWidgets import QApplication
app = QApplication([])
from workbench.gui.run_form import RunForm
form = RunForm()
form.set_field("dataset.name", "glyphs")
editor = form.editors["model.name"]
print("CHOICES", ",".join(editor.choices))
form.set_field("model.name", "flat-linear")
print("VALID", form.valid, form.to_dict()["model"]["name"])
"""


def test_the_form_offers_a_model_plugin_by_name(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flat_linear.py").write_text(MODEL)
    got = subprocess.run(
        [sys.executable, "-c", FORM], capture_output=True, text=True, cwd=ROOT, timeout=1800,
        env=env(plugins, QT_QPA_PLATFORM="offscreen"),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr[-3000:]
    choices = got.stdout.split("CHOICES ")[1].split()[0].split(",")
    assert choices[:3] == ["auto", "conv4", "mlp"] and "flat-linear" in choices
    assert "VALID True flat-linear" in got.stdout
