"""Meta-learning algorithms, one module each, registered by name in ALGORITHMS."""

from workbench.core.algorithms.base import Algorithm
from workbench.core.registry import Registry

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", "algorithm.name")

# One line per algorithm module; importing it registers it.
from workbench.core.algorithms import maml  # noqa: E402,F401  # isort: skip
from workbench.core.algorithms import meta_lstm  # noqa: E402,F401  # isort: skip
from workbench.core.algorithms import protonet  # noqa: E402,F401  # isort: skip
from workbench.core.algorithms import pretrain_finetune  # noqa: E402,F401  # isort: skip
from workbench.core.algorithms import meta_sgd  # noqa: E402,F401  # isort: skip
from workbench.core.algorithms import anil  # noqa: E402,F401  # isort: skip

# the user's own algorithms (and datasets, models): entry points and the plugins folder
from workbench.core.plugins import load_plugins  # noqa: E402  # isort: skip

load_plugins()

__all__ = ["ALGORITHMS", "Algorithm"]
