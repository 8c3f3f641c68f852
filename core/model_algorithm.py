"""Base class of model-algorithm meta-learners: an inner loop of gradient steps on explicit
parameter dictionaries, vectorised over tasks by :mod:`metazoo.engine`.

A plugin overrides :meth:`ModelAlgorithmLearner.inner_update` (how one step changes the
adapted parameters), if it adapts only some parameters :meth:`adapted_names`, and if a task's
inner loop starts elsewhere than at the meta-parameters :meth:`task_initialisation`, and if
some non-adapted parameters differ from step to step :meth:`step_parameters`. The base class
provides first- and second-order meta-gradients (Finn et al. 2017, Eq. 1 inside Eq. 3),
chunking through a gradient pool, execution choice and evaluation without a second-order graph.

A task's loss and predictions come from its suite where the suite plays its tasks
(:meth:`metazoo.TaskSuite.task_loss`, :meth:`~metazoo.TaskSuite.task_prediction`: reinforcement
learning, whose loss rolls the policy out), so the same inner loop adapts a policy; otherwise,
and for a learner built without a suite, they are the kind's loss and the model's outputs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from metazoo.config import PooledConfig, positive
from metazoo.engine import map_tasks
from metazoo.errors import ZooError
from metazoo.learner import PooledMetaLearner
from metazoo.tasks import TaskBatch, TaskSuite, plays_tasks, task_loss
from torch import nn
from torch.func import functional_call, vjp

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class InnerLoopConfig(PooledConfig):
    """Hyperparameters of an inner loop of gradient steps."""

    inner_steps: int = 1  # gradient steps on each task's support set during meta-training
    inner_lr: float = 0.01  # α in θ' = θ − α∇L(θ)
    eval_inner_steps: int | None = None  # steps at test time (default: inner_steps; 0: no adaptation)
    first_order: bool = False  # drop second-order terms of the meta-gradient

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "inner_steps", "inner_lr")
        if self.eval_inner_steps is not None and self.eval_inner_steps < 0:
            raise ZooError(f"eval_inner_steps must be >= 0 (0: the initialisation unadapted), got {self.eval_inner_steps!r}")


class ModelAlgorithmLearner(PooledMetaLearner):
    """Learns how a model is trained: an initialisation (and possibly more) for an inner loop."""

    family: ClassVar[str] = "model-algorithm"
    Config: ClassVar[type[InnerLoopConfig]] = InnerLoopConfig
    config: InnerLoopConfig

    def __init__(self, model: nn.Module | None = None, suite: TaskSuite | None = None,
                 **hyperparameters: Any) -> None:
        super().__init__(model, suite, **hyperparameters)
        # A suite that plays its tasks gives their loss and predictions (not a submodule: kept
        # out of the state dict); None: the kind's loss.
        self.__dict__["_played"] = suite if suite is not None and plays_tasks(suite) else None

    # -- what a plugin overrides ----------------------------------------------------------------

    def adapted_names(self) -> list[str]:
        """Names of the model parameters that the inner loop adapts (default: all). Called once,
        on first use; the engine keeps the answer."""
        return [name for name, _ in self.model.named_parameters()]

    def inner_update(self, params: Params, grads: Params, step: int) -> Params:
        """One inner step on one task: plain gradient descent θ ← θ − α∇L(θ).

        ``params`` and ``grads`` hold the adapted parameters only (see :meth:`adapted_names`).
        Meta-parameters of the learner itself (such as learnt learning rates) may be read from
        ``self``; the outer gradient reaches them.
        """
        lr = self.config.inner_lr
        return {name: p - lr * grads[name] for name, p in params.items()}

    def task_initialisation(self, x: torch.Tensor, y: torch.Tensor) -> Params:
        """Where one task's inner loop starts, from its support set ``x``, ``y`` (default: the
        meta-parameters). Differentiable: the outer gradient flows through it."""
        return dict(self.model.named_parameters())

    def step_parameters(self, step: int) -> Params:
        """Non-adapted parameters that replace the task initialisation's at inner step ``step``
        and in the model after that step (default: none). MAML++ gives each step batch-norm
        weights of its own."""
        return {}

    # -- the engine -----------------------------------------------------------------------------

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Loss of the model with ``params`` on one task's examples (or, for a suite that plays
        its tasks, its :meth:`~metazoo.TaskSuite.task_loss`)."""
        played = self.__dict__.get("_played")
        if played is not None:
            return played.task_loss(functools.partial(self._call_model, params), x, y)
        return task_loss(self.kind, functional_call(self.model, params, (x,)), y)

    def prediction(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict` returns for one task's queries with the adapted ``params``: the
        model's outputs (or the suite's :meth:`~metazoo.TaskSuite.task_prediction`)."""
        played = self.__dict__.get("_played")
        if played is not None:
            return played.task_prediction(functools.partial(self._call_model, params), x, y)
        return functional_call(self.model, params, (x,))

    def _call_model(self, params: Params, inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (inputs,))

    def adapt(self, x: torch.Tensor, y: torch.Tensor, steps: int, create_graph: bool,
              eager: bool = False, trajectory: list[Params] | None = None) -> Params:
        """Run the inner loop on one task's support set from the current meta-parameters and
        return the full parameter dictionary. Without ``create_graph`` the inner gradients are
        constants (first order). ``eager`` (see :meth:`eager_inner_loop`) takes plain autograd
        instead of ``torch.func.vjp``: only outside every ``torch.func`` transform. A
        ``trajectory`` list receives the full dictionary after every step (the last one is the
        result). With 0 steps: the task initialisation, with step 0's :meth:`step_parameters`."""
        params = self.task_initialisation(x, y)
        names = self.__dict__.get("_adapted_names")
        if names is None:  # asked once: a per-task call costs as much as a small layer's forward
            names = self.__dict__["_adapted_names"] = list(self.adapted_names())
        fast = {name: params[name] for name in names}
        frozen = {name: p for name, p in params.items() if name not in fast}

        def support_loss(fast: Params, step: int) -> torch.Tensor:
            return self.loss({**frozen, **self.step_parameters(step), **fast}, x, y)

        last = max(steps - 1, 0)  # the step whose non-adapted parameters the result keeps
        if eager:
            fast = self._adapt_eagerly(support_loss, fast, steps, create_graph, frozen, trajectory)
            return {**frozen, **self.step_parameters(last), **fast}
        for step in range(steps):
            # vjp rather than grad: vjp's backward runs after its transform level has closed,
            # so the backward ops are not recorded a second time there (same values, faster).
            loss, pullback = vjp(functools.partial(support_loss, step=step), fast)
            if loss.dim() != 0:
                raise ValueError(f"the loss of one task must be a scalar, got shape {tuple(loss.shape)}")
            second_order = create_graph and torch.is_grad_enabled()
            (grads,) = pullback(torch.ones_like(loss), create_graph=second_order)
            if not create_graph:
                grads = {name: g.detach() for name, g in grads.items()}
            fast = self.inner_update(fast, grads, step)
            if trajectory is not None:
                trajectory.append({**frozen, **self.step_parameters(step), **fast})
        return {**frozen, **self.step_parameters(last), **fast}

    def _adapt_eagerly(self, support_loss, fast: Params, steps: int, create_graph: bool,
                       frozen: Params, trajectory: list[Params] | None) -> Params:
        """The inner loop of one task by plain autograd, for the per-task loop outside any
        ``torch.func`` transform (no vjp level to dispatch through: as fast as a plain loop)."""
        training = torch.is_grad_enabled()
        for step in range(steps):
            with torch.enable_grad():
                if not training:  # evaluation: each step starts from constants
                    fast = {name: p.detach().requires_grad_() for name, p in fast.items()}
                elif step == 0:  # a constant start (CAVIA's zero context) becomes a leaf
                    fast = {name: p if p.requires_grad else p.detach().requires_grad_() for name, p in fast.items()}
                loss = support_loss(fast, step)
                if loss.dim() != 0:
                    raise ValueError(f"the loss of one task must be a scalar, got shape {tuple(loss.shape)}")
                grads = torch.autograd.grad(loss, list(fast.values()), create_graph=create_graph and training)
            grads = {name: g if create_graph else g.detach() for name, g in zip(fast, grads)}
            fast = self.inner_update(fast, grads, step)
            if trajectory is not None:
                trajectory.append({**frozen, **self.step_parameters(step), **fast})
        return {name: p.detach() for name, p in fast.items()} if not training else fast

    def eager_inner_loop(self, execution: str) -> bool:
        """Whether the inner loop may take plain autograd: a per-task loop outside the compiled
        step (decided once per batch, not per task), and a task initialisation that is the
        meta-parameters themselves. (An initialisation computed from them, such as Proto-MAML's
        head, would make autograd's gradient in a parameter the total derivative, through the
        initialisation too; the inner loop needs the partial one, which ``vjp`` gives.)"""
        own_start = type(self).task_initialisation is ModelAlgorithmLearner.task_initialisation
        return execution == "loop" and own_start and not self.__dict__.get("_functional")

    def query_loss(self, sx, sy, qx, qy, eager: bool = False) -> torch.Tensor:
        """Meta-training objective of one task: query loss after adapting on the support."""
        adapted = self.adapt(sx, sy, self.config.inner_steps, not self.config.first_order, eager)
        return self.loss(adapted, qx, qy)

    def chunk_objective(self, chunk: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum over the chunk's tasks of each task's query loss after adaptation."""
        execution = self.execution
        task_loss = functools.partial(self.query_loss, eager=self.eager_inner_loop(execution))
        total = map_tasks(task_loss, chunk.tensors(), execution).sum()  # [T] → []
        return total, total

    def predict(self, batch: TaskBatch, steps: int | None = None) -> torch.Tensor:
        """Adapt on each task's support with ``steps`` inner steps (default: ``eval_inner_steps``,
        else ``inner_steps``; 0: the initialisation unadapted) and predict its queries."""
        self.eval()
        if steps is None:
            steps = self.config.inner_steps if self.config.eval_inner_steps is None else self.config.eval_inner_steps
        if type(steps) is not int or steps < 0:
            raise ValueError(f"steps must be a whole number of inner steps >= 0, got {steps!r}")
        execution = self.execution
        eager = self.eager_inner_loop(execution)

        def predict_task(sx, sy, qx, qy):
            adapted = self.adapt(sx, sy, steps, create_graph=False, eager=eager)
            return self.prediction(adapted, qx, qy)

        with torch.no_grad():  # torch.func.vjp still differentiates the inner loop
            return map_tasks(predict_task, batch.tensors(), execution)


def parameter_key(name: str) -> str:
    """A parameter's name as a key of an :class:`torch.nn.ParameterDict`, which may not contain
    dots (``"body.0.weight"`` → ``"body__0__weight"``): for meta-parameters kept per model
    parameter, such as learnt inner rates."""
    return name.replace(".", "__")


def check_head(learner: ModelAlgorithmLearner, prefix: str) -> list[str]:
    """Parameter names under ``prefix`` (the head), or a clear error if the model has none."""
    names = [n for n, _ in learner.model.named_parameters() if n.startswith(prefix + ".")]
    if not names:
        raise ZooError(
            f"{learner.name()} adapts only the head, but the model has no parameters under "
            f"{prefix!r}; name the final layer 'head' or set the hyperparameter head=NAME"
        )
    return names
