"""CUB-200-2011 birds (Wah et al. 2011) with the few-shot split of Chen et al. 2019.

"A Closer Look at Few-shot Classification" (github.com/wyharveychen/CloserLookFewShot,
filelists/CUB/write_CUB_filelist.py) splits the 200 species by their index i (0-based, in the
order of classes.txt, which is the sorted order of the image folders the script lists):
i % 2 == 0 train (100), i % 4 == 1 val (50), i % 4 == 3 test (50). All 11,788 photographs of
a species are used, whole: the bounding boxes (and parts, attributes and the official
train/test image split) are ignored, as in that paper. The JPEGs (varying sizes, a few
grayscale) are decoded once into the cache, resized to image_size (84 in the papers) in RGB.

Where it looks: the data dir (else $WORKBENCH_DATA) and its `cub/` folder, for the official
CUB_200_2011.tgz, or the unpacked CUB_200_2011/ folder (or the data dir pointing into it:
images/ plus classes.txt), which is used unverified (the note says so). The archive is read
from its gzip stream in one pass, decoding as it goes; nothing is unpacked to disk.
dataset.download=true fetches it from CaltechDATA ($WORKBENCH_CUB_URL overrides it) and keeps it
only if its MD5 is the published one. dataset.split: default or chen, or a folder holding
train.txt / val.txt / test.txt with one class folder name (e.g. 001.Black_footed_Albatross) a
line.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path
from typing import Any, ClassVar

import torch

from workbench.core.errors import DataError
from workbench.core.params import DatasetConfig
from workbench.core.registry import DATASETS
from workbench.core.tasks.base import DatasetSpec, Split, TaskDistribution
from workbench.core.tasks.cache import cached, decode_images, stat_signature
from workbench.core.tasks.sampler import ClassImages
from workbench.core.tasks.sources import (
    ArchiveSource,
    OfficialArchive,
    archive_head,
    class_list,
    describe_safely,
    digests,
    paper_shape_note,
    read_names,
)

URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
URL_ENV = "WORKBENCH_CUB_URL"
ARCHIVE = "CUB_200_2011.tgz"
FOLDER = "CUB_200_2011"
SUB = "cub"
N_CLASSES, N_IMAGES = 200, 11_788
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MEMBER = re.compile(r"(?:^|/)images/([^/]+)/([^/]+)$")
BATCH = 256  # images decoded at once while streaming the archive
VERSION = 1
SPLIT_NAMES = ("chen",)
PAPER_SHAPE = (84, 3)


# ---- finding, fetching and verifying the archive --------------------------------------------
OFFICIAL = OfficialArchive(
    label="CUB-200-2011",
    archive=ARCHIVE,  # 1.1 GB
    folder=FOLDER,
    sub=SUB,
    url=URL,
    url_env=URL_ENV,
    # the published one (torchvision-style loaders check it)
    md5="97eceeb196236b17998738112f37df78",
    unpacked=lambda folder: (folder / "images").is_dir(),
    folder_note=" (images/ and classes.txt)",
)
find_sources = OFFICIAL.find  # (provenance records what it finds)


# ---- reading --------------------------------------------------------------------------------
def parse_classes(text: str, name: str) -> list[str]:
    """Class folder names from classes.txt (`1 001.Black_footed_Albatross` lines) in id order."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].isdigit():
            raise DataError(f"{name}:{i}: expected `<id> <class folder>`, got {line!r}")
        rows.append((int(fields[0]), fields[1]))
    return [c for _, c in sorted(rows)]


def class_order(listed: list[str] | None, found: set[str], where: Path) -> list[str]:
    """classes.txt's order, checked against the image folders; without it, the sorted folders
    (what Chen et al.'s script lists, and the same order for the real archive)."""
    if listed is None:
        return sorted(found)
    extra = sorted(set(listed) - found)
    if extra:
        raise DataError(f"classes.txt in {where} lists {extra[0]}, which has no images")
    unlisted = sorted(found - set(listed))
    if unlisted:
        raise DataError(f"{where} has images of {unlisted[0]}, which classes.txt does not list")
    return listed


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def decode_archive(path: Path, size: int, channels: int) -> tuple[dict[str, Any], list[str] | None]:
    """One pass over the gzip stream (a .tgz has no random access), decoding BATCH images at a
    time on decode_images' threads so that at most one batch of JPEG bytes is held."""
    keys: list[tuple[str, str]] = []
    parts: list[torch.Tensor] = []
    batch: dict[str, bytes] = {}  # member name -> JPEG bytes (errors name the member)
    seen: set[str] = set()
    listed: list[str] | None = None

    def flush() -> None:
        if batch:
            names = list(batch)
            parts.append(decode_images(names, lambda n: io.BytesIO(batch[n]), size, channels))
            batch.clear()

    try:
        with tarfile.open(path, "r|gz") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                name = m.name.replace("\\", "/")
                hit = MEMBER.search(name)
                if hit and _is_image(hit.group(2)):
                    f = tar.extractfile(m)
                    if f is None:
                        continue
                    if name in seen:
                        raise DataError(f"{path} holds {name} twice")
                    seen.add(name)
                    keys.append((hit.group(1), hit.group(2)))
                    batch[name] = f.read()
                    if len(batch) == BATCH:
                        flush()
                elif name.rsplit("/", 1)[-1] == "classes.txt":
                    f = tar.extractfile(m)
                    if f is not None:
                        listed = parse_classes(f.read().decode("utf-8"), f"{path}:{name}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a tar.gz archive: {exc}") from exc
    flush()
    if not keys:
        raise DataError(f"no images under {FOLDER}/images/ in {path}: not the CUB-200-2011 archive")
    return {"keys": keys, "images": torch.cat(parts)}, listed


def decode_folder(
    folder: Path, size: int, channels: int
) -> tuple[dict[str, Any], list[str] | None]:
    files = sorted(p for p in (folder / "images").glob("*/*") if p.is_file() and _is_image(p.name))
    if not files:
        raise DataError(f"no images in {folder / 'images'} (expected one folder per class)")
    images = decode_images(files, lambda p: p, size, channels=channels)
    listed_file = folder / "classes.txt"
    listed = (
        parse_classes(listed_file.read_text(), str(listed_file)) if listed_file.is_file() else None
    )
    return {"keys": [(p.parent.name, p.name) for p in files], "images": images}, listed


def decode(src: ArchiveSource, size: int, channels: int) -> dict[str, Any]:
    """All images uint8 [N, C, size, size] grouped by class in class order, files sorted."""
    if src.kind == "archive":
        raw, listed = decode_archive(src.path, size, channels)
    else:
        raw, listed = decode_folder(src.path, size, channels)
    keys: list[tuple[str, str]] = raw["keys"]
    classes = class_order(listed, {c for c, _ in keys}, src.path)
    rank = {c: i for i, c in enumerate(classes)}
    order = sorted(range(len(keys)), key=lambda i: (rank[keys[i][0]], keys[i][1]))
    counts = [0] * len(classes)
    for c, _ in keys:
        counts[rank[c]] += 1
    starts = [0]
    for n in counts:
        starts.append(starts[-1] + n)
    return {
        "images": raw["images"][torch.tensor(order, dtype=torch.long)].contiguous(),
        "classes": classes,
        "starts": torch.tensor(starts, dtype=torch.long),
    }


def source_signature(src: ArchiveSource) -> Any:
    if src.kind == "archive":
        return digests(src.path)[0]
    files = sorted(p for p in (src.path / "images").glob("*/*") if p.is_file())
    extra = [src.path / "classes.txt"] if (src.path / "classes.txt").is_file() else []
    return stat_signature(files + extra, src.path)


def load_decoded(src: ArchiveSource, size: int, channels: int) -> dict[str, Any]:
    """{"images", "classes", "starts"}, from the cache after the first time."""
    parts = {"dataset": "cub-200-2011", "version": VERSION, "source": source_signature(src),
             "size": size, "channels": channels}  # fmt: skip
    return cached("cub", parts, lambda: decode(src, size, channels))


# ---- splits ---------------------------------------------------------------------------------
def chen_split(classes: list[str], split: Split) -> list[str]:
    """Chen et al. 2019's rule over the class index: even train, 1 mod 4 val, 3 mod 4 test."""
    keep = {
        "train": lambda i: i % 2 == 0,
        "val": lambda i: i % 4 == 1,
        "test": lambda i: i % 4 == 3,
    }
    return [c for i, c in enumerate(classes) if keep[split](i)]


def split_classes(cfg: DatasetConfig, classes: list[str], split: Split, where: Path) -> list[str]:
    if cfg.split in ("default", *SPLIT_NAMES):
        if len(classes) != N_CLASSES:
            raise DataError(
                f"{where} has {len(classes)} classes; CUB-200-2011 has {N_CLASSES}, and Chen et "
                "al.'s split is defined over all of them (set dataset.split to a folder of class "
                "lists to use another set)"
            )
        return chen_split(classes, split)
    path = class_list(cfg, "cub", SPLIT_NAMES, split)
    names = read_names(path)
    known = set(classes)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(f"{path}: class {unknown[0]!r} has no images in {where}")
    return names


class CubTasks(ClassImages):
    """ClassImages plus a note on how the source files were verified (shown by the engine)."""

    verification: str = ""


@DATASETS.register("cub")
class CubSpec(DatasetSpec):
    kind = "classification"
    needs_data_dir = True
    # what the papers train on; the config's own defaults (28, grayscale) are Omniglot's
    defaults: ClassVar[dict[str, Any]] = {"image_size": PAPER_SHAPE[0], "channels": PAPER_SHAPE[1]}

    def build(self, cfg: DatasetConfig, split: Split) -> TaskDistribution:
        if cfg.split not in ("default", *SPLIT_NAMES):
            class_list(cfg, "cub", SPLIT_NAMES, split)  # a bad split fails before decoding
        src = OFFICIAL.locate(cfg, "cub")
        note = OFFICIAL.verify(src, "cub")
        data = load_decoded(src, cfg.image_size, cfg.channels)
        classes: list[str] = data["classes"]
        picked = split_classes(cfg, classes, split, src.path)
        rank = {c: i for i, c in enumerate(classes)}
        starts = data["starts"]
        index = [torch.arange(int(starts[rank[c]]), int(starts[rank[c] + 1])) for c in picked]
        tasks = CubTasks(data["images"], index, name="cub", split=split, class_names=picked)
        tasks.verification = note
        return tasks

    def describe(self, cfg: DatasetConfig) -> str:
        return describe_safely("cub", lambda: self._describe(cfg))

    def _describe(self, cfg: DatasetConfig) -> str:
        src = find_sources(cfg)
        if src is None or src.kind == "archive":  # not opened: listing the .tgz inflates it all
            path = src.path if src else None
            head = archive_head("cub", cfg, ARCHIVE, SUB, path, ", 1.1 GB")
            n_classes = N_CLASSES
        else:
            folders = [p for p in (src.path / "images").iterdir() if p.is_dir()]
            n_images = sum(1 for p in folders for f in p.iterdir() if _is_image(f.name))
            n_classes = len(folders)
            head = (
                f"cub: unpacked {src.path} (not verified): {n_classes} classes, {n_images:,} images"
            )
        if cfg.split in ("default", *SPLIT_NAMES):
            counts = [len(chen_split([str(i) for i in range(n_classes)], s))  # type: ignore[arg-type]
                      for s in ("train", "val", "test")]  # fmt: skip
            how = "chen (Chen et al. 2019)"
        else:
            counts = [len(read_names(class_list(cfg, "cub", SPLIT_NAMES, s)))
                      for s in ("train", "val", "test")]  # fmt: skip
            how = cfg.split
        line = f"{head}; split {how}: {'/'.join(map(str, counts))} classes; bounding boxes not used"
        return line + paper_shape_note(cfg, PAPER_SHAPE)
