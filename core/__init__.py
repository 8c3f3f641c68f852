"""metazoo: a plugin-based zoo of meta-learning algorithms for PyTorch.

Public API for users and plugin authors::

    import metazoo

    @metazoo.hookimpl
    def zoo_register_algorithms(registry):
        registry.add("myalgo", MyAlgo, family="model-algorithm", paper="Me et al. 2026")

See :mod:`metazoo.hookspecs` for every hook and :mod:`metazoo.testing` for the conformance kit.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("metazoo")

from metazoo.errors import ZooError  # noqa: E402
from metazoo.learner import MetaLearner  # noqa: E402
from metazoo.manager import Zoo, get_plugin_manager  # noqa: E402
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner  # noqa: E402
from metazoo.model_data import ModelDataConfig, ModelDataLearner  # noqa: E402
from metazoo.tasks import TaskBatch, TaskSuite  # noqa: E402

__all__ = [
    "InnerLoopConfig",
    "MetaLearner",
    "ModelAlgorithmLearner",
    "ModelDataConfig",
    "ModelDataLearner",
    "TaskBatch",
    "TaskSuite",
    "Zoo",
    "ZooError",
    "__version__",
    "get_plugin_manager",
    "hookimpl",
]
