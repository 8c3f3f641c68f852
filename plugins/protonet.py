"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017, Eq. 1–2).

Each class's prototype is the mean of its support embeddings, c_k = (1/|S_k|) Σ f(x_i) (Eq. 1);
a query's logits are its negative squared Euclidean distances to the prototypes,
p(y = k | x) ∝ exp(−‖f(x) − c_k‖²) (Eq. 2). The outer optimiser defaults to the paper's, Adam
at learning rate 1e-3 (§3.1); its halving of the rate every 2000 episodes and its higher way in
training are left to the benchmark spec.
"""

from dataclasses import dataclass
from typing import Literal

import metazoo
from metazoo.model_data import ModelDataConfig, ModelDataLearner, one_hot
from torch import Tensor

PAPER = "Snell, Swersky & Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017"


@dataclass(frozen=True)
class ProtoNetConfig(ModelDataConfig):
    outer_lr: float = 1e-3  # Snell et al. 2017, §3.1
    outer_optimizer: Literal["adam", "sgd"] = "adam"  # ibid.


class ProtoNet(ModelDataLearner):
    """Nearest class-mean classification by squared Euclidean distance."""

    Config = ProtoNetConfig

    def score(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        members = one_hot(support_y, n_way, support.dtype)  # [S, N]
        prototypes = members.T @ support / members.sum(0).unsqueeze(1)  # [N, D], Eq. 1
        distances = (query.unsqueeze(1) - prototypes.unsqueeze(0)).pow(2).sum(-1)  # [Q, N]
        return -distances  # Eq. 2


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("protonet", ProtoNet, family="model-data", paper=PAPER,
                 summary="classify queries by squared distance to class-mean prototypes")
