"""Baseline (Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot Classification", ICLR 2019,
§3.1): pre-train a classifier on every training class, then fit a new head to each task.

Training stage: the backbone's embedding f_θ and a linear classifier C(· | W_b) over all C_b
training classes, logits W_bᵀ f_θ(x) + b, are trained from scratch by cross-entropy on ordinary
minibatches of (example, class) pairs: the learner trains on labelled batches
(``trains_on = "labelled"``, :meth:`metazoo.TaskSuite.sample_labelled`), ``meta_batch``
examples a step: batch size 16, Adam at 10⁻³ (§4.1; ``train.py`` of the authors' code).

Fine-tuning stage, at test time: for each task f_θ is frozen, a new linear head over the task's
N classes is trained by cross-entropy on the support set's embeddings, and it classifies the
queries. The settings are the authors' code's (wyharveychen/CloserLookFewShot,
``methods/baselinefinetune.py``): SGD at learning rate 0.01, momentum 0.9, dampening 0.9,
weight decay 0.001, minibatches of 4 support examples, 100 passes over the support set in a
new random order each (the paper's 100 iterations at batch size 4, §4.1, are passes over the
support in the code), heads initialised as a fresh ``torch.nn.Linear``. :func:`fit_heads` fits the heads of every task of a
batch at once, with batched matrix products; it equals one ``torch.optim.SGD`` per task.

The head's initial values and the support orders are drawn from a generator seeded by
``finetune_seed`` and shared by the tasks (each task's labels and support order are already
random), so predictions are a pure function of the learner's state and the task: the same for
any batching of the test tasks and after a ``state_dict`` round trip.

Each task's support and queries are embedded in one forward pass, as by the model-data learners
(with the default backbone's per-batch normalisation, by the episode's statistics; with
``conv4-running-bn``, by the running statistics, as the authors' code).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import metazoo
import torch
import torch.nn.functional as F
from metazoo import (
    GradientPool,
    LabelledBatch,
    Params,
    PooledConfig,
    PooledMetaLearner,
    TaskBatch,
    ZooError,
    embedded_shape,
    embedding,
    map_tasks,
    offers_labelled_batches,
    positive,
)
from torch import Tensor, nn

PAPER = ("Chen, Liu, Kira, Wang & Huang. A Closer Look at Few-shot Classification. ICLR 2019 "
         "(Baseline, §3.1)")



@dataclass(frozen=True)
class BaselineConfig(PooledConfig):
    """Pre-training and fine-tuning settings (Chen et al. 2019, §4.1, and the authors' code)."""

    meta_batch: int = 16  # labelled examples per pre-training step: batch size 16 (§4.1)
    outer_lr: float = 1e-3  # Adam at 10⁻³ (§4.1)
    outer_optimizer: Literal["adam", "sgd"] = "adam"
    finetune_epochs: int = 100  # passes over each task's support set (the paper's 100 iterations)
    finetune_batch: int = 4  # support examples per SGD step (§4.1)
    finetune_lr: float = 0.01  # the authors' code, baselinefinetune.py
    finetune_momentum: float = 0.9  # ibid.
    finetune_dampening: float = 0.9  # ibid.
    finetune_weight_decay: float = 0.001  # ibid.
    finetune_seed: int = 0  # seeds the new heads' initial values and the support orders

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "finetune_epochs", "finetune_batch", "finetune_lr")
        for name in ("finetune_momentum", "finetune_dampening"):
            if not 0 <= getattr(self, name) <= 1:
                raise ZooError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.finetune_weight_decay < 0:
            raise ZooError(f"finetune_weight_decay must be >= 0, got {self.finetune_weight_decay!r}")


# -- the maths -----------------------------------------------------------------------------------


def linear_logits(params: Params, z: Tensor) -> Tensor:
    """``z W_bᵀ + b``: logits ``[..., B, N]`` of embeddings ``z [..., B, D]`` by the heads
    ``weight [..., N, D]``, ``bias [..., N]`` (leading dimensions: one head per task)."""
    return z @ params["weight"].transpose(-1, -2) + params["bias"].unsqueeze(-2)


def uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator | None = None) -> Tensor:
    """A tensor of ``shape`` from U(−bound, bound), from ``generator`` or torch's global RNG."""
    return (2 * torch.rand(shape, generator=generator) - 1) * bound


def sgd_update(params: Params, grads: Params, buffers: Params, *, lr: float, momentum: float,
               dampening: float, weight_decay: float) -> tuple[Params, Params]:
    """One step of ``torch.optim.SGD`` (not Nesterov) on every tensor of ``params``: g ← ∇ + λp;
    the momentum buffer starts at the first g, then b ← μb + (1 − dampening)g; p ← p − lr·b."""
    new, moved = {}, {}
    for name, p in params.items():
        g = grads[name] + weight_decay * p if weight_decay else grads[name]
        if momentum:
            g = g if name not in buffers else momentum * buffers[name] + (1 - dampening) * g
            moved[name] = g
        new[name] = p - lr * g
    return new, moved


def fit_heads(logits: Callable[[Params, Tensor], Tensor], init: Params, support: Tensor, labels: Tensor,
              orders: Tensor, *, batch_size: int, lr: float, momentum: float = 0.0, dampening: float = 0.0,
              weight_decay: float = 0.0) -> Params:
    """Fine-tune the heads of ``T`` tasks at once by minibatch SGD on their support sets.

    ``init`` holds each task's initial head (tensors ``[T, ...]``), ``support`` the support
    embeddings ``[T, S, D]`` (fixed: the backbone is frozen), ``labels`` ``[T, S]``; ``orders``
    ``[E, S]`` is the order of the support set in each of ``E`` passes, cut into minibatches of
    ``batch_size`` (the last may be smaller). Each step minimises every task's cross-entropy
    mean over its minibatch, ``logits(params, z)`` giving ``[T, b, N]``; the gradient of their
    sum is each task's own, as the tasks share no parameter. The SGD step is
    :func:`sgd_update`'s. Returns the fitted heads, detached.
    """
    params = {n: p.detach() for n, p in init.items()}
    buffers: Params = {}
    size = support.shape[1]
    for order in orders:
        for start in range(0, size, batch_size):
            index = order[start : start + batch_size]
            z, y = support[:, index], labels[:, index]  # [T, b, D], [T, b]
            with torch.enable_grad():
                leaves = {n: p.requires_grad_(True) for n, p in params.items()}
                scores = logits(leaves, z)  # [T, b, N]
                loss = F.cross_entropy(scores.flatten(0, 1), y.flatten(), reduction="sum") / len(index)
                grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
            with torch.no_grad():
                params, buffers = sgd_update(params, grads, buffers, lr=lr, momentum=momentum,
                                             dampening=dampening, weight_decay=weight_decay)
    return params


# -- the learner -----------------------------------------------------------------------------------


class Baseline(PooledMetaLearner):
    """A linear classifier over every training class, pre-trained with the embedding on labelled
    batches; at test, a new linear head fitted to each task's support set on frozen embeddings."""

    family = "model-data"
    trains_on = "labelled"
    per_task_weights = False  # one embedding for every task
    Config = BaselineConfig
    config: BaselineConfig

    def __init__(self, model: nn.Module, suite, **hyperparameters) -> None:
        if suite.kind != "classification" or not offers_labelled_batches(suite):
            why = (f"suite {suite.name} is a {suite.kind} suite" if suite.kind != "classification"
                   else f"suite {suite.name} offers none")
            raise ZooError(f"{self.name()} pre-trains a classifier on every training class, so it trains on "
                           "labelled batches and needs a classification suite that offers them "
                           f"(TaskSuite.sample_labelled and num_classes, as omniglot and images do), but {why}")
        super().__init__(model, suite, **hyperparameters)
        # Not a registered submodule: its parameters are checkpointed once, under ``model``.
        self.__dict__["embed"] = embedding(model)
        self.training_classes = suite.num_classes("train")
        self.classifier = nn.ParameterDict(self.init_classifier(self.training_classes, self.embedding_size(suite)))

    # -- what Baseline++ overrides -----------------------------------------------------------------

    def init_head(self, classes: int, dim: int, generator: torch.Generator | None = None) -> Params:
        """A new head's initial values, as ``torch.nn.Linear(dim, classes)``'s: weight and bias
        from U(−1/√dim, 1/√dim)."""
        bound = 1 / math.sqrt(dim)
        return {"weight": uniform((classes, dim), bound, generator), "bias": uniform((classes,), bound, generator)}

    def init_classifier(self, classes: int, dim: int) -> Params:
        """The pre-training classifier: a linear layer whose bias starts at 0 (the authors' code)."""
        params = self.init_head(classes, dim)
        return {**params, "bias": torch.zeros(classes)}

    def head_logits(self, params: Params, z: Tensor) -> Tensor:
        """Logits ``[..., B, N]`` of embeddings ``z [..., B, D]`` by heads ``params``."""
        return linear_logits(params, z)

    # -- pre-training ------------------------------------------------------------------------------

    def embedding_size(self, suite) -> int:
        """The size of one example's embedding, probed on a labelled batch of ``suite``."""
        return math.prod(embedded_shape(self.embed, suite.sample_labelled("train", 2, torch.Generator().manual_seed(0)).x))

    def chunk_objective(self, chunk: LabelledBatch) -> tuple[Tensor, Tensor]:
        """Sum over the chunk's examples of the cross-entropy of the classifier's logits."""
        logits = self.head_logits(dict(self.classifier.items()), self.embed(chunk.x))  # [B, C_b]
        total = F.cross_entropy(logits, chunk.y, reduction="sum")
        return total, total

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`chunk_objective` of these examples (what the compiled step calls)."""
        return self.chunk_objective(LabelledBatch(x, y))

    def meta_gradient(self, batch: LabelledBatch) -> float:
        """The mean gradient over the batch's examples, pooled over chunks of ``chunk_size``
        examples and over data-parallel processes (each holding its share of the examples); with
        per-batch normalisation a chunk or a share is normalised by its own statistics."""
        self.train()
        pool = GradientPool(list(self.parameters()))
        size = self.config.chunk_size
        for chunk in batch.split(size) if size and size < len(batch) else [batch]:
            grads, loss_sum = self.chunk_meta_gradient(chunk)
            pool.add(grads, loss_sum, len(chunk))
        pool.all_reduce()
        return pool.apply()

    def meta_train_step(self, batch: LabelledBatch) -> dict[str, float]:
        if not isinstance(batch, LabelledBatch):
            raise ZooError(f"{self.name()} trains on labelled batches (trains_on = 'labelled'): meta_train_step "
                           f"takes a metazoo.LabelledBatch, got {type(batch).__name__}")
        if int(batch.y.max()) >= self.training_classes:
            raise ZooError(f"{self.name()}: label {int(batch.y.max())} in a labelled batch, but the classifier "
                           f"was built for the suite's {self.training_classes} training classes")
        return super().meta_train_step(batch)

    # -- fine-tuning at test time ---------------------------------------------------------------------

    def embed_tasks(self, batch: TaskBatch) -> tuple[Tensor, Tensor]:
        """Support ``[T, S, D]`` and query ``[T, Q, D]`` embeddings, each task in one pass."""

        def episode(sx: Tensor, qx: Tensor) -> tuple[Tensor, Tensor]:
            z = self.embed(torch.cat([sx, qx]))
            return z[: sx.shape[0]], z[sx.shape[0] :]

        return map_tasks(episode, (batch.support_x, batch.query_x), self.execution)

    def finetune(self, support: Tensor, labels: Tensor, n_way: int) -> Params:
        """Every task's new head, fitted to its support embeddings ``[T, S, D]`` (§3.1)."""
        c = self.config
        tasks, size, dim = support.shape
        generator = torch.Generator().manual_seed(c.finetune_seed)
        init = self.init_head(n_way, dim, generator)  # the same start for every task
        orders = torch.stack([torch.randperm(size, generator=generator) for _ in range(c.finetune_epochs)])
        init = {n: p.to(support).expand(tasks, *p.shape) for n, p in init.items()}
        return fit_heads(self.head_logits, init, support, labels, orders.to(support.device),
                         batch_size=c.finetune_batch, lr=c.finetune_lr, momentum=c.finetune_momentum,
                         dampening=c.finetune_dampening, weight_decay=c.finetune_weight_decay)

    def predict(self, batch: TaskBatch) -> Tensor:
        self.eval()
        n_way = int(batch.support_y.max()) + 1
        with torch.no_grad():
            support, query = self.embed_tasks(batch)
        heads = self.finetune(support, batch.support_y, n_way)
        with torch.no_grad():
            return self.head_logits(heads, query)  # [T, Q, N]


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("baseline", Baseline, family="model-data", paper=PAPER,
                 summary="pre-train a linear classifier on all training classes; fit a new head per task")
