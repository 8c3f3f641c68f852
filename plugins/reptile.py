"""Reptile (Nichol, Achiam & Schulman, 2018, Algorithm 2, batched version).

Each task of the meta-batch runs k steps of an inner optimiser on its support set from θ,
reaching φ̃_i; the outer update is θ ← θ + ε · (1/n) Σ_i (φ̃_i − θ). The engine pools the
pseudo-gradient g = (1/n) Σ_i (θ − φ̃_i), the gradient of the objective Σ_i ½‖θ − φ̃_i‖² with φ̃_i
held constant, so with the default outer optimiser (SGD at rate ε) the step is exactly that
formula; no second derivatives are involved. The paper anneals ε linearly to 0
(``lr_schedule = "linear"``).

The inner optimiser is plain SGD (``inner_optimizer = "sgd"``) or Adam with β₁ = 0 as in the
paper's code (``"adam"``; β₂ = 0.999, ε = 1e-8). The paper's code restores only the model's weights
between tasks, so Adam's second moments and step count run on from task to task, through
meta-training, and into each evaluation (which restores them afterwards): an inner step divides
the gradient by a running scale of all the gradients seen so far. ``inner_adam_state = "carried"``
(the default) does the same, vectorised: the tasks of a meta-batch all start from the carried
state (as they all start from θ), and after the outer step the state becomes what running the n
tasks one after another, in a random order, gives in expectation for the same per-task gradients,
``v ← β₂^{nk} v + (Σ_{i<n} β₂^{ik}) · mean_i (v_i − β₂^k v)``, with the step count advanced by
``nk``; evaluation reads the state and leaves it as it was. ``"fresh"`` starts Adam anew on every
task (its first step is then ``α · sign(g)`` in every parameter). Each inner step takes
``inner_batch`` examples of the support set (at test time ``eval_inner_batch``; default all of
it): consecutive slices of the support set, which the suite has shuffled, cycling — with the
paper's 5-way training tasks of 10 shots and batches of 10, the 5 steps see each example once,
as the paper's code draws them.
"""

from dataclasses import dataclass
from typing import Literal

import metazoo
import torch
from metazoo.config import positive
from metazoo.engine import map_tasks
from metazoo.errors import ZooError
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner, Params
from torch import nn

PAPER = "Nichol, Achiam & Schulman. On First-Order Meta-Learning Algorithms. arXiv:1803.02999, 2018"
ADAM_BETAS, ADAM_EPS = (0.0, 0.999), 1e-8  # the paper's code: tf.train.AdamOptimizer(beta1=0)


@dataclass(frozen=True)
class ReptileConfig(InnerLoopConfig):
    inner_steps: int = 5  # k
    outer_lr: float = 1.0  # ε
    outer_optimizer: Literal["adam", "sgd"] = "sgd"
    first_order: bool = True  # Reptile never differentiates through the inner loop
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    inner_adam_state: Literal["carried", "fresh"] = "carried"  # Adam's moments from task to task, or anew
    inner_batch: int | None = None  # support examples per inner step in meta-training (None: all)
    eval_inner_batch: int | None = None  # the same at test time

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "inner_batch", "eval_inner_batch")


class CarriedAdamState(nn.Module):
    """Adam's second moment of every model parameter and its step count, kept from task to task
    (buffers: saved in the learner's state dict)."""

    def __init__(self, params: Params) -> None:
        super().__init__()
        self.names = list(params)
        for i, p in enumerate(params.values()):
            self.register_buffer(f"v{i}", torch.zeros_like(p.detach()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def second_moments(self) -> Params:
        return {name: getattr(self, f"v{i}") for i, name in enumerate(self.names)}

    @torch.no_grad()
    def advance(self, accumulated_sum: Params, tasks: int, steps_per_task: int) -> None:
        """Fold in ``tasks`` tasks of ``steps_per_task`` steps whose own accumulations
        ``v_i − β₂^k v`` sum to ``accumulated_sum``, as if run one after another in a random order."""
        decay = ADAM_BETAS[1] ** steps_per_task
        weight = sum(decay**i for i in range(tasks)) / tasks
        for i, name in enumerate(self.names):
            v = getattr(self, f"v{i}")
            v.mul_(decay**tasks).add_(accumulated_sum[name], alpha=weight)
        self.steps += tasks * steps_per_task


class Reptile(ModelAlgorithmLearner):
    """Move the initialisation towards each task's adapted weights."""

    Config = ReptileConfig

    def __init__(self, model=None, suite=None, **hyperparameters) -> None:
        super().__init__(model, suite, **hyperparameters)
        config = self.config
        self.carries_adam = config.inner_optimizer == "adam" and config.inner_adam_state == "carried"
        if self.carries_adam and config.compile is True:
            raise ZooError(f"algorithm {self.name()}: compile = true cannot carry the inner Adam state from "
                           "one meta-batch to the next (inner_adam_state = 'carried'); use compile = false "
                           "or 'auto', or inner_adam_state = 'fresh'")
        if self.carries_adam and model is not None:
            self.adam_state = CarriedAdamState(dict(model.named_parameters()))

    @property
    def compiles(self) -> bool:
        """Never with a carried Adam state (it changes between steps, outside the step)."""
        return not self.carries_adam and super().compiles

    def chunk_objective(self, chunk):
        theta = dict(self.model.named_parameters())
        execution = self.execution
        eager = self.eager_inner_loop(execution)

        def task_step(sx, sy, qx, qy):
            adapted, second = self._inner_loop(sx, sy, self.config.inner_steps, create_graph=False, eager=eager)
            adapted = {name: value.detach() for name, value in adapted.items()}  # φ̃_i, a constant
            return adapted, second, self.loss(adapted, qx, qy)

        adapted, second, losses = map_tasks(task_step, chunk.tensors(), execution)  # [T, ...], [T]
        if self.carries_adam:
            self._accumulate(second, chunk.num_tasks)
        objective = sum(0.5 * (theta[name] - adapted[name]).pow(2).sum() for name in theta)
        return objective, losses.sum().detach()

    def meta_train_step(self, batch):
        if not self.carries_adam:
            return super().meta_train_step(batch)
        self.__dict__["_accumulated"] = None  # (sum over tasks of v_i − β₂^k v, tasks)
        stats = super().meta_train_step(batch)
        accumulated, tasks = self.__dict__.pop("_accumulated")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            count = torch.tensor(float(tasks))
            for tensor in [*accumulated.values(), count]:
                torch.distributed.all_reduce(tensor)
            tasks = int(count.item())
        self.adam_state.advance(accumulated, tasks, self.config.inner_steps)
        return stats

    def _accumulate(self, second: Params, tasks: int) -> None:
        """Add a chunk's tasks' own accumulations of Adam's second moments to the step's sum."""
        decay = ADAM_BETAS[1] ** self.config.inner_steps
        start = self.adam_state.second_moments()
        chunk = {name: (second[name] - decay * start[name]).sum(0).detach() for name in start}
        pending = self.__dict__["_accumulated"]
        if pending is not None:
            chunk = {name: pending[0][name] + chunk[name] for name in chunk}
            tasks += pending[1]
        self.__dict__["_accumulated"] = (chunk, tasks)

    def adapt(self, x, y, steps, create_graph, eager=False) -> Params:
        return self._inner_loop(x, y, steps, create_graph, eager)[0]

    def _inner_loop(self, x, y, steps, create_graph, eager=False) -> tuple[Params, Params]:
        """The adapted parameters, and Adam's second moments after the loop (empty without
        Adam): the base inner loop when it is plain SGD on the whole support set; otherwise k
        steps of the inner optimiser on consecutive slices of it (always first order)."""
        config = self.config
        batch = config.inner_batch if torch.is_grad_enabled() else config.eval_inner_batch
        if config.inner_optimizer == "sgd" and batch is None:
            return super().adapt(x, y, steps, create_graph, eager), {}
        fast = {name: p.detach() for name, p in self.model.named_parameters()}
        if self.carries_adam:
            second, done = self.adam_state.second_moments(), int(self.adam_state.steps)
        else:
            second, done = {name: torch.zeros_like(p) for name, p in fast.items()}, 0
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
                fast, second = _adam(fast, grads, second, done + step + 1, config.inner_lr)
        return fast, (second if config.inner_optimizer == "adam" else {})

    def _gradient(self, params: Params, x, y, eager: bool) -> Params:
        """The support loss's gradient in ``params``, as constants."""
        if eager:  # the per-task loop outside torch.func: plain autograd
            with torch.enable_grad():
                leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
                grads = torch.autograd.grad(self.loss(leaves, x, y), list(leaves.values()))
            return dict(zip(params, grads))
        grads = torch.func.grad(lambda p: self.loss(p, x, y))(params)
        return {name: g.detach() for name, g in grads.items()}


def _adam(params: Params, grads: Params, second: Params, t: int, lr: float) -> tuple[Params, Params]:
    """One Adam step (Kingma & Ba 2015, Algorithm 1) at step ``t`` (from 1) with ``ADAM_BETAS``:
    with β₁ = 0 the first moment is the gradient itself, so only the second moments ``second``
    are state."""
    b2, new, state = ADAM_BETAS[1], {}, {}
    for name, p in params.items():
        g = grads[name]
        v = state[name] = b2 * second[name] + (1 - b2) * g * g
        new[name] = p - lr * g / ((v / (1 - b2**t)).sqrt() + ADAM_EPS)
    return new, state


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("reptile", Reptile, family="model-algorithm", paper=PAPER,
                 summary="first-order: move the initialisation towards adapted weights")
