"""The browser's Config and Environment tabs: one run's configuration, and where and how it
ran (status, error, attempt, device and the recorded environment), as JSON text."""

from __future__ import annotations

import json
import shlex
from typing import Any

from PySide6.QtWidgets import QPlainTextEdit, QWidget

from workbench.catalog import RunRecord


class JsonText(QPlainTextEdit):
    """Read-only monospace text: JSON that can be read and copied, not edited."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, readOnly=True)
        self.setStyleSheet("font-family: monospace;")


class ConfigTab(JsonText):
    def show_runs(self, recs: list[RunRecord]) -> None:
        if len(recs) == 1:
            self.setPlainText(json.dumps(recs[0].config, indent=2, sort_keys=True))
        else:
            self.setPlainText("" if not recs else "Select one run to see its configuration.")


class EnvironmentTab(JsonText):
    """Where and how the run ran, the reproducibility record first (code, command, packages,
    data), then everything recorded, as JSON."""

    def show_runs(self, recs: list[RunRecord]) -> None:
        if len(recs) != 1:
            self.setPlainText("")
            return
        r = recs[0]
        head = {
            "status": r.status,
            "error": r.error,
            "attempt": r.attempt,
            "device": r.device,
            "device_name": r.device_name,
        }
        record = json.dumps({**head, "environment": r.environment}, indent=2, sort_keys=True,
                            default=str)  # fmt: skip
        self.setPlainText("\n".join([*summary(r.environment), "", record]))


def summary(env: dict[str, Any]) -> list[str]:
    """The lines a reader needs to reproduce the run: the code's commit (and whether it had
    uncommitted changes, saved as code.diff beside the checkpoints), the command that started
    it (to run again), the package versions, the data and the plugin that made it."""
    lines = []
    git = env.get("git") or {}
    if git.get("commit"):
        dirty = (
            f", uncommitted changes in {git.get('diff') or 'the tree'}" if git.get("dirty") else ""
        )
        lines.append(f"code      {git['commit'][:12]}{dirty}")
    script = env.get("script")
    if script:
        dirty = ", uncommitted changes" if env.get("script_dirty") else ""
        lines.append(f"script    {script} @ {str(env.get('script_commit', '?'))[:12]}{dirty}")
    command = env.get("command")
    argv = command.get("argv") if isinstance(command, dict) else command
    if argv:
        argv = list(argv)
        if str(argv[0]).endswith(("__main__.py", "/workbench")):  # `python -m workbench`
            argv[0] = "workbench"
        cwd = (
            f"   (in {command['cwd']})" if isinstance(command, dict) and command.get("cwd") else ""
        )
        lines.append(f"command   {shlex.join(str(a) for a in argv)}{cwd}")
    versions = [f"{k} {env[k]}" for k in ("workbench", "python", "torch", "numpy", "pydantic",
                                         "sqlalchemy", "cuda") if env.get(k)]  # fmt: skip
    if versions:
        lines.append("packages  " + ", ".join(versions))
    data = env.get("data")
    if isinstance(data, dict) and data:
        lines.append("data      " + ", ".join(f"{k} {v}" for k, v in sorted(data.items())
                                              if not isinstance(v, dict | list)))  # fmt: skip
    for key, label in (
        ("plugin", "plugin"),
        ("model_plugin", "model"),
        ("dataset_plugin", "dataset"),
    ):
        plugin = env.get(key)
        if isinstance(plugin, dict):
            sha = f" (sha256 {plugin['sha256'][:12]})" if plugin.get("sha256") else ""
            lines.append(f"{label:<9} {plugin.get('source')}{sha}")
    if lines:
        lines.append("(Clone puts this run's configuration in the run setup to run it again)")
    return lines
