"""Reptile (Nichol, Achiam & Schulman, 2018, Algorithm 2, batched version).

Each task of the meta-batch runs k steps of SGD on its support set from θ, reaching φ̃_i; the
outer update is θ ← θ + ε · (1/n) Σ_i (φ̃_i − θ). The engine pools the pseudo-gradient
g = (1/n) Σ_i (θ − φ̃_i), the gradient of the objective Σ_i ½‖θ − φ̃_i‖² with φ̃_i held
constant, so with the default outer optimiser (SGD at rate ε) the step is exactly that formula;
no second derivatives are involved.
"""

from dataclasses import dataclass
from typing import Literal

import metazoo
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

    def chunk_objective(self, chunk):
        theta = dict(self.model.named_parameters())
        execution = self.execution
        eager = self.eager_inner_loop(execution)

        def task_step(sx, sy, qx, qy):
            adapted = self.adapt(sx, sy, self.config.inner_steps, create_graph=False, eager=eager)
            adapted = {name: value.detach() for name, value in adapted.items()}  # φ̃_i, a constant
            return adapted, self.loss(adapted, qx, qy)

        adapted, losses = map_tasks(task_step, chunk.tensors(), execution)  # [T, ...], [T]
        objective = sum(0.5 * (theta[name] - adapted[name]).pow(2).sum() for name in theta)
        return objective, losses.sum().detach()


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("reptile", Reptile, family="model-algorithm", paper=PAPER,
                 summary="first-order: move the initialisation towards adapted weights")
