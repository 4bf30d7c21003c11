"""Figures for a paper: SVG, PDF and PNG at a chosen size and DPI, carrying the curve's own
points (the very ones on screen), and the app's File → Export figure… dialog."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

import pyqtgraph as pg  # noqa: E402
from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from workbench.catalog import Catalog  # noqa: E402
from workbench.gui.figure_export import FigureDialog, FigureError, export_figure  # noqa: E402


def curve_points(svg: str, colour: str) -> set[tuple[float, float]]:
    """The vertices drawn with the pen of `colour` (Qt writes them in the data's coordinates,
    the view's transform on their group)."""
    points = set()
    for group in re.findall(rf'<g [^>]*stroke="{colour}"[^>]*>(.*?)</g>', svg, re.S):
        for run in re.findall(r'points="([^"]*)"', group):
            for pair in run.split():
                x, y = pair.split(",")
                points.add((round(float(x), 3), round(float(y), 4)))
    return points


@pytest.fixture
def plot(qtbot):  # type: ignore[no-untyped-def]
    w = pg.PlotWidget()
    qtbot.addWidget(w)
    w.resize(900, 300)
    w.addLegend()
    x = np.arange(1, 201, dtype=float)
    y = np.exp(-x / 50) + 0.01 * np.sin(x)
    w.plot(x, y, pen=pg.mkPen("#1f77b4", width=2), name="loss")
    w.show()
    return w, x, y


def test_svg_pdf_and_png_at_the_chosen_size_carry_the_screen_points(plot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, x, y = plot
    svg = export_figure(w, tmp_path / "f.svg", 4, 3, 200).read_text()
    drawn = curve_points(svg, "#1f77b4")
    data = {(round(a, 3), round(b, 4)) for a, b in zip(x, y, strict=True)}
    assert data <= drawn  # every point of the curve, as vectors (the legend adds its sample)
    assert len(drawn - data) <= 2
    pdf = export_figure(w, tmp_path / "f.pdf", 4, 3, 200).read_bytes()
    assert pdf.startswith(b"%PDF") and b"/MediaBox [0 0 288" in pdf  # 4 x 3 inches
    image = QImage(str(export_figure(w, tmp_path / "f.png", 4, 3, 200)))
    assert (image.width(), image.height()) == (800, 600)
    assert round(image.dotsPerMeterX() * 0.0254) == 200
    assert w.size().width() == 900  # the window keeps its own size


def test_a_bad_name_size_or_dpi_is_refused_with_a_reason(plot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w, _, _ = plot
    for args, phrase in (
        (("f.jpg", 4, 3, 200), "give a .svg, .pdf or .png"),
        (("f.pdf", 0.1, 3, 200), "between 0.5 and 40 inches"),
        (("f.png", 4, 3, 5000), "DPI must be between"),
    ):
        with pytest.raises(FigureError, match=phrase):
            export_figure(w, tmp_path / args[0], *args[1:])
    assert list(tmp_path.iterdir()) == []


def test_file_export_figure_writes_the_training_plots(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from test_gui_detached import make_window

    with Catalog.open(tmp_path / "c.db") as catalog:
        win = make_window(qtbot, catalog)
        dialog = FigureDialog(win.live.view, "training", win)
        dialog.path.setText(str(tmp_path / "bad.gif"))
        QTimer.singleShot(0, dialog.accept)  # the dialog says why and stays open
        QTimer.singleShot(50, lambda: dialog.path.setText(str(tmp_path / "training.svg")))
        QTimer.singleShot(100, dialog.accept)
        assert win.export_figure(dialog) == tmp_path / "training.svg"
        assert "give a .svg" in dialog.error.text()
        assert "Meta-train loss" in (tmp_path / "training.svg").read_text()
        win.shutdown()


def pixels(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_Grayscale8)
    raw = np.frombuffer(image.constBits(), np.uint8, image.sizeInBytes())
    return raw.reshape(image.height(), image.bytesPerLine())[:, : image.width()].astype(float)


def test_a_high_dpi_png_is_the_same_figure_as_the_screen_scale_one(plot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """At 192 dpi, scaled back down, the figure matches the 96 dpi one: axes, ticks and curve
    in the same places (pyqtgraph's cached axes once came out 1.25x off at 120 dpi)."""
    w, _, _ = plot
    low = QImage(str(export_figure(w, tmp_path / "low.png", 5, 3, 96)))
    high = QImage(str(export_figure(w, tmp_path / "high.png", 5, 3, 192)))
    assert (high.width(), high.height()) == (2 * low.width(), 2 * low.height())
    down = high.scaled(low.width(), low.height(), mode=Qt.TransformationMode.SmoothTransformation)
    a, b = 255 - pixels(low), 255 - pixels(down)  # ink
    # where the ink lies, column by column and row by row: 0.96-0.97 when the two match,
    # about 0.02 with the axes drawn 2x off
    assert np.corrcoef(a.sum(0), b.sum(0))[0, 1] > 0.8
    assert np.corrcoef(a.sum(1), b.sum(1))[0, 1] > 0.8
