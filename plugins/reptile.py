"""Reptile (Nichol, Achiam & Schulman, 2018, Algorithm 2, batched version).

Each task of the meta-batch runs k steps of SGD on its support set from θ, reaching φ̃_i; the
outer update is θ ← θ + ε · (1/n) Σ_i (φ̃_i − θ). The engine pools the pseudo-gradient
g = (1/n) Σ_i (θ − φ̃_i), so with the default outer optimiser (SGD at rate ε) the step is
exactly that formula; no second derivatives are involved.
"""

from dataclasses import dataclass
from typing import Literal

import metazoo
import torch
from metazoo.engine import map_tasks
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner

PAPER = "Nichol, Achiam & Schulman. On First-Order Meta-Learning Algorithms. arXiv:1803.02999, 2018"


@dataclass(frozen=True)
class ReptileConfig(InnerLoopConfig):
    inner_steps: int = 5  # k
    outer_lr: float = 1.0  # ε
    outer_optimizer: Literal["adam", "sgd"] = "sgd"
    first_order: bool = True  # Reptile never differentiates through the inner loop


class Reptile(ModelAlgorithmLearner):
    """Move the initialisation towards each task's adapted weights."""

    Config = ReptileConfig

    def chunk_meta_gradient(self, chunk):
        theta = dict(self.model.named_parameters())

        def task_step(sx, sy, qx, qy):
            adapted = self.adapt(sx, sy, self.config.inner_steps, create_graph=False)
            delta = {name: theta[name] - adapted[name] for name in theta}
            return delta, self.loss(adapted, qx, qy)

        with torch.no_grad():
            deltas, losses = map_tasks(task_step, chunk.tensors(), self.execution)
        return [deltas[name].sum(0) for name in theta], losses.sum()


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("reptile", Reptile, family="model-algorithm", paper=PAPER,
                 summary="first-order: move the initialisation towards adapted weights")
