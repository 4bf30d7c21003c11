"""The task shapes checked against the chosen dataset before a run exists, as a run checks them.

`workbench run` builds its dataset splits before touching the catalog (`load_datasets`), so
too many ways fail at once with a message naming the field; the form must refuse the same
configuration rather than start a run that fails at step 0. Building a generated dataset is
cheap (glyphs: from the decode cache, milliseconds; a fresh machine renders it once, a few
seconds), so the form builds it and asks each split, as sampling would: ways against the split's
classes (train ways against the train split, eval ways against val and test), shots + queries
against the smallest class. A dataset read from files (omniglot, an image folder) is not built
on every keystroke: its shapes are checked when the run starts.
"""

from __future__ import annotations

from typing import Any

from workbench.core.config import RunConfig
from workbench.core.engine import load_datasets
from workbench.core.errors import ConfigError
from workbench.core.tasks import DATASETS, TaskDistribution

SPLITS = ("train", "val", "test")
# dataset options that decide the classes and their images (not their pixels' size or colour)
CLASS_FIELDS = ("name", "data_dir", "split", "split_seed", "rotations")


class ShapeChecker:
    """Raises the ConfigError a run would raise for its task shapes; remembers built splits."""

    def __init__(self) -> None:
        self._built: dict[tuple[Any, ...], dict[str, TaskDistribution] | None] = {}

    def splits(self, config: RunConfig) -> dict[str, TaskDistribution] | None:
        """The dataset's splits, or None when they cannot be built cheaply (files to read)."""
        ds = config.dataset
        if DATASETS.get(ds.name).needs_data_dir:
            return None
        key = tuple(getattr(ds, f) for f in CLASS_FIELDS)
        if key not in self._built:
            spec = DATASETS.get(ds.name)()
            try:
                self._built[key] = {s: spec.build(ds, s) for s in SPLITS}  # type: ignore[arg-type]
            except ConfigError:
                raise  # a bad dataset option: the field is named
            except Exception:  # the run will report it with its own message
                self._built[key] = None
        return self._built[key]

    def check(self, config: RunConfig) -> None:
        load_datasets(config, ())  # the engine's rules that need no data (eval ways = train ways)
        dists = self.splits(config)
        if dists is None or config.task_kind != "classification":
            return
        for split, dist in dists.items():
            phase = "train" if split == "train" else "eval"
            shape = getattr(config, phase)
            check = getattr(dist, "check", None)
            if callable(check):  # ClassImages: ways and shots + queries, as sampling checks
                check(shape, phase)
            elif dist.num_classes is not None and shape.ways > dist.num_classes:
                raise ConfigError(
                    f"{phase}.ways",
                    f"{shape.ways} ways requested but the {split} split of "
                    f"{config.dataset.name} has only {dist.num_classes:,} classes",
                )
