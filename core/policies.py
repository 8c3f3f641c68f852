"""The Gaussian MLP policy of the MAML reference code (``cbfinn/maml_rl``:
``MAMLGaussianMLPPolicy``), shared by the continuous-control suites (navigation2d, halfcheetah):
hidden ReLU layers, Xavier-uniform weights and zero biases, a Gaussian whose log standard
deviation is state-independent, learnt and adapted with the rest, starting at σ = 1
(``learn_std=True, init_std=1.0``; σ ≥ 10⁻⁶, the reference's ``min_std``)."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from metazoo.errors import ZooError
from torch import Tensor, nn

MIN_LOG_STD = math.log(1e-6)  # the reference policy's min_std


class GaussianHead(nn.Module):
    """A linear layer for the mean and a learnt state-independent log standard deviation:
    ``[..., F] → [..., 2·A]`` (mean, then log σ)."""

    def __init__(self, features: int, actions: int, init_std: float = 1.0) -> None:
        super().__init__()
        self.mean = nn.Linear(features, actions)
        self.log_std = nn.Parameter(torch.full((actions,), math.log(init_std)))

    def forward(self, h: Tensor) -> Tensor:
        mean = self.mean(h)
        return torch.cat([mean, self.log_std.expand_as(mean)], dim=-1)


class GaussianMLP(nn.Sequential):
    """``observations → hidden (ReLU) → GaussianHead``, Xavier-uniform weights, zero biases. The
    last layer is ``head`` (ANIL adapts it)."""

    def __init__(self, observations: int, *hidden: int, actions: int) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        sizes = (observations, *hidden)
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers[f"fc{i}"] = nn.Linear(n_in, n_out)
            layers[f"relu{i}"] = nn.ReLU()
        layers["head"] = GaussianHead(sizes[-1], actions)
        super().__init__(layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)


def gaussian_parameters(output: Tensor, actions: int, suite: str) -> tuple[Tensor, Tensor]:
    """(mean, log σ) from a policy's output ``[..., 2·actions]``, or a clear error naming ``suite``."""
    if output.shape[-1] != 2 * actions:
        raise ZooError(f"suite {suite}: the policy must output {2 * actions} values per observation "
                       f"(the mean and log standard deviation of a {actions}-d action, as its make_model() "
                       f"does), got {output.shape[-1]}")
    mean, log_std = output.split(actions, dim=-1)
    return mean, log_std.clamp(min=MIN_LOG_STD)


def gaussian_log_prob(actions: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log N(actions; mean, diag(σ²)), summed over the last (action) dimension."""
    z = (actions - mean) / log_std.exp()
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
