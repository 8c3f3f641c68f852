"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, NeurIPS 2016,
Eq. 1–2), without full-context embeddings.

A query x̂ is labelled by attention over the support set, ŷ = Σ_i a(x̂, x_i) y_i with one-hot
y_i (Eq. 1), where a is the softmax over the support set of the cosine similarity between the
embeddings, a(x̂, x_i) = exp(c(f(x̂), g(x_i))) / Σ_j exp(c(f(x̂), g(x_j))) (Eq. 2). Here
f = g = the backbone's embedding. The full-context embeddings (FCE: f and g conditioned on the
whole support set by LSTMs) are left out: the paper reports they help little on Omniglot and
uses them for its miniImageNet results. The logits returned are log ŷ (clamped away from 0), so
the cross-entropy training loss is the negative log-likelihood of the predicted distribution
and the softmax of the logits is ŷ itself. The cosine is not scaled by a temperature, as in
the paper.
"""

import metazoo
import torch
import torch.nn.functional as F
from metazoo.model_data import ModelDataLearner, one_hot
from torch import Tensor

PAPER = "Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra. Matching Networks for One Shot Learning. NeurIPS 2016"


class MatchingNet(ModelDataLearner):
    """Cosine attention over the support set's labels."""

    def score(self, support: Tensor, support_y: Tensor, query: Tensor, n_way: int) -> Tensor:
        cosine = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).T  # [Q, S]
        attention = cosine.softmax(dim=-1)  # Eq. 2
        probs = attention @ one_hot(support_y, n_way, support.dtype)  # [Q, N], Eq. 1
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


@metazoo.hookimpl
def zoo_register_algorithms(registry):
    registry.add("matchingnet", MatchingNet, family="model-data", paper=PAPER,
                 summary="label queries by cosine attention over the support set (no FCE)")
