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


def recent(key: str) -> list[str]:
    """A most-recent-first list kept in the settings (data folders, catalogs)."""
    value = load_json(key, [])
    return [str(v) for v in value] if isinstance(value, list) else []


def remember(key: str, item: str, most: int = MAX_RECENT_DIRS) -> None:
    if item:
        save_json(key, ([item] + [d for d in recent(key) if d != item])[:most])


def recent_data_dirs() -> list[str]:
    return recent("data/recent_dirs")


def remember_data_dir(path: str) -> None:
    remember("data/recent_dirs", path)


RECENT_CATALOGS = "catalog/recent"
MAX_RECENT_CATALOGS = 8


def recent_catalogs() -> list[str]:
    """Catalogs opened in the app, newest first: files, or server URLs with no password."""
    return recent(RECENT_CATALOGS)


def remember_catalog(target: str) -> None:
    remember(RECENT_CATALOGS, target, MAX_RECENT_CATALOGS)
