"""Table model over catalog runs, built for tens of thousands of rows.

Rows are the `RunRecord`s of one `Catalog.list_runs()` call (runs + summary tables only; no
per-row queries). Cell text is formatted on demand for visible rows and cached; sorting is
one Python sort of precomputed keys in the source model (the proxy forwards `sort` to it
instead of comparing cells through Python one pair at a time); the proxy filters with
per-row search strings computed once.

Also here, for every part of the browser: how a run's results read (`val_metric`,
`test_metric`, `fmt_value`) and how configs compare (`flatten`, `group_key`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor

from workbench.catalog import RunRecord
from workbench.exports import IGNORED_IN_GROUP, format_score  # noqa: F401 (re-exported)
from workbench.exports import seed_group_key as group_key  # noqa: F401 (the app's name)

COLUMNS = [
    "ID",
    "Status",
    "Name",
    "Algorithm",
    "Dataset",
    "Shape",
    "Best val acc",
    "Best val MSE",
    "Test ± CI",
    "Steps",
    "Duration",
    "Device",
    "Created",
    "Tags",
]
"""The fixed columns; the user's chosen config keys (`RunTableModel.params`) follow them. Best
validation has one column per metric kind: accuracy and MSE never sort in one column."""
NUMERIC = ("ID", "Best val acc", "Best val MSE", "Test ± CI", "Steps", "Duration")
COL = {name: i for i, name in enumerate(COLUMNS)}
STATUS_COLORS = {
    "running": "#1565c0", "paused": "#ef6c00", "queued": "#6d6d6d", "finished": "#2e7d32",
    "failed": "#c62828", "cancelled": "#8d6e63", "interrupted": "#ad1457",
}  # fmt: skip
LIVE = ("queued", "running", "paused")
ID_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2

Index = QModelIndex | QPersistentModelIndex


def _summary(r: RunRecord, name: str, best: bool = True) -> float | None:
    s = r.summary.get(name)
    if s is None:
        return None
    v = s.best if best else s.latest
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def val_metric(r: RunRecord) -> tuple[str, float | None]:
    for m in ("accuracy", "mse"):
        v = _summary(r, f"val_{m}")
        if v is not None:
            return m, v
    return "", None


def shape_text(config: dict[str, Any]) -> str:
    """The training task shape, as papers write it: 5w1s (classification), K=10 (regression)."""
    train = config.get("train") if isinstance(config.get("train"), dict) else None
    if not train:
        return ""
    if train.get("ways", 1) > 1:
        return f"{train.get('ways')}w{train.get('shots')}s"
    return f"K={train.get('shots')}" if train.get("shots") is not None else ""


def param_value(r: RunRecord, key: str) -> Any:
    """A run's value of the dotted config key `key` (None if its config has none)."""
    node: Any = r.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def test_metric(r: RunRecord) -> tuple[str, float | None, float | None]:
    for m in ("accuracy", "mse"):
        v = _summary(r, f"test_{m}", best=False)
        if v is not None:
            return m, v, _summary(r, f"test_{m}_ci95", best=False)
    return "", None, None


def fmt_value(metric: str, v: float | None, ci: float | None = None) -> str:
    """A score as the CLI and the exports print it (`exports.format_score`); empty if none."""
    return "" if v is None else format_score(v, ci, metric)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys, so configs compare key by key."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def fmt_duration(s: float | None) -> str:
    if s is None:
        return ""
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


@dataclass
class Filters:
    text: str = ""
    status: str = ""
    algorithm: str = ""
    dataset: str = ""
    tag: str = ""
    since: float = 0.0  # created at or after (Unix seconds); 0 = any time

    def active(self) -> bool:
        return bool(
            self.text or self.status or self.algorithm or self.dataset or self.tag or self.since
        )


class RunTableModel(QAbstractTableModel):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.rows: list[RunRecord] = []
        self.row_of: dict[int, int] = {}
        self._cells: dict[tuple[int, int], str] = {}
        self._haystack: dict[int, str] = {}
        self.filters = Filters()
        self.params: list[str] = []  # config keys shown as columns after the fixed ones
        self.sort_column = COL["ID"]
        self.sort_order = Qt.SortOrder.DescendingOrder

    # ---- loading ---------------------------------------------------------------------
    def set_runs(self, records: list[RunRecord]) -> None:
        self.beginResetModel()
        self.rows = list(records)
        self._cells.clear()
        self._haystack.clear()
        self._sort_rows()
        self.endResetModel()

    def update_runs(self, records: list[RunRecord]) -> list[int]:
        """Replace rows in place by id; returns the ids that are not in the model."""
        missing = []
        for rec in records:
            row = self.row_of.get(rec.id)
            if row is None:
                missing.append(rec.id)
                continue
            self.rows[row] = rec
            for c in range(self.columnCount()):
                self._cells.pop((rec.id, c), None)
            self._haystack.pop(rec.id, None)
            self.dataChanged.emit(self.index(row, 0), self.index(row, self.columnCount() - 1))
        return missing

    def update_progress(self, progress: list[tuple[int, int, float | None]]) -> None:
        """(run id, step, heartbeat time) of runs that only made progress: their step and
        duration cells change, nothing else is re-read."""
        cols = (COL["Steps"], COL["Duration"])
        for run_id, step, heartbeat in progress:
            row = self.row_of.get(run_id)
            if row is None:
                continue
            r = self.rows[row]
            r.step, r.heartbeat_at = step, heartbeat
            for c in cols:
                self._cells.pop((run_id, c), None)
            self.dataChanged.emit(self.index(row, cols[0]), self.index(row, cols[1]))

    def set_params(self, keys: list[str]) -> None:
        """Show these config keys (dotted, e.g. algorithm.inner_lr) as columns."""
        self.beginResetModel()
        self.params = list(dict.fromkeys(keys))
        self._cells.clear()
        if self.sort_column >= self.columnCount():
            self.sort_column = COL["ID"]
        self._sort_rows()
        self.endResetModel()

    def record(self, row: int) -> RunRecord:
        return self.rows[row]

    def ids(self) -> list[int]:
        return [r.id for r in self.rows]

    # ---- Qt model API ----------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS) + len(self.params)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return (
                COLUMNS[section] if section < len(COLUMNS) else self.params[section - len(COLUMNS)]
            )
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self.rows[index.row()]
        c = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            key = (r.id, c)
            text = self._cells.get(key)
            if text is None:
                text = self._cells[key] = self._text(r, c)
            return text
        if role == Qt.ItemDataRole.ForegroundRole and c == COL["Status"]:
            return QColor(STATUS_COLORS.get(r.status, "#000"))
        if role == Qt.ItemDataRole.ToolTipRole:
            if c == COL["Status"] and r.error:
                return r.error[:2000]
            if c == COL["Name"] and r.notes:
                return r.notes[:2000]
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and (
            c >= len(COLUMNS) or COLUMNS[c] in NUMERIC
        ):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == ID_ROLE:
            return r.id
        if role == SORT_ROLE:
            return self._key(r, c)
        return None

    def _text(self, r: RunRecord, c: int) -> str:
        if c >= len(COLUMNS):
            v = param_value(r, self.params[c - len(COLUMNS)])
            return "" if v is None else _show_value(v)
        name = COLUMNS[c]
        if name in ("Best val acc", "Best val MSE"):
            m = "accuracy" if name == "Best val acc" else "mse"
            return fmt_value(m, _summary(r, f"val_{m}"))
        if name == "Test ± CI":
            m, v, ci = test_metric(r)
            return fmt_value(m, v, ci)
        text = {
            "ID": lambda: str(r.id),
            "Status": lambda: r.status,
            "Name": lambda: r.name,
            "Algorithm": lambda: r.algorithm,
            "Dataset": lambda: r.dataset,
            "Shape": lambda: shape_text(r.config),
            "Steps": lambda: f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step),
            "Duration": lambda: fmt_duration(r.duration_s),
            "Device": lambda: r.device,
            "Created": lambda: datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M"),
            "Tags": lambda: ", ".join(r.tags),
        }.get(name)
        return text() if text is not None else ""

    def _key(self, r: RunRecord, c: int) -> Any:
        """The sort key: better scores first when descending; numbers before text."""
        if c >= len(COLUMNS):
            v = param_value(r, self.params[c - len(COLUMNS)])
            if isinstance(v, bool) or not isinstance(v, int | float):
                return (1, -math.inf, "" if v is None else _show_value(v).lower())
            return (1, float(v), "")
        name = COLUMNS[c]
        if name in ("Best val acc", "Best val MSE"):
            v = _summary(r, "val_accuracy" if name == "Best val acc" else "val_mse")
            return -math.inf if v is None else (v if name == "Best val acc" else -v)
        if name == "Test ± CI":
            m, v, _ = test_metric(r)
            return -math.inf if v is None else (v if m == "accuracy" else -v)
        numeric = {"ID": r.id, "Steps": r.step, "Duration": r.duration_s or 0.0,
                   "Created": r.created_at}  # fmt: skip
        if name in numeric:
            return numeric[name]
        return self._text(r, c).lower()

    # ---- sorting (whole-list key sort, not pairwise Python compares) -------------------
    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.sort_column, self.sort_order = column, order
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        old_ids = [(self.rows[i.row()].id, i.column()) if i.isValid() else None for i in old]
        self._sort_rows()
        new = [
            self.index(self.row_of[k[0]], k[1])
            if k is not None and k[0] in self.row_of
            else QModelIndex()
            for k in old_ids
        ]
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

    def _sort_rows(self) -> None:
        c = self.sort_column
        rev = self.sort_order == Qt.SortOrder.DescendingOrder
        self.rows.sort(key=lambda r: (self._key(r, c), r.id), reverse=rev)
        self.row_of = {r.id: i for i, r in enumerate(self.rows)}

    # ---- filtering -------------------------------------------------------------------
    def accepts(self, row: int) -> bool:
        f = self.filters
        r = self.rows[row]
        if f.status and r.status != f.status:
            return False
        if f.algorithm and r.algorithm != f.algorithm:
            return False
        if f.dataset and r.dataset != f.dataset:
            return False
        if f.tag and f.tag not in r.tags:
            return False
        if f.since and r.created_at < f.since:
            return False
        if f.text:
            hay = self._haystack.get(r.id)
            if hay is None:
                hay = self._haystack[r.id] = " ".join(
                    [
                        str(r.id),
                        r.name,
                        r.notes or "",
                        r.algorithm,
                        r.dataset,
                        r.status,
                        r.preset or "",
                        r.device,
                        *r.tags,
                    ]
                ).lower()
            return all(word in hay for word in f.text.lower().split())
        return True

    def distinct(self, what: str) -> list[str]:
        values: set[str] = set()
        for r in self.rows:
            if what == "tags":
                values.update(r.tags)
            else:
                values.add(getattr(r, what))
        return sorted(v for v in values if v)


class RunFilterProxy(QSortFilterProxyModel):
    """Filters through `RunTableModel.accepts`; sorting is delegated to the source model."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setDynamicSortFilter(False)

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        return self.sourceModel().accepts(source_row)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.sourceModel().sort(column, order)

    def set_filters(self, filters: Filters) -> None:
        self.beginFilterChange() if hasattr(self, "beginFilterChange") else None
        self.sourceModel().filters = filters
        if hasattr(self, "endFilterChange"):
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.invalidateFilter()


def since_for(choice: str) -> float:
    now = time.time()
    midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    return {"today": midnight, "7 days": now - 7 * 86400, "30 days": now - 30 * 86400}.get(
        choice, 0.0
    )


def _show_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)
