"""CIFAR-FS (Bertinetto et al. 2019, "Meta-learning with differentiable closed-form solvers").

CIFAR-100's 100 fine classes split at random into 64 train / 16 val / 20 test classes, 600
32x32 RGB images each (train.bin and test.bin pooled). The class lists are the authors' own,
shipped in workbench/resources/splits/cifar-fs/ with their source (github.com/bertinetto/r2d2);
dataset.split: default or bertinetto (those lists), or a folder holding train.txt / val.txt /
test.txt with one fine class name a line. Read from the official binary archive; see cifar100.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.core.errors import DataError
from workbench.core.registry import DATASETS
from workbench.core.tasks.cifar100 import Cifar100Spec


@DATASETS.register("cifar-fs")
class CifarFsSpec(Cifar100Spec):
    name = "cifar-fs"
    split_names = ("bertinetto",)

    def fine_classes(self, names: list[str], data: dict[str, Any], path: Path) -> list[int]:
        """Each line is a fine class name as in the archive's fine_label_names.txt."""
        where = {n: i for i, n in enumerate(data["fine_names"])}
        unknown = [n for n in names if n not in where]
        if unknown:
            raise DataError(
                f"{path}: {unknown[0]!r} is not a CIFAR-100 fine class (fine_label_names.txt)"
            )
        return sorted(where[n] for n in names)
