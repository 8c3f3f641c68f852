"""The functional engine: run a per-task function over the tasks of a batch, and pool
meta-gradients over chunks (and processes) before the outer update (DESIGN §5).

Execution rule (``execution="auto"``): ``vmap`` everywhere except a model with convolutions on a
CPU, where ``loop``. Under ``vmap`` a convolution over T tasks becomes one grouped convolution,
which PyTorch's CPU kernels run about 2.4× slower than T separate convolutions (measured for
conv4 on this project's 2-core machine); on CUDA the batched form is many times faster. Fully
connected models are faster under ``vmap`` on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

EXECUTIONS = ("auto", "vmap", "loop")


def choose_execution(execution: str, model: nn.Module, device: torch.device) -> str:
    """Resolve ``"auto"`` to ``"vmap"`` or ``"loop"`` by the rule in the module docstring."""
    if execution != "auto":
        return execution
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return "loop" if has_conv and device.type == "cpu" else "vmap"


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
    ``torch.distributed`` is initialised; ``mean()`` divides by the total number of tasks."""

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.params = list(params)
        self.grad_sums = [torch.zeros_like(p) for p in self.params]
        device = self.params[0].device if self.params else None
        self.stats = torch.zeros(2, dtype=torch.float64, device=device)  # [task count, loss sum]

    def add(self, grad_sums: Sequence[torch.Tensor | None], loss_sum: torch.Tensor, tasks: int) -> None:
        for pooled, grad in zip(self.grad_sums, grad_sums):
            if grad is not None:
                pooled.add_(grad)
        self.stats[0] += tasks
        self.stats[1] += loss_sum.detach().to(torch.float64)

    def all_reduce(self) -> None:
        """Sum the pool over all processes of the default group (no-op when not distributed)."""
        if dist.is_available() and dist.is_initialized():
            for grad in self.grad_sums:
                dist.all_reduce(grad)
            dist.all_reduce(self.stats)

    def apply(self) -> float:
        """Write the mean meta-gradient into ``p.grad`` of every parameter; return the mean loss."""
        count = self.stats[0].item()
        for param, grad in zip(self.params, self.grad_sums):
            param.grad = grad / count
        return (self.stats[1] / count).item()
