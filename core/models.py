"""Backbones of the built-in suites. Each names its final layer ``head`` (ANIL adapts it)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


class MLP(nn.Sequential):
    """Fully connected ReLU network: ``sizes[0] → … → sizes[-1]``; the last layer is ``head``.

    The sinusoid backbone of Finn et al. (2017, §5.1) is ``MLP(1, 40, 40, 1)``.
    """

    def __init__(self, *sizes: int) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (n_in, n_out) in enumerate(zip(sizes[:-2], sizes[1:-1])):
            layers[f"fc{i}"] = nn.Linear(n_in, n_out)
            layers[f"relu{i}"] = nn.ReLU()
        layers["head"] = nn.Linear(sizes[-2], sizes[-1])
        super().__init__(layers)
