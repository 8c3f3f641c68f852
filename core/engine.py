"""The functional engine: run a per-task function over the tasks of a batch, and pool
meta-gradients over chunks (and processes) before the outer update.

Execution rule (``execution="auto"``): ``vmap`` everywhere except where each task runs a model
with convolutions on its own weights on a CPU (the inner loop of a model-algorithm learner),
and for models that keep running statistics (:class:`metazoo.models.RunningBatchNorm`, which
every task's forward pass updates in place, in turn), where ``loop``. Under ``vmap`` a convolution with per-task weights over T tasks becomes one
grouped convolution, which PyTorch's CPU kernels run about 2× slower than T separate
convolutions (second-order MAML with conv4 on this project's 2-core machine: 0.49× the loop,
``results/speed.md``); on CUDA the batched form is expected to be many times faster (not
measured here: no GPU). With weights shared by all tasks (model-data learners) ``vmap`` folds the
tasks into the convolution's batch dimension, which is faster than a loop on every device, as
are fully connected models.

Performance notes (``python -m metazoo.benchmarks.speed``; tables in ``results/speed.md``):

- For small models a step costs per operation more than per flop: second-order MAML on the
  sinusoid MLP runs about 730 operations per meta-batch whatever its size (a per-task loop runs
  about 530 per task), each dearer than in eager code because it is dispatched through the
  ``vmap`` and ``vjp`` levels. Inner-loop gradients under ``vmap`` therefore use
  ``torch.func.vjp`` rather than ``torch.func.grad``: vjp's backward runs after its level has
  closed, so it is not dispatched and recorded there as well (bit-identical values; steps 2–9 %
  faster). A first-order inner gradient builds no graph at all (first-order MAML steps 12 %
  faster). The per-task loop, outside any ``torch.func`` transform, takes plain
  ``torch.autograd.grad`` instead, as a hand-written loop does (the vjp level cost it a third
  of its speed).
- The compiled outer step (``compile = true``, :class:`metazoo.learner.PooledMetaLearner`)
  removes the per-operation cost altogether: one ``torch.compile(fullgraph=True)`` function
  holds the objective, its gradient by ``torch.func.grad``, the pooling and the optimiser
  update, with no eager autograd at all; inside it ``execution="auto"`` is ``vmap``.
- :class:`GradientPool` keeps the first chunk's gradients rather than adding them into
  zero-filled buffers, and counts tasks in Python: an unchunked step allocates nothing extra
  and reads one number back from the device (the loss).
- Threads: the engine leaves torch's thread settings alone (``zoo bench --threads`` sets them,
  1 by default). On a 2-core machine shared with other jobs, two intra-op threads made steps of
  these small models 1.5 to 16 times slower than one thread, for the engine and a per-task loop
  alike (OpenMP workers wait for a descheduled peer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from metazoo.models import has_convolutions, has_running_statistics
from torch import nn


def choose_execution(
    execution: str, model: nn.Module, device: torch.device, per_task_weights: bool = True
) -> str:
    """Resolve ``"auto"`` to ``"vmap"`` or ``"loop"`` by the rule in the module docstring;
    ``per_task_weights`` says whether each task runs the model on weights of its own."""
    if execution != "auto":
        return execution
    if has_running_statistics(model):
        return "loop"  # each task's forward pass updates the running statistics in turn
    return "loop" if per_task_weights and has_convolutions(model) and device.type == "cpu" else "vmap"


def map_tasks(fn: Callable[..., Any], tensors: Sequence[torch.Tensor], execution: str) -> Any:
    """``stack([fn(*(t[i] for t in tensors)) for i in range(T)])``, vectorised with ``vmap``
    when ``execution == "vmap"``. ``fn`` returns a tensor, or a tuple or dict of tensors, and
    may close over (unbatched) meta-parameters."""
    if execution == "vmap":
        return torch.vmap(fn, randomness="different")(*tensors)
    return _stack([fn(*task) for task in zip(*tensors)])


def _stack(outputs: list[Any]) -> Any:
    first = outputs[0]
    if isinstance(first, dict):
        return {key: _stack([out[key] for out in outputs]) for key in first}
    if isinstance(first, tuple):
        return tuple(_stack(list(parts)) for parts in zip(*outputs))
    return torch.stack(outputs)


class GradientPool:
    """Sums of meta-gradients (and losses) over chunks of a meta-batch, and over processes when
    ``torch.distributed`` is initialised; ``apply()`` writes the mean over all tasks.

    The first chunk's gradients are kept as they are (no zero-filled buffers to add them into);
    later chunks are added out of place, so a tensor passed to :meth:`add` is never modified.
    """

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        self.grad_sums: list[torch.Tensor | None] = [None] * len(self.params)
        self.tasks = 0
        self.loss_sum: torch.Tensor | None = None  # float64

    def add(self, grad_sums: Sequence[torch.Tensor | None], loss_sum: torch.Tensor, tasks: int) -> None:
        for i, grad in enumerate(grad_sums):
            if grad is not None:
                pooled = self.grad_sums[i]
                self.grad_sums[i] = grad if pooled is None else pooled + grad
        loss = loss_sum.detach().to(torch.float64)
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.tasks += tasks

    def all_reduce(self) -> None:
        """Sum the pool over all processes of the default group (no-op when not distributed)."""
        if dist.is_available() and dist.is_initialized():
            # Every process reduces every tensor; clones leave the tensors given to add() intact.
            self.grad_sums = [
                torch.zeros_like(p) if g is None else g.clone()
                for p, g in zip(self.params, self.grad_sums)
            ]
            for grad in self.grad_sums:
                dist.all_reduce(grad)
            stats = torch.cat([self.loss_sum.reshape(1), self.loss_sum.new_tensor([self.tasks])])
            dist.all_reduce(stats)
            self.loss_sum, self.tasks = stats[0], int(stats[1].item())

    def apply(self) -> float:
        """Write the mean meta-gradient into ``p.grad`` of every parameter (zeros where no chunk
        gave one); return the mean loss."""
        count = float(self.tasks)
        for param, grad in zip(self.params, self.grad_sums):
            param.grad = torch.zeros_like(param) if grad is None else grad / count
        return (self.loss_sum / count).item()
