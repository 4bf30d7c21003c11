"""FC100 (Oreshkin et al. 2018, "TADAM: Task dependent adaptive metric for improved few-shot
learning"): CIFAR-100 split by superclass so that train and test classes are far apart.

The 20 superclasses go 12 train / 4 val / 4 test, each with its 5 fine classes: 60 / 20 / 20
classes of 600 32x32 RGB images (train.bin and test.bin pooled). The superclass lists are
TADAM's (github.com/ElementAI/TADAM), shipped in workbench/resources/splits/fc100/ with their
source; dataset.split: default or oreshkin (those lists), or a folder holding train.txt /
val.txt / test.txt with one superclass name a line. Which fine class belongs to which
superclass is read from the archive's records. Read from the official binary archive; see
cifar100.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.core.errors import DataError
from workbench.core.registry import DATASETS
from workbench.core.tasks.cifar100 import Cifar100Spec


@DATASETS.register("fc100")
class Fc100Spec(Cifar100Spec):
    name = "fc100"
    split_names = ("oreshkin",)
    unit = "superclasses (5 fine classes each)"

    def fine_classes(self, names: list[str], data: dict[str, Any], path: Path) -> list[int]:
        """Each line is a superclass as in coarse_label_names.txt; its fine classes are those
        whose records carry its coarse label."""
        where = {n: i for i, n in enumerate(data["coarse_names"])}
        unknown = [n for n in names if n not in where]
        if unknown:
            raise DataError(
                f"{path}: {unknown[0]!r} is not a CIFAR-100 superclass (coarse_label_names.txt)"
            )
        wanted = {where[n] for n in names}
        return [f for f, c in enumerate(data["coarse_of"].tolist()) if c in wanted]
