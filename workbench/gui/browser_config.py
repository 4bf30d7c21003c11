"""The browser's Config and Environment tabs: one run's configuration, and where and how it
ran (status, error, attempt, device and the recorded environment), as JSON text."""

from __future__ import annotations

import json

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
        self.setPlainText(
            json.dumps(
                {**head, "environment": r.environment}, indent=2, sort_keys=True, default=str
            )
        )
