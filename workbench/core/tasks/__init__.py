"""Task distributions, one module each, registered by name in DATASETS."""

from workbench.core.registry import Registry
from workbench.core.tasks.base import DatasetSpec, EpisodeBatch, TaskDistribution

DATASETS: Registry[DatasetSpec] = Registry("dataset", "dataset.name")

# One line per dataset module; importing it registers it.
from workbench.core.tasks import sinusoid  # noqa: E402,F401

from workbench.core.tasks import glyphs  # noqa: E402,F401  # isort: skip
from workbench.core.tasks import omniglot  # noqa: E402,F401  # isort: skip
from workbench.core.tasks import image_folder  # noqa: E402,F401  # isort: skip

__all__ = ["DATASETS", "DatasetSpec", "EpisodeBatch", "TaskDistribution"]
