"""Reptile (Nichol, Achiam & Schulman, 2018, Algorithm 2, batched version).

Each task of the meta-batch runs k steps of an inner optimiser on its support set from θ,
reaching φ̃_i; the outer update is θ ← θ + ε · (1/n) Σ_i (φ̃_i − θ). The engine pools the
pseudo-gradient g = (1/n) Σ_i (θ − φ̃_i), the gradient of the objective Σ_i ½‖θ − φ̃_i‖² with φ̃_i
held constant, so with the default outer optimiser (SGD at rate ε) the step is exactly that
formula; no second derivatives are involved. The paper anneals ε linearly to 0
(``lr_schedule = "linear"``).

The inner optimiser is plain SGD (``inner_optimizer = "sgd"``) or Adam with β₁ = 0 as in the
paper's code (``"adam"``; β₂ = 0.999, ε = 1e-8). Adam's moments start afresh on every task here;
the paper's code keeps them from one task to the next (it restores only the model's weights),
which would tie the tasks of a meta-batch together. Each inner step takes ``inner_batch``
examples of the support set (at test time ``eval_inner_batch``; default all of it): consecutive
slices of the support set, which the suite has shuffled, cycling — with the paper's 5-way
training tasks of 10 shots and batches of 10, the 5 steps see each example once, as the paper's
code draws them.
"""

from dataclasses import dataclass
from typing import Literal

import metazoo
import torch
from metazoo.config import positive
from metazoo.engine import map_tasks
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner, Params

PAPER = "Nichol, Achiam & Schulman. On First-Order Meta-Learning Algorithms. arXiv:1803.02999, 2018"
ADAM_BETAS, ADAM_EPS = (0.0, 0.999), 1e-8  # the paper's code: tf.train.AdamOptimizer(beta1=0)


@dataclass(frozen=True)
class ReptileConfig(InnerLoopConfig):
    inner_steps: int = 5  # k
    outer_lr: float = 1.0  # ε
    outer_optimizer: Literal["adam", "sgd"] = "sgd"
    first_order: bool = True  # Reptile never differentiates through the inner loop
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    inner_batch: int | None = None  # support examples per inner step in meta-training (None: all)
    eval_inner_batch: int | None = None  # the same at test time

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "inner_batch", "eval_inner_batch")


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

    def adapt(self, x, y, steps, create_graph, eager=False) -> Params:
        """The base inner loop when it is plain SGD on the whole support set; otherwise k steps
        of the inner optimiser on consecutive slices of it (always first order)."""
        config = self.config
        batch = config.inner_batch if torch.is_grad_enabled() else config.eval_inner_batch
        if config.inner_optimizer == "sgd" and batch is None:
            return super().adapt(x, y, steps, create_graph, eager)
        fast = {name: p.detach() for name, p in self.model.named_parameters()}
        moments = {name: (torch.zeros_like(p), torch.zeros_like(p)) for name, p in fast.items()}
        size, start = x.shape[0], 0
        for step in range(steps):
            if batch is None or batch == size:
                grads = self._gradient(fast, x, y, eager)
            else:
                rows = [(start + i) % size for i in range(batch)]  # static indices: vmap-safe
                start = (start + batch) % size
                grads = self._gradient(fast, x[rows], y[rows], eager)
            if config.inner_optimizer == "sgd":
                fast = {name: p - config.inner_lr * grads[name] for name, p in fast.items()}
            else:
                fast, moments = _adam(fast, grads, moments, step + 1, config.inner_lr)
        return fast

    def _gradient(self, params: Params, x, y, eager: bool) -> Params:
        """The support loss's gradient in ``params``, as constants."""
        if eager:  # the per-task loop outside torch.func: plain autograd
            with torch.enable_grad():
                leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
                grads = torch.autograd.grad(self.loss(leaves, x, y), list(leaves.values()))
            return dict(zip(params, grads))
        grads = torch.func.grad(lambda p: self.loss(p, x, y))(params)
        return {name: g.detach() for name, g in grads.items()}


def _adam(params: Params, grads: Params, moments, t: int, lr: float):
    """One Adam step (Kingma & Ba 2015, Algorithm 1) at step ``t`` (from 1) with ``ADAM_BETAS``."""
    (b1, b2), new, state = ADAM_BETAS, {}, {}
    for name, p in params.items():
        m, v = moments[name]
        g = grads[name]
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        new[name] = p - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + ADAM_EPS)
        state[name] = (m, v)
    return new, state


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("reptile", Reptile, family="model-algorithm", paper=PAPER,
                 summary="first-order: move the initialisation towards adapted weights")
