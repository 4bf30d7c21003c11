"""Task distributions, one module each, registered by name in DATASETS (every module of this
package is imported: a new dataset is its file)."""

from workbench.core.registry import DATASETS, import_all
from workbench.core.tasks.base import DatasetSpec, EpisodeBatch, TaskDistribution

import_all(__name__, __path__, ("sinusoid", "glyphs", "omniglot", "image_folder"))

__all__ = ["DATASETS", "DatasetSpec", "EpisodeBatch", "TaskDistribution"]
