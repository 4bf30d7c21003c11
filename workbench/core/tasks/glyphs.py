"""Glyphs: a procedurally generated Omniglot-like dataset that ships as code.

Each class is a random "character" of 2-4 pen strokes (cubic Bezier curves or bent
polylines); each sample redraws it as a person would: the whole glyph under a small random
affine map, every control point nudged, a different pen width. Everything follows from
`dataset.split_seed`, so a fresh install can run few-shot classification with no download,
and the same seed gives the same pixels everywhere. Classes are split 800 / 200 / 200.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.core.params import DatasetConfig
from workbench.core.registry import DATASETS
from workbench.core.tasks.base import DatasetSpec, Split, TaskDistribution
from workbench.core.tasks.cache import cached
from workbench.core.tasks.sampler import ClassImages

NUM_CLASSES = 1200
SAMPLES_PER_CLASS = 20
SPLITS: dict[str, tuple[int, int]] = {"train": (0, 800), "val": (800, 1000), "test": (1000, 1200)}
VERSION = 1  # bump when the generator changes so stale cache entries are not reused

MAX_STROKES = 4
CURVE_POINTS = 10  # points per rendered Bezier stroke
SUPERSAMPLE = 3  # draw at 3x and box-filter down: anti-aliased strokes

# per-sample variation ("drawers"): chosen so that pixel nearest-neighbour is far from perfect
# while a small conv net separates the classes well
ROTATE = 0.2  # radians, uniform +-
SCALE = 0.12  # relative, per axis, uniform +-
SHEAR = 0.15
SHIFT = 0.07  # fraction of the image, uniform +-
POINT_NOISE = 0.035  # std of the control-point nudge, fraction of the image
WIDTH = (1.4, 2.6)  # pen width in pixels at 28 x 28
GLYPH_EXTENT = 0.66  # longer side of a glyph, fraction of the image


def _class_strokes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control points [n, MAX_STROKES, 4, 2] in [0, 1], stroke counts [n], polyline flags.

    A polyline stroke uses its 4 control points as corners (sharp turns, like many scripts);
    a curve stroke is a cubic Bezier through them.
    """
    counts = rng.choice([2, 3, 4], size=n, p=[0.35, 0.4, 0.25])
    start = rng.uniform(0.15, 0.85, size=(n, MAX_STROKES, 1, 2))
    # each control point a bounded step from the previous one: strokes stay compact and legible
    steps = rng.normal(0.0, 0.22, size=(n, MAX_STROKES, 3, 2))
    pts = np.concatenate([start, start + np.cumsum(steps, axis=2)], axis=2)
    # fit each glyph's control points (whose hull holds the curves) into a centred box, so that
    # every class is drawn at a similar, legible size, as handwriting in a grid is
    used = np.arange(MAX_STROKES)[None, :, None, None] < counts[:, None, None, None]
    lo = np.where(used, pts, np.inf).min(axis=(1, 2))  # [n, 2]
    hi = np.where(used, pts, -np.inf).max(axis=(1, 2))
    scale = GLYPH_EXTENT / np.maximum(hi - lo, 1e-3).max(axis=1)  # keep the aspect ratio
    pts = (pts - ((lo + hi) / 2)[:, None, None, :]) * scale[:, None, None, None] + 0.5
    poly = rng.random((n, MAX_STROKES)) < 0.4
    return pts, counts, poly


def _bezier(pts: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Cubic Bezier of control points [..., 4, 2] at parameters t [T] -> [..., T, 2]."""
    t = t[:, None]
    b = np.stack(
        [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], axis=0
    )  # [4, T, 1]
    return np.einsum("...kd,ktd->...td", pts, np.broadcast_to(b, (4, len(t), 2)))


def _sample_paths(
    rng: np.random.Generator, pts: np.ndarray, poly: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Jittered stroke paths [n, S, MAX_STROKES, CURVE_POINTS, 2] (unit square) and pen widths [n, S]."""
    n = pts.shape[0]
    s = SAMPLES_PER_CLASS
    p = pts[:, None] + rng.normal(0.0, POINT_NOISE, size=(n, s, *pts.shape[1:]))
    t = np.linspace(0.0, 1.0, CURVE_POINTS)
    curves = _bezier(p, t)  # [n, s, M, T, 2]
    # polylines: corners at the 4 control points, linearly interpolated to the same T points
    seg = np.clip(t * 3, 0, 3 - 1e-9)
    i, f = seg.astype(int), (seg - seg.astype(int))[:, None]
    lines = p[..., i, :] * (1 - f) + p[..., i + 1, :] * f
    paths = np.where(poly[:, None, :, None, None], lines, curves)
    # one affine map per sample about the centre
    ang = rng.uniform(-ROTATE, ROTATE, size=(n, s))
    sx, sy = 1 + rng.uniform(-SCALE, SCALE, size=(2, n, s))
    sh = rng.uniform(-SHEAR, SHEAR, size=(n, s))
    cos, sin = np.cos(ang), np.sin(ang)
    a = np.stack(
        [
            np.stack([cos * sx, -sin * sy + cos * sh * sy], -1),
            np.stack([sin * sx, cos * sy + sin * sh * sy], -1),
        ],
        -2,
    )
    shift = rng.uniform(-SHIFT, SHIFT, size=(n, s, 2))
    centred = paths - 0.5
    moved = np.einsum("nsij,nsmtj->nsmti", a, centred) + 0.5 + shift[:, :, None, None, :]
    widths = rng.uniform(*WIDTH, size=(n, s))
    return moved, widths


def render(paths: np.ndarray, counts: np.ndarray, widths: np.ndarray, size: int) -> np.ndarray:
    """Draw paths [n, S, M, T, 2] to uint8 [n, S, size, size], strokes 255 on 0."""
    from PIL import Image, ImageDraw

    n, s = paths.shape[:2]
    big = size * SUPERSAMPLE
    out = np.empty((n, s, size, size), dtype=np.uint8)
    scaled = paths * big
    pen = np.maximum(1, np.rint(widths * SUPERSAMPLE * size / 28.0)).astype(int)
    for c in range(n):
        for j in range(s):
            im = Image.new("L", (big, big), 0)
            draw = ImageDraw.Draw(im)
            for m in range(int(counts[c])):
                draw.line(
                    [tuple(q) for q in scaled[c, j, m].tolist()],
                    fill=255,
                    width=int(pen[c, j]),
                    joint="curve",
                )
            out[c, j] = np.asarray(im.reduce(SUPERSAMPLE))
    return out


def generate(seed: int, size: int = 28, classes: int = NUM_CLASSES) -> torch.Tensor:
    """All glyph images as uint8 [classes * SAMPLES_PER_CLASS, 1, size, size], class-major."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x61797068]))
    pts, counts, poly = _class_strokes(rng, classes)
    paths, widths = _sample_paths(rng, pts, poly)
    imgs = render(paths, counts, widths, size)
    return torch.from_numpy(imgs.reshape(classes * SAMPLES_PER_CLASS, 1, size, size))


def load_images(seed: int, size: int) -> torch.Tensor:
    """The generated images, from the decode cache after the first call."""
    parts = {
        "dataset": "glyphs",
        "version": VERSION,
        "seed": seed,
        "size": size,
        "classes": NUM_CLASSES,
    }
    return cached("glyphs", parts, lambda: {"images": generate(seed, size)})["images"]


@DATASETS.register("glyphs")
class GlyphsSpec(DatasetSpec):
    kind = "classification"

    def build(self, cfg: DatasetConfig, split: Split) -> TaskDistribution:
        images = load_images(cfg.split_seed, cfg.image_size)
        lo, hi = SPLITS[split]
        index = [
            torch.arange(c * SAMPLES_PER_CLASS, (c + 1) * SAMPLES_PER_CLASS) for c in range(lo, hi)
        ]
        return ClassImages(images, index, name="glyphs", split=split, channels=cfg.channels)

    def describe(self, cfg: DatasetConfig) -> str:
        tr, va, te = (hi - lo for lo, hi in SPLITS.values())
        return (
            f"glyphs: generated stroke characters, {NUM_CLASSES:,} classes x {SAMPLES_PER_CLASS} samples "
            f"(seed {cfg.split_seed}, {cfg.image_size}x{cfg.image_size}); split {tr}/{va}/{te} classes; no files needed"
        )
