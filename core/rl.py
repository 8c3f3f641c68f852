"""The loss of played reinforcement-learning tasks: REINFORCE with the linear feature baseline
(the MAML reference code's inner loss), on rollouts that a suite computes in torch, batched."""

from __future__ import annotations

import torch

#: Ridge coefficient of the linear feature baseline (rllab's ``LinearFeatureBaseline``).
BASELINE_RIDGE = 1e-5


def discounted_returns(rewards: torch.Tensor, discount: float) -> torch.Tensor:
    """Returns-to-go ``R_t = Σ_{k≥t} γ^{k−t} r_k`` of rewards ``[E, H]`` (one matrix product)."""
    horizon = rewards.shape[-1]
    steps = torch.arange(horizon, device=rewards.device, dtype=rewards.dtype)
    lag = steps.unsqueeze(1) - steps  # [k, t] = k − t
    weights = torch.where(lag >= 0, discount ** lag.clamp(min=0), torch.zeros_like(lag))
    return rewards @ weights


def baseline_features(observations: torch.Tensor) -> torch.Tensor:
    """``[E, H, 2·D + 4]``: rllab's linear-baseline features of observations ``[E, H, D]``: the
    observation clipped to ±10 and its square, time ``t/100`` and its square and cube, and 1."""
    o = observations.clamp(-10, 10)
    episodes, horizon = observations.shape[:2]
    t = torch.arange(horizon, device=o.device, dtype=o.dtype) / 100
    t = t.view(1, horizon, 1).expand(episodes, -1, -1)
    return torch.cat([o, o * o, t, t * t, t**3, torch.ones_like(t)], dim=-1)


def linear_feature_baseline(observations: torch.Tensor, returns: torch.Tensor,
                            alive: torch.Tensor) -> torch.Tensor:
    """Value estimates ``[E, H]`` of one task's episodes by the linear feature baseline (Duan et al.
    2016, "Benchmarking deep RL", rllab's ``LinearFeatureBaseline``, which the MAML reference
    code uses): ridge regression (coefficient :data:`BASELINE_RIDGE`) of the returns on
    :func:`baseline_features` over the steps with ``alive`` = 1, fitted in closed form (in float64)
    on these episodes themselves, as pytorch-maml-rl fits it. Constant: no gradient."""
    features = baseline_features(observations).detach().to(torch.float64)  # [E, H, F]
    weight = alive.detach().to(torch.float64).unsqueeze(-1)
    flat, target = (features * weight).flatten(0, 1), (returns.detach().to(torch.float64) * weight[..., 0]).flatten()
    gram = flat.T @ flat + BASELINE_RIDGE * torch.eye(flat.shape[1], dtype=torch.float64, device=flat.device)
    coefficients = torch.linalg.solve(gram, flat.T @ target)
    return (features @ coefficients).to(returns.dtype)


def policy_gradient_surrogate(log_prob: torch.Tensor, rewards: torch.Tensor, observations: torch.Tensor,
                              alive: torch.Tensor, discount: float) -> torch.Tensor:
    """REINFORCE with a baseline (Williams 1992), as the MAML reference code's inner loss:
    ``−mean_t log π(a_t|s_t) · Â_t`` over the steps of one task's episodes that are ``alive``
    (``[E, H]``: 1 before the episode ended), with ``Â`` the returns-to-go (``discount``) minus
    the linear feature baseline, normalised to mean 0 and standard deviation 1 over the task's
    steps (rllab's ``center_adv``). ``log_prob`` ``[E, H]`` carries the gradient; the rewards,
    observations and advantages are constants."""
    alive = alive.detach()
    returns = discounted_returns(rewards.detach() * alive, discount)
    advantages = returns - linear_feature_baseline(observations, returns, alive)
    count = alive.sum()
    mean = (advantages * alive).sum() / count
    std = (((advantages - mean) ** 2 * alive).sum() / count).sqrt()
    advantages = ((advantages - mean) / (std + 1e-8)).detach()
    return -(log_prob * advantages * alive).sum() / count
