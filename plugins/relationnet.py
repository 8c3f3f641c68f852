"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018, §3.2–3.4).

Each class is represented by the element-wise sum of its support embeddings (§3.3, K-shot); a
learnt relation module g scores every (query, class) pair from their concatenated embeddings,
r = g([f(x̂), Σ f(x_i)]) ∈ (0, 1), and training regresses the scores on the one-hot labels by
mean squared error (Eq. 2), not cross-entropy.

The relation module compares feature maps, as in the paper (§3.4, Fig. 2): with a convolutional
backbone the embedding is the body's last feature map (its flattening left out), and g is two
blocks of [3×3 convolution with as many filters as the embedding, batch norm, ReLU, 2×2
max-pooling] on the concatenated maps, then fully connected layers of ``relation_hidden`` (ReLU)
and 1 unit (sigmoid). The paper's embedding pools in its first two blocks only (the
``conv4-relation`` backbone): pooled down to 1×1 (plain ``conv4``) the concatenated vectors
carry no spatial layout to compare, and on Omniglot the module then settles on the constant
score 1/N. A flat embedding (an MLP's) gets the fully connected part alone.

g's first layer is linear in the concatenation, W·[q, c] = W_q·q + W_c·c, so it is applied to
each query and each class once and the Q·N pairs are formed from the sums: the same scores as
concatenating every pair, without the Q·N inputs of twice the embedding's channels (on Omniglot
5-way with 15 queries, 375 pairs a task).
"""

from dataclasses import dataclass

import metazoo
import torch
import torch.nn.functional as F
from metazoo.model_data import ModelDataConfig, ModelDataLearner, one_hot
from metazoo.models import BatchStatNorm
from torch import Tensor, nn

PAPER = ("Sung, Yang, Zhang, Xiang, Torr & Hospedales. Learning to Compare: Relation Network for "
         "Few-Shot Learning. CVPR 2018")


@dataclass(frozen=True)
class RelationNetConfig(ModelDataConfig):
    relation_hidden: int = 8  # Sung et al. 2018, §3.4: fully connected layers of 8 and 1 units


def relation_module(shape: torch.Size, hidden: int) -> nn.Sequential:
    """g for embeddings of ``shape``: ``[P, 2C, H, W]`` (or ``[P, 2D]``) pairs -> ``[P, 1]`` scores."""
    layers: list[nn.Module] = []
    if len(shape) == 3:  # feature maps [C, H, W]: two convolutional blocks first
        channels, side = shape[0], min(shape[1:])
        for i in range(2):
            layers += [nn.Conv2d(2 * channels if i == 0 else channels, channels, 3, padding=1),
                       BatchStatNorm(channels), nn.ReLU()]
            if side >= 2:
                layers.append(nn.MaxPool2d(2))
                side //= 2
        layers.append(nn.Flatten())
        features = channels * side * side
    else:
        features = 2 * shape[0]
    return nn.Sequential(*layers, nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())


class RelationNet(ModelDataLearner):
    """Score (query, class) pairs by a learnt relation module; trained by MSE on one-hot labels."""

    Config = RelationNetConfig

    def __init__(self, model, suite, **hyperparameters):
        super().__init__(model, suite, **hyperparameters)
        if isinstance(self.embed, nn.Sequential) and isinstance(self.embed[-1], nn.Flatten):
            self.__dict__["embed"] = self.embed[:-1]  # compare feature maps, not their flattening
        self.relation = relation_module(self.embedding_shape(suite), self.config.relation_hidden)

    def score(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        shape = support.shape[1:]
        classes = (one_hot(support_y, n_way, support.dtype).T @ support.flatten(1)).unflatten(1, shape)  # sums over shots
        first, rest = self.relation[0], self.relation[1:]
        half = shape[0]  # the first layer's inputs: the query's channels, then the class's
        w_query, w_class = first.weight[:, :half], first.weight[:, half:]
        if isinstance(first, nn.Conv2d):
            on_query = F.conv2d(query, w_query, first.bias, padding=first.padding)
            on_class = F.conv2d(classes, w_class, None, padding=first.padding)
        else:
            on_query, on_class = F.linear(query, w_query, first.bias), F.linear(classes, w_class)
        pairs = on_query.unsqueeze(1) + on_class.unsqueeze(0)  # [Q, N, ...]: g's first layer on each pair
        return rest(pairs.flatten(0, 1)).view(query.shape[0], n_way)  # [Q, N] relation scores in (0, 1)

    def objective(self, scores: Tensor, labels: Tensor, n_way: int) -> Tensor:
        return (scores - one_hot(labels, n_way, scores.dtype)).pow(2).mean()  # Eq. 2


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("relationnet", RelationNet, family="model-data", paper=PAPER,
                 summary="embedding; a learnt relation module scores query-class pairs (MSE)")
