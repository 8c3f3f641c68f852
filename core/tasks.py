"""Tasks and task suites: the data side of the public plugin contract.

Besides tasks, a classification suite may offer *labelled batches*: examples of a split with
labels of the split's own classes, the minibatches of ordinary supervised training (see
:class:`TaskSuite`). A learner that trains on them instead of on tasks says so with the class
attribute ``trains_on = "labelled"`` (see :func:`trains_on`).

A suite may also say how a task turns the model into a loss (:meth:`TaskSuite.task_loss`) and
into what ``predict`` returns (:meth:`TaskSuite.task_prediction`): *played tasks*, such as
reinforcement learning, whose tensors encode the task and the random numbers of its rollouts
rather than examples and targets (see :func:`plays_tasks`). :func:`metazoo.rl.policy_gradient_surrogate`
is the REINFORCE loss with the linear feature baseline that the built-in RL suites use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from metazoo.errors import ZooError

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
Kind = Literal["classification", "regression", "reinforcement"]
#: The reported test metric of each kind of suite, and whether a higher value is better.
METRICS: dict[str, tuple[str, bool]] = {
    "classification": ("accuracy", True),
    "regression": ("mse", False),
    "reinforcement": ("return", True),
}


@dataclass(frozen=True)
class TaskBatch:
    """``T`` tasks of equal shape, stacked along the first dimension.

    ``support_x`` is ``[T, S, ...]``, ``support_y`` ``[T, S]`` (class labels ``0..n_way-1``)
    or ``[T, S, ...]`` (regression targets); ``query_x`` / ``query_y`` likewise with ``Q``.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    def __post_init__(self) -> None:
        sizes = {t.shape[0] for t in (self.support_x, self.support_y, self.query_x, self.query_y)}
        if len(sizes) != 1:
            raise ValueError(f"TaskBatch tensors disagree on the number of tasks: {sorted(sizes)}")
        if self.support_x.shape[:2] != self.support_y.shape[:2]:
            raise ValueError("support_x and support_y disagree on the number of support examples")
        if self.query_x.shape[:2] != self.query_y.shape[:2]:
            raise ValueError("query_x and query_y disagree on the number of query examples")

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, index: int | slice | torch.Tensor) -> TaskBatch:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return TaskBatch(*(t[index] for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.support_x, self.support_y, self.query_x, self.query_y

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TaskBatch:
        """Move to ``device``; ``dtype`` (if given) converts the floating-point inputs only."""

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return TaskBatch(*(move(t) for t in self.tensors()))

    @classmethod
    def cat(cls, batches: list[TaskBatch]) -> TaskBatch:
        """The tasks of ``batches``, in order, as one batch."""
        return cls(*(torch.cat(parts) for parts in zip(*(b.tensors() for b in batches))))

    def split(self, chunk_size: int) -> list[TaskBatch]:
        """Consecutive chunks of at most ``chunk_size`` tasks."""
        return [self[i : i + chunk_size] for i in range(0, self.num_tasks, chunk_size)]


@dataclass(frozen=True)
class LabelledBatch:
    """``B`` examples of one split with labels of the split's own classes: ``x`` is
    ``[B, ...]`` (one example's shape as in the suite's tasks), ``y`` ``[B]`` int64 in
    ``0..num_classes(split)-1``. What :meth:`TaskSuite.sample_labelled` returns and a learner
    with ``trains_on = "labelled"`` meta-trains on; ``x, y = batch`` unpacks it."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.y.dim() != 1 or self.x.shape[:1] != self.y.shape:
            raise ValueError(f"a LabelledBatch needs x [B, ...] and y [B], got {list(self.x.shape)} "
                             f"and {list(self.y.shape)}")

    def __len__(self) -> int:
        return self.y.shape[0]

    def __iter__(self):
        return iter(self.tensors())

    def __getitem__(self, index: int | slice | torch.Tensor) -> LabelledBatch:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return LabelledBatch(self.x[index], self.y[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LabelledBatch:
        """Move to ``device``; ``dtype`` (if given) converts the floating-point inputs only."""
        x = self.x.to(device=device, dtype=dtype) if dtype is not None and self.x.is_floating_point() \
            else self.x.to(device)
        return LabelledBatch(x, self.y.to(device))

    def split(self, chunk_size: int) -> list[LabelledBatch]:
        """Consecutive chunks of at most ``chunk_size`` examples."""
        return [self[i : i + chunk_size] for i in range(0, len(self), chunk_size)]


class TaskSuite(ABC):
    """A family of tasks. Subclasses set ``name`` and ``kind`` and implement two methods.

    ``sample(split, num_tasks, generator)`` must be a pure function of the generator's state:
    the same state gives the same tasks on any machine, so sample on the CPU.

    Optional capability, labelled batches: a classification suite whose tasks draw their classes
    from a fixed set of classes per split (Omniglot's characters, an image folder's classes)
    may also implement ``num_classes(split) -> int`` and ``sample_labelled(split, batch_size,
    generator) -> LabelledBatch``: ``batch_size`` examples of the split, labelled by the split's
    class ``0..num_classes(split)-1``, as pure a function of the generator's state as ``sample``
    (draw from :func:`split_stream`; refuse an unknown split). A class is what a task's label
    stands for, so the classes are those the suite's tasks draw from. A suite offers the
    capability by overriding both methods (:func:`offers_labelled_batches`); the defaults raise
    a :class:`metazoo.ZooError` naming the suite. Learners that pre-train a classifier on every
    training class (``trains_on = "labelled"``) need it; the harness runs them only on suites
    that offer it. Offering it must not change what ``sample`` returns.

    Played tasks: a suite whose tasks are not examples to fit but something to do (reinforcement
    learning: roll the policy out in the task's environment) overrides :meth:`task_loss`, and
    :meth:`task_prediction` for what is tested; the model-algorithm engine then adapts and
    meta-trains through these hooks, vectorised over tasks as for any suite. The task tensors
    encode the task and every random number its rollouts use (``x``: the task's parameters per
    episode, ``y``: pre-drawn noise), so that a loss is a pure function of the parameters and the
    tensors: the same tasks give every learner the same random numbers, and a ``vmap`` over
    tasks equals a loop. Such a suite has kind ``"reinforcement"`` (metric ``return``, higher is
    better) and a ``make_model()`` that maps observations to what its hooks read (for instance
    a Gaussian policy's mean and log standard deviation).
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]

    @abstractmethod
    def sample(self, split: Split, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        """Draw ``num_tasks`` tasks of ``split`` ("train", "val" or "test")."""

    @abstractmethod
    def make_model(self) -> torch.nn.Module:
        """The suite's default backbone, freshly initialised from torch's global RNG."""

    def num_classes(self, split: Split) -> int:
        """The number of classes of ``split`` that :meth:`sample_labelled` labels by (optional
        capability; the default refuses)."""
        raise no_labelled_batches(self)

    def sample_labelled(self, split: Split, batch_size: int, generator: torch.Generator) -> LabelledBatch:
        """``batch_size`` examples of ``split`` with their class labels ``0..num_classes(split)-1``
        (optional capability; the default refuses with a :class:`metazoo.ZooError`)."""
        raise no_labelled_batches(self)

    def task_loss(self, apply: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor:
        """The training loss (a scalar) of one task's support or query set ``x``, ``y`` (one task
        of a :class:`TaskBatch`, without the task dimension), where ``apply(inputs)`` runs the
        model with the task's current parameters. Default: the kind's loss of ``apply(x)``
        against ``y`` (:func:`task_loss`). A played suite overrides it; it runs under
        ``torch.func`` transforms (``vmap``, ``vjp``): no ``.item()``, no data-dependent Python
        control flow, no global RNG, and it must be differentiable in the parameters."""
        return task_loss(self.kind, apply(x), y)

    def task_prediction(self, apply: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                        y: torch.Tensor) -> torch.Tensor:
        """What ``predict`` returns for one task's queries ``x``, ``y`` with the adapted model
        ``apply``, from which :func:`task_metrics` scores the task. Default: ``apply(x)``; a
        reinforcement suite returns the return of each query episode, ``[Q]``."""
        return apply(x)

    def prepare(self) -> None:
        """Load or verify what the suite reads (a dataset) before any run starts; raise a
        :class:`metazoo.ZooError` saying what is missing and how to get it. Default: nothing."""
        return None

    @property
    def metric(self) -> str:
        """Name of the reported test metric: ``accuracy``, ``mse`` or ``return`` (:data:`METRICS`)."""
        return METRICS[self.kind][0]

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.kind][1]

    def protocol(self) -> dict:
        """The suite's settings that define its tasks (recorded and hashed with each run)."""
        config = getattr(self, "config", None)
        if config is None:
            return {}
        return {f.name: getattr(config, f.name) for f in fields(config)}


def offers_labelled_batches(suite: Any) -> bool:
    """Whether ``suite`` offers labelled batches: its class overrides
    :meth:`TaskSuite.sample_labelled` (a suite that does not subclass :class:`TaskSuite` offers
    them if it has the method)."""
    method = getattr(type(suite), "sample_labelled", None)
    return callable(method) and method is not TaskSuite.sample_labelled


def plays_tasks(suite: Any) -> bool:
    """Whether ``suite`` plays its tasks: its class overrides :meth:`TaskSuite.task_loss` (or,
    for a suite that does not subclass :class:`TaskSuite`, has a ``task_loss`` method)."""
    method = getattr(type(suite), "task_loss", None)
    return callable(method) and method is not TaskSuite.task_loss


def no_labelled_batches(suite: Any) -> ZooError:
    """The error of a suite that offers no labelled batches: which suite, why, what is needed."""
    name = getattr(suite, "name", type(suite).__name__)
    kind = getattr(suite, "kind", None)
    why = (f"a {kind} suite has no classes" if kind in ("regression", "reinforcement") else
           "it does not implement them")
    return ZooError(f"suite {name} offers no labelled batches ({why}): a learner that trains on labelled "
                    "batches needs a classification suite with a fixed set of classes per split that "
                    "implements TaskSuite.sample_labelled(split, batch_size, generator) and "
                    "num_classes(split), such as the built-in omniglot and images suites")


#: What a learner meta-trains on (its class attribute ``trains_on``): batches of tasks
#: (:class:`TaskBatch`, the default) or labelled batches (:class:`LabelledBatch`).
TRAINS_ON: tuple[str, ...] = ("tasks", "labelled")


def trains_on(learner: Any) -> str:
    """``"tasks"`` or ``"labelled"``: what ``learner`` (a learner, or its class or factory) meta-trains
    on, from its attribute ``trains_on`` (default ``"tasks"``). With ``"labelled"`` the harness
    calls ``meta_train_step`` with :class:`LabelledBatch` es of ``config.meta_batch`` examples
    drawn by the training suite's :meth:`TaskSuite.sample_labelled`, and tests it on tasks as
    every learner (``predict``)."""
    value = getattr(learner, "trains_on", "tasks")
    if value not in TRAINS_ON:
        raise ZooError(f"{getattr(learner, '__name__', type(learner).__name__)}: trains_on must be one of "
                       f"{', '.join(map(repr, TRAINS_ON))}, got {value!r}")
    return value


def task_loss(kind: Kind, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Training loss of one task (or any leading batch): cross-entropy or mean squared error."""
    if kind == "classification":
        return F.cross_entropy(prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1))
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return (prediction - target).square().mean()  # F.mse_loss's backward has no vmap rule
    return F.mse_loss(prediction, target)  # one fused operation each way: a plain loop's loss


def task_metrics(kind: Kind, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-task test metric ``[T]`` from predictions ``[T, Q, ...]``: accuracy, MSE, or for
    reinforcement the mean return of the query episodes (``prediction`` ``[T, Q]``; no target)."""
    if kind == "classification":
        return (prediction.argmax(-1) == target).float().mean(dim=1)
    if kind == "reinforcement":
        return prediction.flatten(1).mean(dim=1)
    return (prediction - target).pow(2).flatten(1).mean(dim=1)


def draw_distinct(generator: torch.Generator, rows: int, n: int, k: int) -> torch.Tensor:
    """``[rows, k]``: for each row, ``k`` distinct indices of ``0..n-1`` in random order."""
    keys = torch.rand(rows, n, generator=generator, dtype=torch.float64)
    return keys.argsort(dim=1, stable=True)[:, :k]


def split_stream(generator: torch.Generator, split: str) -> torch.Generator:
    """A generator of ``split``'s own, seeded by one draw from ``generator`` and the split: the
    same state of ``generator`` gives the same tasks, and two splits never share a stream."""
    check_split(split)
    draw = int(torch.randint(2**30, (), generator=generator))
    # torch's CPU generator keeps only the seed's low 32 bits: the split goes into the lowest two
    return torch.Generator().manual_seed(draw << 2 | SPLITS.index(split))


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
