"""The meta-learner interface shared by both families."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from metazoo.config import LearnerConfig, PooledConfig, build_config
from metazoo.engine import GradientPool, choose_execution
from metazoo.tasks import TaskBatch, TaskSuite
from torch import nn


class MetaLearner(nn.Module, ABC):
    """A meta-learner, built by ``factory(model, suite, **hyperparameters)``.

    It owns its model, its meta-parameters and its outer optimiser. ``state_dict()`` /
    ``load_state_dict()`` (from :class:`torch.nn.Module`) checkpoint the meta-parameters;
    ``.to(device)`` moves them.
    """

    family: ClassVar[str]
    Config: ClassVar[type[LearnerConfig]] = LearnerConfig

    def __init__(self, model: nn.Module, suite: TaskSuite, **hyperparameters: Any) -> None:
        super().__init__()
        self.config = build_config(type(self).Config, hyperparameters, f"algorithm {self.name()}")
        self.model = model
        self.kind = suite.kind

    @classmethod
    def name(cls) -> str:
        """Name used in messages (the class name in lower case)."""
        return cls.__name__.lower()

    @abstractmethod
    def meta_train_step(self, batch: TaskBatch) -> dict[str, float]:
        """One outer update on ``batch``; returns scalar diagnostics, at least ``loss``."""

    @abstractmethod
    def predict(self, batch: TaskBatch) -> torch.Tensor:
        """Adapt to each task's support set and predict its queries: ``[T, Q, n_way]`` logits
        or ``[T, Q, ...]`` values. Builds no graph for the outer gradient."""

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The outer optimiser over all meta-parameters, from ``outer_optimizer``/``outer_lr``."""
        if self.config.outer_optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.config.outer_lr)
        return torch.optim.Adam(self.parameters(), lr=self.config.outer_lr)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if "_optimizer" not in self.__dict__:  # built lazily: after .to(device) and plugin setup
            self.__dict__["_optimizer"] = self.make_optimizer()
        return self.__dict__["_optimizer"]


class PooledMetaLearner(MetaLearner):
    """A meta-learner whose outer step follows the mean of per-task gradients, pooled over
    chunks of the meta-batch (``chunk_size``) and over data-parallel processes.
    Subclasses say how one chunk's summed gradient is computed."""

    Config: ClassVar[type[PooledConfig]] = PooledConfig
    config: PooledConfig
    #: Whether each task runs the model on weights of its own (an inner loop); decides the
    #: execution rule of :func:`metazoo.engine.choose_execution`.
    per_task_weights: ClassVar[bool] = True

    @property
    def execution(self) -> str:
        """``"vmap"`` or ``"loop"``: the ``execution`` setting resolved for this model and device."""
        device = next(self.parameters()).device
        return choose_execution(self.config.execution, self.model, device, self.per_task_weights)

    @abstractmethod
    def chunk_meta_gradient(self, chunk: TaskBatch) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        """Sums over the chunk's tasks of each meta-parameter's gradient (in ``parameters()``
        order; ``None`` for an unused one) and of the loss."""

    def meta_gradient(self, batch: TaskBatch) -> float:
        """Write the mean gradient over ``batch`` (pooled over chunks and processes) into
        ``p.grad`` of every meta-parameter; return the mean loss."""
        self.train()
        pool = GradientPool(list(self.parameters()))
        size = self.config.chunk_size
        for chunk in batch.split(size) if size and size < batch.num_tasks else [batch]:
            grads, loss_sum = self.chunk_meta_gradient(chunk)
            pool.add(grads, loss_sum, chunk.num_tasks)
        pool.all_reduce()
        return pool.apply()

    def meta_train_step(self, batch: TaskBatch) -> dict[str, float]:
        loss = self.meta_gradient(batch)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss}
