"""A third-party metazoo plugin: sign-SGD inner loop and a linear-regression task suite."""

from dataclasses import dataclass

import metazoo
import torch
from metazoo.models import MLP
from metazoo.tasks import split_stream


class SignMAML(metazoo.ModelAlgorithmLearner):
    """MAML whose inner step follows the sign of the gradient."""

    def inner_update(self, params, grads, step):
        return {n: p - self.config.inner_lr * grads[n].sign() for n, p in params.items()}


@dataclass(frozen=True)
class LinesConfig:
    shots: int = 5
    queries: int = 10


class Lines(metazoo.TaskSuite):
    """y = a·x + b with a, b ~ U[-2, 2]."""

    name = "lines"
    kind = "regression"

    def __init__(self, **protocol):
        self.config = LinesConfig(**protocol)

    def sample(self, split, num_tasks, generator):
        generator = split_stream(generator, split)  # this split's own stream of tasks
        c = self.config
        a, b = (4 * torch.rand(2, num_tasks, 1, 1, generator=generator) - 2).unbind(0)
        x = 10 * torch.rand(num_tasks, c.shots + c.queries, 1, generator=generator) - 5
        y = a * x + b
        return metazoo.TaskBatch(x[:, : c.shots], y[:, : c.shots], x[:, c.shots :], y[:, c.shots :])

    def make_model(self):
        return MLP(1, 20, 1)


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("signmaml", SignMAML, family="model-algorithm", paper="(test plugin)")


@metazoo.hookimpl
def zoo_register_suites(registry):
    registry.add("lines", Lines, summary="random lines")
