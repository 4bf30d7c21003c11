"""Omniglot (Lake et al. 2015): 1,623 handwritten characters x 20 drawers.

The official archives (or their unpacked folders) are decoded once into the cache: 32,460
images resized to `image_size` and inverted so strokes are 1 and paper 0. Classes are a
character at a rotation (0/90/180/270 degrees), applied when sampling. Splits:

- vinyals (default): Vinyals et al.'s 1,028 / 172 / 423 characters (x4 rotations = 4,112 /
  688 / 1,692 classes) from the split files of jakesnell/prototypical-networks.
- random: MAML's 1,200 training characters drawn with `split_seed`; the last 100 of them are
  held out for validation (never test characters); the other 423 are the test split.
- a folder path holding train.txt / val.txt / test.txt in the Vinyals format.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import torch

from workbench.core.errors import ConfigError, DataError
from workbench.core.params import DatasetConfig
from workbench.core.registry import DATASETS
from workbench.core.tasks.base import DatasetSpec, Split, TaskDistribution
from workbench.core.tasks.cache import (
    cache_dir,
    cached,
    decode_images,
    stat_signature,
)
from workbench.core.tasks.sampler import ClassImages
from workbench.core.tasks.sources import _DIGESTS, digests, read_sums  # noqa: F401 (re-exported)
from workbench.core.tasks.sources import fetch as _fetch

log = logging.getLogger(__name__)

DATA_ENV = "WORKBENCH_DATA"
URL_ENV = "WORKBENCH_OMNIGLOT_URL"
SPLITS_URL_ENV = "WORKBENCH_OMNIGLOT_SPLITS_URL"
OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
SPLITS_URL = "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/splits/omniglot/vinyals/"
PARTS = ("images_background", "images_evaluation")
# published checksums of the official archives (the ones torchvision verifies)
ARCHIVE_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
VERSION = 1  # bump when decoding changes so stale cache entries are not reused
N_CHARACTERS = 1623
RANDOM_TRAIN, RANDOM_VAL = 1200, 100  # MAML: 1,200 meta-training characters (val taken from them)
SPLIT_LINE = re.compile(r"^([^/]+/[^/]+)/rot(000|090|180|270)$")
SPLIT_HELP = (
    "vinyals (default), random, or a folder holding Vinyals-format train.txt/val.txt/test.txt"
)


@dataclass
class Sources:
    """Where the two halves of Omniglot are: zip archives or unpacked folders, in `root`."""

    root: Path
    kind: Literal["zip", "folder"]
    paths: dict[str, Path]  # "images_background" -> .zip file or folder holding the alphabets


# ---- finding and fetching the files ---------------------------------------------------------
def data_dirs(cfg: DatasetConfig) -> list[Path]:
    """Folders to look in: the data dir (or $WORKBENCH_DATA) and its `omniglot/` sub-folder."""
    base = cfg.data_dir or os.environ.get(DATA_ENV)
    if not base:
        return [cache_dir() / "data" / "omniglot"]  # where a download without a data dir goes
    d = Path(base).expanduser()
    return [d, d / "omniglot"]


def _unpacked(folder: Path) -> Path | None:
    """The folder holding the alphabets (unzipping into a same-named folder nests it once)."""
    if not folder.is_dir():
        return None
    inner = folder / folder.name
    return inner if inner.is_dir() else folder


def find_sources(cfg: DatasetConfig) -> Sources | None:
    for d in data_dirs(cfg):
        zips = {p: d / f"{p}.zip" for p in PARTS}
        if all(z.is_file() for z in zips.values()):
            return Sources(d, "zip", zips)
        folders = {p: _unpacked(d / p) for p in PARTS}
        if all(f is not None for f in folders.values()):
            return Sources(d, "folder", {p: f for p, f in folders.items() if f is not None})
    return None


def download_dir(cfg: DatasetConfig) -> Path:
    """Where downloads go: <data dir>/omniglot (or the data dir if it is named omniglot)."""
    base = cfg.data_dir or os.environ.get(DATA_ENV)
    if not base:
        return cache_dir() / "data" / "omniglot"
    d = Path(base).expanduser()
    return d if d.name == "omniglot" else d / "omniglot"


def download_archives(
    dest: Path, base_url: str | None = None, md5: dict[str, str] | None = None
) -> Sources:
    """Download the official zips missing from dest and verify their published MD5."""
    base = base_url or os.environ.get(URL_ENV) or OMNIGLOT_URL
    sums = ARCHIVE_MD5 if md5 is None else md5
    for part in PARTS:
        name = f"{part}.zip"
        if not (dest / name).is_file():
            log.info("downloading %s%s to %s", base, name, dest)
            _fetch(base.rstrip("/") + "/" + name, dest / name, sums.get(name))
    return Sources(dest, "zip", {p: dest / f"{p}.zip" for p in PARTS})


def locate(cfg: DatasetConfig) -> Sources:
    """The archives, downloading them when allowed; a ConfigError says where we looked."""
    found = find_sources(cfg)
    if found is not None:
        return found
    if cfg.download:
        return download_archives(download_dir(cfg))
    where = " or ".join(str(d) for d in data_dirs(cfg))
    hint = "" if (cfg.data_dir or os.environ.get(DATA_ENV)) else " (no data dir set)"
    raise ConfigError(
        "dataset.data_dir",
        f"no Omniglot archives found in {where}{hint} (expected images_background.zip and "
        "images_evaluation.zip, or those folders unpacked); set --data-dir or dataset.download=true",
    )


# ---- verification ---------------------------------------------------------------------------
def verify(src: Sources) -> str:
    """Check the archives against SHA256SUMS beside them (or the official MD5); say what was done.

    A mismatch raises DataError. Folders, and archives with no checksum to compare against,
    are used unverified, and the returned note (also logged) says so.
    """
    if src.kind == "folder":
        note = f"unpacked folders in {src.root}: not verified (no checksums for folders)"
        log.info(note)
        return note
    sums_file = src.root / "SHA256SUMS"
    sums = read_sums(sums_file) if sums_file.is_file() else {}
    notes = []
    for path in src.paths.values():
        sha, md5 = digests(path)
        if path.name in sums:
            if sha != sums[path.name]:
                raise DataError(
                    f"SHA256 mismatch for {path}: SHA256SUMS says {sums[path.name]}, file has {sha}; "
                    "the file is corrupted or was modified"
                )
            notes.append(f"{path.name}: SHA256 verified")
        elif md5 == ARCHIVE_MD5.get(path.name):
            notes.append(f"{path.name}: official MD5 verified")
        else:
            notes.append(f"{path.name}: not verified (no SHA256SUMS entry beside it)")
    note = "; ".join(notes)
    log.info("omniglot %s", note)
    return note


# ---- listing and decoding -------------------------------------------------------------------
def list_members(src: Sources) -> list[tuple[str, str, str]]:
    """(part, "Alphabet/characterNN", member) for every PNG, sorted by character then file."""
    out = []
    for part, path in src.paths.items():
        if src.kind == "zip":
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.lower().endswith(".png")]
        else:
            names = [str(p.relative_to(path)) for p in path.glob("*/*/*.png")]
        for n in names:
            bits = n.replace("\\", "/").split("/")
            if len(bits) >= 3:
                out.append((part, f"{bits[-3]}/{bits[-2]}", n))
    out.sort(key=lambda m: (m[1], m[2]))
    return out


class _Opener:
    """Open a member from any thread: one ZipFile handle per thread and archive, closed after."""

    def __init__(self, src: Sources) -> None:
        self.src = src
        self.local = threading.local()
        self.handles: list[zipfile.ZipFile] = []
        self.lock = threading.Lock()

    def __call__(self, m: tuple[str, str, str]) -> IO[bytes] | Path:
        part, _, name = m
        if self.src.kind == "folder":
            return self.src.paths[part] / name
        zips = getattr(self.local, "zips", None)
        if zips is None:
            zips = self.local.zips = {}
        if part not in zips:
            zips[part] = zipfile.ZipFile(self.src.paths[part])
            with self.lock:
                self.handles.append(zips[part])
        return io.BytesIO(zips[part].read(name))

    def close(self) -> None:
        for z in self.handles:
            z.close()


def source_signature(src: Sources) -> list[Any]:
    """What the cache key depends on: archive contents, or folder file names, sizes and mtimes."""
    if src.kind == "zip":
        return [(p.name, digests(p)[0]) for p in src.paths.values()]
    return [stat_signature(sorted(p.glob("*/*/*.png")), p) for p in src.paths.values()]


def decode(src: Sources, size: int) -> dict[str, Any]:
    """All images uint8 [N, 1, size, size] (strokes 255), grouped by character in sorted order."""
    members = list_members(src)
    if not members:
        raise DataError(f"no PNG images found in the Omniglot archives in {src.root}")
    opener = _Opener(src)
    try:
        images = decode_images(members, opener, size, channels=1, invert=True)
    finally:
        opener.close()
    chars: list[str] = []
    starts: list[int] = []
    for i, (_, char, _) in enumerate(members):
        if not chars or chars[-1] != char:
            chars.append(char)
            starts.append(i)
    starts.append(len(members))
    return {"images": images, "chars": chars, "starts": torch.tensor(starts, dtype=torch.long)}


def load_decoded(src: Sources, size: int) -> dict[str, Any]:
    """The decoded images of verified sources, from the cache after the first time."""
    parts = {
        "dataset": "omniglot",
        "version": VERSION,
        "sources": source_signature(src),
        "size": size,
    }
    return cached("omniglot", parts, lambda: decode(src, size))


def load(cfg: DatasetConfig) -> dict[str, Any]:
    """Find (or download), verify and decode: {"images", "chars", "starts"}."""
    src = locate(cfg)
    verify(src)
    return load_decoded(src, cfg.image_size)


# ---- splits ---------------------------------------------------------------------------------
def split_files_dir(cfg: DatasetConfig, src: Sources) -> Path | None:
    """A folder with Vinyals split files: dataset.split as a path, else beside the archives."""
    if cfg.split not in ("default", "vinyals"):
        return Path(cfg.split).expanduser()
    for d in [src.root, *data_dirs(cfg), cache_dir() / "data" / "omniglot"]:
        for sub in ("splits/vinyals", "vinyals", "splits"):
            if (d / sub / "train.txt").is_file():
                return d / sub
    return None


def download_splits(dest: Path, base_url: str | None = None) -> Path:
    """The three Vinyals split files from jakesnell/prototypical-networks (format-checked)."""
    base = base_url or os.environ.get(SPLITS_URL_ENV) or SPLITS_URL
    for name in ("train", "val", "test"):
        if not (dest / f"{name}.txt").is_file():
            _fetch(base.rstrip("/") + f"/{name}.txt", dest / f"{name}.txt")
            read_split_file(dest / f"{name}.txt")  # a bad download fails here, not mid-run
    return dest


def read_split_file(path: Path) -> list[tuple[str, int]]:
    """(character, rotation k) per line of `Alphabet/characterNN/rotDDD`."""
    if not path.is_file():
        raise ConfigError("dataset.split", f"split file {path} not found")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = SPLIT_LINE.match(line)
        if m is None:
            raise DataError(f"{path}:{i}: expected Alphabet/characterNN/rotDDD, got {line!r}")
        out.append((m.group(1), int(m.group(2)) // 90))
    return out


def vinyals_classes(cfg: DatasetConfig, src: Sources, split: Split) -> list[tuple[str, int]]:
    folder = split_files_dir(cfg, src)
    if folder is None:
        if not cfg.download:
            raise ConfigError(
                "dataset.split",
                f"Vinyals split files not found beside the archives in {src.root} (splits/vinyals/"
                "train.txt, val.txt, test.txt from jakesnell/prototypical-networks); set dataset.split "
                "to their folder, set dataset.download=true, or use dataset.split=random",
            )
        target = src.root / "splits" / "vinyals"
        try:
            folder = download_splits(target)
        except DataError:
            folder = download_splits(cache_dir() / "data" / "omniglot" / "splits" / "vinyals")
    classes = read_split_file(folder / f"{split}.txt")
    return classes if cfg.rotations else [(c, k) for c, k in classes if k == 0]


def random_characters(chars: list[str], seed: int) -> dict[str, list[str]]:
    """MAML's split: seeded 1,200 training characters (the last 100 held out for validation).

    Archives other than the full 1,623 characters (tests) are split in the same proportions.
    """
    n = len(chars)
    n_train = RANDOM_TRAIN if n == N_CHARACTERS else max(2, round(n * RANDOM_TRAIN / N_CHARACTERS))
    n_val = RANDOM_VAL if n == N_CHARACTERS else max(1, round(n_train * RANDOM_VAL / RANDOM_TRAIN))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    picked = [sorted(chars)[i] for i in perm]
    return {
        "train": picked[: n_train - n_val],
        "val": picked[n_train - n_val : n_train],
        "test": picked[n_train:],
    }


def split_classes(
    cfg: DatasetConfig, src: Sources, chars: list[str], split: Split
) -> list[tuple[str, int]]:
    if cfg.split == "random":
        rots = (0, 1, 2, 3) if cfg.rotations else (0,)
        return [(c, k) for c in random_characters(chars, cfg.split_seed)[split] for k in rots]
    if cfg.split not in ("default", "vinyals") and not Path(cfg.split).expanduser().is_dir():
        raise ConfigError(
            "dataset.split", f"unknown Omniglot split {cfg.split!r}; allowed: {SPLIT_HELP}"
        )
    return vinyals_classes(cfg, src, split)


class OmniglotTasks(ClassImages):
    """ClassImages plus a note on how the source files were verified (shown by the engine)."""

    verification: str = ""


@DATASETS.register("omniglot")
class OmniglotSpec(DatasetSpec):
    kind = "classification"
    needs_data_dir = True

    def build(self, cfg: DatasetConfig, split: Split) -> TaskDistribution:
        src = locate(cfg)
        note = verify(src)
        data = load_decoded(src, cfg.image_size)
        chars: list[str] = data["chars"]
        starts: torch.Tensor = data["starts"]
        where = {c: i for i, c in enumerate(chars)}
        classes = split_classes(cfg, src, chars, split)
        missing = sorted({c for c, _ in classes if c not in where})
        if missing:
            raise DataError(
                f"{len(missing)} characters of the {split} split are not in the archives in {src.root} "
                f"(first: {missing[0]}); the split files do not match these archives"
            )
        index = [torch.arange(int(starts[where[c]]), int(starts[where[c] + 1])) for c, _ in classes]
        tasks = OmniglotTasks(
            data["images"],
            index,
            [k for _, k in classes],
            name="omniglot",
            split=split,
            class_names=[f"{c}/rot{k * 90:03d}" for c, k in classes],
            channels=cfg.channels,
        )
        tasks.verification = note
        return tasks

    def describe(self, cfg: DatasetConfig) -> str:
        try:
            return self._describe(cfg)
        except Exception as exc:  # describe must never raise
            return f"omniglot: could not inspect the data ({exc})"

    def _describe(self, cfg: DatasetConfig) -> str:
        src = find_sources(cfg)
        if src is None:
            where = " or ".join(str(d) for d in data_dirs(cfg))
            if not (cfg.data_dir or os.environ.get(DATA_ENV)):
                where += f" (no data dir set, ${DATA_ENV} unset)"
            action = (
                "will be downloaded (dataset.download=true)"
                if cfg.download
                else "set --data-dir or dataset.download=true"
            )
            return (
                f"omniglot: no archives found in {where} (expected images_background.zip and "
                f"images_evaluation.zip); {action}"
            )
        members = list_members(src)
        chars = sorted({m[1] for m in members})
        head = f"omniglot: {len(chars):,} characters ({len(members):,} images) in {src.root}"
        if src.kind == "zip" and (src.root / "SHA256SUMS").is_file():
            head += " (SHA256SUMS present)"
        elif src.kind == "zip":
            head += " (no SHA256SUMS: checked only against the official MD5)"
        else:
            head += " (unpacked folders: not verified)"
        rots = 4 if cfg.rotations else 1
        if cfg.split == "random":
            parts = random_characters(chars, cfg.split_seed)
            counts = [len(parts[s]) * rots for s in ("train", "val", "test")]
            return f"{head}; split random (seed {cfg.split_seed}): {'/'.join(f'{n:,}' for n in counts)} classes"
        folder = (
            split_files_dir(cfg, src)
            if (cfg.split in ("default", "vinyals") or Path(cfg.split).expanduser().is_dir())
            else None
        )
        if cfg.split not in ("default", "vinyals") and folder is None:
            return f"{head}; unknown split {cfg.split!r} (allowed: {SPLIT_HELP})"
        if folder is None or not all(
            (folder / f"{s}.txt").is_file() for s in ("train", "val", "test")
        ):
            extra = (
                "will be downloaded"
                if cfg.download
                else "missing (set dataset.download=true or dataset.split=random)"
            )
            return f"{head}; Vinyals split files {extra}"
        counts = []
        for s in ("train", "val", "test"):
            lines = [ln for ln in (folder / f"{s}.txt").read_text().split() if ln]
            counts.append(
                len(lines) if cfg.rotations else sum(ln.endswith("rot000") for ln in lines)
            )
        return f"{head}; split vinyals: {'/'.join(f'{n:,}' for n in counts)} classes"
