"""File → Open catalog: a SQLite file or a database URL, checked where the user typed it."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from workbench.catalog import Catalog

PLACEHOLDER = "experiments.db  or  postgresql+psycopg://user@host/database"


def open_error(exc: BaseException) -> str:
    """The one line a failed open shows (the CLI prints the same after `error:`)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OpenCatalogDialog(QDialog):
    """Asks for a catalog and opens it on OK; a catalog that cannot be opened (unknown driver,
    unreachable server, wrong password, not a catalog, ...) keeps the dialog open with the
    reason under the field. `catalog` holds the opened one after `exec()` returns Accepted."""

    def __init__(
        self,
        current: str,
        parent: QWidget | None = None,
        opener: Callable[[str], Catalog] = Catalog.open,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open catalog")
        self.catalog: Catalog | None = None
        self._opener = opener
        self.field = QLineEdit(current)
        self.field.setPlaceholderText(PLACEHOLDER)
        self.field.setMinimumWidth(460)
        self.field.setToolTip(
            "A SQLite file (made if it does not exist) or a SQLAlchemy URL of a shared "
            "PostgreSQL catalog; the password may be left to ~/.pgpass or PGPASSWORD"
        )
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.field, 1)
        row.addWidget(browse)
        self.error = QLabel()
        self.error.setObjectName("fieldError")
        self.error.setStyleSheet("color: #c0392b;")
        self.error.setWordWrap(True)
        self.error.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Catalog file or database URL:"))
        lay.addLayout(row)
        lay.addWidget(self.error)
        lay.addWidget(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Catalog file",
            self.field.text(),
            "Catalogs (*.db);;All files (*)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            self.field.setText(path)

    def accept(self) -> None:
        target = self.field.text().strip()
        if not target:
            self._show("give a catalog file or a database URL")
            return
        try:
            self.catalog = self._opener(target)
        except Exception as exc:  # every failure is the user's to read, not a traceback
            self._show(open_error(exc))
            return
        super().accept()

    def _show(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()
        self.field.setFocus()
