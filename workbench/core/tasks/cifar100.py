"""CIFAR-100's binary archive, read for the few-shot datasets built on it (CIFAR-FS, FC100).

The BINARY version is read (cifar-100-binary.tar.gz, published MD5 03b5dce0...), never the
python version: that one is a pickle, and unpickling a file runs whatever code it holds. Its
train.bin and test.bin are pooled, as both papers do (600 images for each of the 100 fine
classes). Each record is 3,074 bytes: the coarse label (0-19), the fine label (0-99), then the
32x32 image as three 1,024-byte planes, red, green, blue, each row-major. Names come from
fine_label_names.txt and coarse_label_names.txt, one a line in label order.

The archive is read straight from the tar.gz stream (nothing is unpacked to disk, so member
paths cannot escape the data dir), checked (whole records, labels in range, one superclass per
fine class, every fine class present), decoded once into the cache as uint8 [N, C, S, S]
grouped by fine label, and shared by every split of both datasets. The record count per class
is not enforced (600 in the real archive), so an archive built in the same format, as the
tests do, can be small.

Where it looks: the data dir (else $WORKBENCH_DATA) and its `cifar-100/` folder, for the
archive or its unpacked `cifar-100-binary/` folder (then nothing is verified: the note says
so). dataset.download=true fetches the archive from the official URL ($WORKBENCH_CIFAR100_URL
overrides it, e.g. a mirror) and keeps it only if its MD5 matches.
"""

from __future__ import annotations

import tarfile
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from workbench.core.errors import DataError
from workbench.core.params import DatasetConfig
from workbench.core.tasks.base import DatasetSpec, Split, TaskDistribution
from workbench.core.tasks.cache import cached, stat_signature
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

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
URL_ENV = "WORKBENCH_CIFAR100_URL"
ARCHIVE = "cifar-100-binary.tar.gz"
FOLDER = "cifar-100-binary"  # what the archive unpacks to
SUB = "cifar-100"  # the data dir's sub-folder for it
FILES = ("train.bin", "test.bin", "fine_label_names.txt", "coarse_label_names.txt")
SIDE = 32
RECORD = 2 + 3 * SIDE * SIDE  # coarse byte, fine byte, R, G, B planes
N_FINE, N_COARSE = 100, 20
PER_CLASS = 600  # in the real archive (500 train + 100 test); not required
VERSION = 1  # bump when decoding changes so stale cache entries are not reused
PAPER_SHAPE = (32, 3)  # image_size, channels the papers train on


# ---- finding, fetching and verifying the archive --------------------------------------------
OFFICIAL = OfficialArchive(
    label="CIFAR-100 binary",
    archive=ARCHIVE,
    folder=FOLDER,
    sub=SUB,
    url=URL,
    url_env=URL_ENV,
    # published on https://www.cs.toronto.edu/~kriz/cifar.html
    md5="03b5dce01913d631647c71ecec9e9cb8",
    unpacked=lambda folder: all((folder / n).is_file() for n in FILES),  # the four files
    needs="CIFAR-100's binary archive",
    never_read=(
        "cifar-100-python",
        "the pickled python version, which is never read (unpickling runs code): use the "
        "binary version",
    ),
)
find_sources = OFFICIAL.find  # (provenance records what it finds)


# ---- reading and checking -------------------------------------------------------------------
def read_files(src: ArchiveSource) -> dict[str, bytes]:
    """The four files' bytes, from the tar.gz stream (one pass, nothing written) or the folder."""
    if src.kind == "folder":
        return {n: (src.path / n).read_bytes() for n in FILES}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(src.path, "r|gz") as tar:
            for m in tar:
                base = m.name.replace("\\", "/").rsplit("/", 1)[-1]
                if not m.isfile() or base not in FILES:
                    continue
                if base in out:
                    raise DataError(f"{src.path} holds {base} twice ({m.name})")
                f = tar.extractfile(m)
                if f is not None:
                    out[base] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read {src.path} as a tar.gz archive: {exc}") from exc
    missing = [n for n in FILES if n not in out]
    if missing:
        raise DataError(
            f"{src.path} has no {FOLDER}/{missing[0]}: not the CIFAR-100 binary archive"
        )
    return out


def label_names(raw: bytes, name: str, count: int) -> list[str]:
    """The names, one a line in label order; exactly `count` distinct ones."""
    try:
        names = [ln.strip() for ln in raw.decode("ascii").splitlines() if ln.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not a text file of label names: {exc}") from exc
    if len(names) != count or len(set(names)) != count:
        raise DataError(
            f"{name} should list {count} distinct names, one a line; it has {len(names)}"
        )
    return names


def records(raw: bytes, name: str) -> np.ndarray:
    """uint8 [n, 3074] records, with whole records and labels in range."""
    if not raw or len(raw) % RECORD:
        raise DataError(
            f"{name}: {len(raw):,} bytes is not a whole number of {RECORD:,}-byte records "
            "(coarse label byte, fine label byte, 3,072 pixel bytes)"
        )
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
    bad = np.flatnonzero((rec[:, 0] >= N_COARSE) | (rec[:, 1] >= N_FINE))
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"{name}: record {i} has coarse label {rec[i, 0]} and fine label {rec[i, 1]} "
            f"(allowed 0-{N_COARSE - 1} and 0-{N_FINE - 1}): not a CIFAR-100 binary file"
        )
    return rec


def parse(files: dict[str, bytes]) -> dict[str, Any]:
    """Pooled records grouped by fine label (train before test within a class), checked."""
    fine_names = label_names(files["fine_label_names.txt"], "fine_label_names.txt", N_FINE)
    coarse_names = label_names(files["coarse_label_names.txt"], "coarse_label_names.txt", N_COARSE)
    rec = np.concatenate([records(files[n], n) for n in ("train.bin", "test.bin")])
    coarse, fine = rec[:, 0].astype(np.int64), rec[:, 1].astype(np.int64)
    counts = np.bincount(fine, minlength=N_FINE)
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise DataError(f"no images of fine class {c} ({fine_names[c]}) in train.bin or test.bin")
    coarse_of = np.full(N_FINE, -1, dtype=np.int64)
    coarse_of[fine] = coarse
    mixed = np.flatnonzero(coarse != coarse_of[fine])
    if len(mixed):
        c = int(fine[mixed[0]])
        raise DataError(f"fine class {c} ({fine_names[c]}) has records under two superclasses")
    order = np.argsort(fine, kind="stable")
    return {
        "pixels": rec[order, 2:].reshape(-1, 3, SIDE, SIDE),
        "starts": np.concatenate([[0], np.cumsum(counts)]),
        "fine_names": fine_names,
        "coarse_names": coarse_names,
        "coarse_of": coarse_of,
    }


def to_images(pixels: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """[N, 3, 32, 32] planes -> uint8 [N, channels, size, size]; at 32 RGB the bytes unchanged,
    else through Pillow as every other loader does (grayscale by its luma, Lanczos resize), so a
    setting means the same thing on every dataset."""
    if size == SIDE and channels == 3:
        return torch.from_numpy(np.ascontiguousarray(pixels))
    from PIL import Image

    out = np.empty((len(pixels), size, size, channels), dtype=np.uint8)
    for i, chw in enumerate(pixels):
        im = Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)), "RGB")
        if channels == 1:
            im = im.convert("L")
        if size != SIDE:
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        out[i] = np.asarray(im).reshape(size, size, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def decode(src: ArchiveSource, size: int, channels: int) -> dict[str, Any]:
    p = parse(read_files(src))
    return {
        "images": to_images(p["pixels"], size, channels),
        "starts": torch.from_numpy(p["starts"].astype(np.int64)),
        "fine_names": p["fine_names"],
        "coarse_names": p["coarse_names"],
        "coarse_of": torch.from_numpy(p["coarse_of"]),
    }


def load_decoded(src: ArchiveSource, size: int, channels: int) -> dict[str, Any]:
    """{"images", "starts" [101], "fine_names", "coarse_names", "coarse_of" [100]}, from the
    cache after the first time (keyed by the archive's SHA256, or the files' sizes and times)."""
    if src.kind == "archive":
        source: Any = digests(src.path)[0]
    else:
        source = stat_signature([src.path / n for n in FILES], src.path)
    parts = {"dataset": "cifar-100-binary", "version": VERSION, "source": source, "size": size,
             "channels": channels}  # fmt: skip
    return cached("cifar100", parts, lambda: decode(src, size, channels))


# ---- the datasets built on it ----------------------------------------------------------------
class Cifar100Tasks(ClassImages):
    """ClassImages plus a note on how the source files were verified (shown by the engine)."""

    verification: str = ""


class Cifar100Spec(DatasetSpec):
    """A class split of CIFAR-100's fine classes, given by class-list files.

    Subclasses name the paper's split (`split_names`, its files in resources/splits/<name>/)
    and say how a list's lines become fine labels (`fine_classes`).
    """

    kind = "classification"
    needs_data_dir = True
    # what the papers train on; the config's own defaults (28, grayscale) are Omniglot's
    defaults: ClassVar[dict[str, Any]] = {"image_size": PAPER_SHAPE[0], "channels": PAPER_SHAPE[1]}
    name: ClassVar[str]
    split_names: ClassVar[tuple[str, ...]]
    unit: ClassVar[str] = "classes"  # what a class-list line names

    @abstractmethod
    def fine_classes(self, names: list[str], data: dict[str, Any], path: Path) -> list[int]:
        """Fine labels (sorted) of the split whose class-list file `path` holds `names`."""

    def build(self, cfg: DatasetConfig, split: Split) -> TaskDistribution:
        path = class_list(cfg, self.name, self.split_names, split)
        names = read_names(path)  # a bad split fails before the archive is read
        src = OFFICIAL.locate(cfg, self.name)
        note = OFFICIAL.verify(src, self.name)
        data = load_decoded(src, cfg.image_size, cfg.channels)
        fine = self.fine_classes(names, data, path)
        starts = data["starts"]
        index = [torch.arange(int(starts[c]), int(starts[c + 1])) for c in fine]
        tasks = Cifar100Tasks(
            data["images"],
            index,
            name=self.name,
            split=split,
            class_names=[data["fine_names"][c] for c in fine],
        )
        tasks.verification = note
        return tasks

    def describe(self, cfg: DatasetConfig) -> str:
        return describe_safely(self.name, lambda: self._describe(cfg))

    def _describe(self, cfg: DatasetConfig) -> str:
        src = find_sources(cfg)
        if src is None or src.kind == "archive":
            head = archive_head(self.name, cfg, ARCHIVE, SUB, src.path if src else None)
        else:
            head = f"{self.name}: unpacked {src.path} (not verified)"
        counts = [
            len(read_names(class_list(cfg, self.name, self.split_names, s)))
            for s in ("train", "val", "test")
        ]
        how = self.split_names[0] if cfg.split in ("default", *self.split_names) else cfg.split
        line = f"{head}; split {how}: {'/'.join(map(str, counts))} {self.unit}"
        return line + paper_shape_note(cfg, PAPER_SHAPE)
