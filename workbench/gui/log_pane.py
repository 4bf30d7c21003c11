"""The log pane: timestamped events and errors (errors in red). Also receives Python logging
records of the workbench loggers (e.g. catalog write failures)."""

from __future__ import annotations

import html
import logging
import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QPlainTextEdit, QWidget

MAX_BLOCKS = 5000


class LogPane(QPlainTextEdit):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_BLOCKS)
        self.setStyleSheet("font-family: monospace; font-size: 9pt;")
        self.entries: list[tuple[str, str]] = []

    def add(self, level: str, message: str) -> None:
        self.entries.append((level, message))
        del self.entries[:-MAX_BLOCKS]
        stamp = time.strftime("%H:%M:%S")
        text = html.escape(message).replace("\n", "<br>&nbsp;&nbsp;")
        color = {"error": "#c62828", "warning": "#ef6c00"}.get(level, "#333")
        self.appendHtml(
            f'<span style="color:#888">{stamp}</span> <span style="color:{color}">{text}</span>'
        )

    def errors(self) -> list[str]:
        return [m for lv, m in self.entries if lv == "error"]


class _Relay(QObject):
    record = Signal(str, str)


class QtLogHandler(logging.Handler):
    """Forwards log records (from any thread) to the pane through a queued signal."""

    def __init__(self, pane: LogPane) -> None:
        super().__init__(logging.WARNING)
        self.relay = _Relay()
        self.relay.record.connect(pane.add)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "error" if record.levelno >= logging.ERROR else "warning"
            self.relay.record.emit(level, self.format(record))
        except Exception:
            pass
