"""The outer optimisers as pure functions of (parameters, gradients, state), for the compiled
meta-step: the same updates as ``torch.optim.SGD`` and ``torch.optim.Adam`` with their default
options, reading and writing the state in ``torch.optim``'s own format, so that a learner can
switch between the compiled and the eager step (and checkpoint either) at any step.

Adam (Kingma & Ba 2015, Algorithm 1, as ``torch.optim.Adam`` computes it):
m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²,  θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε).
"""

from __future__ import annotations

from typing import Any

import torch
from metazoo.errors import ZooError

Tensors = dict[str, torch.Tensor]
_SUPPORTED = {"weight_decay": 0, "amsgrad": False, "maximize": False, "momentum": 0, "dampening": 0,
              "nesterov": False}


def check_supported(optimizer: torch.optim.Optimizer) -> str:
    """``"adam"`` or ``"sgd"`` if ``optimizer`` has a functional twin here, else a ZooError."""
    kind = {torch.optim.Adam: "adam", torch.optim.SGD: "sgd"}.get(type(optimizer))
    if kind is None or len(optimizer.param_groups) != 1:
        raise ZooError(f"the compiled step supports one group of torch.optim.Adam or SGD, not {optimizer!r}")
    group = optimizer.param_groups[0]
    for option, plain in _SUPPORTED.items():
        if group.get(option, plain) != plain:
            raise ZooError(f"the compiled step supports {kind} with {option}={plain!r} only")
    return kind


def read_state(optimizer: torch.optim.Optimizer, kind: str, params: list[torch.Tensor]) -> dict[str, Any]:
    """The optimiser's state as tensors (zeros where it has taken no step yet), and its rate."""
    group = optimizer.param_groups[0]
    lr = torch.tensor(float(group["lr"]), dtype=torch.float64)
    if kind == "sgd":
        return {"lr": lr}
    first = optimizer.state.get(params[0], {})
    step = first.get("step", torch.tensor(0.0))
    return {
        "lr": lr,
        "step": torch.as_tensor(step, dtype=torch.float32).detach().clone(),
        "exp_avg": [optimizer.state.get(p, {}).get("exp_avg", torch.zeros_like(p)).detach() for p in params],
        "exp_avg_sq": [optimizer.state.get(p, {}).get("exp_avg_sq", torch.zeros_like(p)).detach() for p in params],
        "betas": tuple(group["betas"]),
        "eps": float(group["eps"]),
    }


def update(kind: str, params: list[torch.Tensor], grads: list[torch.Tensor], state: dict[str, Any]):
    """New parameters and state after one step (no tensor is modified in place)."""
    lr = state["lr"]
    if kind == "sgd":
        return [p - (lr * g).to(p.dtype) for p, g in zip(params, grads)], state
    beta1, beta2 = state["betas"]
    step = state["step"] + 1
    bias1 = 1 - beta1 ** step.double()
    bias2 = 1 - beta2 ** step.double()
    new_params, exp_avgs, exp_avg_sqs = [], [], []
    for p, g, m, v in zip(params, grads, state["exp_avg"], state["exp_avg_sq"]):
        m = torch.lerp(m, g, 1 - beta1)  # as torch.optim.Adam writes it
        v = v * beta2 + g * g * (1 - beta2)
        denom = v.sqrt() / bias2.sqrt().to(p.dtype) + state["eps"]
        new_params.append(p - (lr / bias1).to(p.dtype) * m / denom)
        exp_avgs.append(m)
        exp_avg_sqs.append(v)
    return new_params, {**state, "step": step, "exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs}


def write_state(optimizer: torch.optim.Optimizer, kind: str, params: list[torch.Tensor], state: dict[str, Any]) -> None:
    """Store ``state`` (from :func:`update`) as the optimiser's own."""
    if kind == "sgd":
        return
    for p, m, v in zip(params, state["exp_avg"], state["exp_avg_sq"]):
        optimizer.state[p] = {"step": state["step"].clone(), "exp_avg": m, "exp_avg_sq": v}
