"""Figures for a paper: a plot (or a grid of plots) as SVG, PDF or PNG at a chosen size and DPI.

pyqtgraph exports SVG and images but not PDF, and its image export is the screen's pixels. Here
the plot's own scene is rendered by Qt's painters instead: `QSvgGenerator` and `QPdfWriter` keep
curves as vectors (the very points on screen, with the smoothing and legend as shown), and a
PNG is painted at `dpi` for the chosen physical size. The widget is laid out at the figure's
size while it renders (axes, ticks and legend placed for that size, not stretched from the
window's), then given its own size back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PySide6.QtCore import QMarginsF, QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import QColor, QImage, QPageLayout, QPageSize, QPainter, QPdfWriter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

FORMATS = ("svg", "pdf", "png")
SCREEN_DPI = 96.0  # the size the plot is laid out at: 1 inch = 96 logical pixels


class FigureError(ValueError):
    """A size, DPI or format the export cannot make (said where the user typed it)."""


def check(path: str | Path, width_in: float, height_in: float, dpi: int) -> str:
    """The format of `path` (from its suffix) once size and DPI are sensible; FigureError else."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise FigureError(f"{Path(path).name}: give a .svg, .pdf or .png file name")
    if not (0.5 <= width_in <= 40 and 0.5 <= height_in <= 40):
        raise FigureError("width and height must be between 0.5 and 40 inches")
    if not 50 <= dpi <= 1200:
        raise FigureError("DPI must be between 50 and 1200")
    return fmt


@contextmanager
def laid_out(view: QGraphicsView, size: QSize) -> Iterator[None]:
    """The view (and its scene's layout) at `size` for the duration, then as it was."""
    before = view.size()
    view.resize(size)
    # the layout follows the new size, and one real paint at it brings pyqtgraph's cached axis
    # pictures up to date (rendered without it, they keep the old width's ticks)
    QApplication.processEvents()
    view.grab()
    QApplication.processEvents()
    try:
        yield
    finally:
        view.resize(before)
        QApplication.processEvents()


def export_figure(
    view: QGraphicsView, path: str | Path, width_in: float = 6.0, height_in: float = 4.0,
    dpi: int = 300,
) -> Path:  # fmt: skip
    """Write the plot shown in `view` (a pyqtgraph PlotWidget or GraphicsLayoutWidget) to
    `path` (.svg, .pdf or .png) at width x height inches; returns the path."""
    fmt = check(path, width_in, height_in, dpi)
    path = Path(path)
    logical = QSize(round(width_in * SCREEN_DPI), round(height_in * SCREEN_DPI))
    with laid_out(view, logical):
        source = QRectF(view.viewport().rect())
        source = view.mapToScene(source.toRect()).boundingRect()
        if fmt == "png":
            image = QImage(
                round(width_in * dpi), round(height_in * dpi), QImage.Format.Format_ARGB32
            )
            image.fill(QColor(Qt.GlobalColor.white))
            _render(view, image, QRectF(image.rect()), source)
            # the DPI is set after painting: Qt replays pyqtgraph's cached axis pictures scaled
            # by the device's DPI over the screen's
            image.setDotsPerMeterX(round(dpi / 0.0254))
            image.setDotsPerMeterY(round(dpi / 0.0254))
            if not image.save(str(path)):
                raise FigureError(f"cannot write {path}")
        elif fmt == "svg":
            gen = QSvgGenerator()
            gen.setFileName(str(path))
            gen.setSize(logical)
            gen.setViewBox(QRectF(0, 0, logical.width(), logical.height()))
            gen.setResolution(round(SCREEN_DPI))
            gen.setTitle(path.stem)
            _render(view, gen, QRectF(0, 0, logical.width(), logical.height()), source)
        else:
            pdf = QPdfWriter(str(path))
            pdf.setResolution(round(SCREEN_DPI))  # vectors: the layout's own units
            pdf.setPageLayout(
                QPageLayout(QPageSize(QSizeF(width_in, height_in), QPageSize.Unit.Inch),
                            QPageLayout.Orientation.Portrait, QMarginsF(0, 0, 0, 0))
            )  # fmt: skip
            _render(view, pdf, QRectF(0, 0, logical.width(), logical.height()), source)
    if not path.is_file():
        raise FigureError(f"cannot write {path}")
    return path


def _render(view: QGraphicsView, device: object, target: QRectF, source: QRectF) -> None:
    scene = view.scene()
    painter = QPainter(device)  # type: ignore[call-overload]
    try:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(target, QColor(Qt.GlobalColor.white))
        scene.render(painter, target, source, Qt.AspectRatioMode.IgnoreAspectRatio)
    finally:
        painter.end()


class FigureDialog(QDialog):
    """File → Export figure…: file name (its suffix picks SVG, PDF or PNG), size in inches and
    DPI; a problem is said in the dialog, which stays open."""

    def __init__(self, view: QGraphicsView, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export figure")
        self.view = view
        self.written: Path | None = None
        self.path = QLineEdit(f"{name}.pdf")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        self.width_in = _spin(6.0, " in")
        self.height_in = _spin(4.0, " in")
        self.dpi = QSpinBox(minimum=50, maximum=1200, value=300, suffix=" dpi")
        form = QFormLayout()
        form.addRow("File (.svg, .pdf, .png)", row)
        form.addRow("Width", self.width_in)
        form.addRow("Height", self.height_in)
        form.addRow("Resolution (PNG)", self.dpi)
        self.error = QLabel(wordWrap=True)
        self.error.setObjectName("fieldError")
        self.error.setStyleSheet("color: #c0392b;")
        self.error.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.error)
        lay.addWidget(buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export figure", self.path.text(), "PDF (*.pdf);;SVG (*.svg);;PNG (*.png)"
        )
        if path:
            self.path.setText(path)

    def accept(self) -> None:
        try:
            self.written = export_figure(
                self.view, self.path.text().strip(), self.width_in.value(),
                self.height_in.value(), self.dpi.value(),
            )  # fmt: skip
        except (FigureError, OSError) as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        super().accept()


def _spin(value: float, suffix: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox(minimum=0.5, maximum=40.0, value=value, suffix=suffix)
    box.setSingleStep(0.5)
    return box
