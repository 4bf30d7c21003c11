"""QSettings in one place: organisation/app names and the INI format (tests redirect the
location with `QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, tmp)`)."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QSettings

ORGANIZATION = "MetaLearningWorkbench"
APPLICATION = "Workbench"
MAX_RECENT_DIRS = 10


def settings() -> QSettings:
    return QSettings(
        QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION
    )


def load_json(key: str, default: Any = None) -> Any:
    raw = settings().value(key)
    if not raw:
        return default
    try:
        return json.loads(str(raw))
    except (TypeError, ValueError):
        return default


def save_json(key: str, value: Any) -> None:
    s = settings()
    s.setValue(key, json.dumps(value))
    s.sync()


def recent_data_dirs() -> list[str]:
    value = load_json("data/recent_dirs", [])
    return [str(v) for v in value] if isinstance(value, list) else []


def remember_data_dir(path: str) -> None:
    if not path:
        return
    dirs = [path] + [d for d in recent_data_dirs() if d != path]
    save_json("data/recent_dirs", dirs[:MAX_RECENT_DIRS])
