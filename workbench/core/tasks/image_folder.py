"""Any folder of labelled images as a few-shot dataset, including mini-ImageNet.

Layouts, looked for in this order under the data dir:

- csv: a flat `images/` folder plus Ravi & Larochelle's train.csv / val.csv / test.csv
  (`filename,label` rows), beside it or in splits/ravi/ (the mini-ImageNet convention).
- folders: train/, val/, test/ sub-folders, each holding one folder per class.
- classes: one folder per class; classes are split 64 / 16 / 20 % at random (split_seed).

dataset.split: default (the first layout found), csv, folders, or random (pool every class
found and split it at random). Each split is decoded once, resized to image_size, into the
cache; sampling never touches files.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from workbench.core.errors import ConfigError, DataError
from workbench.core.params import DatasetConfig
from workbench.core.registry import DATASETS
from workbench.core.tasks.base import DatasetSpec, Split, TaskDistribution
from workbench.core.tasks.cache import cached, decode_images, stat_signature
from workbench.core.tasks.sampler import ClassImages

DATA_ENV = "WORKBENCH_DATA"
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_NAMES: tuple[Split, ...] = ("train", "val", "test")
RANDOM_FRACTIONS = (0.64, 0.16)  # train, val; the rest is test (mini-ImageNet's 64/16/20 classes)
CSV_DIRS = (".", "splits/ravi", "splits")
VERSION = 1
Layout = Literal["csv", "folders", "classes"]
SPLIT_HELP = "default, csv, folders, random"


@dataclass
class Found:
    """A layout and, per split, class -> image paths (for `classes`, all under "all")."""

    root: Path
    layout: Layout
    splits: dict[str, dict[str, list[Path]]] = field(default_factory=dict)


def data_root(cfg: DatasetConfig) -> Path:
    base = cfg.data_dir or os.environ.get(DATA_ENV)
    if not base:
        raise ConfigError(
            "dataset.data_dir",
            "image-folder needs a data dir: a folder of class sub-folders, or a mini-ImageNet folder "
            "(images/ plus train.csv, val.csv, test.csv); set --data-dir",
        )
    root = Path(base).expanduser()
    if not root.is_dir():
        raise ConfigError("dataset.data_dir", f"{root} is not a folder")
    return root


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    """class name -> sorted images, for each sub-folder holding at least one image."""
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        imgs = _images_in(sub)
        if imgs:
            out[sub.name] = imgs
    return out


def _csv_dir(root: Path) -> Path | None:
    for sub in CSV_DIRS:
        d = root / sub
        if all((d / f"{s}.csv").is_file() for s in SPLIT_NAMES):
            return d
    return None


def read_csv(path: Path, images: Path) -> dict[str, list[Path]]:
    """label -> image paths from `filename,label` rows (a header row is skipped)."""
    out: dict[str, list[Path]] = {}
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or (
                i == 0 and [c.strip().lower() for c in row[:2]] == ["filename", "label"]
            ):
                continue
            if len(row) < 2:
                raise DataError(f"{path}:{i + 1}: expected filename,label, got {row!r}")
            out.setdefault(row[1].strip(), []).append(images / row[0].strip())
    return out


def find_layout(root: Path, split: str) -> Found:
    """Which layout `root` holds (the one dataset.split asks for); ConfigError if none fits."""
    if split not in ("default", "csv", "folders", "random"):
        raise ConfigError(
            "dataset.split", f"unknown image-folder split {split!r}; allowed: {SPLIT_HELP}"
        )
    csv_dir = _csv_dir(root)
    if split in ("default", "csv", "random") and csv_dir is not None:
        images = root / "images"
        if not images.is_dir():
            raise ConfigError(
                "dataset.data_dir", f"found {csv_dir}/train.csv but no images/ folder in {root}"
            )
        return Found(root, "csv", {s: read_csv(csv_dir / f"{s}.csv", images) for s in SPLIT_NAMES})
    if split == "csv":
        raise ConfigError(
            "dataset.split",
            f"split csv needs train.csv, val.csv and test.csv in {root} or {root}/splits/ravi",
        )
    if split in ("default", "folders", "random") and all((root / s).is_dir() for s in SPLIT_NAMES):
        return Found(root, "folders", {s: _class_folders(root / s) for s in SPLIT_NAMES})
    if split == "folders":
        raise ConfigError(
            "dataset.split", f"split folders needs train/, val/ and test/ sub-folders in {root}"
        )
    classes = _class_folders(root)
    if not classes:
        raise ConfigError(
            "dataset.data_dir",
            f"no images found in {root}: expected class sub-folders of images, train/ val/ test/ "
            "folders of those, or images/ plus train.csv, val.csv, test.csv",
        )
    return Found(root, "classes", {"all": classes})


def split_of(found: Found, cfg: DatasetConfig, split: Split) -> dict[str, list[Path]]:
    """class -> images of one split: as the layout says, or a seeded random class split."""
    if cfg.split != "random" and found.layout != "classes":
        return found.splits[split]
    pool: dict[str, list[Path]] = {}
    for part in found.splits.values():
        for name, paths in part.items():
            pool.setdefault(name, []).extend(paths)
    names = sorted(pool)
    n = len(names)
    n_train = max(1, round(n * RANDOM_FRACTIONS[0])) if n >= 3 else n
    n_val = max(1, round(n * RANDOM_FRACTIONS[1])) if n >= 3 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed)).tolist()
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n),
    }
    lo, hi = bounds[split]
    return {names[i]: pool[names[i]] for i in sorted(perm[lo:hi])}


def decode_split(classes: dict[str, list[Path]], size: int, channels: int) -> dict[str, Any]:
    names = list(classes)
    files = [p for name in names for p in classes[name]]
    images = decode_images(files, lambda p: p, size, channels=channels)
    starts = [0]
    for name in names:
        starts.append(starts[-1] + len(classes[name]))
    return {"images": images, "classes": names, "starts": torch.tensor(starts, dtype=torch.long)}


def load_split(
    root: Path, classes: dict[str, list[Path]], size: int, channels: int
) -> dict[str, Any]:
    """Decoded images of one split, from the cache when the files are unchanged."""
    missing = [p for paths in classes.values() for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing):,} listed images are missing (first: {missing[0]})")
    files = [p for paths in classes.values() for p in paths]
    parts = {
        "dataset": "image-folder",
        "version": VERSION,
        "root": str(root.resolve()),
        "classes": [[name, len(paths)] for name, paths in classes.items()],
        "files": stat_signature(files, root),
        "size": size,
        "channels": channels,
    }
    return cached("image-folder", parts, lambda: decode_split(classes, size, channels))


@DATASETS.register("image-folder")
class ImageFolderSpec(DatasetSpec):
    kind = "classification"
    needs_data_dir = True

    def build(self, cfg: DatasetConfig, split: Split) -> TaskDistribution:
        root = data_root(cfg)
        found = find_layout(root, cfg.split)
        classes = split_of(found, cfg, split)
        if not classes:
            raise DataError(f"the {split} split of {root} ({found.layout} layout) has no classes")
        data = load_split(root, classes, cfg.image_size, cfg.channels)
        starts = data["starts"]
        index = [
            torch.arange(int(starts[i]), int(starts[i + 1])) for i in range(len(data["classes"]))
        ]
        return ClassImages(
            data["images"],
            index,
            name=f"image-folder {root.name}",
            split=split,
            class_names=data["classes"],
        )

    def describe(self, cfg: DatasetConfig) -> str:
        try:
            root = data_root(cfg)
            found = find_layout(root, cfg.split)
            counts = []
            for s in SPLIT_NAMES:
                part = split_of(found, cfg, s)
                counts.append((len(part), sum(len(v) for v in part.values())))
            how = (
                "random class split"
                if (cfg.split == "random" or found.layout == "classes")
                else f"{found.layout} split"
            )
            per = "/".join(f"{c:,}" for c, _ in counts)
            n_img = sum(i for _, i in counts)
            line = f"image-folder: {n_img:,} images in {root} ({how}): {per} classes"
            if found.layout == "csv":
                present = set(os.listdir(root / "images"))
                listed = [
                    p.name for part in found.splits.values() for v in part.values() for p in v
                ]
                absent = sum(name not in present for name in listed)
                if absent:
                    line += f"; {absent:,} listed images missing from {root / 'images'}"
            return line
        except (ConfigError, DataError, OSError) as exc:
            return f"image-folder: {exc}"
        except Exception as exc:  # describe must never raise
            return f"image-folder: could not inspect the data ({exc})"
