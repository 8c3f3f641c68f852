"""Plain per-task reference implementations of the meta-gradients of MAML, first-order MAML,
Meta-SGD, ANIL and Reptile, written from the papers' equations and independent of metazoo's
engine: a Python loop over tasks, ``torch.func.functional_call`` and ``torch.autograd.grad``.

Parameters are dictionaries ``name -> tensor`` of a model's parameters (the names of
``model.named_parameters()``). Learning rates ``lrs`` are one float for every parameter (MAML,
ANIL, Reptile) or a dictionary of tensors shaped like the parameters (Meta-SGD's α).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # sx, sy, qx, qy: [T, ...]


def loss(kind: str, model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One task's loss: mean cross-entropy over its examples, or mean squared error."""
    out = functional_call(model, params, (x,))
    if kind == "classification":
        return F.cross_entropy(out, y)
    return ((out - y) ** 2).mean()


def leaf_copy(params: Params) -> Params:
    """Detached copies that require grad: the meta-parameters the reference differentiates."""
    return {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}


def adapt(
    kind: str,
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lrs: float | Params,
    names: list[str] | None = None,
    create_graph: bool,
) -> Params:
    """``steps`` inner steps on one task (Finn et al. 2017, Eq. 1; Li et al. 2017, Eq. 3):
    φ_n ← φ_n − α_n ∇_{φ_n} L(φ) for each adapted name n (default: all). Without
    ``create_graph`` the inner gradients are constants (first order)."""
    names = list(params) if names is None else names
    fast = dict(params)
    for _ in range(steps):
        grads = torch.autograd.grad(
            loss(kind, model, fast, x, y),
            [fast[n] for n in names],
            create_graph=create_graph,
            retain_graph=True,
        )
        for n, g in zip(names, grads):
            lr = lrs if isinstance(lrs, float) else lrs[n]
            fast[n] = fast[n] - lr * g
    return fast


def meta_gradient(
    kind: str,
    model: nn.Module,
    params: Params,
    batch: Batch,
    *,
    steps: int,
    lrs: float | Params,
    names: list[str] | None = None,
    first_order: bool = False,
) -> tuple[Params, Params, float]:
    """Mean over tasks of ∇ L_query(adapt(θ)) (Finn et al. 2017, Eq. 3), w.r.t. the parameters
    θ and, when ``lrs`` is a dictionary, w.r.t. the learning rates α (Meta-SGD, Eq. 4).

    Returns (gradients w.r.t. θ, gradients w.r.t. α (empty for a float), mean query loss).
    """
    theta = leaf_copy(params)
    alpha = leaf_copy(lrs) if isinstance(lrs, dict) else {}
    inputs = list(theta.values()) + list(alpha.values())
    sums = [torch.zeros_like(t) for t in inputs]
    total = 0.0
    num_tasks = batch[0].shape[0]
    for sx, sy, qx, qy in zip(*batch):
        fast = adapt(
            kind, model, theta, sx, sy, steps=steps, lrs=alpha or lrs, names=names,
            create_graph=not first_order,
        )
        query = loss(kind, model, fast, qx, qy)
        for acc, g in zip(sums, torch.autograd.grad(query, inputs, allow_unused=True)):
            if g is not None:
                acc += g
        total += query.item()
    means = [s / num_tasks for s in sums]
    return dict(zip(theta, means)), dict(zip(alpha, means[len(theta):])), total / num_tasks


def reptile_pseudo_gradient(
    kind: str, model: nn.Module, params: Params, batch: Batch, *, steps: int, lr: float
) -> Params:
    """Reptile's pseudo-gradient (Nichol et al. 2018, Algorithm 2): (1/n) Σ_i (θ − φ̃_i), where
    φ̃_i is θ after ``steps`` plain SGD steps on task i's support set."""
    theta = leaf_copy(params)
    sums = {name: torch.zeros_like(p) for name, p in theta.items()}
    num_tasks = batch[0].shape[0]
    for sx, sy, _, _ in zip(*batch):
        phi = adapt(kind, model, theta, sx, sy, steps=steps, lrs=lr, create_graph=False)
        for name in sums:
            sums[name] += (theta[name] - phi[name]).detach()
    return {name: s / num_tasks for name, s in sums.items()}
