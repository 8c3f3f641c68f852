"""The meta-learner interface shared by both families (DESIGN §3–4)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from metazoo.config import LearnerConfig, build_config
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
