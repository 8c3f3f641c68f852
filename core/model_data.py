"""Base class of model-data meta-learners: classify each task's queries from its support set
in a learnt embedding, with no inner loop of parameter updates.

A plugin overrides :meth:`ModelDataLearner.score`, which scores one task's query embeddings
against its support embeddings, and, if it is not trained by cross-entropy of those scores as
logits, :meth:`ModelDataLearner.objective`. The base class embeds each task's examples with the suite's
backbone (see :func:`embedding`), maps ``score`` over the tasks of a batch with
:mod:`metazoo.engine` (vectorised or looped), and trains the embedding by cross-entropy on the
query labels, pooling meta-gradients over chunks and processes.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from metazoo.config import PooledConfig
from metazoo.engine import map_tasks
from metazoo.errors import ZooError
from metazoo.learner import PooledMetaLearner
from metazoo.tasks import TaskBatch, TaskSuite, task_loss
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelDataConfig(PooledConfig):
    """Hyperparameters of a model-data meta-learner."""


def embedding(model: nn.Module) -> nn.Module:
    """The embedding network inside a backbone: ``model.body`` if it has one, else, for an
    :class:`torch.nn.Sequential` whose last layer is ``head``, the layers before ``head``.

    Both built-in backbones qualify: :class:`metazoo.models.Conv4` (its ``body``) and
    :class:`metazoo.models.MLP` (every layer but ``head``). The returned module shares its
    parameters with ``model``.
    """
    body = getattr(model, "body", None)
    if isinstance(body, nn.Module):
        return body
    if isinstance(model, nn.Sequential):
        names = [name for name, _ in model.named_children()]
        if len(names) > 1 and names[-1] == "head":
            return nn.Sequential(*list(model.children())[:-1])
    raise ZooError(
        f"model-data learners embed with the backbone's body, but {type(model).__name__} has "
        "neither a submodule 'body' nor is it an nn.Sequential whose last layer is 'head'"
    )


def embedded_shape(embed: nn.Module, x: Tensor) -> torch.Size:
    """The shape of one example's embedding by ``embed``, probed on the examples ``x`` in eval
    mode, so the running statistics of its batch norm (if any) are left as they are."""
    training = embed.training
    with torch.no_grad():
        shape = embed.eval()(x.to(next(embed.parameters()).dtype)).shape[1:]
    embed.train(training)
    return shape


def one_hot(labels: Tensor, n_way: int, dtype: torch.dtype) -> Tensor:
    """``[S]`` class labels → ``[S, n_way]`` one-hot rows (``vmap``-safe, unlike
    ``F.one_hot``, which inspects the labels' values)."""
    classes = torch.arange(n_way, device=labels.device)
    return (labels.unsqueeze(-1) == classes).to(dtype)


class ModelDataLearner(PooledMetaLearner):
    """Learns an embedding in which a task's support set classifies its queries directly.

    Only classification suites are accepted. Each task's support and query images go through
    the embedding in one forward pass, so batch statistics (see
    :class:`metazoo.models.BatchStatNorm`) are those of the task's whole episode, as in the
    Prototypical Networks reference code; tasks never share statistics, since the embedding is
    mapped over tasks like a model-algorithm learner's inner loop.
    """

    family: ClassVar[str] = "model-data"
    per_task_weights: ClassVar[bool] = False  # one embedding for every task
    Config: ClassVar[type[ModelDataConfig]] = ModelDataConfig
    config: ModelDataConfig

    def __init__(self, model: nn.Module, suite: TaskSuite, **hyperparameters) -> None:
        if suite.kind != "classification":
            raise ZooError(
                f"{self.name()} is a model-data learner: it classifies queries by their support "
                f"set and needs a classification suite, but {suite.name} is a {suite.kind} suite"
            )
        super().__init__(model, suite, **hyperparameters)
        # Not a registered submodule: its parameters are checkpointed once, under ``model``.
        self.__dict__["embed"] = embedding(model)

    # -- what a plugin overrides ----------------------------------------------------------------

    @abstractmethod
    def score(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        """Logits ``[Q, n_way]`` of one task's queries, from support embeddings ``[S, D]`` with
        labels ``[S]`` (``0..n_way-1``) and query embeddings ``[Q, D]``. Cross-entropy of these
        logits on the query labels is the training loss. Runs under ``torch.vmap``: no
        data-dependent Python control flow and no ``.item()``."""

    def objective(self, scores: Tensor, labels: Tensor, n_way: int) -> Tensor:
        """The training loss of query scores ``[T, Q, n_way]`` against labels ``[T, Q]``, the
        mean over all queries: cross-entropy of the scores as logits, unless overridden."""
        return task_loss("classification", scores, labels)

    def embedding_shape(self, suite: TaskSuite) -> torch.Size:
        """The shape of one example's embedding, from one task of ``suite`` (for learners whose
        own modules depend on it); the model's running statistics, if any, are left as they are."""
        return embedded_shape(self.embed, suite.sample("train", 1, torch.Generator().manual_seed(0)).support_x[0])

    def embedding_size(self, suite: TaskSuite) -> int:
        """The number of features of one example's embedding (see :meth:`embedding_shape`)."""
        return math.prod(self.embedding_shape(suite))

    # -- the engine -----------------------------------------------------------------------------

    def logits(self, batch: TaskBatch, n_way: int | None = None) -> Tensor:
        """Logits ``[T, Q, n_way]`` of every task's queries (``n_way`` read from the labels
        unless given)."""
        n_way = n_way or int(batch.support_y.max()) + 1

        def task_logits(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
            z = self.embed(torch.cat([sx, qx]))  # [S + Q, D]: one episode, one set of statistics
            support, query = z[: sx.shape[0]], z[sx.shape[0] :]
            return self.score(support, sy, query, n_way)  # [Q, n_way]

        return map_tasks(task_logits, batch.tensors(), self.execution)

    def chunk_objective(self, chunk: TaskBatch) -> tuple[Tensor, Tensor]:
        """Sum over the chunk's tasks of each task's query loss."""
        # The objective averages over all T·Q queries; each task has Q, so ×T sums per-task means.
        n_way = self.__dict__.get("_train_n_way")
        logits = self.logits(chunk, n_way)
        total = self.objective(logits, chunk.query_y, n_way or logits.shape[-1]) * chunk.num_tasks
        return total, total

    def meta_train_step(self, batch: TaskBatch) -> dict[str, float]:
        # The way is read from the labels here, eagerly: the compiled step cannot read data.
        self.__dict__["_train_n_way"] = int(batch.support_y.max()) + 1
        return super().meta_train_step(batch)

    def predict(self, batch: TaskBatch) -> Tensor:
        self.eval()
        with torch.no_grad():
            return self.logits(batch)
