"""N-way K-shot episodes from a class-indexed uint8 image tensor, by pure tensor indexing.

All image datasets (glyphs, Omniglot, image folders) decode once into one uint8 tensor and
hand this sampler a per-class index, so sampling a meta-batch is a few gathers, with no file
I/O and no Python loop over tasks. Omniglot's rotated classes are an index entry plus a
rotation count applied at sample time, so the rotated copies are never stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.core.errors import ConfigError
from workbench.core.params import TaskShape
from workbench.core.tasks.base import EpisodeBatch, TaskDistribution


class ClassImages(TaskDistribution):
    """Classification tasks over `images[class_index[c]]`, optionally rotated by 90 * rotation[c].

    images: uint8 [N, C, H, W] (shared between splits; only indexed, never copied).
    class_index: one LongTensor of image indices per class (lengths may differ).
    rotation: per-class multiples of 90 degrees (0..3), or None for no rotations.
    invert: store 255 - images (Omniglot: strokes become 1, background 0).
    channels: repeat single-channel images to this many channels when sampling (grayscale data
        for an RGB model), instead of storing the copies.
    name/split: only for error messages ("the val split of omniglot").
    phase: config section named in errors ("train" or "eval"); default "train" for the train
        split, else "eval"; `sample(..., phase=...)` overrides it per call.
    """

    kind = "classification"

    def __init__(
        self,
        images: torch.Tensor,
        class_index: Sequence[torch.Tensor],
        rotation: torch.Tensor | Sequence[int] | None = None,
        *,
        invert: bool = False,
        name: str = "dataset",
        split: str = "train",
        phase: str | None = None,
        class_names: Sequence[str] | None = None,
        channels: int | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        if not class_index:
            raise ValueError("no classes")
        self.images = ((255 - images) if invert else images).contiguous()
        counts = torch.tensor([len(ix) for ix in class_index], dtype=torch.long)
        width = int(counts.max())
        # padded [num_classes, max_count] table; padding is never selected (see _positions)
        table = torch.zeros(len(class_index), width, dtype=torch.long)
        for c, ix in enumerate(class_index):
            table[c, : len(ix)] = torch.as_tensor(ix, dtype=torch.long)
        self.table = table
        self.counts = counts
        self.uniform_counts = bool((counts == width).all())
        rot = (
            torch.zeros(len(class_index), dtype=torch.long)
            if rotation is None
            else torch.as_tensor(rotation, dtype=torch.long)
        )
        if rot.shape != (len(class_index),) or bool(((rot < 0) | (rot > 3)).any()):
            raise ValueError("rotation must hold one value in 0..3 per class")
        if bool(rot.any()) and images.shape[-1] != images.shape[-2]:
            raise ValueError("rotations need square images")
        self.rotation = rot
        self.has_rotation = bool(rot.any())
        self.name = name
        self.split = split
        self.phase = phase if phase is not None else ("train" if split == "train" else "eval")
        self.class_names = list(class_names) if class_names is not None else None
        c = int(images.shape[1])
        self.channels = c if channels is None else channels
        if self.channels != c and c != 1:
            raise ValueError(f"cannot turn {c}-channel images into {self.channels} channels")

    @property
    def input_shape(self) -> tuple[int, ...]:
        _, _, h, w = self.images.shape
        return (self.channels, int(h), int(w))

    @property
    def num_classes(self) -> int:
        return int(self.table.shape[0])

    @property
    def examples_per_class(self) -> int:
        """Images of the smallest class (rotated copies are classes of their own)."""
        return int(self.counts.min())

    @property
    def num_images(self) -> int:
        """Images reachable from this split (rotated classes count separately)."""
        return int(self.counts.sum())

    def check(self, shape: TaskShape, phase: str | None = None) -> None:
        """Raise ConfigError naming the phase's key when `shape` cannot be drawn from this split."""
        phase = phase or self.phase
        where = f"the {self.split} split of {self.name}"
        if shape.ways > self.num_classes:
            raise ConfigError(
                f"{phase}.ways",
                f"{shape.ways} ways requested but {where} has only {self.num_classes:,} classes",
            )
        need = shape.shots + shape.queries
        fewest = self.examples_per_class
        if need > fewest:
            c = int(self.counts.argmin())
            label = f" ({self.class_names[c]})" if self.class_names else ""
            raise ConfigError(
                f"{phase}.queries",
                f"{shape.shots} shots + {shape.queries} queries = {need} images per class requested "
                f"but a class{label} of {where} has only {fewest}",
            )

    def sample(
        self, shape: TaskShape, batch: int, generator: torch.Generator, phase: str | None = None
    ) -> EpisodeBatch:
        self.check(shape, phase)
        ways, shots, n = shape.ways, shape.shots, shape.shots + shape.queries
        classes = self._classes(batch, ways, generator)  # [B, W]
        flat = classes.reshape(-1)
        pos = self._positions(flat, n, generator)  # [B*W, n] distinct slots per class
        idx = self.table[flat[:, None], pos]  # [B*W, n] image indices
        # index_select on a flat view is ~10x faster than advanced indexing on [N, C, H, W]
        x = self.images.view(self.images.shape[0], -1).index_select(0, idx.reshape(-1))
        x = x.view(batch * ways, n, *self.images.shape[1:])
        if self.has_rotation:
            rot = self.rotation[flat]
            for k in (1, 2, 3):
                sel = (rot == k).nonzero().squeeze(1)
                if len(sel):
                    x[sel] = torch.rot90(x[sel], k, dims=(-2, -1))
        c, h, w = self.input_shape
        u = x.view(batch, ways, n, -1, h, w)
        support_x = self._to_float(u[:, :, :shots], c).view(batch, ways * shots, c, h, w)
        query_x = self._to_float(u[:, :, shots:], c).view(batch, ways * (n - shots), c, h, w)
        labels = torch.arange(ways)
        support_y = labels.repeat_interleave(shots).expand(batch, -1).contiguous()
        query_y = labels.repeat_interleave(n - shots).expand(batch, -1).contiguous()
        return EpisodeBatch(support_x, support_y, query_x, query_y, ways, info={"classes": classes})

    @staticmethod
    def _to_float(u: torch.Tensor, channels: int) -> torch.Tensor:
        """uint8 -> contiguous float32 in [0, 1] in one copy (channel repeat included)."""
        u = u.expand(-1, -1, -1, channels, -1, -1)
        return u.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)

    def _classes(self, batch: int, ways: int, generator: torch.Generator) -> torch.Tensor:
        """`ways` distinct classes per task in uniformly random order (the order is the label
        remapping).

        Few ways among many classes (5 of Omniglot's 4,800): independent uniform draws, a task
        with a repeat drawn again whole. Accepted draws are then uniform over ordered distinct
        tuples, like a draw without replacement, at a few microseconds instead of a random key
        per class and task (0.4 ms of a 0.8 ms 32-task meta-batch). When repeats would be
        common (ways * (ways - 1) > classes, acceptance below about 60%): the `ways` smallest of
        one uniform key per class.
        """
        n = self.num_classes
        if ways * (ways - 1) > n:
            keys = torch.rand(batch, n, generator=generator)
            return keys.topk(ways, dim=1, largest=False, sorted=True).indices
        classes = torch.randint(n, (batch, ways), generator=generator)
        while ways > 1:
            ordered = classes.sort(dim=1).values
            again = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1).nonzero().squeeze(1)
            if not len(again):
                break
            classes[again] = torch.randint(n, (len(again), ways), generator=generator)
        return classes

    def _positions(self, classes: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """n distinct slots per class row: the n smallest of uniform keys, padding keyed past 1."""
        width = self.table.shape[1]
        keys = torch.rand(len(classes), width, generator=generator)
        if not self.uniform_counts:
            pad = torch.arange(width)[None, :] >= self.counts[classes][:, None]
            keys.masked_fill_(pad, 2.0)
        if n == width:
            return keys.argsort(dim=1)
        return keys.topk(n, dim=1, largest=False, sorted=True).indices
