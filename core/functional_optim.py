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


def state_tensors(optimizer: torch.optim.Optimizer, kind: str, params: list[torch.Tensor]) -> dict[str, Any]:
    """The optimiser's own state tensors, for :func:`update` and :func:`copy_state_`, and its
    rate. Adam's state is created where it has taken no step yet (zeros, step 0), in
    ``torch.optim``'s own format, so that the compiled step can update it in place and an eager
    ``optimizer.step()`` can take over at any step."""
    group = optimizer.param_groups[0]
    lr = torch.tensor(float(group["lr"]), dtype=torch.float64)
    if kind == "sgd":
        return {"lr": lr}
    for p in params:
        if not optimizer.state.get(p):
            optimizer.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p.detach()),
                                  "exp_avg_sq": torch.zeros_like(p.detach())}
    states = [optimizer.state[p] for p in params]
    return {
        "lr": lr,
        "step": [s["step"] for s in states],
        "exp_avg": [s["exp_avg"] for s in states],
        "exp_avg_sq": [s["exp_avg_sq"] for s in states],
        "betas": tuple(group["betas"]),
        "eps": float(group["eps"]),
    }


def update(kind: str, params: list[torch.Tensor], grads: list[torch.Tensor], state: dict[str, Any]):
    """New parameters and state after one step (no tensor is modified in place)."""
    lr = state["lr"]
    if kind == "sgd":
        return [p - (lr * g).to(p.dtype) for p, g in zip(params, grads)], state
    beta1, beta2 = state["betas"]
    step = state["step"][0] + 1  # every parameter's step count is the same
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
    steps = [step] * len(params)
    return new_params, {**state, "step": steps, "exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs}


def copy_state_(state: dict[str, Any], new: dict[str, Any]) -> None:
    """Write ``new`` (from :func:`update`) into the tensors of ``state`` (from
    :func:`state_tensors`), in place."""
    for key in ("step", "exp_avg", "exp_avg_sq"):
        for old, value in zip(state.get(key, ()), new.get(key, ())):
            old.copy_(value)
