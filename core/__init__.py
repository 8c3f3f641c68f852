"""metazoo: a plugin-based zoo of meta-learning algorithms for PyTorch.

Public API for users and plugin authors::

    import metazoo

    @metazoo.hookimpl
    def zoo_register_algorithms(registry):
        registry.add("myalgo", MyAlgo, family="model-algorithm", paper="Me et al. 2026")

See :mod:`metazoo.hookspecs` for every hook, :mod:`metazoo.testing` for the conformance kit and
``plugins/README.md`` for the author's guide. Everything a plugin needs is exported here: the
learner bases and their configs, tasks and suites, the backbones (``MLP``, ``Conv4``) and their
batch norms (``BatchStatNorm``, ``RunningBatchNorm``), config helpers (``build_config``,
``positive``), the losses and metrics, and the errors.
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("metazoo")

from metazoo.config import LearnerConfig, PooledConfig, build_config, positive  # noqa: E402
from metazoo.engine import GradientPool, map_tasks  # noqa: E402
from metazoo.errors import PluginError, UsageError, ZooError  # noqa: E402
from metazoo.image_folder import ImageSplit, load_image_folder  # noqa: E402
from metazoo.learner import MetaLearner, PooledMetaLearner  # noqa: E402
from metazoo.manager import Zoo, get_plugin_manager  # noqa: E402
from metazoo.model_algorithm import (  # noqa: E402
    InnerLoopConfig,
    ModelAlgorithmLearner,
    Params,
    check_head,
    parameter_key,
)
from metazoo.model_data import ModelDataConfig, ModelDataLearner, embedded_shape, embedding, one_hot  # noqa: E402
from metazoo.models import MLP, BatchStatNorm, Conv4, RunningBatchNorm  # noqa: E402
from metazoo.policies import GaussianMLP, gaussian_log_prob, gaussian_parameters  # noqa: E402
from metazoo.rl import policy_gradient_surrogate  # noqa: E402
from metazoo.tasks import (  # noqa: E402
    SPLITS,
    LabelledBatch,
    TaskBatch,
    TaskSuite,
    check_split,
    draw_distinct,
    offers_labelled_batches,
    plays_tasks,
    split_stream,
    task_loss,
    task_metrics,
    trains_on,
)

__all__ = [
    "MLP",
    "SPLITS",
    "BatchStatNorm",
    "Conv4",
    "RunningBatchNorm",
    "InnerLoopConfig",
    "LearnerConfig",
    "MetaLearner",
    "ModelAlgorithmLearner",
    "ModelDataConfig",
    "ModelDataLearner",
    "PluginError",
    "PooledConfig",
    "PooledMetaLearner",
    "Params",
    "parameter_key",
    "GradientPool",
    "LabelledBatch",
    "TaskBatch",
    "TaskSuite",
    "UsageError",
    "Zoo",
    "ZooError",
    "__version__",
    "build_config",
    "check_head",
    "check_split",
    "embedded_shape",
    "embedding",
    "get_plugin_manager",
    "hookimpl",
    "map_tasks",
    "one_hot",
    "positive",
    "split_stream",
    "draw_distinct",
    "offers_labelled_batches",
    "plays_tasks",
    "policy_gradient_surrogate",
    "GaussianMLP",
    "gaussian_parameters",
    "gaussian_log_prob",
    "trains_on",
    "ImageSplit",
    "load_image_folder",
    "task_loss",
    "task_metrics",
]
