"""Meta-learning algorithms, one module each, registered by name in ALGORITHMS.

Every module of this package is imported (a new algorithm is its file), then the user's own
algorithms, datasets and models: entry points and the plugins folder (`core.plugins`).
"""

from workbench.core.algorithms.base import Algorithm
from workbench.core.registry import ALGORITHMS, import_all

# the form's order: the paper algorithms first, the rest by name
import_all(__name__, __path__, ("maml", "meta_lstm", "protonet", "pretrain_finetune"))

from workbench.core.plugins import load_plugins  # noqa: E402  # isort: skip

load_plugins()

__all__ = ["ALGORITHMS", "Algorithm"]
