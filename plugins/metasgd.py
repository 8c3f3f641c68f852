"""Meta-SGD (Li, Zhou, Chen & Li, 2017, Eq. 3–4).

The inner update is θ'_i = θ − α ∘ ∇L_Ti(θ) with α a learnt tensor of per-parameter learning
rates, the same shape as θ; the outer loop meta-learns (θ, α) together. α starts uniformly in
[0.005, 0.1] as in the paper's regression experiments (§4.1).
"""

from dataclasses import dataclass

import metazoo
import torch
from metazoo.model_algorithm import InnerLoopConfig, ModelAlgorithmLearner, parameter_key
from torch import nn

PAPER = "Li, Zhou, Chen & Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning. arXiv:1707.09835, 2017"


@dataclass(frozen=True)
class MetaSGDConfig(InnerLoopConfig):
    lr_init_low: float = 0.005  # α starts in U[lr_init_low, lr_init_high]
    lr_init_high: float = 0.1


class MetaSGD(ModelAlgorithmLearner):
    """MAML with a meta-learnt learning rate for every parameter entry."""

    Config = MetaSGDConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        low, high = self.config.lr_init_low, self.config.lr_init_high
        self.inner_lrs = nn.ParameterDict(
            {parameter_key(name): nn.Parameter(torch.empty_like(p).uniform_(low, high))
             for name, p in model.named_parameters()}
        )

    def inner_update(self, params, grads, step):
        return {name: p - self.inner_lrs[parameter_key(name)] * grads[name] for name, p in params.items()}


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("metasgd", MetaSGD, family="model-algorithm", paper=PAPER,
                 summary="MAML plus a meta-learnt learning rate per parameter")
