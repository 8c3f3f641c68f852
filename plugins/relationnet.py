"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018, §3.2–3.4).

Each class is represented by the element-wise sum of its support embeddings (§3.3, K-shot); a
learnt relation module g scores every (query, class) pair from their concatenated embeddings,
r = g([f(x̂), Σ f(x_i)]) ∈ (0, 1), and training regresses the scores on the one-hot labels by
mean squared error (Eq. 2), not cross-entropy. The paper's relation module is two convolutional
blocks on the concatenated feature maps, then fully connected layers of 8 and 1 units; the
built-in backbones give flat embeddings (conv4 pools a 28×28 image down to 1×1), so g here is
the fully connected part: [2D → ``relation_hidden`` (ReLU) → 1, sigmoid].
"""

from dataclasses import dataclass

import metazoo
import torch
from metazoo.model_data import ModelDataConfig, ModelDataLearner, one_hot
from torch import Tensor, nn

PAPER = ("Sung, Yang, Zhang, Xiang, Torr & Hospedales. Learning to Compare: Relation Network for "
         "Few-Shot Learning. CVPR 2018")


@dataclass(frozen=True)
class RelationNetConfig(ModelDataConfig):
    relation_hidden: int = 8  # Sung et al. 2018, §3.4: fully connected layers of 8 and 1 units


class RelationNet(ModelDataLearner):
    """Score (query, class) pairs by a learnt relation module; trained by MSE on one-hot labels."""

    Config = RelationNetConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        size = self.embedding_size(suite)
        self.relation = nn.Sequential(nn.Linear(2 * size, self.config.relation_hidden), nn.ReLU(),
                                      nn.Linear(self.config.relation_hidden, 1), nn.Sigmoid())

    def score(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        classes = one_hot(support_y, n_way, support.dtype).T @ support  # [N, D]: sums over shots
        pairs = torch.cat([query.unsqueeze(1).expand(-1, n_way, -1),
                           classes.unsqueeze(0).expand(query.shape[0], -1, -1)], dim=-1)  # [Q, N, 2D]
        return self.relation(pairs).squeeze(-1)  # [Q, N] relation scores in (0, 1)

    def objective(self, scores: Tensor, labels: Tensor, n_way: int) -> Tensor:
        return (scores - one_hot(labels, n_way, scores.dtype)).pow(2).mean()  # Eq. 2


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("relationnet", RelationNet, family="model-data", paper=PAPER,
                 summary="embedding; a learnt relation module scores query-class pairs (MSE)")
