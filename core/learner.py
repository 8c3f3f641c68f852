"""The meta-learner interface shared by both families."""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from metazoo import functional_optim
from metazoo.config import LearnerConfig, PooledConfig, build_config
from metazoo.engine import GradientPool, choose_execution
from metazoo.errors import ZooError
from metazoo.models import has_convolutions, has_running_statistics
from metazoo.tasks import TaskBatch, TaskSuite
from torch import nn

#: Compiled variants of the outer step one process may hold: every built-in algorithm on a few
#: protocols (a ``zoo bench`` of many algorithms, or the test suite).
COMPILED_VARIANTS = 64


class MetaLearner(nn.Module, ABC):
    """A meta-learner, built by ``factory(model, suite, **hyperparameters)``.

    It owns its model, its meta-parameters and its outer optimiser. ``state_dict()`` /
    ``load_state_dict()`` (from :class:`torch.nn.Module`) checkpoint the meta-parameters;
    ``.to(device)`` moves them.

    What ``MetaLearner.__init__(model=None, suite=None, **hyperparameters)`` does: initialises
    the :class:`torch.nn.Module`; builds ``self.config`` from ``hyperparameters`` with the
    class's ``Config`` dataclass (an unknown or ill-typed one is a clear error; with none, the
    defaults); and, when given, stores ``model`` as ``self.model`` and the suite's kind as
    ``self.kind``. A subclass with an ``__init__`` of its own may call ``super().__init__()``
    with no arguments, as any torch module does, and set its model itself; the harness reads
    ``config.meta_batch`` (tasks per outer step) and the hyperparameters it records from
    ``config``, so such a subclass declares its own settings in a ``Config`` subclass of
    :class:`metazoo.config.LearnerConfig` and passes them to ``super().__init__(**hp)``.
    """

    family: ClassVar[str]
    Config: ClassVar[type[LearnerConfig]] = LearnerConfig
    #: Set by the harness for a run of a long budget (:data:`metazoo.run.LONG_RUN`): set-up
    #: work that pays back only over many steps (compiling the outer step) is worth doing.
    long_run: bool = False

    def __init__(self, model: nn.Module | None = None, suite: TaskSuite | None = None,
                 **hyperparameters: Any) -> None:
        super().__init__()
        self.config = build_config(type(self).Config, hyperparameters, f"algorithm {self.name()}")
        if model is not None:
            self.model = model
        if suite is not None:
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

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        """The outer rate's schedule from ``lr_schedule`` (None: constant); step it after each
        outer step (:meth:`PooledMetaLearner.meta_train_step` does)."""
        config = self.config
        if config.lr_schedule == "constant":
            return None
        if "_scheduler" not in self.__dict__:
            if config.lr_schedule == "step":
                built = torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_step_every, config.lr_gamma)
            elif config.lr_schedule == "cosine":
                built = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, config.lr_anneal_steps)
            else:  # linear, to 0 after lr_anneal_steps, then 0
                built = torch.optim.lr_scheduler.LinearLR(self.optimizer, 1.0, 0.0, config.lr_anneal_steps)
            self.__dict__["_scheduler"] = built
        return self.__dict__["_scheduler"]


class PooledMetaLearner(MetaLearner):
    """A meta-learner whose outer step follows the mean of per-task gradients, pooled over
    chunks of the meta-batch (``chunk_size``) and over data-parallel processes.
    Subclasses say what one chunk's summed objective is (:meth:`chunk_objective`).

    With ``compile = true`` the whole outer step — the objective over every chunk, its
    gradient by ``torch.func.grad``, the pooling and the optimiser update — is one function
    compiled by ``torch.compile(fullgraph=True)`` (see :mod:`metazoo.functional_optim`). It is
    compiled on the first step (its time is reported as ``compile_s``) and reused while the
    meta-batch keeps its shapes; a learner that cannot be compiled falls back to the eager step
    with one warning. Data-parallel training always takes the eager step. Learners of one class
    and configuration share the compiled code within a process; other classes, hyperparameters
    or shapes compile variants of their own, of the same function, so the first compilation
    raises torch's limit on variants per function (``torch._dynamo.config.recompile_limit``, 8 by
    default, beyond which a full-graph compilation fails) to :data:`COMPILED_VARIANTS`.
    """

    Config: ClassVar[type[PooledConfig]] = PooledConfig
    config: PooledConfig

    def __init__(self, model: nn.Module | None = None, suite: TaskSuite | None = None,
                 **hyperparameters: Any) -> None:
        super().__init__(model, suite, **hyperparameters)
        if model is not None and has_running_statistics(model):
            for setting, value in (("execution", "vmap"), ("compile", True)):
                if getattr(self.config, setting) == value:
                    raise ZooError(
                        f"algorithm {self.name()}: {setting} = {value!r} cannot update the running "
                        "statistics of the model's batch norm (each task's forward pass updates them "
                        "in place, in turn); use execution = 'loop' or 'auto' and compile = false, "
                        "or a backbone with per-batch statistics")
    #: Whether each task runs the model on weights of its own (an inner loop); decides the
    #: execution rule of :func:`metazoo.engine.choose_execution`.
    per_task_weights: ClassVar[bool] = True

    @property
    def execution(self) -> str:
        """``"vmap"`` or ``"loop"``: the ``execution`` setting resolved for this model and device.
        Inside the compiled step ``"auto"`` is always ``"vmap"``: compiling a loop over the tasks
        would unroll it (issue 8 reports that 32 unrolled copies of conv4 did not compile in 10
        minutes)."""
        if self.config.execution == "auto" and self.__dict__.get("_functional"):
            return "vmap"
        device = next(self.parameters()).device
        return choose_execution(self.config.execution, self.model, device, self.per_task_weights)

    @property
    def compiles(self) -> bool:
        """Whether the outer step is compiled: the ``compile`` setting, where ``"auto"`` means
        yes for a long run (the harness says so, :data:`metazoo.run.LONG_RUN`) on a model whose
        compiled step the speed benchmarks measured faster on a CPU (``results/speed.md``):
        one without convolutions (the sinusoid MLPs: 29-50× the per-task loop), or with
        convolutions on weights shared by all tasks (ProtoNet's conv4: 1.5×); not convolutions
        on per-task weights (MAML's conv4: 0.9×), nor batch norm with running statistics."""
        if self.config.compile != "auto":
            return self.config.compile
        if "_compile_pays" not in self.__dict__:  # the model's layers: asked once, not every step
            self.__dict__["_compile_pays"] = not has_running_statistics(self.model) and not (
                has_convolutions(self.model) and self.per_task_weights)
        return self.long_run and self.__dict__["_compile_pays"]

    @abstractmethod
    def chunk_objective(self, chunk: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(objective, loss)``: the sum over the chunk's tasks of the objective whose gradient
        in the meta-parameters is the meta-gradient, and of the reported training loss (the
        same tensor for most learners). Runs under ``torch.func`` transforms and
        ``torch.compile``: no ``.item()``, no in-place changes of meta-parameters."""

    def forward(self, support_x, support_y, query_x, query_y) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`chunk_objective` of these tasks (what ``torch.func.functional_call`` runs)."""
        return self.chunk_objective(TaskBatch(support_x, support_y, query_x, query_y))

    def chunk_meta_gradient(self, chunk: TaskBatch) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        """Sums over the chunk's tasks of each meta-parameter's gradient (in ``parameters()``
        order; ``None`` for an unused one) and of the loss, by eager autograd."""
        objective, loss = self.chunk_objective(chunk)
        grads = torch.autograd.grad(objective, list(self.parameters()), allow_unused=True)
        return list(grads), loss.detach()

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
        scheduler = self.scheduler  # built before the optimiser's first step, as torch expects
        stats = None
        if self.compiles and not _distributed() and not self.__dict__.get("_compile_failed"):
            stats = self._compiled_train_step(batch)
        if stats is None:
            stats = {"loss": self.meta_gradient(batch)}
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            with warnings.catch_warnings():  # the compiled step updates without optimizer.step()
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                scheduler.step()
        return stats

    def _functional_step(self, params, state, tensors):
        """One outer step, the function that is compiled: the mean meta-gradient over the chunks
        of ``tensors`` (a meta-batch), then the optimiser's update, written into ``params`` (the
        meta-parameters' own storage) and ``state`` (the optimiser's tensors) in place, which
        inductor does in its own kernels. Returns the mean loss."""
        kind = self.__dict__["_optimizer_kind"]
        names = list(params)
        size = self.config.chunk_size or tensors[0].shape[0]
        total = tensors[0].shape[0]
        grad_sums, loss_sum = None, 0.0
        for start in range(0, total, size):  # a static loop: the meta-batch size is fixed
            chunk = tuple(t[start : start + size] for t in tensors)

            def objective(p, chunk=chunk):  # (objective, loss): grad of the first, the second as aux
                return torch.func.functional_call(self, p, chunk)

            grads, loss = torch.func.grad(objective, has_aux=True)(params)
            grad_sums = grads if grad_sums is None else {n: grad_sums[n] + grads[n] for n in names}
            loss_sum = loss_sum + loss
        mean = [grad_sums[n] / total for n in names]
        new, new_state = functional_optim.update(kind, [params[n] for n in names], mean, state)
        for name, value in zip(names, new):
            params[name].copy_(value)
        functional_optim.copy_state_(state, new_state)
        return loss_sum / total

    def _compiled_train_step(self, batch: TaskBatch) -> dict[str, float] | None:
        """The compiled outer step; None (after one warning) if this learner cannot be compiled."""
        first = "_compiled" not in self.__dict__
        try:
            if first:
                config = torch._dynamo.config
                config.recompile_limit = max(config.recompile_limit, COMPILED_VARIANTS)
                self.__dict__["_optimizer_kind"] = functional_optim.check_supported(self.optimizer)
                self.__dict__["_compiled"] = torch.compile(self._functional_step, fullgraph=True, dynamic=False)
            named = list(self.named_parameters())
            state = functional_optim.state_tensors(
                self.optimizer, self.__dict__["_optimizer_kind"], [p for _, p in named])
            tensors = batch.tensors()
            self.train()
            started = time.perf_counter()
            self.__dict__["_functional"] = True  # the inner loop runs under torch.func transforms
            try:
                with torch.no_grad():  # the update writes into the parameters' storage
                    loss = self.__dict__["_compiled"]({n: p.detach() for n, p in named}, state, tensors)
            finally:
                self.__dict__["_functional"] = False
            loss = loss.item()
            elapsed = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - any failure to compile means: run eagerly
            self.__dict__["_compile_failed"] = True
            warnings.warn(f"{self.name()}: the compiled meta-step failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); using the eager step",
                          stacklevel=2)
            return None
        return {"loss": loss, "compile_s": elapsed} if first else {"loss": loss}


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()
