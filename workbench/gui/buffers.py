"""Growable numpy buffers for streaming curves (capacity doubles; views are handed to setData)."""

from __future__ import annotations

import math

import numpy as np


class Series:
    """Points (step, wall time, value) of one curve with an incrementally kept EMA."""

    def __init__(self, capacity: int = 1024) -> None:
        self.step = np.empty(capacity, np.float64)
        self.wall = np.empty(capacity, np.float64)
        self.value = np.empty(capacity, np.float64)
        self.smooth = np.empty(capacity, np.float64)
        self.n = 0
        self.alpha = 0.0
        self._ema: float | None = None
        self._bounds_reset()

    def _bounds_reset(self) -> None:
        self.finite = True  # no NaN/inf among the values (pyqtgraph may then skip its finite check)
        self.vmin = (
            math.inf
        )  # bounds of the finite values, and the smallest positive one (log axes)
        self.vmax = -math.inf
        self.vmin_pos = math.inf

    def __len__(self) -> int:
        return self.n

    def _grow(self, need: int) -> None:
        cap = len(self.step)
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        for name in ("step", "wall", "value", "smooth"):
            old = getattr(self, name)
            new = np.empty(cap, np.float64)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def extend(self, steps: list[float], walls: list[float], values: list[float]) -> None:
        k = len(steps)
        if not k:
            return
        self._grow(self.n + k)
        s = slice(self.n, self.n + k)
        self.step[s] = steps
        self.wall[s] = walls
        self.value[s] = values
        self._smooth_range(self.n, self.n + k)
        self._bounds_update(self.value[s])
        self.n += k

    def _bounds_update(self, new: np.ndarray) -> None:
        ok = np.isfinite(new)
        if not ok.all():
            self.finite = False
            new = new[ok]
        if len(new):
            self.vmin = min(self.vmin, float(new.min()))
            self.vmax = max(self.vmax, float(new.max()))
            pos = new[new > 0]
            if len(pos):
                self.vmin_pos = min(self.vmin_pos, float(pos.min()))

    def append(self, step: float, wall: float, value: float) -> None:
        self.extend([step], [wall], [value])

    def set_alpha(self, alpha: float) -> None:
        """EMA weight of the past (0 = no smoothing); recomputes the whole smoothed curve."""
        self.alpha = float(alpha)
        self._ema = None
        self._smooth_range(0, self.n)

    def _smooth_range(self, start: int, stop: int) -> None:
        a, ema = self.alpha, self._ema
        vals = self.value[start:stop].tolist()
        out = []
        for v in vals:
            if v != v:  # NaN: keep the curve going
                out.append(ema if ema is not None else v)
                continue
            ema = v if ema is None else a * ema + (1.0 - a) * v
            out.append(ema)
        self.smooth[start:stop] = out
        self._ema = ema

    def x(self, mode: str, origin: float = 0.0) -> np.ndarray:
        return self.step[: self.n] if mode == "step" else self.wall[: self.n] - origin

    def y(self, smoothed: bool = False) -> np.ndarray:
        return (self.smooth if smoothed else self.value)[: self.n]

    def clear(self) -> None:
        self.n = 0
        self._ema = None
        self._bounds_reset()
