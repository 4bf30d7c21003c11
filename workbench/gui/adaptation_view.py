"""What adaptation does to one fixed validation task, refreshed at each validation.

Regression (sinusoid): the true curve, the K support points and the model's predictions
before adaptation and after 1 and 10 steps. Classification: one episode's support images
(a row per class) and query images with the predicted label, wrong ones framed in red.
The arrays are computed on the training thread (`QtBridge.adaptation`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QSizePolicy, QStackedWidget, QVBoxLayout, QWidget

STEP_COLORS = {0: "#999999", 1: "#ff7f0e", 10: "#2ca02c"}
PAD = 2


def _tile(images: np.ndarray) -> np.ndarray:
    """[N, C, H, W] in [0, 1] -> [N, H, W, 3] uint8."""
    img = np.clip(images, 0, 1)
    if img.shape[1] == 1:
        img = np.repeat(img, 3, axis=1)
    return (img.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def mosaic(
    tiles: np.ndarray, rows: int, cols: int, borders: list[tuple[int, int, int] | None]
) -> np.ndarray:
    n, h, w, _ = tiles.shape
    out = np.full((rows * (h + 2 * PAD), cols * (w + 2 * PAD), 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = r * (h + 2 * PAD), c * (w + 2 * PAD)
        if borders[i] is not None:
            out[y : y + h + 2 * PAD, x : x + w + 2 * PAD] = borders[i]
        out[y + PAD : y + PAD + h, x + PAD : x + PAD + w] = tiles[i]
    return out


class AdaptationView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.title = QLabel("<b>Adaptation on a fixed validation task</b>")
        # the title's text changes at every update: its width must not move the splitter,
        # which would resize (relayout and repaint) both this view and the live plots
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.title.setWordWrap(True)  # ... so a long title wraps instead of being cut off
        lay.addWidget(self.title)
        self.stack = QStackedWidget()
        lay.addWidget(self.stack, 1)
        self.placeholder = QLabel(
            "Shown at each validation of a run.", alignment=Qt.AlignmentFlag.AlignCenter
        )
        self.placeholder.setStyleSheet("color: #777;")
        self.placeholder.setWordWrap(True)
        self.stack.addWidget(self.placeholder)

        self.reg_plot = pg.PlotWidget()
        # no grid and 1-px pens: both multiply the raster engine's paint time (see live_plots),
        # and this plot is redrawn while training
        self.reg_plot.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.true_curve = self.reg_plot.plot(pen=pg.mkPen("#222", width=1), name="true")
        self.pred_curves = {
            s: self.reg_plot.plot(
                pen=pg.mkPen(
                    c, width=1, style=Qt.PenStyle.DashLine if s == 0 else Qt.PenStyle.SolidLine
                ),
                name="before adaptation" if s == 0 else f"after {s} step{'s' if s > 1 else ''}",
            )
            for s, c in STEP_COLORS.items()
        }
        self.support = self.reg_plot.plot(
            pen=None,
            symbol="o",
            symbolSize=9,
            symbolBrush="#d62728",
            symbolPen="w",
            name="K support points",
        )
        self.stack.addWidget(self.reg_plot)

        self.img_widget = pg.GraphicsLayoutWidget()
        self.sup_box = self.img_widget.addViewBox(
            row=0, col=0, lockAspect=True, invertY=True, enableMouse=False
        )
        self.qry_box = self.img_widget.addViewBox(
            row=1, col=0, lockAspect=True, invertY=True, enableMouse=False
        )
        self.sup_img = pg.ImageItem(axisOrder="row-major")
        self.qry_img = pg.ImageItem(axisOrder="row-major")
        self.sup_box.addItem(self.sup_img)
        self.qry_box.addItem(self.qry_img)
        self._texts: list[Any] = []
        self.stack.addWidget(self.img_widget)
        self.last: dict[str, Any] | None = None
        self.on_visible: Any = None  # called with True/False when the view is shown or hidden

    def showEvent(self, ev: Any) -> None:
        super().showEvent(ev)
        if self.on_visible is not None:
            self.on_visible(True)

    def hideEvent(self, ev: Any) -> None:
        super().hideEvent(ev)
        if self.on_visible is not None:
            self.on_visible(False)

    def clear(self) -> None:
        self.last = None
        self.title.setText("<b>Adaptation on a fixed validation task</b>")
        self.placeholder.setText("Shown at each validation of a run.")
        self.stack.setCurrentWidget(self.placeholder)

    def set_note(self, text: str | None) -> None:
        """Say why the view shows nothing for the selected run (a run in its own process sends
        no adaptation data); None shows the last data again."""
        if text:
            self.title.setText("<b>Adaptation on a fixed validation task</b>")
            self.placeholder.setText(text)
            self.stack.setCurrentWidget(self.placeholder)
        elif self.last is not None:
            self.show_data(self.last)
        else:
            self.clear()

    def show_data(self, data: dict[str, Any]) -> None:
        self.last = data
        if "error" in data:
            self.placeholder.setText(f"Adaptation view unavailable: {data['error']}")
            self.stack.setCurrentWidget(self.placeholder)
            return
        step = data.get("step")
        if data.get("run_id") is not None:
            step = f"run #{data['run_id']}, step {step}"
        else:
            step = f"step {step}"
        if data["kind"] == "regression":
            self.title.setText(
                f"<b>Adaptation on a fixed validation task</b> ({step}, K = {len(data['support_x'])})"
            )
            self._regression(data)
        else:
            self.title.setText(
                f"<b>One validation episode</b> ({step}): support above, queries below"
            )
            self._classification(data)

    def _regression(self, d: dict[str, Any]) -> None:
        self.true_curve.setData(d["x"], d["true"])
        for s, curve in self.pred_curves.items():
            y = d["preds"].get(s)
            curve.setData(d["x"], y) if y is not None else curve.setData([], [])
        self.support.setData(d["support_x"], d["support_y"])
        self.stack.setCurrentWidget(self.reg_plot)

    def _classification(self, d: dict[str, Any]) -> None:
        for box, t in self._texts:
            box.removeItem(t)
        self._texts = []
        ways = int(d["ways"])
        sx, sy = d["support_x"], d["support_y"]
        order = np.argsort(sy, kind="stable")
        shots = max(1, len(sy) // max(ways, 1))
        sup = mosaic(_tile(sx[order]), ways, shots, [None] * len(sy))
        self.sup_img.setImage(sup)
        qx, qy, pred = d["query_x"], d["query_y"], d.get("pred")
        cols = min(10, len(qy))
        rows = int(np.ceil(len(qy) / cols))
        borders = [None] * len(qy)
        if pred is not None:
            borders = [
                (40, 160, 40) if p == y else (220, 30, 30) for p, y in zip(pred, qy, strict=True)
            ]
        self.qry_img.setImage(mosaic(_tile(qx), rows, cols, borders))
        h, w = qx.shape[2] + 2 * PAD, qx.shape[3] + 2 * PAD
        for r in range(ways):
            t = pg.TextItem(f"class {r}", color="#333", anchor=(1, 0.5))
            t.setPos(-2, r * (sx.shape[2] + 2 * PAD) + sx.shape[2] / 2)
            self.sup_box.addItem(t)
            self._texts.append((self.sup_box, t))
        if pred is not None:
            for i, (p, y) in enumerate(zip(pred, qy, strict=True)):
                r, c = divmod(i, cols)
                t = pg.TextItem(
                    f"{int(p)}" + ("" if p == y else f"≠{int(y)}"),
                    color="#2a8a2a" if p == y else "#d01010",
                    anchor=(0.5, 0),
                )
                t.setPos(c * w + w / 2, r * h + h - 1)
                self.qry_box.addItem(t)
                self._texts.append((self.qry_box, t))
        self.sup_box.autoRange(padding=0.02)
        self.qry_box.autoRange(padding=0.02)
        self.stack.setCurrentWidget(self.img_widget)
